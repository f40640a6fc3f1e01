package registrytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
	"github.com/regkit/regkit/registry/internal/hooks"
	"go.uber.org/goleak"
)

// RunRegistry runs the registration and discovery conformance suite.
func RunRegistry(t *testing.T, h Harness) {
	if h.NewClient == nil {
		t.Fatal("registrytest: Harness.NewClient is required")
	}
	t.Run("Validation", func(t *testing.T) { testValidation(t, &h) })
	t.Run("RegisterLookupDeregister", func(t *testing.T) { testRegisterLookup(t, &h) })
	t.Run("WatchSeesChangesInOrder", func(t *testing.T) { testWatchChanges(t, &h) })
	t.Run("ConcurrentRegistrations", func(t *testing.T) { testConcurrent(t, &h) })
	t.Run("ReregisterAfterSessionLoss", func(t *testing.T) { testSessionLoss(t, &h) })
	t.Run("ReregisterAfterExternalDelete", func(t *testing.T) { testExternalDelete(t, &h) })
	t.Run("OneOwnerPerID", func(t *testing.T) { testOneOwner(t, &h) })
	t.Run("WatchSeesOwnRegistrations", func(t *testing.T) { testWatchSeesOwnRegistrations(t, &h) })
	t.Run("UpdateInPlace", func(t *testing.T) { testUpdate(t, &h) })
	t.Run("NamespacesAreIsolated", func(t *testing.T) { testNamespacesIsolated(t, &h) })
	t.Run("ForeignDataIgnored", func(t *testing.T) { testForeignData(t, &h) })
	t.Run("WatchSurvivesRestart", func(t *testing.T) { testRestart(t, &h) })
	t.Run("WatchSurvivesCut", func(t *testing.T) { testCut(t, &h) })
	t.Run("CloseReleasesEverything", func(t *testing.T) { testCloseLeaks(t, &h) })
	t.Run("FailedRegisterLeavesNothing", func(t *testing.T) { testFailedRegister(t, &h) })
	t.Run("OversizedRefusedBeforeIO", func(t *testing.T) { testOversized(t, &h) })
	t.Run("ConnectFailureIsUnavailable", func(t *testing.T) { testConnectFailure(t, &h) })
	t.Run("LazyConnectDuringOutage", func(t *testing.T) { testLazyConnect(t, &h) })
	t.Run("ContextErrors", func(t *testing.T) { testContextErrors(t, &h) })
	t.Run("ListAndWatchServices", func(t *testing.T) { testServices(t, &h) })
	t.Run("ViewEqualsServerAfterChurn", func(t *testing.T) { testViewAfterChurn(t, &h) })
	t.Run("ViewEqualsServerAfterCutAndSessionLoss", func(t *testing.T) { testViewAfterCutAndLoss(t, &h) })
	t.Run("ShutdownKeepsItsDeadline", func(t *testing.T) { testShutdownDeadline(t, &h) })
	t.Run("HealthCheckMarksUnhealthy", func(t *testing.T) { testHealthMark(t, &h) })
	t.Run("HealthCheckWithdraws", func(t *testing.T) { testHealthWithdraw(t, &h) })
	t.Run("HealthCheckSurvivesUpdate", func(t *testing.T) { testHealthUpdate(t, &h) })
}

func inst(service, id string, port int) driver.Instance {
	return driver.Instance{Service: service, ID: id, Host: "127.0.0.1", Port: port, Zone: "z1",
		Metadata: map[string]string{"version": "v1", "id": id}}
}

