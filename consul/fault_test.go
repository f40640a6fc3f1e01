package consul_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	"go.uber.org/goleak"
)

// states records a session's states.
type states struct {
	mu  sync.Mutex
	all []registry.SessionState
}

func (s *states) add(st registry.SessionState) { s.mu.Lock(); s.all = append(s.all, st); s.mu.Unlock() }

func (s *states) get() []registry.SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.all)
}

// nextUntil reads snapshots until ok accepts one or timeout passes.
func nextUntil(t testing.TB, w registry.Watcher, timeout time.Duration, what string, ok func(registry.Snapshot) error) registry.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := errors.New("no snapshot")
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("%s: Next: %v (last mismatch: %v)", what, err, last)
		}
		if last = ok(s); last == nil {
			return s
		}
	}
}

// faultUntilStale starts fault (s.proxy.Cut or Blackhole) and waits, at most
// timeout, until w publishes a Stale snapshot. It returns heal, which ends the
// fault once (later calls do nothing): defer it, and call it where the test heals.
// The fault is healed if the wait fails.
func faultUntilStale(t testing.TB, s *server, fault func(), w registry.Watcher, timeout time.Duration, what string) (heal func()) {
	t.Helper()
	fault()
	heal = sync.OnceFunc(s.proxy.Heal)
	stale := false
	defer func() {
		if !stale {
			heal() // t.Fatal ends the test through this defer
		}
	}()
	nextUntil(t, w, timeout, what, func(snap registry.Snapshot) error {
		if !snap.Stale {
			return errors.New("not stale")
		}
		return nil
	})
	stale = true
	return heal
}

// faultSetup registers three instances through a, watches them through b and binds
// an ephemeral key to a session of a.
type faultSetup struct {
	a, b   *registry.Client
	regs   []registry.Registration
	w      registry.Watcher
	sess   *registry.Session
	states *states
	// stopStates stops following sess's states.
	stopStates func()
}

var faultIDs = []string{"f1", "f2", "f3"}

func setupFault(t *testing.T, s *server, ns string) *faultSetup {
	ctx := ctxT(t, time.Minute)
	f := &faultSetup{a: s.open(t, ns, "session_ttl=10s"), b: s.open(t, ns, ""), states: &states{}}
	for i, id := range faultIDs {
		r, err := f.a.Register(ctx, registry.Instance{Service: "svc", ID: id, Host: "127.0.0.1", Port: 7400 + i})
		if err != nil {
			t.Fatal(err)
		}
		f.regs = append(f.regs, r)
	}
	w, err := f.b.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	f.w = w
	nextUntil(t, w, 30*time.Second, "all registered", func(s registry.Snapshot) error {
		if !slices.Equal(ids(s.Instances), faultIDs) {
			return fmt.Errorf("got %v", ids(s.Instances))
		}
		return nil
	})
	sess, err := f.a.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.sess = sess
	f.stopStates = registrytest.Follow(sess, f.states.add)
	if _, err := f.a.Store().Create(ctx, "/eph/a", []byte("x"), registry.Ephemeral(sess)); err != nil {
		t.Fatal(err)
	}
	return f
}

