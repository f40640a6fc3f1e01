package recipestest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

// testRWMutex: readers share, a writer excludes everyone, and a queued writer is
// not starved by readers that come after it.
func (s *suite) testRWMutex(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	rws := make([]*lock.RWMutex, 4)
	for i := range rws {
		c := s.open(t, ns)
		rw, err := lock.NewRWMutex(c, s.session(t, c), "/locks/rw")
		if err != nil {
			t.Fatal(err)
		}
		rws[i] = rw
	}
	// Two readers at once.
	r0, err := rws[0].RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rws[1].TryRLock(ctx); err != nil {
		t.Fatalf("second reader: %v", err)
	}
	if _, err := rws[2].TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock while read-held = %v, want ErrLocked", err)
	}
	// A writer queues; a reader after it waits for it (no starvation).
	wgot := make(chan *recipes.Hold, 1)
	go func() {
		h, err := rws[2].Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		wgot <- h
	}()
	obs := s.open(t, ns)
	s.eventually(t, "writer queued", func() error {
		names, err := lockNodes(ctx, obs, "/locks/rw")
		if err != nil || len(names) != 3 {
			return fmt.Errorf("nodes %v, %v", names, err)
		}
		return nil
	})
	if _, err := rws[3].TryRLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("reader behind a queued writer: TryRLock = %v, want ErrLocked", err)
	}
	rgot := make(chan *recipes.Hold, 1)
	go func() {
		h, err := rws[3].RLock(ctx)
		if err != nil {
			t.Error(err)
		}
		rgot <- h
	}()
	s.eventually(t, "late reader queued", func() error {
		names, err := lockNodes(ctx, obs, "/locks/rw")
		if err != nil || len(names) != 4 {
			return fmt.Errorf("nodes %v, %v", names, err)
		}
		return nil
	})
	if err := rws[0].RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rws[1].RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	w := <-wgot
	select {
	case <-rgot:
		t.Fatal("reader held together with the writer")
	case <-time.After(100 * time.Millisecond):
	}
	if w.Token() <= r0.Token() {
		t.Errorf("writer's token %d <= earlier reader's %d", w.Token(), r0.Token())
	}
	if err := rws[2].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-rgot; r == nil || r.Token() <= w.Token() {
		t.Errorf("late reader's hold %v: token must exceed the writer's %d", r, w.Token())
	}
}

// testSemaphore: never more than n holders; a cancelled Acquire leaves no node;
// a lost session frees its lease.
func (s *suite) testSemaphore(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	const n, workers, each = 2, 4, 4
	var inside, max atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		c := s.open(t, ns)
		sem, err := lock.NewSemaphore(c, s.session(t, c), "/sem/x", n)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				h, err := sem.Acquire(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				k := inside.Add(1)
				for {
					m := max.Load()
					if k <= m || max.CompareAndSwap(m, k) {
						break
					}
				}
				time.Sleep(5 * time.Millisecond)
				inside.Add(-1)
				if err := sem.Release(ctx, h); err != nil {
					t.Error(err)
				}
				if err := sem.Release(ctx, h); err != nil {
					t.Errorf("second Release = %v, want nil", err)
				}
			}
		}()
	}
	wg.Wait()
	if m := max.Load(); m > n || m < 1 {
		t.Fatalf("%d holders at once, semaphore of %d", m, n)
	}
	// Fill it; a third Acquire times out and leaves nothing.
	a, b := s.open(t, ns), s.open(t, ns)
	sa, err := lock.NewSemaphore(a, s.session(t, a), "/sem/y", 2)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := lock.NewSemaphore(b, s.session(t, b), "/sem/y", 2)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := sa.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sb.TryAcquire(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryAcquire on a full semaphore = %v, want ErrLocked", err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := sb.Acquire(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire on a full semaphore = %v, want DeadlineExceeded", err)
	}
	s.eventually(t, "no lease or turn left by the cancelled Acquire", func() error {
		leases, err := lockNodes(ctx, b, "/sem/y/leases")
		if err != nil || len(leases) != 2 {
			return fmt.Errorf("leases %v, %v", leases, err)
		}
		turns, err := lockNodes(ctx, b, "/sem/y/locks")
		if err != nil || len(turns) != 0 {
			return fmt.Errorf("turns %v, %v", turns, err)
		}
		return nil
	})
	// a's session is lost: both its leases free up. Where the harness expires
	// every session (etcd, Consul), b's goes too: b then takes a lease through a
	// new session.
	got := make(chan error, 1)
	go func() {
		_, err := sb.Acquire(ctx)
		got <- err
	}()
	s.h.ExpireSession(t, a)
	select {
	case err := <-got:
		if errors.Is(err, registry.ErrSessionLost) {
			sb2, err2 := lock.NewSemaphore(b, s.session(t, b), "/sem/y", 2)
			if err2 != nil {
				t.Fatal(err2)
			}
			_, err = sb2.Acquire(ctx)
		}
		if err != nil {
			t.Fatalf("Acquire after the holders' session was lost: %v", err)
		}
	case <-time.After(s.timeout()):
		t.Fatal("lease not freed by the holder's session loss")
	}
}