func testValidation(t *testing.T, h *Harness) {
	ns := namespace(t)
	c := h.open(t, ns)
	ctx := ctxT(t, h.timeout())
	cases := []struct {
		name  string
		in    driver.Instance
		field string
	}{
		{"empty service", driver.Instance{Host: "10.0.0.1", Port: 80}, "Service"},
		{"bad service chars", driver.Instance{Service: "a/b", Host: "10.0.0.1", Port: 80}, "Service"},
		{"port too big", driver.Instance{Service: "svc", Host: "10.0.0.1", Port: 70000}, "Port"},
		{"negative port", driver.Instance{Service: "svc", Host: "10.0.0.1", Port: -1}, "Port"},
		{"negative weight", driver.Instance{Service: "svc", Host: "10.0.0.1", Port: 80, Weight: -5}, "Weight"},
		{"id with slash", driver.Instance{Service: "svc", ID: "a/b", Host: "10.0.0.1", Port: 80}, "ID"},
		{"id .", driver.Instance{Service: "svc", ID: ".", Host: "10.0.0.1", Port: 80}, "ID"},
		{"id ..", driver.Instance{Service: "svc", ID: "..", Host: "10.0.0.1", Port: 80}, "ID"},
		{"id with @", driver.Instance{Service: "svc", ID: "a@b", Host: "10.0.0.1", Port: 80}, "ID"},
		{"id with C1 control", driver.Instance{Service: "svc", ID: "a\u0085b", Host: "10.0.0.1", Port: 80}, "ID"},
		{"id with private use", driver.Instance{Service: "svc", ID: "a\ue000b", Host: "10.0.0.1", Port: 80}, "ID"},
		{"id not UTF-8", driver.Instance{Service: "svc", ID: "a\xffb", Host: "10.0.0.1", Port: 80}, "ID"},
		{"empty metadata key", driver.Instance{Service: "svc", Host: "10.0.0.1", Port: 80, Metadata: map[string]string{"": "x"}}, "Metadata"},
		{"host neither IP nor DNS name", driver.Instance{Service: "svc", Host: "a..b!", Port: 80}, "Host"},
		{"bracketed IPv6 host", driver.Instance{Service: "svc", Host: "[::1]", Port: 80}, "Host"},
		{"metadata value not UTF-8", driver.Instance{Service: "svc", Host: "10.0.0.1", Port: 80, Metadata: map[string]string{"k": "\xff"}}, "Metadata"},
		{"metadata key not UTF-8", driver.Instance{Service: "svc", Host: "10.0.0.1", Port: 80, Metadata: map[string]string{"\xfe": "v"}}, "Metadata"},
	}
	for _, tc := range cases {
		_, err := c.Register(ctx, tc.in)
		var fe *driver.FieldError
		if !errors.Is(err, driver.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: Register(%+v) = %v, want a FieldError for %s", tc.name, tc.in, err, tc.field)
		}
	}
	for _, svc := range []string{"", "a b", "x/y"} {
		if _, err := c.Instances(ctx, svc); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("Instances(%q) = %v, want ErrInvalid", svc, err)
		}
		if _, err := c.Watch(ctx, svc); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("Watch(%q) = %v, want ErrInvalid", svc, err)
		}
	}
	// Nothing half-written: the service the bad calls named has no instance.
	got, err := c.Instances(ctx, "svc")
	if err != nil || len(got) != 0 {
		t.Errorf("after rejected registrations: Instances(svc) = %v, %v; want none", ids(got), err)
	}
}

func testRegisterLookup(t *testing.T, h *Harness) {
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, h.timeout())
	r1, err := a.Register(ctx, inst("orders", "", 8081))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	want1 := r1.Instance()
	wantID := "127.0.0.1:8081"
	if d, ok := a.Conn().(driver.IDDefaulter); ok {
		if id := d.DefaultID(inst("orders", "", 8081)); id != "" {
			wantID = id // a layout whose identity is more than the address
		}
	}
	if want1.ID != wantID || want1.Weight != driver.DefaultWeight {
		t.Errorf("defaults: ID=%q Weight=%d, want %s and %d", want1.ID, want1.Weight, wantID, driver.DefaultWeight)
	}
	in2 := inst("orders", "o2", 8082)
	in2.Weight = 7
	r2, err := a.Register(ctx, in2)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if r1.State() != registry.Registered {
		t.Errorf("State = %v, want registered", r1.State())
	}
	h.eventually(t, "both instances visible from another client", func() error {
		got, err := b.Instances(ctx, "orders")
		if err != nil {
			return err
		}
		if len(got) != 2 {
			return fmt.Errorf("got %v", ids(got))
		}
		for _, w := range []driver.Instance{r2.Instance(), want1} {
			i := slices.IndexFunc(got, func(g driver.Instance) bool { return g.ID == w.ID })
			if i < 0 {
				return fmt.Errorf("%s missing from %v", w.ID, ids(got))
			}
			g := got[i]
			if g.Host != w.Host || g.Port != w.Port || g.Weight != w.Weight || g.Zone != w.Zone || !g.Healthy ||
				g.Metadata["version"] != "v1" || g.Metadata["id"] != w.Metadata["id"] {
				return fmt.Errorf("got %+v, want %+v", g, w)
			}
		}
		if got[0].ID > got[1].ID {
			return fmt.Errorf("not sorted by ID: %v", ids(got))
		}
		return nil
	})
	if err := r1.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if err := r1.Deregister(ctx); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("second Deregister = %v, want ErrClosed", err)
	}
	if r1.State() != registry.Deregistered {
		t.Errorf("State after Deregister = %v", r1.State())
	}
	h.eventually(t, "deregistered instance gone", func() error {
		got, err := b.Instances(ctx, "orders")
		if err != nil {
			return err
		}
		if !slices.Equal(ids(got), []string{"o2"}) {
			return fmt.Errorf("got %v, want [o2]", ids(got))
		}
		return nil
	})
	got, err := b.Instances(ctx, "no-such-service")
	if err != nil || len(got) != 0 {
		t.Errorf("unknown service: %v, %v; want empty, nil", got, err)
	}
}

