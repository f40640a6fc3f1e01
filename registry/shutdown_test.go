package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/driver"
	"github.com/regkit/regkit/registry/internal/hooks"
)

// shutdownHang is how long past its deadline Shutdown may run before the test
// calls it hung: a liveness bound, not a performance one, far below the 30s of the
// old one-after-another deregistration of three instances.
const shutdownHang = 15 * time.Second

// Issue 14 item 3: during an outage, Close deregistered one registration after
// another with 10s each, so 3 registrations took 30s, past Kubernetes' grace
// period. Shutdown deregisters them concurrently under the caller's deadline and
// still releases everything when it gives up.
func TestShutdownDuringOutageKeepsItsDeadline(t *testing.T) {
	c, srv := openMem(t, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	ctx := ctxT(t)
	for i := range 3 {
		if _, err := c.Register(ctx, registry.Instance{Service: "shut", ID: fmt.Sprintf("i%d", i), Host: "10.0.0.1", Port: 8000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Watch(ctx, "shut")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv.Cut()
	defer srv.Heal()

	const deadline = 2 * time.Second
	sctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Shutdown(sctx) }()
	select {
	case err = <-done:
	case <-time.After(deadline + shutdownHang):
		t.Fatalf("Shutdown with a %v deadline had not returned %v after it", deadline, shutdownHang)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown during an outage: %v, want an error wrapping context.DeadlineExceeded", err)
	}
	for i := range 3 {
		if id := fmt.Sprintf("shut/i%d@", i); err == nil || !strings.Contains(err.Error(), id) {
			t.Errorf("Shutdown's error does not name %s: %v", id, err)
		}
	}
	if n := hooks.Live(c); n != 0 {
		t.Errorf("%d goroutines of the Client still running after Shutdown", n)
	}
	goleak.VerifyNone(t, goleak.IgnoreCurrent())
	if err2 := c.Close(); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("Close after Shutdown: %v, want Shutdown's result %v", err2, err)
	}
	if _, err := w.Next(ctx); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("watcher after Shutdown: %v, want ErrClosed", err)
	}
}

// Registration.Close and Client.Close may come in either order, each twice.
func TestRegistrationCloseThenClientClose(t *testing.T) { testCloseOrder(t, true) }

func TestClientCloseThenRegistrationClose(t *testing.T) { testCloseOrder(t, false) }

func testCloseOrder(t *testing.T, regFirst bool) {
	c, _ := openMem(t, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	c2, _ := openMem(t)
	ctx := ctxT(t)
	r, err := c.Register(ctx, registry.Instance{Service: "order", ID: "a", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	first, second := r.Close, c.Close
	if !regFirst {
		first, second = c.Close, r.Close
	}
	for i, f := range []func() error{first, second, first, second} {
		if err := f(); err != nil {
			t.Fatalf("close #%d: %v", i+1, err)
		}
	}
	if st := r.State(); st != registry.Deregistered {
		t.Fatalf("state %v", st)
	}
	if err := r.Deregister(ctx); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Deregister after both closes: %v, want ErrClosed", err)
	}
	if l, err := c2.Instances(ctx, "order"); err != nil || len(l) != 0 {
		t.Fatalf("after both closes: %v, %v; want none", l, err)
	}
	if n := hooks.Live(c); n != 0 {
		t.Fatalf("%d goroutines left", n)
	}
}

// barrierConn holds every Deregister until n of them are in flight at once (or
// its context ends), so that only a Shutdown that deregisters concurrently can
// finish them.
type barrierConn struct {
	*mem.Conn
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{} // closed when n Deregisters are in flight
}

func (b *barrierConn) Put(ctx context.Context, in registry.Instance) (driver.Lease, error) {
	l, err := b.Conn.Put(ctx, in)
	if err != nil {
		return nil, err
	}
	return &barrierLease{Lease: l, b: b}, nil
}

type barrierLease struct {
	driver.Lease
	b *barrierConn
}

func (l *barrierLease) Deregister(ctx context.Context) error {
	l.b.mu.Lock()
	if l.b.arrived++; l.b.arrived == l.b.n {
		close(l.b.all)
	}
	l.b.mu.Unlock()
	select {
	case <-l.b.all:
	case <-ctx.Done():
		return ctx.Err()
	}
	return l.Lease.Deregister(ctx)
}

// Issue 14 item 3: Close deregistered one registration after another, each with
// its own timeout. Shutdown deregisters them concurrently: here each Deregister
// is held until all three are in flight, which a one-after-another Shutdown never
// reaches (its first Deregister waits out the deadline).
func TestShutdownDeregistersConcurrently(t *testing.T) {
	ctx := ctxT(t)
	other, _ := openMem(t)
	b := &barrierConn{Conn: memConn(t, other), n: 3, all: make(chan struct{})}
	c := newClientOver(t, b, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	for i := range 3 {
		if _, err := c.Register(ctx, registry.Instance{Service: "shut", ID: fmt.Sprintf("i%d", i), Host: "10.0.0.1", Port: 8000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown = %v, want nil: its Deregisters did not run at once", err)
	}
	if l, err := other.Instances(ctx, "shut"); err != nil || len(l) != 0 {
		t.Fatalf("after Shutdown: %v, %v; want none", l, err)
	}
	if _, err := c.Register(ctx, registry.Instance{Service: "shut", Host: "10.0.0.1", Port: 1}); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Register after Shutdown: %v, want ErrClosed", err)
	}
}
