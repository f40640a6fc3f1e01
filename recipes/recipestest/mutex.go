package recipestest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/barrier"
	"github.com/regkit/regkit/recipes/group"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

func (s *suite) testNotSupported(t *testing.T) {
	c := s.open(t, namespace(t))
	cp := c.Capabilities()
	if cp.Store && cp.Sessions && cp.Ephemeral && cp.Sequential {
		return
	}
	ctx := s.ctx(t, 1)
	if _, err := lock.NewMutex(c, nil, "/l"); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewMutex = %v, want ErrNotSupported", err)
	}
	if _, err := leader.NewElection(c, nil, "/e"); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewElection = %v, want ErrNotSupported", err)
	}
	if _, err := leader.NewLatch(c, "/e"); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewLatch = %v, want ErrNotSupported", err)
	}
	if _, err := leader.NewSelector(c, "/e", func(context.Context, *recipes.Hold) error { return nil }); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewSelector = %v, want ErrNotSupported", err)
	}
	if _, err := lock.NewMultiLock(c, nil, []string{"/l", "/m"}); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewMultiLock = %v, want ErrNotSupported", err)
	}
	if _, err := lock.NewRWMutex(c, nil, "/l"); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewRWMutex = %v, want ErrNotSupported", err)
	}
	if _, err := lock.NewSemaphore(c, nil, "/l", 2); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewSemaphore = %v, want ErrNotSupported", err)
	}
	if _, err := barrier.NewDouble(c, nil, "/b", 2); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewDouble = %v, want ErrNotSupported", err)
	}
	if _, err := group.NewMember(c, "/g", "m", nil); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewMember = %v, want ErrNotSupported", err)
	}
	if _, err := c.NewSession(ctx); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewSession = %v, want ErrNotSupported", err)
	}
}

func (s *suite) mutex(t testing.TB, c *registry.Client, sess *registry.Session, key string, opts ...recipes.Option) *lock.Mutex {
	t.Helper()
	m, err := lock.NewMutex(c, sess, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// testMutexExcludes: holders on separate clients never overlap.
func (s *suite) testMutexExcludes(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	const workers, each = 3, 8
	var inside, max atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		c := s.open(t, ns)
		m := s.mutex(t, c, s.session(t, c), "/locks/x")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				h, err := m.Lock(ctx)
				if err != nil {
					errs <- err
					return
				}
				n := inside.Add(1)
				if n > max.Load() {
					max.Store(n)
				}
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				if h.Err() != nil {
					errs <- fmt.Errorf("hold ended without a fault: %v", h.Err())
				}
				if err := m.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if max.Load() != 1 {
		t.Fatalf("%d holders at once", max.Load())
	}
	names, err := lockNodes(ctx, s.open(t, ns), "/locks/x")
	if err != nil || len(names) != 0 {
		t.Errorf("nodes left after all unlocked: %v, %v", names, err)
	}
}

// testMutexFair: waiters acquire in the order they queued, tokens grow, and the
// Hold says which node holds.
func (s *suite) testMutexFair(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	obs := s.open(t, ns)
	c0 := s.open(t, ns)
	m0 := s.mutex(t, c0, s.session(t, c0), "/locks/fair", recipes.WithValue([]byte("holder-0")))
	h0, err := m0.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := obs.Store().Get(ctx, h0.Key())
	if err != nil || n.CreateRevision != h0.Token() || string(n.Value) != "holder-0" {
		t.Fatalf("hold %v: node %+v, %v", h0, n, err)
	}
	const waiters = 3
	var mu sync.Mutex
	var order []int
	var tokens []int64
	var wg sync.WaitGroup
	ms := make([]*lock.Mutex, waiters)
	for i := range waiters {
		c := s.open(t, ns)
		ms[i] = s.mutex(t, c, s.session(t, c), "/locks/fair")
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := ms[i].Lock(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			tokens = append(tokens, h.Token())
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			if err := ms[i].Unlock(ctx); err != nil {
				t.Error(err)
			}
		}()
		// Queue one at a time: wait until waiter i's node is there.
		s.eventually(t, "waiter queued", func() error {
			names, err := lockNodes(ctx, obs, "/locks/fair")
			if err != nil || len(names) != i+2 {
				return fmt.Errorf("%d nodes, %v", len(names), err)
			}
			return nil
		})
	}
	if err := m0.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if h0.Err() == nil || !errors.Is(h0.Err(), recipes.ErrReleased) {
		t.Errorf("released hold's Err = %v, want ErrReleased", h0.Err())
	}
	wg.Wait()
	if !slices.Equal(order, []int{0, 1, 2}) {
		t.Errorf("acquisition order %v, want queue order [0 1 2]", order)
	}
	prev := h0.Token()
	for _, tok := range tokens {
		if tok <= prev {
			t.Errorf("tokens %d then %v: must grow", h0.Token(), tokens)
		}
		prev = tok
	}
}

func (s *suite) testMutexReentrant(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 2)
	a, b := s.open(t, ns), s.open(t, ns)
	ma := s.mutex(t, a, s.session(t, a), "/locks/re")
	mb := s.mutex(t, b, s.session(t, b), "/locks/re")
	h1, err := ma.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := ma.Lock(ctx)
	if err != nil || h2 != h1 {
		t.Fatalf("re-entrant Lock = %v, %v; want the same hold", h2, err)
	}
	if h, err := ma.TryLock(ctx); err != nil || h != h1 {
		t.Fatalf("re-entrant TryLock = %v, %v", h, err)
	}
	for range 2 {
		if err := ma.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if h1.Err() != nil {
			t.Fatalf("hold ended before the last Unlock: %v", h1.Err())
		}
		if _, err := mb.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
			t.Fatalf("other TryLock while held = %v, want ErrLocked", err)
		}
	}
	if err := ma.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.TryLock(ctx); err != nil {
		t.Fatalf("TryLock after the last Unlock: %v", err)
	}
	if err := ma.Unlock(ctx); err != nil {
		t.Errorf("extra Unlock = %v, want nil (idempotent)", err)
	}
}