func testWatchChanges(t *testing.T, h *Harness) {
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 3*h.timeout())
	w, err := b.Watch(ctx, "pay")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := h.nextUntil(t, w, "initial empty snapshot", func(s registry.Snapshot) error { return nil })
	if len(first.Instances) != 0 || first.Stale || first.Service != "pay" {
		t.Fatalf("initial snapshot = %+v, want empty, fresh, service pay", first)
	}
	// A second watcher of the same service shares the loop and sees the same view.
	w2, err := b.Watch(ctx, "pay")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if _, err := w2.Next(ctx); err != nil {
		t.Fatal(err)
	}

	r1, err := a.Register(ctx, inst("pay", "p1", 9001))
	if err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "add p1", hasIDs(false, "p1"))
	// Update: the same ID with other metadata. A second Register of it from the
	// same Client is refused before any I/O.
	up := inst("pay", "p1", 9001)
	up.Metadata["version"] = "v2"
	if r, err := a.Register(ctx, up); !errors.Is(err, driver.ErrExists) {
		if r != nil {
			_ = r.Close()
		}
		t.Fatalf("second Register of p1 from the same Client = %v, want ErrExists", err)
	}
	if err := r1.Update(ctx, up); err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "update p1", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 || s.Instances[0].Metadata["version"] != "v2" {
			return fmt.Errorf("got %+v", s.Instances)
		}
		return nil
	})
	r2, err := a.Register(ctx, inst("pay", "p2", 9002))
	if err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "add p2", hasIDs(false, "p1", "p2"))
	if err := r2.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	last := h.nextUntil(t, w, "remove p2", hasIDs(false, "p1"))
	// A watcher that read nothing meanwhile skips to the newest snapshot at once.
	if s, err := w2.Next(ctx); err != nil || s.Seq < last.Seq || !slices.Equal(ids(s.Instances), []string{"p1"}) {
		t.Errorf("slow watcher's next read: seq %d %v (%v), want the newest, seq >= %d [p1]", s.Seq, ids(s.Instances), err, last.Seq)
	}
	// The final view equals what a fresh client reads from the server.
	fresh := h.open(t, ns)
	got, err := fresh.Instances(ctx, "pay")
	if err != nil || !slices.EqualFunc(got, last.Instances, driver.Instance.Equal) {
		t.Fatalf("server view %+v (%v) != watch view %+v", got, err, last.Instances)
	}
}

func testConcurrent(t *testing.T, h *Harness) {
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 3*h.timeout())
	w, err := b.Watch(ctx, "batch")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Register(ctx, inst("batch", fmt.Sprintf("i%02d", i), 10000+i))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Register: %v", err)
		}
	}
	h.nextUntil(t, w, "all concurrent registrations seen", func(s registry.Snapshot) error {
		if len(s.Instances) != n {
			return fmt.Errorf("%d instances", len(s.Instances))
		}
		if !slices.IsSortedFunc(s.Instances, func(a, b registry.Instance) int { return strings.Compare(a.ID, b.ID) }) {
			t.Errorf("snapshot not sorted by ID: %v", ids(s.Instances))
		}
		return nil
	})
}

