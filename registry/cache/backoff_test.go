package cache_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// breakingDiscovery fails its first failFirst Watch calls; later watchers deliver one
// snapshot, then wait until broken.
type breakingDiscovery struct {
	failFirst int32
	calls     atomic.Int32
	broken    chan struct{} // closed to break the current watcher
}

func (d *breakingDiscovery) Instances(ctx context.Context, service string) ([]registry.Instance, error) {
	return nil, registry.ErrNotSupported
}

func (d *breakingDiscovery) Watch(ctx context.Context, service string) (registry.Watcher, error) {
	if n := d.calls.Add(1); n <= d.failFirst {
		return nil, fmt.Errorf("flaky: watch %d: %w", n, registry.ErrUnavailable)
	}
	return &breakingWatcher{service: service, broken: d.broken}, nil
}

type breakingWatcher struct {
	service string
	sent    bool
	broken  chan struct{}
}

func (w *breakingWatcher) Next(ctx context.Context) (registry.Snapshot, error) {
	if !w.sent {
		w.sent = true
		return registry.Snapshot{Service: w.service, Instances: insts(w.service, "a")}, nil
	}
	select {
	case <-w.broken:
		return registry.Snapshot{}, fmt.Errorf("flaky: stream ended: %w", registry.ErrUnavailable)
	case <-ctx.Done():
		return registry.Snapshot{}, ctx.Err()
	}
}

func (w *breakingWatcher) Close() error { return nil }

type countHandler struct{ n *atomic.Int32 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// The cache's re-watch backoff doubled without jitter and never came back down:
// after a few failures, a watch that had worked for hours was retried seconds
// after it broke. Now it uses the registry's backoff: jittered, logged once per
// streak, and back to the minimum once a watch delivered for the backoff's
// maximum (5s).
func TestCacheBackoffResetsAfterAStableWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fc := clockwork.NewFakeClock()
	var logs atomic.Int32
	d := &breakingDiscovery{failFirst: 4, broken: make(chan struct{})}
	c := newCache(t, d, cache.WithClock(fc), cache.WithLogger(slog.New(countHandler{&logs})))
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 4 { // four failures, each followed by a sleep of at most 5s
		if err := fc.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if n := d.calls.Load(); n != int32(i+1) {
			t.Fatalf("%d watch calls, want %d", n, i+1)
		}
		fc.Advance(5 * time.Second)
	}
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if n := logs.Load(); n != 1 {
		t.Errorf("%d warnings for one streak of 4 failures, want 1", n)
	}
	fc.Advance(5 * time.Second) // the watch stays up for the backoff's maximum
	close(d.broken)
	if err := fc.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	fc.Advance(150 * time.Millisecond) // the minimum (100ms) plus its jitter
	poll.Until(t, 10*time.Second, "re-watch at the minimum delay after a stable watch", func() error {
		if n := d.calls.Load(); n != 6 {
			return fmt.Errorf("%d watch calls", n)
		}
		return nil
	})
	if n := logs.Load(); n != 2 {
		t.Errorf("%d warnings, want 2 (one per streak)", n)
	}
}

// Cache.Instances returned the shared snapshot's slice, and Watch's Next the
// shared snapshot: a caller editing either changed what every other caller got.
func TestCacheInstancesAndWatchAreCopies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &fakeDiscovery{}
	in := insts("svc", "a", "b")
	in[0].Metadata = map[string]string{"k": "v"}
	d.Publish(registry.Snapshot{Service: "svc", Instances: in})
	c := newCache(t, d)
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Instances[0].Metadata["k"] = "changed"
	s.Instances[1].Port = 1
	l, err := c.Instances(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	l[0], l[1] = l[1], l[0]
	got, err := c.Lookup(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	if got.Instances[0].ID != "a" || got.Instances[0].Metadata["k"] != "v" || got.Instances[1].Port != 8001 {
		t.Fatalf("callers' edits reached the shared view: %+v", got.Instances)
	}
}