func (s *suite) testMutexTryLock(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 2)
	a, b := s.open(t, ns), s.open(t, ns)
	sa := s.session(t, a)
	ma := s.mutex(t, a, sa, "/locks/try")
	// Two Mutexes on one session exclude each other (unlike etcd's).
	ma2 := s.mutex(t, a, sa, "/locks/try")
	mb := s.mutex(t, b, s.session(t, b), "/locks/try")
	if _, err := ma.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ma2.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("TryLock by a second Mutex on the same session = %v, want ErrLocked", err)
	}
	if _, err := mb.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("TryLock while held = %v, want ErrLocked", err)
	}
	names, err := lockNodes(ctx, b, "/locks/try")
	if err != nil || len(names) != 1 {
		t.Errorf("failed TryLocks left nodes: %v, %v", names, err)
	}
}

// testMutexCancel: a Lock whose context ends leaves no node behind, and the
// queue behind it moves on.
func (s *suite) testMutexCancel(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 2)
	a, b, c := s.open(t, ns), s.open(t, ns), s.open(t, ns)
	ma := s.mutex(t, a, s.session(t, a), "/locks/cancel")
	mb := s.mutex(t, b, s.session(t, b), "/locks/cancel")
	mc := s.mutex(t, c, s.session(t, c), "/locks/cancel")
	if _, err := ma.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := mb.Lock(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with a short context = %v, want DeadlineExceeded", err)
	}
	// c queues behind a's node only; b's is gone.
	got := make(chan error, 1)
	go func() {
		_, err := mc.Lock(ctx)
		got <- err
	}()
	s.eventually(t, "only the holder and the new waiter queued", func() error {
		names, err := lockNodes(ctx, a, "/locks/cancel")
		if err != nil || len(names) != 2 {
			return fmt.Errorf("nodes %v, %v", names, err)
		}
		return nil
	})
	// Cancelled by hand, mid-wait.
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := mb.Lock(cctx)
		done <- err
	}()
	s.eventually(t, "third waiter queued", func() error {
		names, err := lockNodes(ctx, a, "/locks/cancel")
		if err != nil || len(names) != 3 {
			return fmt.Errorf("nodes %v, %v", names, err)
		}
		return nil
	})
	ccancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock = %v", err)
	}
	s.eventually(t, "cancelled waiter's node gone", func() error {
		names, err := lockNodes(ctx, a, "/locks/cancel")
		if err != nil || len(names) != 2 {
			return fmt.Errorf("nodes %v, %v", names, err)
		}
		return nil
	})
	if err := ma.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter behind a cancelled one: %v", err)
	}
	if err := mc.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// testMutexHolderLost: the holder's session is lost; its Hold is cancelled with
// ErrSessionLost, another holder gets a larger token, and Unlock succeeds.
func (s *suite) testMutexHolderLost(t *testing.T) {
	if s.h.ExpireSession == nil {
		t.Fatalf("%s: Harness.ExpireSession is nil", s.h.Name)
	}
	ns := namespace(t)
	ctx := s.ctx(t, 3)
	a, b := s.open(t, ns), s.open(t, ns)
	ma := s.mutex(t, a, s.session(t, a), "/locks/lost")
	ha, err := ma.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.h.ExpireSession(t, a)
	s.ended(t, ha.Done(), "hold cancelled after its session expired")
	if !errors.Is(ha.Err(), registry.ErrSessionLost) && !errors.Is(ha.Err(), recipes.ErrSuspended) {
		t.Errorf("hold's cause = %v, want ErrSessionLost (or ErrSuspended first)", ha.Err())
	}
	if _, err := ma.Lock(ctx); err == nil {
		t.Error("re-entrant Lock on an ended hold succeeded")
	}
	mb := s.mutex(t, b, s.session(t, b), "/locks/lost")
	hb, err := mb.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hb.Token() <= ha.Token() {
		t.Errorf("next holder's token %d <= lost holder's %d", hb.Token(), ha.Token())
	}
	for range 2 {
		if err := ma.Unlock(ctx); err != nil {
			t.Errorf("Unlock after session loss = %v, want nil", err)
		}
	}
	if hb.Err() != nil {
		t.Errorf("new holder's hold ended: %v", hb.Err())
	}
	if _, err := ma.Lock(ctx); !errors.Is(err, registry.ErrSessionLost) {
		t.Errorf("Lock on a lost session = %v, want ErrSessionLost", err)
	}
}