func testSessionLoss(t *testing.T, h *Harness) {
	if h.ExpireSession == nil {
		t.Fatalf("%s: Harness.ExpireSession is nil: every backend must prove re-registration after session loss", h.Name)
	}
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 3*h.timeout())
	r, err := a.Register(ctx, inst("loss", "l1", 7001))
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "loss")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "registered", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 {
			return fmt.Errorf("got %v", ids(s.Instances))
		}
		return nil
	})
	changed := r.Changed()
	h.ExpireSession(t, a)
	// The registration must notice (leave Registered at least once) and come back.
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatalf("registration never noticed the session loss (state %v)", r.State())
	}
	h.eventually(t, "re-registered after session loss", func() error {
		if st := r.State(); st != registry.Registered {
			return fmt.Errorf("state %v (last error %v)", st, r.Err())
		}
		got, err := b.Conn().List(ctx, "loss")
		if err != nil {
			return err
		}
		if len(got.Instances) != 1 || got.Instances[0].ID != "l1" {
			return fmt.Errorf("server has %v", ids(got.Instances))
		}
		return nil
	})
	// The drop and the re-put may coalesce into no visible change, so read the
	// current view through a new watcher of the shared loop.
	w2, err := b.Watch(ctx, "loss")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	h.nextUntil(t, w2, "watch shows it back", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 || s.Stale {
			return fmt.Errorf("got %v stale=%v", ids(s.Instances), s.Stale)
		}
		return nil
	})
}

func testRestart(t *testing.T, h *Harness) {
	if h.Restart == nil {
		t.Skipf("%s: no Restart hook", h.Name)
	}
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 4*h.timeout())
	r, err := a.Register(ctx, inst("rs", "r1", 7101))
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "rs")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "before restart", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 {
			return fmt.Errorf("got %v", ids(s.Instances))
		}
		return nil
	})
	h.Restart(t)
	// A change made after the restart must reach the watcher.
	h.eventually(t, "register after restart", func() error {
		_, err := a.Register(ctx, inst("rs", "r2", 7102))
		return err
	})
	// If the restart showed as a gap (a Stale snapshot), the first fresh snapshot
	// after it must be Resynced.
	var sawStale, checked bool
	last := h.nextUntil(t, w, "watch after restart", func(s registry.Snapshot) error {
		switch {
		case s.Stale:
			sawStale = true
		case sawStale && !checked:
			checked = true
			if !s.Resynced {
				t.Errorf("first fresh snapshot after the restart's gap is not Resynced: %+v", s)
			}
		}
		return hasIDs(true, "r1", "r2")(s)
	})
	fresh := h.open(t, ns)
	h.eventually(t, "server view equals watch view", func() error {
		got, err := fresh.Instances(ctx, "rs")
		if err != nil {
			return err
		}
		if !slices.EqualFunc(got, last.Instances, driver.Instance.Equal) {
			return fmt.Errorf("server %v, watch %v", ids(got), ids(last.Instances))
		}
		return nil
	})
	// The registration converges to Registered (a second loss right after the
	// restart, such as a lease the restarted server expires, makes it
	// re-register once more first).
	h.eventually(t, "r1 registered again", func() error {
		if st := r.State(); st != registry.Registered {
			return fmt.Errorf("r1 state %v (err %v)", st, r.Err())
		}
		return nil
	})
}

func testCut(t *testing.T, h *Harness) {
	if h.Cut == nil {
		t.Skipf("%s: no Cut hook", h.Name)
	}
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 4*h.timeout())
	if _, err := a.Register(ctx, inst("cut", "c1", 7201)); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "cut")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "before cut", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 {
			return fmt.Errorf("got %v", ids(s.Instances))
		}
		return nil
	})
	// slow reads nothing from before the cut until the end.
	slow, err := b.Watch(ctx, "cut")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	h.nextUntil(t, slow, "slow watcher before cut", hasIDs(true, "c1"))
	heal := h.Cut(t)
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	stale := h.nextUntil(t, w, "stale during the cut", func(s registry.Snapshot) error {
		if !s.Stale {
			return fmt.Errorf("not stale yet")
		}
		return nil
	})
	if !slices.Equal(ids(stale.Instances), []string{"c1"}) || stale.Err == nil || stale.LastGood.IsZero() {
		t.Errorf("stale snapshot should keep the last good view with an error: %+v", stale)
	}
	heal()
	healed = true
	// The first fresh snapshot after the gap was re-listed and says so (also to
	// a watcher that read too slowly to see the re-listed one itself).
	back := h.nextUntil(t, w, "fresh after heal", func(s registry.Snapshot) error {
		if s.Stale {
			return fmt.Errorf("still stale")
		}
		return nil
	})
	if !back.Resynced {
		t.Errorf("first fresh snapshot after the cut is not Resynced: %+v", back)
	}
	if _, err := a.Register(ctx, inst("cut", "c2", 7202)); err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "caught up after heal", hasIDs(true, "c1", "c2"))
	// A watcher that slept through the gap, the re-list and later changes still
	// learns that there was a gap.
	s, err := slow.Next(ctx)
	if err != nil || s.Stale || !s.Resynced {
		t.Errorf("slow watcher's first read after the cut: %+v, %v; want fresh and Resynced", s, err)
	}
}

