package registrytest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/registry/internal/hooks"
	"go.uber.org/goleak"
)

// shutdownDeadline is the budget the suite gives Shutdown during an outage.
// shutdownHang is how long past it Shutdown may still run before the case calls
// it hung: not a performance bound (beyond the deadline there is only local work,
// joining goroutines and closing the connection) but far below the 30s the old
// one-after-another deregistration of three instances took.
const (
	shutdownDeadline = 2 * time.Second
	shutdownHang     = 15 * time.Second
)

// shutdownOrHang runs shutdown and returns its result, or fails t if it has not
// returned shutdownHang after the deadline.
func shutdownOrHang(t *testing.T, name string, shutdown func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- shutdown() }()
	select {
	case err := <-done:
		return err
	case <-time.After(shutdownDeadline + shutdownHang):
		t.Fatalf("%s: Shutdown with a %v deadline during an outage had not returned %v after it", name, shutdownDeadline, shutdownHang)
		return nil
	}
}

// testShutdownDeadline: during an outage (Blackhole, else Cut) a client with
// three registrations shuts down within the caller's deadline (Close used to
// deregister one after another with 10s each), leaves no goroutine behind, and
// its error wraps the deadline and names every instance it could not
// deregister. Once the backend is back, an instance still listed is only what the
// backend's own expiry will remove.
func testShutdownDeadline(t *testing.T, h *Harness) {
	outage := h.Blackhole
	if outage == nil {
		outage = h.Cut
	}
	if outage == nil {
		t.Skipf("%s: no Cut or Blackhole hook", h.Name)
	}
	ns := namespace(t)
	ctx := ctxT(t, h.timeout())
	c := h.NewClient(t, ns)
	defer c.Close()
	var names []string
	for i := range 3 {
		r, err := c.Register(ctx, inst("shutdown", fmt.Sprintf("s%d", i), 7400+i))
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, r.Instance().String())
	}
	w, err := c.Watch(ctx, "shutdown")
	if err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "three instances", hasIDs(true, "s0", "s1", "s2"))
	// Taken here, so that what the server started meanwhile is not counted.
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, h.LeakOptions...)
	heal := outage(t)
	defer heal()

	sctx, cancel := context.WithTimeout(context.Background(), shutdownDeadline)
	defer cancel()
	err = shutdownOrHang(t, h.Name, func() error { return c.Shutdown(sctx) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s: Shutdown during an outage = %v, want an error wrapping context.DeadlineExceeded", h.Name, err)
	}
	for _, n := range names {
		if err == nil || !strings.Contains(err.Error(), n) {
			t.Errorf("%s: Shutdown's error does not name %s: %v", h.Name, n, err)
		}
	}
	if n := hooks.Live(c); n != 0 {
		t.Errorf("%s: %d goroutines of the client still run after Shutdown returned", h.Name, n)
	}
	if _, err := w.Next(ctx); err == nil {
		t.Errorf("%s: watcher Next after Shutdown succeeded", h.Name)
	}
	if err2 := c.Close(); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("%s: Close after Shutdown = %v, want Shutdown's result", h.Name, err2)
	}
	heal()
	h.eventually(t, "no goroutine left after Shutdown", func() error {
		return goleak.Find(opts...)
	})
}
