package registry

import (
	"slices"
	"strconv"
	"strings"
	"sync"
)

// interner shares equal Metadata maps between the instances the Client's watch
// loops hold: in a fleet most instances of a service (and many services) carry
// the same few pairs, and a snapshot is never modified (callers of Watch and
// Instances get deep copies), so one map can serve them all. The table is
// bounded: once it holds internMax distinct maps it starts afresh (maps in use
// stay with their snapshots; only later sharing with them is lost).
type interner struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

// internMax bounds the interner's table.
const internMax = 1 << 14

// instances replaces the Metadata of each instance of list by the shared map
// with the same pairs.
func (t *interner) instances(list []Instance) {
	var key strings.Builder
	var keys []string
	for i := range list {
		md := list[i].Metadata
		if len(md) == 0 {
			continue
		}
		key.Reset()
		keys = keys[:0]
		for k := range md {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			// Lengths first: no pair can be read as another.
			key.WriteString(strconv.Itoa(len(k)))
			key.WriteByte(':')
			key.WriteString(k)
			key.WriteString(strconv.Itoa(len(md[k])))
			key.WriteByte(':')
			key.WriteString(md[k])
		}
		list[i].Metadata = t.get(key.String(), md)
	}
}

// get returns the shared map for key, making md the shared one if there is none.
func (t *interner) get(key string, md map[string]string) map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if shared, ok := t.m[key]; ok {
		return shared
	}
	if t.m == nil || len(t.m) >= internMax {
		t.m = map[string]map[string]string{}
	}
	t.m[key] = md
	return md
}