func testCloseLeaks(t *testing.T, h *Harness) {
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, h.LeakOptions...)
	ns := namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
	defer cancel()
	// Every goroutine of a Client lingers a moment after its work, before it is
	// joined: a Close that forgets one returns while it still counts.
	hooks.ExitDelay.Store(int64(20 * time.Millisecond))
	defer hooks.ExitDelay.Store(0)
	c := h.NewClient(t, ns)
	r, err := c.Register(ctx, inst("leak", "k1", 7301))
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "leak")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	// On a client of their own, so that nothing else runs there: a watcher
	// released by its context only ends its service's loop (and every goroutine of
	// its own) without a Close; Watcher.Close, like every Close, returns only once
	// they have ended (the watcher's own and, as it was the last watcher of its
	// service, the loop and its driver watch).
	wc := h.open(t, ns)
	wctx, wcancel := context.WithCancel(ctx)
	wo, err := wc.Watch(wctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wo.Next(ctx); err != nil {
		t.Fatal(err)
	}
	wcancel()
	h.eventually(t, "the watch released by its watch context ends its goroutines", func() error {
		if n := hooks.Live(wc); n != 0 {
			return fmt.Errorf("%d goroutines of the client still run", n)
		}
		return nil
	})
	w2, err := wc.Watch(ctx, "closed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if n := hooks.Live(wc); n != 0 {
		t.Errorf("%s: %d goroutines of the watcher still run after Watcher.Close returned", h.Name, n)
	}
	// The same for every other handle, each alone on the client.
	settled := func(what string) {
		t.Helper()
		if n := hooks.Live(wc); n != 0 {
			t.Errorf("%s: %d goroutines still run after %s returned", h.Name, n, what)
		}
	}
	r2, err := wc.Register(ctx, inst("alone", "a1", 7303))
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	settled("Registration.Close")
	if cp := wc.Capabilities(); cp.Store {
		tw, err := wc.Store().Watch(ctx, "/alone")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Next(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		settled("TreeWatcher.Close")
		if cp.Ephemeral && cp.Sessions {
			p, err := wc.Store().NewPersistentNode("/alone/node", []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.WaitForCreate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			settled("PersistentNode.Close")
		}
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
	// Every kind of goroutine the Client owns: a tree watch, a persistent node
	// (with its session), a session of the caller's, where the backend has them.
	if cp := c.Capabilities(); cp.Store {
		tw, err := c.Store().Watch(ctx, "/leak")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Next(ctx); err != nil {
			t.Fatal(err)
		}
		if cp.Ephemeral && cp.Sessions {
			p, err := c.Store().NewPersistentNode("/leak/node", []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.WaitForCreate(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := c.NewSession(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close returns only once every goroutine it owns has ended: checked at once,
	// without the retries of goleak below (which would also pass a Close that
	// merely cancels and lets its goroutines end a moment later), by the Client's
	// own count of the goroutines it started (every goroutine of package registry
	// is started through it).
	if n := hooks.Live(c); n != 0 {
		t.Errorf("%s: %d goroutines of the Client still run after Close returned", h.Name, n)
	}
	if _, err := w.Next(ctx); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
	if r.State() != registry.Deregistered {
		t.Errorf("registration state after Close = %v", r.State())
	}
	if _, err := c.Register(ctx, inst("leak", "k2", 7302)); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Register after Close = %v, want ErrClosed", err)
	}
	// wc (opened after opts' snapshot) is closed here, not by its cleanup, or
	// its connection's goroutines would count as leaked.
	if err := wc.Close(); err != nil {
		t.Errorf("%s: Close of the second client: %v", h.Name, err)
	}
	goleak.VerifyNone(t, opts...)
	// Close deregistered: another client sees nothing.
	other := h.open(t, ns)
	h.eventually(t, "closed client's instance removed", func() error {
		got, err := other.Instances(ctx, "leak")
		if err != nil {
			return err
		}
		if len(got) != 0 {
			return fmt.Errorf("still %v", ids(got))
		}
		return nil
	})
}

// testExternalDelete: an operator deletes the entry while its lease lives. The
// registration must notice and put itself back.
func testExternalDelete(t *testing.T, h *Harness) {
	if h.DeleteInstance == nil {
		t.Skipf("%s: no DeleteInstance hook", h.Name)
	}
	ns := namespace(t)
	a, c := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 4*h.timeout())
	r, err := a.Register(ctx, inst("dup", "d1", 7401))
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "dup")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "registered", hasIDs(true, "d1"))
	h.DeleteInstance(t, c, "dup", "d1")
	h.eventually(t, "first registration put back after someone deleted it", func() error {
		got, err := c.Conn().List(ctx, "dup")
		if err != nil {
			return err
		}
		if !slices.Equal(ids(got.Instances), []string{"d1"}) {
			return fmt.Errorf("server has %v (registration state %v, last error %v)", ids(got.Instances), r.State(), r.Err())
		}
		if r.State() != registry.Registered {
			return fmt.Errorf("state %v", r.State())
		}
		return nil
	})
	// The watchers' view ends on d1 too. The delete and the re-put may coalesce
	// into no visible change, so read the current view through a new watcher.
	w2, err := c.Watch(ctx, "dup")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	h.nextUntil(t, w2, "view shows it back", hasIDs(true, "d1"))
}

// testFailedRegister: Registers whose context ends before or while the first put
// is in flight (0-1 ms) mostly fail; whatever the server applied for them must not
// stay behind. Once things settle, every instance on the server belongs to a
// Registration that Register returned.
func testFailedRegister(t *testing.T, h *Harness) {
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	const n, parallel = 300, 8
	var (
		mu     sync.Mutex
		ok     = map[string]bool{}
		regs   []registry.Registration
		failed int
		wg     sync.WaitGroup
	)
	// A first registration that succeeds warms the connection (session, shared
	// lease, service path), so that the tiny deadlines end during the put itself.
	warm, err := a.Register(ctxT(t, h.timeout()), inst("ghost", "warm", 19999))
	if err != nil {
		t.Fatal(err)
	}
	regs = append(regs, warm)
	ok[warm.Instance().ID] = true
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// 0, 0.1, ..., 1 ms: before the put, while it is on the wire, after.
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%11)*100*time.Microsecond)
			defer cancel()
			r, err := a.Register(ctx, inst("ghost", fmt.Sprintf("g%03d", i), 20000+i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			regs = append(regs, r)
			ok[r.Instance().ID] = true
		}()
	}
	wg.Wait()
	t.Logf("%s: %d of %d Registers failed", h.Name, failed, n)
	want := make([]string, 0, len(ok))
	for id := range ok {
		want = append(want, id)
	}
	slices.Sort(want)
	// Settled: the server's view has equalled the successful registrations for a
	// while (a put applied late would show up in between).
	const settle = 2 * time.Second
	var equalSince time.Time
	ctx := ctxT(t, 2*h.timeout())
	h.eventually(t, "only successful registrations on the server", func() error {
		got, err := b.Conn().List(ctx, "ghost")
		if err != nil {
			equalSince = time.Time{}
			return err
		}
		have := ids(got.Instances)
		slices.Sort(have)
		if !slices.Equal(have, want) {
			equalSince = time.Time{}
			var ghosts []string
			for _, id := range have {
				if !ok[id] {
					ghosts = append(ghosts, id)
				}
			}
			return fmt.Errorf("%d instances on the server, %d registered; %d owned by no Registration: %v",
				len(have), len(want), len(ghosts), ghosts)
		}
		if equalSince.IsZero() {
			equalSince = time.Now()
		}
		if d := time.Since(equalSince); d < settle {
			return fmt.Errorf("equal for %v only", d)
		}
		return nil
	})
	for _, r := range regs {
		if err := r.Close(); err != nil {
			t.Errorf("Close %s: %v", r.Instance(), err)
		}
	}
}

// testNamespacesIsolated: names that only differ in where a separator falls (a
// namespace "n" with service "a-b", a namespace "n-a" with service "b"; IDs with the
// characters backends join names with) map to different backend names: each
// namespace sees exactly its own instances and deregistering one leaves the other.
func testNamespacesIsolated(t *testing.T, h *Harness) {
	ns := namespace(t)
	n1, n2 := h.open(t, ns), h.open(t, ns+"-a")
	ctx := ctxT(t, 2*h.timeout())
	r1, err := n1.Register(ctx, inst("a-b", "x-1:2.3", 7501))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := n2.Register(ctx, inst("b", "y-1:2.3", 7502))
	if err != nil {
		t.Fatal(err)
	}
	r3, err := n1.Register(ctx, inst("a", "b-x-1:2.3", 7503)) // n1/a + "b-x..." vs n1/a-b + "x..."
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	check := func(c *registry.Client, svc string, want ...string) error {
		got, err := c.Conn().List(ctx, svc)
		if err != nil {
			return err
		}
		g := ids(got.Instances)
		slices.Sort(g)
		if !slices.Equal(g, want) {
			return fmt.Errorf("%s lists %v, want %v", svc, g, want)
		}
		for _, in := range got.Instances {
			if in.Service != svc {
				return fmt.Errorf("%s lists an instance of service %q", svc, in.Service)
			}
		}
		return nil
	}
	h.eventually(t, "each namespace sees only its own instances", func() error {
		if err := check(n1, "a-b", "x-1:2.3"); err != nil {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		if err := check(n2, "b", "y-1:2.3"); err != nil {
			return fmt.Errorf("namespace %s-a: %w", ns, err)
		}
		if err := check(n1, "a", "b-x-1:2.3"); err != nil {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		return nil
	})
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	h.eventually(t, "deregistering in one namespace leaves the other", func() error {
		if err := check(n1, "a-b"); err != nil {
			return err
		}
		return check(n2, "b", "y-1:2.3")
	})
	if r2.State() != registry.Registered {
		t.Errorf("the other namespace's registration is %v (%v)", r2.State(), r2.Err())
	}
	_ = r2.Close()
}

// testForeignData: entries under a service that are not valid instances of the
// backend's layout (garbage, empty records, records naming another service or
// another ID, nested keys) are never listed, never break a watch, and a foreign
// record carrying a live instance's ID does not hide that instance's deletion
// from the registration guard.
func testForeignData(t *testing.T, h *Harness) {
	if h.WriteForeign == nil {
		t.Skipf("%s: no WriteForeign hook", h.Name)
	}
	ns := namespace(t)
	a, b, c := h.open(t, ns), h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 4*h.timeout())
	r, err := a.Register(ctx, inst("fsvc", "f1", 7601))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := c.Watch(ctx, "fsvc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "registered", hasIDs(true, "f1"))
	h.WriteForeign(t, c, "fsvc", "f1")
	// A change after the foreign writes: the watch still works and shows only ours.
	r2, err := a.Register(ctx, inst("fsvc", "f2", 7602))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	h.nextUntil(t, w, "foreign entries never listed", hasIDs(true, "f1", "f2"))
	got, err := c.Conn().List(ctx, "fsvc")
	if err != nil {
		t.Fatal(err)
	}
	if g := ids(got.Instances); !slices.Equal(sorted(g), []string{"f1", "f2"}) {
		t.Fatalf("List = %v, want [f1 f2]", g)
	}
	for _, in := range got.Instances {
		if err := in.Validate(); err != nil || in.Service != "fsvc" {
			t.Errorf("listed %+v: %v", in, err)
		}
	}
	// An operator deletes f1; the foreign record carrying ID f1 must not make the
	// guard believe it is there.
	if h.DeleteInstance == nil {
		t.Skipf("%s: no DeleteInstance hook", h.Name)
	}
	h.DeleteInstance(t, b, "fsvc", "f1")
	h.eventually(t, "f1 put back although a foreign record carries its ID", func() error {
		got, err := c.Conn().List(ctx, "fsvc")
		if err != nil {
			return err
		}
		if g := sorted(ids(got.Instances)); !slices.Equal(g, []string{"f1", "f2"}) {
			return fmt.Errorf("server has %v (registration %v, %v)", g, r.State(), r.Err())
		}
		return nil
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// convergeToServer waits until c's shared view of service (read through a new
// watcher, fresh) equals the server's listing, instance for instance.
func (h *Harness) convergeToServer(t *testing.T, c *registry.Client, service string) {
	t.Helper()
	ctx := ctxT(t, 2*h.timeout())
	h.eventually(t, "the view equals the server's", func() error {
		w, err := c.Watch(ctx, service)
		if err != nil {
			return err
		}
		defer w.Close()
		s, err := w.Next(ctx)
		if err != nil {
			return err
		}
		if s.Stale {
			return fmt.Errorf("view is stale: %v", s.Err)
		}
		l, err := c.Conn().List(ctx, service)
		if err != nil {
			return err
		}
		driver.SortInstances(l.Instances)
		if !slices.EqualFunc(s.Instances, l.Instances, driver.Instance.Equal) {
			return fmt.Errorf("view %v, server %v", ids(s.Instances), ids(l.Instances))
		}
		return nil
	})
}

// testViewAfterChurn: registrations and deregistrations from two clients, many
// at once, some of the same IDs; the watcher's final view (built from events
// where the driver hands them over) equals the server's.
func testViewAfterChurn(t *testing.T, h *Harness) {
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 3*h.timeout())
	w, err := b.Watch(ctx, "churn")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	var regs []registry.Registration
	for i := range 12 {
		c := a
		if i%3 == 0 {
			c = b
		}
		r, err := c.Register(ctx, inst("churn", fmt.Sprintf("n%02d", i), 7400+i))
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	h.convergeToServer(t, b, "churn")
	// Deregister a third, change another third's port (Update), concurrently.
	errs := make(chan error, len(regs))
	for i, r := range regs {
		go func() {
			switch i % 3 {
			case 0:
				errs <- r.Deregister(ctx)
			case 1:
				errs <- r.Update(ctx, inst("churn", fmt.Sprintf("n%02d", i), 7500+i))
			default:
				errs <- nil
			}
		}()
	}
	for range regs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	h.convergeToServer(t, b, "churn")
}

// testViewAfterCutAndLoss: while the watching client is cut off, the
// registering client's session is expired on the server (its instances go, then
// come back once it can reach the server again); after the heal the view
// equals the server's.
func testViewAfterCutAndLoss(t *testing.T, h *Harness) {
	if h.Cut == nil {
		t.Skipf("%s: no Cut hook", h.Name)
	}
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 4*h.timeout())
	for i := range 3 {
		if _, err := a.Register(ctx, inst("gap", fmt.Sprintf("g%d", i), 7600+i)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := b.Watch(ctx, "gap")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.convergeToServer(t, b, "gap")
	// Healed however the test ends: a cut left in place fails every later case.
	heal := sync.OnceFunc(h.Cut(t))
	defer heal()
	// The session goes at once (straight on the server), while the cut stops a
	// from noticing: a backend whose server expires instances by itself during a
	// long cut (Nacos) has none left for the hook to drop later.
	h.ExpireSession(t, a)
	h.nextUntil(t, w, "stale during the cut", func(s registry.Snapshot) error {
		if !s.Stale {
			return fmt.Errorf("not stale yet")
		}
		return nil
	})
	heal()
	if _, err := b.Register(ctx, inst("gap", "g9", 7609)); err != nil {
		t.Fatal(err)
	}
	h.convergeToServer(t, b, "gap")
	h.eventually(t, "every instance back", func() error {
		l, err := b.Conn().List(ctx, "gap")
		if err != nil {
			return err
		}
		driver.SortInstances(l.Instances)
		if got := ids(l.Instances); !slices.Equal(got, []string{"g0", "g1", "g2", "g9"}) {
			return fmt.Errorf("server has %v", got)
		}
		return nil
	})
	h.convergeToServer(t, b, "gap")
}

// testWatchSeesOwnRegistrations: a Watch opened after Register returned has the
// instance in its first snapshot (read your registrations), though the service's
// shared loop was started by the first registration's guard and may hold a view
// from before the later puts. Ten rounds of two registrations then a Watch.
func testWatchSeesOwnRegistrations(t *testing.T, h *Harness) {
	ns := namespace(t)
	c := h.open(t, ns)
	if c.Capabilities().GuardsRegistrations {
		t.Skipf("%s: the driver guards its registrations itself, and its server's lists may lag a register (see the registry package doc)", h.Name)
	}
	ctx := ctxT(t, h.timeout())
	for round := range 10 {
		svc := fmt.Sprintf("own%d", round)
		for i := range 2 {
			r, err := c.Register(ctx, inst(svc, fmt.Sprintf("i%d", i), 7500+i))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
		}
		w, err := c.Watch(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		s, err := w.Next(ctx)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(s.Instances); len(got) != 2 {
			t.Fatalf("%s: round %d: the first snapshot after two returned Registers lists %v", h.Name, round, got)
		}
	}
}
