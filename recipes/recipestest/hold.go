package recipestest

import (
	"context"
	"errors"
	"testing"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

// testHoldEndsWithSession: once a session reports its end, its Holds report it
// too, at once, not when their watcher gets to run: a Mutex's Hold after
// Session.Close, a Latch's IsLeader and Await after its Client's Close, and a
// Hold whose session the backend expired as soon as the session says so.
func (s *suite) testHoldEndsWithSession(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 3)
	for i := range 20 {
		c := s.open(t, ns)
		sess := s.session(t, c)
		m := s.mutex(t, c, sess, "/holds/closed")
		h, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Close(); err != nil {
			t.Fatal(err)
		}
		if err := h.Err(); !errors.Is(err, registry.ErrClosed) {
			t.Fatalf("round %d: Hold.Err right after Session.Close = %v, want ErrClosed", i, err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}

		lc := s.open(t, ns)
		l, err := leader.NewLatch(lc, "/holds/latch", recipesTTL(s))
		if err != nil {
			t.Fatal(err)
		}
		term, err := l.Await(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := lc.Close(); err != nil {
			t.Fatal(err)
		}
		if l.IsLeader() || term.Err() == nil {
			t.Fatalf("round %d: the latch leads right after its Client's Close (term %v)", i, term)
		}
		if h, err := l.Await(ctx); !errors.Is(err, registry.ErrClosed) {
			t.Fatalf("round %d: Await after the Client's Close = %v, %v; want ErrClosed", i, h, err)
		}
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if s.h.ExpireSession == nil {
		return
	}
	c := s.open(t, ns)
	sess := s.session(t, c)
	m := s.mutex(t, c, sess, "/holds/expired")
	h, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.h.ExpireSession(t, c)
	s.eventually(t, "the session reports an end or a suspension", func() error {
		if st := sess.State(); st == registry.StateConnected || st == registry.StateReconnected {
			return errors.New(st.String())
		}
		return nil
	})
	if err := h.Err(); !errors.Is(err, registry.ErrSessionLost) && !errors.Is(err, recipes.ErrSuspended) {
		t.Errorf("Hold.Err once the session reads %s = %v, want ErrSessionLost or ErrSuspended", sess.State(), err)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Error(err)
	}
}

// testDoneContextCreatesNothing: a Lock, TryLock, RLock, Acquire or Campaign
// whose context is already done returns its error and writes nothing: the next
// node's sequence number follows the last as if the calls had not been made.
func (s *suite) testDoneContextCreatesNothing(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 3)
	c := s.open(t, ns)
	sess := s.session(t, c)
	m := s.mutex(t, c, sess, "/holds/done")
	seq := func() int64 {
		t.Helper()
		h, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		return queue.Sequence(h.Key())
	}
	a, b := seq(), seq()
	done, cancel := context.WithCancel(ctx)
	cancel()
	rw, err := lock.NewRWMutex(c, sess, "/holds/done")
	if err != nil {
		t.Fatal(err)
	}
	e, err := leader.NewElection(c, sess, "/holds/done")
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Lock":     func() error { _, err := m.Lock(done); return err },
		"TryLock":  func() error { _, err := m.TryLock(done); return err },
		"RLock":    func() error { _, err := rw.RLock(done); return err },
		"Campaign": func() error { _, err := e.Campaign(done, nil); return err },
	}
	for name, call := range calls {
		for range 10 {
			if err := call(); !errors.Is(err, context.Canceled) {
				t.Fatalf("%s with a done context = %v, want context.Canceled", name, err)
			}
		}
	}
	if c := seq(); c-b != b-a {
		t.Errorf("sequence numbers %d, %d, then %d after calls with a done context: they created nodes", a, b, c)
	}
}
