package registry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// healthConn is a mem connection that reports its health (driver.Health) and
// fails every List while it is down.
type healthConn struct {
	*mem.Conn
	mu      sync.Mutex
	down    bool
	changed chan struct{}
}

// SubscribeEvents refuses, so the Client follows services with Watch and the
// List above.
func (h *healthConn) SubscribeEvents(string, func(driver.Change)) (func(), error) {
	return nil, driver.ErrNotSupported
}

func (h *healthConn) Health() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return fmt.Errorf("test: connection down: %w", driver.ErrUnavailable)
	}
	return nil
}

func (h *healthConn) HealthChanged() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.changed
}

func (h *healthConn) set(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
}

func (h *healthConn) List(ctx context.Context, service string) (driver.Listing, error) {
	if err := h.Health(); err != nil {
		return driver.Listing{}, err
	}
	return h.Conn.List(ctx, service)
}

// A re-list that failed while the connection was down sleeps its backoff; the
// connection coming back must wake it at once (issue 19: after a ZooKeeper quorum
// loss views stayed stale for up to the backoff, 10s jittered to 15s, after the
// client had reconnected). The Client runs on a fake clock that the test never
// advances, so its backoff never ends by itself: only the wake-up can make the
// view fresh, and no wall-clock bound is asserted.
func TestReconnectWakesRelist(t *testing.T) {
	ctx := ctxT(t)
	other, _ := openMem(t)
	hc := &healthConn{Conn: memConn(t, other)}
	c := newClientOver(t, hc, registry.WithRetryBackoff(5*time.Second, 10*time.Second),
		registry.WithClock(clockwork.NewFakeClock()))
	defer c.Close()
	reg := func(id string, port int) {
		t.Helper()
		if _, err := other.Register(ctx, registry.Instance{Service: "svc", ID: id, Host: "10.0.0.1", Port: port}); err != nil {
			t.Fatal(err)
		}
	}
	reg("a", 1)
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if s, err := w.Next(ctx); err != nil || len(s.Instances) != 1 {
		t.Fatalf("first snapshot %v, %v", s.Instances, err)
	}
	hc.set(true)
	reg("b", 2) // the watch notifies; the re-list fails; the loop backs off
	s, err := w.Next(ctx)
	if err != nil || !s.Stale {
		t.Fatalf("want a stale snapshot after the failed re-list, got stale=%v %v", s.Stale, err)
	}
	hc.set(false)
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("view never fresh after the connection came back (the backoff's fake clock never advances): %v", err)
		}
		if !s.Stale && len(s.Instances) == 2 {
			break
		}
	}
}
