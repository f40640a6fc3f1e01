package registry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// scripted is a mem connection that offers events, which the test writes.
type scripted struct {
	*mem.Conn
	subs chan *scriptedSub
}

type scriptedSub struct {
	service   string
	fn        func(driver.Change)
	cancelled chan struct{}
}

func (s *scripted) SubscribeEvents(service string, fn func(driver.Change)) (func(), error) {
	sub := &scriptedSub{service: service, fn: fn, cancelled: make(chan struct{})}
	s.subs <- sub
	return func() { close(sub.cancelled) }, nil
}

func instIDs(s registry.Snapshot) []string {
	out := make([]string, len(s.Instances))
	for i, in := range s.Instances {
		out[i] = in.ID
	}
	return out
}

func evInst(id string) driver.Instance {
	return driver.Instance{Service: "ev", ID: id, Host: "127.0.0.1", Port: 80, Weight: 100, Healthy: true}
}

// The loop applies a driver's changes, marks the view stale when the
// subscription breaks, subscribes again after the backoff (on the Client's
// clock) and publishes the new listing as Resynced.
func TestEventWatcherAppliesChangesAndResubscribes(t *testing.T) {
	c0, _ := openMem(t)
	clock := clockwork.NewFakeClock()
	sc := &scripted{Conn: memConn(t, c0), subs: make(chan *scriptedSub, 4)}
	c := newClientOver(t, sc, registry.WithClock(clock), registry.WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	defer c.Close()
	ctx := ctxT(t)
	w, err := c.Watch(ctx, "ev")
	if err != nil {
		t.Fatal(err)
	}
	sub := <-sc.subs
	// Changes before the first listing are in it: ignored.
	sub.fn(driver.Change{Puts: []driver.Instance{evInst("zz")}})
	sub.fn(driver.Change{Reset: true, Listing: driver.Listing{Instances: []driver.Instance{evInst("b"), evInst("a")}}, ReadAt: time.Now()})
	s, err := w.Next(ctx)
	if err != nil || !slices.Equal(instIDs(s), []string{"a", "b"}) || s.Stale {
		t.Fatalf("first snapshot %v %v stale=%v", instIDs(s), err, s.Stale)
	}
	sub.fn(driver.Change{Puts: []driver.Instance{evInst("c")}, Deletes: []string{"a"}, Revision: 7})
	s, _ = w.Next(ctx)
	if !slices.Equal(instIDs(s), []string{"b", "c"}) || s.Revision != 7 {
		t.Fatalf("after a change %v rev %d", instIDs(s), s.Revision)
	}
	// A change that changes nothing publishes nothing; the next real one does.
	sub.fn(driver.Change{Puts: []driver.Instance{evInst("c")}, Deletes: []string{"nope"}})
	sub.fn(driver.Change{Deletes: []string{"b"}})
	s, _ = w.Next(ctx)
	if !slices.Equal(instIDs(s), []string{"c"}) {
		t.Fatalf("after a delete %v", instIDs(s))
	}
	sub.fn(driver.Change{Err: driver.ErrUnavailable})
	s, _ = w.Next(ctx)
	if !s.Stale || !slices.Equal(instIDs(s), []string{"c"}) {
		t.Fatalf("after Err: %v stale=%v", instIDs(s), s.Stale)
	}
	clock.Advance(time.Second) // the retry backoff
	sub2 := <-sc.subs
	sub2.fn(driver.Change{Reset: true, Listing: driver.Listing{Instances: []driver.Instance{evInst("c"), evInst("d")}}})
	s, _ = w.Next(ctx)
	if s.Stale || !s.Resynced || !slices.Equal(instIDs(s), []string{"c", "d"}) {
		t.Fatalf("after resubscribing: %v stale=%v resynced=%v", instIDs(s), s.Stale, s.Resynced)
	}
	w.Close()
	select {
	case <-sub2.cancelled:
	default:
		t.Fatal("the last watcher's Close did not cancel the subscription")
	}
	// The cancelled subscription's calls are ignored (the driver must not make
	// them; the loop survives one that does).
	sub2.fn(driver.Change{Deletes: []string{"c"}})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkApplyEvent measures what the loop allocates for one event (one
// instance changed) of a 1,000-instance service followed through a driver's
// events: apply, publish, and a watcher's Next of the shared snapshot.
func BenchmarkApplyEvent(b *testing.B) {
	base, err := registry.Open(b.Context(), "mem://bench-apply-event")
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	sc := &scripted{Conn: base.Conn().(*mem.Conn), subs: make(chan *scriptedSub, 1)}
	c := newClientOver(b, sc)
	defer c.Close()
	ctx := b.Context()
	w, err := c.WatchShared(ctx, "ev")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	sub := <-sc.subs
	list := make([]driver.Instance, 1000)
	for i := range list {
		list[i] = evInst(fmt.Sprintf("i%04d", i))
		list[i].Metadata = map[string]string{"version": "1.0"}
	}
	sub.fn(driver.Change{Reset: true, Listing: driver.Listing{Instances: list}, ReadAt: time.Now()})
	if _, err := w.Next(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		in := evInst(fmt.Sprintf("i%04d", i%1000))
		in.Port = 1000 + (i/1000)%2 // differs from the instance's previous value
		sub.fn(driver.Change{Puts: []driver.Instance{in}})
		if _, err := w.Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// countingSubs is a mem connection that counts event subscriptions and their
// cancellations.
type countingSubs struct {
	*mem.Conn
	mu              sync.Mutex
	subs, cancelled int
}

func (c *countingSubs) SubscribeEvents(service string, fn func(driver.Change)) (func(), error) {
	cancel, err := c.Conn.SubscribeEvents(service, fn)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.subs++
	c.mu.Unlock()
	return func() {
		cancel()
		c.mu.Lock()
		c.cancelled++
		c.mu.Unlock()
	}, nil
}

func (c *countingSubs) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs, c.cancelled
}

// Registering and deregistering a service again and again keeps the guard's
// subscription of the service (no new listing per cycle) until it has had no
// registration for the linger period on the Client's clock.
func TestGuardSubscriptionLingers(t *testing.T) {
	c0, _ := openMem(t)
	clock := clockwork.NewFakeClock()
	cs := &countingSubs{Conn: memConn(t, c0)}
	c := newClientOver(t, cs, registry.WithClock(clock))
	defer c.Close()
	ctx := ctxT(t)
	for i := range 3 {
		r, err := c.Register(ctx, registry.Instance{Service: "cyc", ID: "a", Host: "127.0.0.1", Port: 80 + i})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if subs, cancelled := cs.counts(); subs != 1 || cancelled != 0 {
		t.Fatalf("after 3 register/deregister cycles: %d subscriptions, %d cancelled; want 1 still open", subs, cancelled)
	}
	clock.Advance(11 * time.Second)
	testenv.Eventually(t, 10*time.Second, "the lingering subscription ends", func() error {
		if _, cancelled := cs.counts(); cancelled != 1 {
			return fmt.Errorf("%d cancelled", cancelled)
		}
		return nil
	})
}

// WatchFunc pushes every published snapshot in order, ends with ErrClosed when
// the Client closes, and calls nothing after stop.
func TestWatchFuncPushesInOrder(t *testing.T) {
	c, _ := openMem(t)
	ctx := ctxT(t)
	if _, err := c.WatchFunc(ctx, "wf", nil); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("nil fn: %v", err)
	}
	var mu sync.Mutex
	var seqs []uint64
	var sizes []int
	var errs []error
	fn := func(s registry.Snapshot, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		seqs, sizes = append(seqs, s.Seq), append(sizes, len(s.Instances))
	}
	stop, err := c.WatchFunc(ctx, "wf", fn)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Register(ctx, registry.Instance{Service: "wf", ID: fmt.Sprint("i", i), Host: "127.0.0.1", Port: 80}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "three instances pushed", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(sizes) == 0 || sizes[len(sizes)-1] != 3 {
			return fmt.Errorf("sizes %v", sizes)
		}
		return nil
	})
	mu.Lock()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("seqs out of order: %v", seqs)
		}
	}
	mu.Unlock()
	// A second subscription starts with the current snapshot.
	got := make(chan int, 10)
	stop2, err := c.WatchFunc(ctx, "wf", func(s registry.Snapshot, err error) {
		if err == nil {
			got <- len(s.Instances)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 3 {
		t.Fatalf("second subscription started with %d instances", n)
	}
	stop2()
	stop()
	mu.Lock()
	n := len(seqs)
	mu.Unlock()
	if _, err := c.Register(ctx, registry.Instance{Service: "wf", ID: "late", Host: "127.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	// A third subscription is still running when the Client closes.
	closed := make(chan error, 1)
	if _, err := c.WatchFunc(ctx, "wf", func(_ registry.Snapshot, err error) {
		if err != nil {
			closed <- err
		}
	}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-closed; !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("last call err %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seqs) != n || len(errs) != 0 {
		t.Fatalf("calls after stop: seqs %v errs %v", seqs[n:], errs)
	}
}

// While only a registration's guard follows a service, the changes the driver
// hands over are set aside instead of building a snapshot each (a burst of n
// registrations would cost n snapshots of up to n instances); a Watch that
// starts reads them all at once.
func TestGuardOnlyChangesAreFoldedForTheFirstWatch(t *testing.T) {
	c0, _ := openMem(t)
	sc := &scripted{Conn: memConn(t, c0), subs: make(chan *scriptedSub, 4)}
	c := newClientOver(t, sc)
	defer c.Close()
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Register(ctx, registry.Instance{Service: "ev", ID: "own", Host: "127.0.0.1", Port: 80})
		done <- err
	}()
	sub := <-sc.subs
	sub.fn(driver.Change{Reset: true})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		sub.fn(driver.Change{Puts: []driver.Instance{evInst(fmt.Sprintf("i%02d", i))}})
	}
	w, err := c.Watch(ctx, "ev")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Instances) != 20 || s.Seq > 2 {
		t.Fatalf("first snapshot: %d instances, Seq %d; want 20 instances in at most 2 snapshots", len(s.Instances), s.Seq)
	}
	sub.fn(driver.Change{Puts: []driver.Instance{evInst("late")}})
	if s, _ = w.Next(ctx); len(s.Instances) != 21 {
		t.Fatalf("with a Watch: %d instances, want 21", len(s.Instances))
	}
}

// A view the shared loop read before a Register of this Client returned (the
// registration's guard started the loop before its put, whose event is still on
// its way) is not what a reader sees first: Watch's first Next and WatchFunc's
// first call wait for the event, Instances reads the backend; after the request
// timeout the first Next takes the view as it is.
func TestFirstSnapshotHasOwnRegistration(t *testing.T) {
	c0, _ := openMem(t)
	clock := clockwork.NewFakeClock()
	sc := &scripted{Conn: memConn(t, c0), subs: make(chan *scriptedSub, 4)}
	c := newClientOver(t, sc, registry.WithClock(clock))
	defer c.Close()
	ctx := ctxT(t)
	before := time.Now()
	r, err := c.Register(ctx, evInst("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sub := <-sc.subs // the guard's subscription, started before the put
	sub.fn(driver.Change{Reset: true, Listing: driver.Listing{Instances: []driver.Instance{}}, ReadAt: before})

	w, err := c.Watch(ctx, "ev")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got, err := c.Instances(ctx, "ev"); err != nil || len(got) != 1 {
		t.Fatalf("Instances after Register returned: %v %v, want a", got, err)
	}
	var mu sync.Mutex
	var pushed [][]string
	stop, err := c.WatchFunc(ctx, "ev", func(s registry.Snapshot, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			pushed = append(pushed, instIDs(s))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	mu.Lock()
	if len(pushed) != 0 {
		t.Errorf("WatchFunc pushed %v before the put's event", pushed)
	}
	mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	s, err := w.Next(sctx)
	cancel()
	if err == nil {
		t.Fatalf("first Next returned %v, read before Register returned", instIDs(s))
	}
	sub.fn(driver.Change{Puts: []driver.Instance{evInst("a")}})
	if s, err := w.Next(ctx); err != nil || !slices.Equal(instIDs(s), []string{"a"}) {
		t.Fatalf("first Next %v %v, want a", instIDs(s), err)
	}
	mu.Lock()
	if fmt.Sprint(pushed) != "[[a]]" {
		t.Errorf("WatchFunc pushed %v, want [[a]]", pushed)
	}
	mu.Unlock()

	// An event that never comes: after the request timeout the view is taken.
	r2, err := c.Register(ctx, driver.Instance{Service: "ev2", ID: "b", Host: "127.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	sub2 := <-sc.subs
	sub2.fn(driver.Change{Reset: true, Listing: driver.Listing{Instances: []driver.Instance{}}, ReadAt: before})
	w2, err := c.Watch(ctx, "ev2")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	done := make(chan registry.Snapshot)
	go func() {
		s, _ := w2.Next(ctx)
		done <- s
	}()
	var s2 registry.Snapshot
	poll.Until(t, 10*time.Second, "first Next after the request timeout", func() error {
		clock.Advance(10 * time.Second) // the default request timeout, once Next waits for it
		select {
		case s2 = <-done:
			return nil
		default:
			return errors.New("still waiting")
		}
	})
	if len(s2.Instances) != 0 || s2.Seq == 0 {
		t.Fatalf("after the request timeout: %v seq %d, want the empty view", instIDs(s2), s2.Seq)
	}
}
