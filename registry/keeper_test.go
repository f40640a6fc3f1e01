package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// lostConn is a mem connection whose leases report Lost when the test says so
// while their instance stays listed, and whose re-puts (every Put after the
// first) wait until hold is closed.
type lostConn struct {
	*mem.Conn
	hold chan struct{}
	puts atomic.Int32

	mu     sync.Mutex
	leases []*lostLease
}

func (c *lostConn) Put(ctx context.Context, in registry.Instance) (driver.Lease, error) {
	if c.puts.Add(1) > 1 {
		select {
		case <-c.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l, err := c.Conn.Put(ctx, in)
	if err != nil {
		return nil, err
	}
	ll := &lostLease{Lease: l}
	c.mu.Lock()
	c.leases = append(c.leases, ll)
	c.mu.Unlock()
	return ll, nil
}

func (c *lostConn) lease(i int) *lostLease {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leases[i]
}

// lostLease is a mem lease whose Lost the test closes (sig); the mem lease's own
// is ignored.
type lostLease struct {
	driver.Lease
	sig driver.LostSignal
}

func (l *lostLease) Lost() <-chan struct{} { return l.sig.Lost() }
func (l *lostLease) Err() error            { return l.sig.Err() }

// A lease reporting Lost is acted on by itself: the registration goes
// Reregistering with the lease's error and puts the instance again, although
// the instance is still listed, so that the guard (which only notices an
// instance missing from the backend) has nothing to see. A keeper that ignored
// Lost was caught only by the OneOwnerPerID conformance case, after minutes.
func TestLostLeaseReregistersWhileTheInstanceIsListed(t *testing.T) {
	ctx := ctxT(t)
	base, _ := openMem(t)
	lc := &lostConn{Conn: memConn(t, base), hold: make(chan struct{})}
	c := newClientOver(t, lc, registry.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
	defer c.Close()
	r, err := c.Register(ctx, registry.Instance{Service: "s", ID: "a", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	changed := r.Changed()
	lc.lease(0).sig.Lose(fmt.Errorf("test: session expired: %w", registry.ErrSessionLost))
	waitChange(t, changed, "after the lease reported Lost")
	if st, err := r.State(), r.Err(); st != registry.Reregistering || !errors.Is(err, registry.ErrSessionLost) {
		t.Fatalf("after Lost: state %v, Err %v; want %v with an error matching ErrSessionLost", st, err, registry.Reregistering)
	}
	if l, err := base.Instances(ctx, "s"); err != nil || len(l) != 1 {
		t.Fatalf("the instance should still be listed (only Lost tells the keeper): %v, %v", l, err)
	}
	close(lc.hold)
	poll.Until(t, 10*time.Second, "re-put after Lost", func() error {
		if st := r.State(); st != registry.Registered {
			return fmt.Errorf("state %v", st)
		}
		if n := lc.puts.Load(); n < 2 {
			return fmt.Errorf("%d puts", n)
		}
		return nil
	})
}

// gateConn is a mem connection without driver events, so that the service's
// shared loop lists through it, and whose Watch passes on no change: the loop
// lists once when it starts and then only when the test calls relist. That
// first List reads the backend at once but answers only when gate is closed,
// and the first Put waits until it has read: its answer lags behind the put. It
// counts Lists.
type gateConn struct {
	driver.Conn // a *mem.Conn; embedding the interface hides driver.EventWatcher
	entered     chan struct{}
	gate        chan struct{}
	lists       atomic.Int32
	puts        atomic.Int32

	mu     sync.Mutex
	notify func()
}

func (g *gateConn) List(ctx context.Context, service string) (driver.Listing, error) {
	n := g.lists.Add(1)
	l, err := g.Conn.List(ctx, service)
	if n == 1 {
		close(g.entered)
		select {
		case <-g.gate:
		case <-ctx.Done():
			return driver.Listing{}, ctx.Err()
		}
	}
	return l, err
}

func (g *gateConn) Put(ctx context.Context, in registry.Instance) (driver.Lease, error) {
	if g.puts.Add(1) == 1 {
		select {
		case <-g.entered:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Conn.Put(ctx, in)
}

func (g *gateConn) Watch(ctx context.Context, service string, notify func()) error {
	g.mu.Lock()
	g.notify = notify
	g.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (g *gateConn) relist() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.notify != nil {
		g.notify()
	}
}

// A read of the service that started before a registration's put returned, and
// so does not show the instance, is no sign of a deletion: the guard counts
// absence only in reads stamped after the put, and does not even confirm with
// a read of its own. (Counted as a deletion, the lagging read cost a
// confirmation read per registration after every put; the confirmation hid it.)
func TestGuardIgnoresAReadOlderThanThePut(t *testing.T) {
	ctx := ctxT(t)
	base, _ := openMem(t)
	g := &gateConn{Conn: memConn(t, base), entered: make(chan struct{}), gate: make(chan struct{})}
	c := newClientOver(t, g, registry.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
	defer c.Close()
	r, err := c.Register(ctx, registry.Instance{Service: "s", ID: "a", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	close(g.gate) // the loop's first read answers, without the instance
	// The loop reads again only after it has handled the first answer.
	poll.Until(t, 10*time.Second, "the watch armed", func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.notify == nil {
			return errors.New("not yet")
		}
		return nil
	})
	g.relist()
	poll.Until(t, 10*time.Second, "the watch loop's second read", func() error {
		if n := g.lists.Load(); n < 2 {
			return fmt.Errorf("%d reads", n)
		}
		return nil
	})
	// Each Update is a round of the keeper's loop: a suspicion the lagging read
	// raised would have been taken up (and its confirmation read made) by now,
	// but for a chance of 2^-64.
	for i := range 64 {
		if err := r.Update(ctx, registry.Instance{Service: "s", ID: "a", Host: "10.0.0.1", Port: 1,
			Metadata: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.lists.Load(); n != 2 {
		t.Errorf("%d reads of the service, want 2 (the loop's): a read older than the put was taken for a deletion and confirmed", n)
	}
	if st := r.State(); st != registry.Registered {
		t.Errorf("state %v, want %v", st, registry.Registered)
	}
}

// treeConn is a mem connection whose tree watches pass on no change, and which
// counts Gets once they have read.
type treeConn struct {
	*mem.Conn
	gets atomic.Int32
}

func (c *treeConn) WatchTree(ctx context.Context, key string, notify func()) error {
	return c.Conn.WatchTree(ctx, key, func() {})
}

func (c *treeConn) Get(ctx context.Context, key string) (driver.Node, error) {
	n, err := c.Conn.Get(ctx, key)
	c.gets.Add(1)
	return n, err
}

// A PersistentNode re-reads its key every 5 seconds, so that a deletion no watch
// reported is repaired: with a tree watch that passes on nothing, the node comes
// back once the Client's clock has moved 5 seconds.
func TestPersistentNodeRecheckRepairsAnUnreportedDelete(t *testing.T) {
	ctx := ctxT(t)
	base, _ := openMem(t)
	tc := &treeConn{Conn: memConn(t, base)}
	fc := clockwork.NewFakeClock()
	c := newClientOver(t, tc, registry.WithClock(fc))
	defer c.Close()
	p, err := c.Store().NewPersistentNode("/members/me", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.WaitForCreate(ctx); err != nil {
		t.Fatal(err)
	}
	// The keeper reads the key twice: to create it, and once more for the tree
	// watch's first snapshot. After that it waits, and nothing but the recheck
	// wakes it.
	poll.Until(t, 10*time.Second, "the keeper's second read", func() error {
		if n := tc.gets.Load(); n < 2 {
			return fmt.Errorf("%d reads", n)
		}
		return nil
	})
	other := memConn(t, base)
	if err := other.Delete(ctx, "/members/me", driver.AnyVersion, false); err != nil {
		t.Fatal(err)
	}
	fc.Advance(5 * time.Second)
	poll.Until(t, 10*time.Second, "the node back after the recheck", func() error {
		_, err := other.Get(ctx, "/members/me")
		return err
	})
}
