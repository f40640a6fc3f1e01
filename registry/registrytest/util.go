package registrytest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
)

var nsCounter atomic.Int64

var nsUnsafe = regexp.MustCompile(`[^A-Za-z0-9]+`)

// namespace returns a namespace unique to this test run.
func namespace(t testing.TB) string {
	n := nsUnsafe.ReplaceAllString(t.Name(), "-")
	if len(n) > 40 {
		n = n[len(n)-40:]
	}
	return fmt.Sprintf("rt%d-%d-%s", time.Now().UnixNano()%1e6, nsCounter.Add(1), n)
}

func (h *Harness) open(t testing.TB, ns string) *registry.Client {
	t.Helper()
	c := h.NewClient(t, ns)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it returns nil or the harness timeout passes.
func (h *Harness) eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	poll.Until(t, h.timeout(), h.Name+": "+what, cond)
}

// nextUntil reads snapshots from w until ok accepts one or the timeout passes.
func (h *Harness) nextUntil(t testing.TB, w registry.Watcher, what string, ok func(registry.Snapshot) error) registry.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
	defer cancel()
	var last error = fmt.Errorf("no snapshot")
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("%s: %s: Next: %v (last mismatch: %v)", h.Name, what, err, last)
		}
		if last = ok(s); last == nil {
			return s
		}
	}
}

func ids(list []registry.Instance) []string {
	out := make([]string, len(list))
	for i, in := range list {
		out[i] = in.ID
	}
	return out
}

// hasIDs accepts a snapshot whose instance IDs are exactly want, in order (and, with
// fresh, that is not stale).
func hasIDs(fresh bool, want ...string) func(registry.Snapshot) error {
	return func(s registry.Snapshot) error {
		if !slices.Equal(ids(s.Instances), want) || (fresh && s.Stale) {
			return fmt.Errorf("got %v stale=%v, want %v", ids(s.Instances), s.Stale, want)
		}
		return nil
	}
}
