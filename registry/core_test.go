package registry_test

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"slices"
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

// openMem opens a Client on a fresh mem server named after the test.
func openMem(t *testing.T, opts ...registry.Option) (*registry.Client, *mem.Server) {
	t.Helper()
	name := "core-" + t.Name()
	c, err := registry.Open(context.Background(), "mem://"+name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, mem.Lookup(name)
}

// memConn returns a new connection to the mem server of c (closed at the end of
// the test), for a test driver to wrap.
func memConn(t *testing.T, c *registry.Client) *mem.Conn {
	t.Helper()
	name := "core-" + t.Name()
	c2, err := registry.Open(context.Background(), "mem://"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	return c2.Conn().(*mem.Conn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitChange waits for ch to close or fails the test.
func waitChange(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no state change", what)
	}
}

// The old Listen's stop returned while the callback still ran. Now there is no
// callback to stop: a reader owns its goroutine, and it reads every change through
// State and Changed.
func TestSessionReaderSeesSuspendedAndLost(t *testing.T) {
	c, srv := openMem(t)
	ctx := ctxT(t)
	s, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch := s.Changed()
	if st := s.State(); st != driver.StateConnected {
		t.Fatalf("new session: %v", st)
	}
	srv.Cut()
	waitChange(t, ch, "cut")
	ch = s.Changed()
	if st := s.State(); st != driver.StateSuspended {
		t.Fatalf("after a cut: %v, want suspended", st)
	}
	srv.Heal()
	waitChange(t, ch, "heal")
	// A suspension over before the reader looks is still seen: from a sure state,
	// any change means the session was unsure since.
	ch = s.Changed()
	srv.Cut()
	srv.Heal()
	waitChange(t, ch, "a suspension already over")
	if st := s.State(); st != driver.StateReconnected {
		t.Fatalf("after a short cut: %v", st)
	}
	ch = s.Changed()
	c.Conn().(*mem.Conn).ExpireSession()
	waitChange(t, ch, "expiry")
	if st := s.State(); st != driver.StateLost {
		t.Fatalf("after expiry: %v", st)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done open after Lost")
	}
	// Final: a Close afterwards does not turn Lost into Closed.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.State(); st != driver.StateLost {
		t.Fatalf("after Close of a lost session: %v", st)
	}
}

// Closing a session from the goroutine that follows its states deadlocked (Close
// waited for the listener that called it).
func TestSessionCloseFromItsReader(t *testing.T) {
	c, srv := openMem(t)
	ctx := ctxT(t)
	s, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		for {
			ch := s.Changed()
			if s.State() == driver.StateSuspended {
				closed <- s.Close()
				return
			}
			<-ch
		}
	}()
	srv.Cut()
	defer srv.Heal()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Close from the session's own reader deadlocked")
	}
	if st := s.State(); st != driver.StateClosed {
		t.Fatalf("state %v, want closed", st)
	}
}

