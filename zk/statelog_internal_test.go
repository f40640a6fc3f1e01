package zk

import (
	"slices"
	"testing"

	"github.com/regkit/regkit/registry/driver"
)

// The connection's state log kept every state since the connection opened, so a
// connection flapping between Suspended and Reconnected grew it without bound.
// It keeps the current state and what a listener has yet to read.
func TestStateLogBounded(t *testing.T) {
	l := newStateLog()
	for range 1000 {
		l.add(driver.StateSuspended)
		l.add(driver.StateReconnected)
	}
	if len(l.events) != 1 || l.events[0] != driver.StateReconnected {
		t.Fatalf("without listeners the log holds %d states, want the current one", len(l.events))
	}
	// A listener that has read nothing yet keeps what it has to read, in order.
	next := l.base + len(l.events)
	l.mu.Lock()
	l.readers = map[*int]struct{}{&next: {}}
	l.mu.Unlock()
	want := []driver.SessionState{driver.StateSuspended, driver.StateLost, driver.StateReconnected}
	for _, st := range want {
		l.add(st)
	}
	l.mu.Lock()
	unread := slices.Clone(l.events[next-l.base:])
	l.mu.Unlock()
	if !slices.Equal(unread, want) {
		t.Fatalf("a listener's unread states: %v, want %v", unread, want)
	}
	// Once it has read them, they go at the next change.
	next = l.base + len(l.events)
	l.add(driver.StateSuspended)
	if len(l.events) != 1 {
		t.Fatalf("after the listener read everything the log holds %d states, want 1", len(l.events))
	}
}