// testMutexWaiterLost: a waiter whose session dies stops waiting at once with
// ErrSessionLost. Where the harness expires every session at once (etcd, Consul),
// the holder's node may go first and the waiter acquire before its own loss is
// known: then its Hold must end with ErrSessionLost instead.
func (s *suite) testMutexWaiterLost(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 3)
	a, b := s.open(t, ns), s.open(t, ns)
	ma := s.mutex(t, a, s.session(t, a), "/locks/wlost")
	if _, err := ma.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	mb := s.mutex(t, b, s.session(t, b), "/locks/wlost")
	type result struct {
		h   *recipes.Hold
		err error
	}
	got := make(chan result, 1)
	go func() {
		h, err := mb.Lock(ctx)
		got <- result{h, err}
	}()
	s.eventually(t, "waiter queued", func() error {
		names, err := lockNodes(ctx, a, "/locks/wlost")
		if err != nil || len(names) != 2 {
			return fmt.Errorf("nodes %v, %v", names, err)
		}
		return nil
	})
	s.h.ExpireSession(t, b)
	select {
	case r := <-got:
		if r.err == nil {
			s.ended(t, r.h.Done(), "hold of a waiter whose session expired as it acquired")
			// Under the default policy the hold ends at the first suspension, which
			// on a loaded machine may come before the loss is known.
			if err := r.h.Err(); !errors.Is(err, registry.ErrSessionLost) && !errors.Is(err, recipes.ErrSuspended) {
				t.Fatalf("hold of the waiter ended with %v, want ErrSessionLost (or ErrSuspended first)", err)
			}
			break
		}
		if !errors.Is(r.err, registry.ErrSessionLost) {
			t.Fatalf("waiter's Lock = %v, want ErrSessionLost", r.err)
		}
	case <-time.After(s.timeout()):
		t.Fatal("waiter still waiting after its session was lost")
	}
}

// testMutexSuspended: a cut suspends the session; a Hold under the default policy
// ends with ErrSuspended, one under LostOnly rides it out if the session survives.
func (s *suite) testMutexSuspended(t *testing.T) {
	if s.h.Cut == nil {
		t.Skipf("%s: no Cut hook", s.h.Name)
	}
	ns := namespace(t)
	ctx := s.ctx(t, 3)
	a := s.open(t, ns)
	sess := s.session(t, a)
	strict := s.mutex(t, a, sess, "/locks/strict")
	lenient := s.mutex(t, a, sess, "/locks/lenient", recipes.WithPolicy(recipes.LostOnly))
	hs, err := strict.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := lenient.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	heal := s.h.Cut(t)
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	s.ended(t, hs.Done(), "default-policy hold cancelled by a cut")
	heal()
	healed = true
	if !errors.Is(hs.Err(), recipes.ErrSuspended) && !errors.Is(hs.Err(), registry.ErrSessionLost) {
		t.Errorf("default-policy hold's cause = %v, want ErrSuspended", hs.Err())
	}
	s.eventually(t, "session back", func() error {
		if st := sess.State(); st != registry.StateReconnected && sess.Err() == nil {
			return fmt.Errorf("session %v", st)
		}
		return nil
	})
	if sess.Err() != nil {
		t.Logf("%s: the session did not survive the cut (%v); LostOnly not checked", s.h.Name, sess.Err())
		return
	}
	if hl.Err() != nil {
		t.Errorf("LostOnly hold ended by a cut its session survived: %v", hl.Err())
	}
	if err := strict.Unlock(ctx); err != nil {
		t.Error(err)
	}
	if err := lenient.Unlock(ctx); err != nil {
		t.Error(err)
	}
	if _, err := strict.Lock(ctx); err != nil {
		t.Errorf("Lock after the reconnect: %v", err)
	}
}

// lockMutex is a Mutex with the session it was made on.
type lockMutex struct {
	m    *lock.Mutex
	sess *registry.Session
}

func newLockMutex(h *holder, key string, opts ...recipes.Option) *lockMutex {
	m, err := lock.NewMutex(h.c, h.sess, key, opts...)
	if err != nil {
		panic(err) // NewMutex only fails for bad input or an unsupported backend
	}
	return &lockMutex{m: m, sess: h.sess}
}