// Listen racing Close misused the WaitGroup (-race reported it). Readers racing
// Close, and Close racing Close, are safe; every Close returns the first's result.
func TestSessionReadersRaceClose(t *testing.T) {
	c, _ := openMem(t)
	ctx := ctxT(t)
	for range 50 {
		s, err := c.NewSession(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- s.Close() }()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ch := s.Changed()
				if st := s.State(); st == driver.StateClosed {
					return
				}
				<-ch
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// The state history grew without bound on a session flapping between Suspended
// and Reconnected. A Session now keeps only its current state.
func TestSessionFlappingKeepsNoHistory(t *testing.T) {
	c, srv := openMem(t)
	s, err := c.NewSession(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	const flaps = 200000
	for range flaps {
		srv.Cut()
		srv.Heal()
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	// The old history kept 2×200000 states (at least 3 MB with slice growth).
	if grown := int64(ms.HeapAlloc) - int64(before); grown > 1<<20 {
		t.Fatalf("heap grew by %d bytes over %d flaps", grown, flaps)
	}
	if st := s.State(); st != driver.StateReconnected {
		t.Fatalf("state %v", st)
	}
}

// failingWatch is a driver whose Watch fails at once while List works, as behind a
// proxy that ends long-lived streams.
type failingWatch struct {
	*mem.Conn
	calls atomic.Int32
}

// SubscribeEvents refuses, so the Client follows the service with Watch and List.
func (f *failingWatch) SubscribeEvents(string, func(driver.Change)) (func(), error) {
	return nil, driver.ErrNotSupported
}

func (f *failingWatch) Watch(ctx context.Context, service string, notify func()) error {
	f.calls.Add(1)
	return errors.New("proxy ended the stream")
}

// countHandler counts log records.
type countHandler struct{ n *atomic.Int32 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// A watch that broke right after every re-arm was retried at the minimum backoff
// forever (30 watch calls, 59 snapshots and 30 warnings in 3s), because the backoff
// was reset after every successful list. Now the delay grows until the watch stays
// up for the backoff's maximum, and the streak is logged once.
func TestWatchBackoffGrowsWhileTheWatchKeepsBreaking(t *testing.T) {
	ctx := ctxT(t)
	base, _ := openMem(t)
	fw := &failingWatch{Conn: memConn(t, base)}
	fc := clockwork.NewFakeClock()
	var logs atomic.Int32
	c := newClientOver(t, fw, registry.WithClock(fc), registry.WithLogger(slog.New(countHandler{&logs})),
		registry.WithRetryBackoff(100*time.Millisecond, 10*time.Second))
	defer c.Close()
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Drive 3 seconds of the Client's clock in 100ms steps, each once the loop
	// sleeps on it.
	for range 30 {
		if err := fc.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fc.Advance(100 * time.Millisecond)
	}
	// With 1.5× growth and 50% jitter from 100ms, 3s hold at most 8 attempts.
	if n := fw.calls.Load(); n > 9 {
		t.Errorf("%d watch calls in 3s, want the backoff to grow (at most 9)", n)
	}
	if n := logs.Load(); n != 1 {
		t.Errorf("%d warnings for one streak of failures, want 1", n)
	}
	// And the view is still served, marked as the gap requires.
	var snaps int
	for {
		nctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := w.Next(nctx)
		cancel()
		if err != nil {
			break
		}
		snaps++
	}
	if snaps == 0 {
		t.Error("no snapshot")
	}
}

// Client.Instances returned the watch's shared slice: a caller sorting it or
// editing an instance changed what every other reader got. Watcher.Next's
// snapshots are copies too.
func TestInstancesAndSnapshotsAreCopies(t *testing.T) {
	c, _ := openMem(t)
	ctx := ctxT(t)
	for _, id := range []string{"a", "b"} {
		if _, err := c.Register(ctx, registry.Instance{Service: "s", ID: id, Host: "10.0.0.1", Port: 1, Metadata: map[string]string{"k": "v"}}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Watch(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var snap registry.Snapshot
	for len(snap.Instances) != 2 {
		if snap, err = w.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	w2, err := c.Watch(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	// Vandalise what the first watcher and Instances returned.
	slices.Reverse(snap.Instances)
	snap.Instances[0].Metadata["k"] = "changed"
	snap.Instances[1].Port = 9
	l, err := c.Instances(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(l)
	l[0].Metadata["k"] = "changed too"
	check := func(what string, got []registry.Instance) {
		t.Helper()
		if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" || got[0].Port != 1 ||
			got[0].Metadata["k"] != "v" || got[1].Metadata["k"] != "v" {
			t.Errorf("%s sees another caller's edits: %+v", what, got)
		}
	}
	l2, err := c.Instances(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	check("Instances", l2)
	s2, err := w2.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("another watcher", s2.Instances)
}

// holdingConn holds every Deregister until the connection is closed or a moment
// has passed, and reports a close that came while one was held.
type holdingConn struct {
	*mem.Conn
	held     chan struct{} // closed when a Deregister is held
	closed   chan struct{}
	once     sync.Once
	underDel atomic.Bool // Close came while a Deregister was held
	holding  atomic.Bool
}

func (h *holdingConn) Put(ctx context.Context, in registry.Instance) (driver.Lease, error) {
	l, err := h.Conn.Put(ctx, in)
	if err != nil {
		return nil, err
	}
	return &holdingLease{Lease: l, h: h}, nil
}

func (h *holdingConn) Close() error {
	if h.holding.Load() {
		h.underDel.Store(true)
	}
	h.once.Do(func() { close(h.closed) })
	return h.Conn.Close()
}

type holdingLease struct {
	driver.Lease
	h *holdingConn
}

func (l *holdingLease) Deregister(ctx context.Context) error {
	l.h.holding.Store(true)
	close(l.h.held)
	// A Client.Close that does not wait closes the connection now; one that waits
	// lets the hold run out.
	t := time.NewTimer(300 * time.Millisecond)
	defer t.Stop()
	select {
	case <-l.h.closed:
	case <-t.C:
	}
	l.h.holding.Store(false)
	return l.Lease.Deregister(ctx)
}

// Client.Close did not wait for a Registration.Close in flight and closed the
// connection under it: the delete failed and the instance stayed (on Consul and
// Nacos until its TTL).
func TestClientCloseWaitsForDeregisterInFlight(t *testing.T) {
	ctx := ctxT(t)
	other, _ := openMem(t)
	h := &holdingConn{Conn: memConn(t, other), held: make(chan struct{}), closed: make(chan struct{})}
	c := newClientOver(t, h)
	r, err := c.Register(ctx, registry.Instance{Service: "s", ID: "a", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	rerr := make(chan error, 1)
	go func() { rerr <- r.Close() }()
	<-h.held
	if err := c.Close(); err != nil {
		t.Errorf("Client.Close: %v", err)
	}
	if err := <-rerr; err != nil {
		t.Errorf("Registration.Close: %v", err)
	}
	if h.underDel.Load() {
		t.Error("the connection was closed under a Deregister in flight")
	}
	if l, err := other.Instances(ctx, "s"); err != nil || len(l) != 0 {
		t.Errorf("left on the backend: %v, %v", l, err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Registration.Close = %v, want the first's nil", err)
	}
}

// holdingPuts holds the first Put until the connection is closed or a moment has
// passed, and reports a Close that came while it was held.
type holdingPuts struct {
	*mem.Conn
	held     chan struct{} // closed when the first Put is held
	closed   chan struct{}
	once     sync.Once
	heldOnce sync.Once
	underPut atomic.Bool // Close came while the Put was held
	holding  atomic.Bool
}

func (h *holdingPuts) Put(ctx context.Context, in registry.Instance) (driver.Lease, error) {
	first := false
	h.heldOnce.Do(func() { first = true })
	if first {
		h.holding.Store(true)
		close(h.held)
		// A Client.Close that does not wait for the Register closes the
		// connection now; one that waits lets the hold run out.
		t := time.NewTimer(300 * time.Millisecond)
		select {
		case <-h.closed:
		case <-t.C:
		}
		t.Stop()
		h.holding.Store(false)
	}
	return h.Conn.Put(ctx, in)
}

func (h *holdingPuts) Close() error {
	if h.holding.Load() {
		h.underPut.Store(true)
	}
	h.once.Do(func() { close(h.closed) })
	return h.Conn.Close()
}

// Client.Close waits for a Register in flight (its put, then the removal of what
// the put may have left) before it closes the connection: without that wait it
// closed the connection under the put.
func TestClientCloseWaitsForRegisterInFlight(t *testing.T) {
	ctx := ctxT(t)
	other, _ := openMem(t)
	h := &holdingPuts{Conn: memConn(t, other), held: make(chan struct{}), closed: make(chan struct{})}
	c := newClientOver(t, h)
	rerr := make(chan error, 1)
	go func() {
		r, err := c.Register(ctx, registry.Instance{Service: "s", ID: "a", Host: "10.0.0.1", Port: 1})
		if err == nil {
			err = r.Close()
		}
		rerr <- err
	}()
	<-h.held
	if err := c.Close(); err != nil {
		t.Errorf("Client.Close: %v", err)
	}
	if h.underPut.Load() {
		t.Error("the connection was closed under a Register in flight")
	}
	if err := <-rerr; !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Register cut off by Client.Close = %v, want ErrClosed", err)
	}
	if l, err := other.Instances(ctx, "s"); err != nil || len(l) != 0 {
		t.Errorf("left on the backend: %v, %v", l, err)
	}
}

// reportingSessions hands the test the state callback of the sessions it opens,
// so that the test reports states as a driver would.
type reportingSessions struct {
	*mem.Conn
	onState chan func(driver.SessionState)
}

func (r reportingSessions) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	s, err := r.Conn.NewSession(ctx, spec)
	if err == nil {
		r.onState <- spec.OnState
	}
	return s, err
}

// A driver may report Connected (or Reconnected) while the session is already
// connected (a keep-alive answering, a second connection event): that is no
// change, so that a Changed channel taken in a sure state that is found closed
// always means the session was unsure since.
func TestSessionSureToSureIsNoChange(t *testing.T) {
	base, _ := openMem(t)
	rs := reportingSessions{Conn: memConn(t, base), onState: make(chan func(driver.SessionState), 1)}
	c := newClientOver(t, rs)
	defer c.Close()
	s, err := c.NewSession(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	report := <-rs.onState
	ch := s.Changed()
	report(driver.StateConnected)
	report(driver.StateReconnected)
	select {
	case <-ch:
		t.Fatalf("Changed closed by a report of a sure state while connected (state %v)", s.State())
	default:
	}
	report(driver.StateSuspended)
	waitChange(t, ch, "suspended")
	ch = s.Changed()
	report(driver.StateConnected)
	waitChange(t, ch, "connected again")
	if st := s.State(); st != driver.StateReconnected {
		t.Fatalf("connected after a suspension: %v, want reconnected", st)
	}
	ch = s.Changed()
	report(driver.StateConnected)
	select {
	case <-ch:
		t.Fatalf("Changed closed by Connected while reconnected (state %v)", s.State())
	default:
	}
}

// failingSessions is a driver whose session closes fail (the backend unreachable
// at that moment): the ephemeral key then stays until the session's TTL.
type failingSessions struct{ *mem.Conn }

func (f failingSessions) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	s, err := f.Conn.NewSession(ctx, spec)
	if err != nil {
		return nil, err
	}
	return failingClose{s}, nil
}

// Create hands mem its own session.
func (f failingSessions) Create(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (registry.Node, error) {
	if fc, ok := spec.Session.(failingClose); ok {
		spec.Session = fc.SessionConn
	}
	return f.Conn.Create(ctx, key, value, spec)
}

type failingClose struct{ driver.SessionConn }

var errUnreachable = errors.New("test: backend unreachable")

func (failingClose) Close(ctx context.Context) error { return errUnreachable }

// PersistentNode.Close returned nil when deleting the node failed.
func TestPersistentNodeCloseReportsAFailedDelete(t *testing.T) {
	ctx := ctxT(t)
	base, _ := openMem(t)
	c := newClientOver(t, failingSessions{memConn(t, base)})
	defer c.Close()
	p, err := c.Store().NewPersistentNode("/members/me", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitForCreate(ctx); err != nil {
		t.Fatal(err)
	}
	err = p.Close()
	if !errors.Is(err, errUnreachable) {
		t.Fatalf("Close = %v, want the failed delete", err)
	}
	if err2 := p.Close(); !errors.Is(err2, errUnreachable) {
		t.Errorf("second Close = %v, want the first's result", err2)
	}
}

// Every handle closes the same way: Close waits for its goroutines, is idempotent,
// and a Next blocked in a closed watcher returns ErrClosed.
func TestCloseShape(t *testing.T) {
	c, _ := openMem(t)
	ctx := ctxT(t)
	w, err := c.Watch(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	tw, err := c.Store().Watch(ctx, "/t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Next(ctx); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 2)
	go func() { _, err := w.Next(ctx); blocked <- err }()
	go func() { _, err := tw.Next(ctx); blocked <- err }()
	for _, cl := range []interface{ Close() error }{w, tw, w, tw} {
		if err := cl.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	for range 2 {
		if err := <-blocked; !errors.Is(err, registry.ErrClosed) {
			t.Errorf("blocked Next after Close = %v, want ErrClosed", err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Client.Close = %v", err)
	}
}

// A Register refused for permissions fails at once (doc.go's promise), instead of
// retrying until ctx ends.
type permDeniedConn struct {
	*mem.Conn
	puts atomic.Int32
}

func (r *permDeniedConn) Put(ctx context.Context, in registry.Instance) (driver.Lease, error) {
	r.puts.Add(1)
	return nil, registry.ErrPermission
}

func TestRegisterPermissionFailsAtOnce(t *testing.T) {
	base, _ := openMem(t)
	rc := &permDeniedConn{Conn: memConn(t, base)}
	c := newClientOver(t, rc, registry.WithRetryBackoff(time.Millisecond, time.Millisecond))
	defer c.Close()
	_, err := c.Register(ctxT(t), registry.Instance{Service: "s", Host: "10.0.0.1", Port: 1})
	if !errors.Is(err, registry.ErrPermission) || rc.puts.Load() != 1 {
		t.Fatalf("Register = %v after %d puts, want ErrPermission after one", err, rc.puts.Load())
	}
}

// Snapshot age runs on the Client's clock.
func TestSnapshotAgeOnTheClientsClock(t *testing.T) {
	fc := clockwork.NewFakeClock()
	c, _ := openMem(t, registry.WithClock(fc))
	ctx := ctxT(t)
	w, err := c.Watch(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.LastGood.Equal(fc.Now()) || s.Age() != 0 {
		t.Fatalf("LastGood %v age %v, want the fake clock's now", s.LastGood, s.Age())
	}
	fc.Advance(time.Hour)
	if s.Age() != time.Hour {
		t.Fatalf("age %v after advancing an hour", s.Age())
	}
	_ = poll.Interval
}

// newClientOver makes a Client over conn (a wrapped driver connection).
func newClientOver(t testing.TB, conn driver.Conn, opts ...registry.Option) *registry.Client {
	t.Helper()
	c, err := registry.NewClient(func(driver.Config) (driver.Conn, error) { return conn, nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewPersistentNode accepted a negative TTL and kept failing in the background
// (WaitForCreate waited out its context); it is refused before any I/O.
func TestPersistentNodeRefusesNegativeTTL(t *testing.T) {
	base, _ := openMem(t)
	c := newClientOver(t, memConn(t, base))
	defer c.Close()
	p, err := c.Store().NewPersistentNode("/members/me", []byte("x"), registry.WithTTL(-time.Second))
	var fe *registry.FieldError
	if !errors.As(err, &fe) || fe.Field != "TTL" || !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("NewPersistentNode(WithTTL(-1s)) = %v, %v; want a FieldError naming TTL", p, err)
	}
}

// listCounter counts the calls of Services.
type listCounter struct {
	*mem.Conn
	calls chan struct{}
}

func (l listCounter) Services(ctx context.Context) ([]string, error) {
	names, err := l.Conn.Services(ctx)
	select {
	case l.calls <- struct{}{}:
	default:
	}
	return names, err
}

// After ServicesWatcher.Close, Next returned a set the loop had published and
// no one had read yet, where a Watcher's Next returns ErrClosed.
func TestServicesWatcherNextAfterCloseIsErrClosed(t *testing.T) {
	ctx := ctxT(t)
	base, _ := openMem(t)
	lc := listCounter{Conn: memConn(t, base), calls: make(chan struct{}, 1)}
	c := newClientOver(t, lc)
	defer c.Close()
	w, err := c.WatchServices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-lc.calls // the first list
	if _, err := base.Register(ctx, registry.Instance{Service: "a", Host: "127.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	<-lc.calls // the re-list: the first set was published before it, and is unread
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := w.Next(ctx); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Next after Close = %+v, %v; want ErrClosed", s, err)
	}
}

// A PersistentNode deleted by someone comes back as soon as its watch reports
// the delete, not at its periodic recheck: the Client's fake clock never moves
// here, so the recheck never fires.
func TestPersistentNodeFollowsItsWatch(t *testing.T) {
	fc := clockwork.NewFakeClock()
	c, _ := openMem(t, registry.WithClock(fc))
	ctx := ctxT(t)
	p, err := c.Store().NewPersistentNode("/members/me", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.WaitForCreate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Store().Delete(ctx, "/members/me"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the node re-created after its delete", func() error {
		n, err := c.Store().Get(ctx, "/members/me")
		if err != nil {
			return err
		}
		if string(n.Value) != "x" {
			return errors.New("value " + string(n.Value))
		}
		return nil
	})
}
