// Package mirrortest holds the test helpers of package mirror and of the regkit
// sync command's tests: a comparable view of a service on a registry, and a
// watcher that records every time an address it saw is absent.
package mirrortest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/cmd/regkit/internal/mirror"
	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
)

// View is a comparable summary of service svc on c, sorted, one string per
// instance: "ADDR native ID" for an instance registered there, "ADDR copy-of
// ID from CLUSTER" for a copy (ID being the source's instance ID). A service
// that does not exist (ErrNotFound) is an empty view. It reads within 10s.
func View(c *registry.Client, svc string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.Instances(ctx, svc)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	var out []string
	for _, in := range list {
		if src := in.Metadata[mirror.MetaSourceCluster]; src != "" {
			out = append(out, fmt.Sprintf("%s copy-of %s from %s", in.Addr(), in.Metadata[mirror.MetaSourceID], src))
		} else {
			out = append(out, fmt.Sprintf("%s native %s", in.Addr(), in.ID))
		}
	}
	sort.Strings(out)
	return out, nil
}

// WantView polls View of svc on c until it equals want (in any order; none for
// an empty view), and fails t if it does not within 60s.
func WantView(t testing.TB, c *registry.Client, svc string, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	poll.Until(t, 60*time.Second, "view of "+svc, func() error {
		got, err := View(c, svc)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		return nil
	})
}

// GapWatch watches service svc on c, as a client of the destination would, and
// records each snapshot lacking an address an earlier one had. It stops when t
// ends.
type GapWatch struct {
	svc  string
	mu   sync.Mutex
	seen map[string]bool
	gaps []string
}

// WatchGaps starts a GapWatch of svc on c; it fails t if the watch cannot start.
func WatchGaps(t testing.TB, c *registry.Client, svc string) *GapWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.Watch(ctx, svc)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g := &GapWatch{svc: svc, seen: map[string]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		for {
			s, err := w.Next(ctx)
			if err != nil {
				return
			}
			now := map[string]bool{}
			for _, in := range s.Instances {
				now[in.Addr()] = true
			}
			g.mu.Lock()
			for a := range g.seen {
				if !now[a] {
					g.gaps = append(g.gaps, fmt.Sprintf("%s: snapshot %d (stale=%v) lacks %s: %v", svc, s.Seq, s.Stale, a, slices.Sorted(maps.Keys(now))))
				}
			}
			maps.Copy(g.seen, now)
			g.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return g
}

// Gaps lists the gaps seen so far, one line each: "SERVICE: snapshot SEQ
// (stale=BOOL) lacks ADDR: [ADDRS IT HAD]".
func (g *GapWatch) Gaps() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.gaps)
}

// Check fails t (without stopping it) if a gap was seen, listing them after
// what, e.g. "a watcher saw copies missing".
func (g *GapWatch) Check(t testing.TB, what string) {
	t.Helper()
	if gs := g.Gaps(); len(gs) > 0 {
		t.Errorf("%s:\n%s", what, strings.Join(gs, "\n"))
	}
}
