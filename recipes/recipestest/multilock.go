package recipestest

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

func (s *suite) multiLock(t testing.TB, c *registry.Client, sess *registry.Session, keys ...string) *lock.MultiLock {
	t.Helper()
	m, err := lock.NewMultiLock(c, sess, keys)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// testMultiLockExcludes: MultiLocks whose key sets overlap, listed in opposite
// orders, and a plain Mutex on one of their keys never hold a key together, and
// never deadlock (every MultiLock takes its keys in sorted order). Each Hold is
// on its own key, in Keys order, with the CreateRevision of its node as token.
func (s *suite) testMultiLockExcludes(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 6)
	const each = 5
	sets := [][]string{{"/ml/a", "/ml/b"}, {"/ml/b", "/ml/a"}, {"/ml/c", "/ml/b"}, {"/ml/a"}}
	inside := map[string]*atomic.Int32{"/ml/a": {}, "/ml/b": {}, "/ml/c": {}}
	var maxInside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, len(sets))
	for _, keys := range sets {
		c := s.open(t, ns)
		sess := s.session(t, c)
		m := s.multiLock(t, c, sess, keys...)
		if want := slices.Sorted(slices.Values(keys)); !slices.Equal(m.Keys(), want) {
			t.Fatalf("Keys() = %v, want %v", m.Keys(), want)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				holds, err := m.Lock(ctx)
				if err != nil {
					errs <- fmt.Errorf("%v: Lock: %w", keys, err)
					return
				}
				for _, k := range m.Keys() {
					n := inside[k].Add(1)
					for {
						m := maxInside.Load()
						if n <= m || maxInside.CompareAndSwap(m, n) {
							break
						}
					}
				}
				if err := checkHolds(ctx, c, m.Keys(), holds); err != nil { // store round trips while inside
					errs <- err
				}
				for _, k := range m.Keys() {
					inside[k].Add(-1)
				}
				if err := m.Unlock(ctx); err != nil {
					errs <- fmt.Errorf("%v: Unlock: %w", keys, err)
					return
				}
				if m.Holds() != nil {
					errs <- fmt.Errorf("%v: Holds after Unlock = %v, want nil", keys, m.Holds())
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := maxInside.Load(); n != 1 {
		t.Errorf("%s: %d holders of one key at once", s.h.Name, n)
	}
}

// checkHolds checks that holds are one per key, in keys' order, each on a node
// of its key whose CreateRevision is its token.
func checkHolds(ctx context.Context, c *registry.Client, keys []string, holds []*recipes.Hold) error {
	if len(holds) != len(keys) {
		return fmt.Errorf("%d holds for keys %v", len(holds), keys)
	}
	for i, h := range holds {
		if path.Dir(h.Key()) != keys[i] {
			return fmt.Errorf("hold %d is %s, want a node of %s", i, h.Key(), keys[i])
		}
		n, err := c.Store().Get(ctx, h.Key())
		if err != nil {
			return fmt.Errorf("hold %s: %w", h.Key(), err)
		}
		if n.CreateRevision != h.Token() || h.Token() <= 0 {
			return fmt.Errorf("hold %s: token %d, node's CreateRevision %d", h.Key(), h.Token(), n.CreateRevision)
		}
		if h.Err() != nil {
			return fmt.Errorf("hold %s ended: %w", h.Key(), h.Err())
		}
	}
	return nil
}

// testMultiLockAllOrNothing: a MultiLock that cannot take every key (TryLock
// finds one held, Lock's context ends) holds none afterwards and leaves no node;
// it then acquires once the key is free, is re-entrant, and its session's loss
// ends every Hold. Bad arguments are refused before any I/O.
func (s *suite) testMultiLockAllOrNothing(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	c, other := s.open(t, ns), s.open(t, ns)
	sess := s.session(t, c)
	for _, bad := range [][]string{nil, {"/x", "/y", "/x"}, {"/x", "no-slash"}, {"/"}} {
		if _, err := lock.NewMultiLock(c, sess, bad); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("NewMultiLock(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := lock.NewMultiLock(c, nil, []string{"/x"}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("NewMultiLock without a session = %v, want ErrInvalid", err)
	}

	blocker := s.mutex(t, other, s.session(t, other), "/ml2/b")
	if _, err := blocker.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	m := s.multiLock(t, c, sess, "/ml2/c", "/ml2/b", "/ml2/a")
	if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock with one key held elsewhere = %v, want ErrLocked", err)
	}
	s.noNodes(t, ctx, c, map[string]int{"/ml2/a": 0, "/ml2/b": 1, "/ml2/c": 0}, "after a failed TryLock")
	if m.Holds() != nil {
		t.Errorf("Holds after a failed TryLock = %v, want nil", m.Holds())
	}
	short, cancel := context.WithTimeout(ctx, s.timeout()/30)
	_, err := m.Lock(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with one key held elsewhere = %v, want DeadlineExceeded", err)
	}
	s.noNodes(t, ctx, c, map[string]int{"/ml2/a": 0, "/ml2/b": 1, "/ml2/c": 0}, "after a Lock whose context ended")

	// Waiting, it gets all three once the key is free.
	got := make(chan []*recipes.Hold, 1)
	go func() {
		holds, err := m.Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- holds
	}()
	s.eventually(t, "the multi-lock queued on /ml2/b", func() error {
		names, err := lockNodes(ctx, other, "/ml2/b")
		if err != nil || len(names) != 2 {
			return fmt.Errorf("nodes %v, %v", names, err)
		}
		return nil
	})
	if err := blocker.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	holds := <-got
	if err := checkHolds(ctx, c, m.Keys(), holds); err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("plain Mutex's TryLock on a key the multi-lock holds = %v, want ErrLocked", err)
	}
	// Re-entrant: the same Holds, released only by the second Unlock.
	again, err := m.Lock(ctx)
	if err != nil || !slices.Equal(again, holds) {
		t.Fatalf("re-entrant Lock = %v, %v; want the same holds", again, err)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, h := range holds {
		if h.Err() != nil {
			t.Fatalf("hold %s ended after one of two Unlocks: %v", h.Key(), h.Err())
		}
	}
	if s.h.ExpireSession == nil {
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		for _, h := range holds {
			if !errors.Is(h.Err(), recipes.ErrReleased) {
				t.Errorf("hold %s after Unlock: %v, want ErrReleased", h.Key(), h.Err())
			}
		}
		return
	}
	// The session is lost: every Hold ends; Unlock still succeeds.
	s.h.ExpireSession(t, c)
	for _, h := range holds {
		s.ended(t, h.Done(), "hold "+h.Key()+" ends with its session")
		if errors.Is(h.Err(), recipes.ErrReleased) {
			t.Errorf("hold %s ended with %v, want the session's loss", h.Key(), h.Err())
		}
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatalf("Unlock after the session was lost: %v", err)
	}
	s.noNodes(t, ctx, other, map[string]int{"/ml2/a": 0, "/ml2/b": 0, "/ml2/c": 0}, "after the session was lost")
}

// noNodes waits until each key has the given number of lock nodes.
func (s *suite) noNodes(t *testing.T, ctx context.Context, c *registry.Client, want map[string]int, when string) {
	t.Helper()
	s.eventually(t, fmt.Sprintf("lock nodes %v %s", want, when), func() error {
		for k, n := range want {
			names, err := lockNodes(ctx, c, k)
			if err != nil {
				return err
			}
			if len(names) != n {
				return fmt.Errorf("%s has %v", k, names)
			}
		}
		return nil
	})
}