// recovered checks what must hold after any fault: every registration is back,
// the agent has all instances passing, the watch view equals the agent's, the old
// session is lost with its key gone and a new session works.
func (f *faultSetup) recovered(t *testing.T, s *server, ns string) {
	ctx := ctxT(t, time.Minute)
	testenv.Eventually(t, 30*time.Second, "registrations back on the agent", func() error {
		for _, r := range f.regs {
			if st := r.State(); st != registry.Registered {
				return fmt.Errorf("%s: %v (%v)", r.Instance().ID, st, r.Err())
			}
		}
		if got := s.agentView(t, ns+"/svc"); !slices.Equal(got, faultIDs) {
			return fmt.Errorf("agent has %v passing", got)
		}
		return nil
	})
	last := nextUntil(t, f.w, 30*time.Second, "watch caught up", func(snap registry.Snapshot) error {
		if snap.Stale || !slices.Equal(ids(snap.Instances), faultIDs) {
			return fmt.Errorf("got %v stale=%v", ids(snap.Instances), snap.Stale)
		}
		return nil
	})
	if got := s.agentView(t, ns+"/svc"); !slices.Equal(got, ids(last.Instances)) {
		t.Errorf("agent view %v != watch view %v", got, ids(last.Instances))
	}
	select {
	case <-f.sess.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("session not lost; states %v", f.states.get())
	}
	if !errors.Is(f.sess.Err(), registry.ErrSessionLost) {
		t.Errorf("session Err = %v, want ErrSessionLost", f.sess.Err())
	}
	testenv.Eventually(t, 30*time.Second, "ephemeral key gone", func() error {
		kv, _, err := s.admin.KV().Get(ns+"/kv/eph/a", nil)
		if err != nil {
			return err
		}
		if kv != nil {
			return fmt.Errorf("still there, session %s", kv.Session)
		}
		return nil
	})
	s2, err := f.a.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Store().Create(ctx, "/eph/a", []byte("y"), registry.Ephemeral(s2)); err != nil {
		t.Fatalf("re-create the ephemeral key with a new session: %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}

func (f *faultSetup) close(t *testing.T) {
	f.stopStates()
	f.w.Close()
	if err := f.a.Close(); err != nil {
		t.Error(err)
	}
	if err := f.b.Close(); err != nil {
		t.Error(err)
	}
}

// TestAgentRestart kills the dev agent, which comes back with no state at all:
// registrations come back by themselves, the watch view equals the agent's, the
// store session is lost and no goroutine leaks.
func TestAgentRestart(t *testing.T) {
	s := startServer(t)
	leak := goleak.IgnoreCurrent()
	f := setupFault(t, s, "restart")
	changed := make([]<-chan struct{}, len(f.regs))
	for i, r := range f.regs {
		changed[i] = r.Changed()
	}
	s.srv.Restart(t)
	// Dev mode lost the registrations: each must notice (leave Registered) before
	// it is back. Reading the agent instead would race with the re-registration.
	for i, ch := range changed {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never noticed that the restarted agent lost it", f.regs[i].Instance().ID)
		}
	}
	f.recovered(t, s, "restart")
	testenv.Eventually(t, 10*time.Second, "listener saw lost", func() error {
		if st := f.states.get(); !slices.Contains(st, registry.StateLost) {
			return fmt.Errorf("states %v", st)
		}
		return nil
	})
	f.close(t)
	goleak.VerifyNone(t, s.leakOpts(leak)...)
}

// TestCutLongerThanSessionTTL cuts every connection of the clients through the fault
// proxy until the session is lost (10s TTL) and the agent has marked every instance
// critical (4s check TTL), then heals.
func TestCutLongerThanSessionTTL(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	leak := goleak.IgnoreCurrent()
	f := setupFault(t, s, "cut")
	heal := faultUntilStale(t, s, s.proxy.Cut, f.w, 30*time.Second, "stale during the cut")
	defer heal()
	testenv.Eventually(t, 30*time.Second, "instances critical on the agent", func() error {
		if got := s.agentView(t, "cut/svc"); len(got) > 0 {
			return fmt.Errorf("still passing: %v", got)
		}
		return nil
	})
	select {
	case <-f.sess.Done():
	case <-time.After(40 * time.Second):
		t.Fatalf("session not lost during the cut; states %v", f.states.get())
	}
	testenv.Eventually(t, 10*time.Second, "listener saw suspended then lost", func() error {
		if st := f.states.get(); !slices.Equal(st, []registry.SessionState{registry.StateSuspended, registry.StateLost}) {
			return fmt.Errorf("states %v", st)
		}
		return nil
	})
	heal()
	f.recovered(t, s, "cut")
	f.close(t)
	goleak.VerifyNone(t, s.leakOpts(leak)...)
}

// TestDeadProcessDisappears registers and closes the client without deregistering,
// as a crashed process would: the agent removes the instance once its check has been
// critical for deregister_after, at least one minute; Consul reaps every 30s, so
// the test mostly waits: it runs in parallel with the other waiting fault
// test.
func TestDeadProcessDisappears(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ctx := ctxT(t, 3*time.Minute)
	c := s.open(t, "dead", "check_ttl=1s&deregister_after=1m")
	if _, err := c.Conn().Put(ctx, registry.Instance{Service: "svc", ID: "d1", Host: "127.0.0.1", Port: 7500, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	if !mustServices(t, s)["dead/svc@d1"] {
		t.Fatal("not registered")
	}
	if err := c.Close(); err != nil { // abandons the lease: nobody passes the check any more
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, "agent deregistered the dead instance", func() error {
		if mustServices(t, s)["dead/svc@d1"] {
			return errors.New("still registered")
		}
		return nil
	})
}

func mustServices(t testing.TB, s *server) map[string]bool {
	t.Helper()
	svcs, err := s.admin.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for id := range svcs {
		out[id] = true
	}
	return out
}

// TestBlackhole drops the clients' connections and lets new ones hang without a
// byte (a partition, not a refusal): the watch must turn stale (its re-lists and
// re-armed queries hang until their deadlines) rather than stay silent, and catch up
// after the heal.
func TestBlackhole(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 2*time.Minute)
	a, b := s.open(t, "bh", ""), s.open(t, "bh", "wait=2s")
	defer a.Close()
	defer b.Close()
	if _, err := a.Register(ctx, registry.Instance{Service: "svc", ID: "b1", Host: "127.0.0.1", Port: 7900}); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextUntil(t, w, 30*time.Second, "registered", func(s registry.Snapshot) error {
		if !slices.Equal(ids(s.Instances), []string{"b1"}) {
			return fmt.Errorf("got %v", ids(s.Instances))
		}
		return nil
	})
	heal := faultUntilStale(t, s, s.proxy.Blackhole, w, 30*time.Second, "stale during the partition")
	defer heal()
	heal()
	if _, err := a.Register(ctx, registry.Instance{Service: "svc", ID: "b2", Host: "127.0.0.1", Port: 7901}); err != nil {
		t.Fatal(err)
	}
	nextUntil(t, w, 30*time.Second, "caught up after the heal", func(s registry.Snapshot) error {
		if s.Stale || !slices.Equal(ids(s.Instances), []string{"b1", "b2"}) {
			return fmt.Errorf("got %v stale=%v", ids(s.Instances), s.Stale)
		}
		return nil
	})
}

// TestBlackholeStaleWithinBound: with the default wait (30s) a partitioned watch's
// blocking query hangs until its deadline (wait + wait/16 + 5s); the leader probe,
// whose answers stop too, breaks it after two failed probes, so the view is marked
// stale within consul.StaleBound instead. The old driver left it unmarked for
// about 37s.
func TestBlackholeStaleWithinBound(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 2*time.Minute)
	c := s.open(t, "bhb", "wait=30s")
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "b1", Host: "127.0.0.1", Port: 7900}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextUntil(t, w, 30*time.Second, "registered", func(s registry.Snapshot) error {
		if !slices.Equal(ids(s.Instances), []string{"b1"}) {
			return fmt.Errorf("got %v", ids(s.Instances))
		}
		return nil
	})
	s.proxy.Blackhole()
	defer s.proxy.Heal()
	start := time.Now()
	// A deadline well inside the blocking query's own (about 37s).
	nextUntil(t, w, 20*time.Second, "stale during the partition", func(s registry.Snapshot) error {
		if !s.Stale {
			return errors.New("not stale")
		}
		if !errors.Is(s.Err, registry.ErrUnavailable) {
			return fmt.Errorf("stale with %v, want ErrUnavailable", s.Err)
		}
		return nil
	})
	t.Logf("marked stale %v into the partition", time.Since(start).Round(10*time.Millisecond))
	if err := c.Health(); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Health during the partition = %v, want ErrUnavailable", err)
	}
}

// TestWatchWakesWhenTheAgentIsBack: a watch broken by a partition is re-armed as
// soon as the Conn's leader probe finds the agent again (Health turns nil and
// HealthChanged fires), not after the retry backoff, here at least 30s (60s
// with 50% jitter). The deadline is a liveness bound well inside the backoff, not
// a timing measurement.
func TestWatchWakesWhenTheAgentIsBack(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 2*time.Minute)
	c := s.open(t, "wake", "wait=2s", registry.WithRetryBackoff(60*time.Second, 120*time.Second))
	defer c.Close()
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextUntil(t, w, 30*time.Second, "first snapshot", func(s registry.Snapshot) error {
		if s.Stale {
			return errors.New("stale")
		}
		return nil
	})
	heal := faultUntilStale(t, s, s.proxy.Blackhole, w, 20*time.Second, "stale during the partition")
	defer heal()
	heal()
	nextUntil(t, w, 15*time.Second, "fresh again after the heal, before the backoff's end", func(s registry.Snapshot) error {
		if s.Stale {
			return fmt.Errorf("still stale: %v", s.Err)
		}
		return nil
	})
}
