package lock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

func open(t *testing.T) (*registry.Client, *registry.Session) {
	t.Helper()
	c, err := registry.Open(context.Background(), "mem://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.NewSession(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

// TryLock on a Mutex whose own Lock waits for another holder is ErrLocked at
// once, as documented, not a wait for that Lock (it waited until its ctx ended).
func TestTryLockWhileOwnLockWaits(t *testing.T) {
	c, s := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, s0 := open(t)
	other, err := lock.NewMutex(c, s0, "/lk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := lock.NewMutex(c, s, "/lk")
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() { _, err := m.Lock(lctx); waited <- err }()
	defer func() { lcancel(); <-waited }()
	queued(t, c, "/lk", 2)
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	defer tcancel()
	if _, err := m.TryLock(tctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock while the Mutex's own Lock waits = %v, want ErrLocked", err)
	}
}

// queued waits until key has n children (the holder's node and the waiters').
func queued(t *testing.T, c *registry.Client, key string, n int) {
	t.Helper()
	poll.Until(t, 10*time.Second, "waiter queued", func() error {
		kids, err := c.Store().Children(context.Background(), key)
		if err == nil && len(kids) != n {
			err = fmt.Errorf("children %v", kids)
		}
		return err
	})
}

// The same for a Semaphore: TryAcquire while its own Acquire waits.
func TestTryAcquireWhileOwnAcquireWaits(t *testing.T) {
	c, s := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, s0 := open(t)
	full, err := lock.NewSemaphore(c, s0, "/sem", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := full.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := lock.NewSemaphore(c, s, "/sem", 1)
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() { _, err := m.Acquire(actx); waited <- err }()
	defer func() { acancel(); <-waited }()
	queued(t, c, "/sem/locks", 1) // the waiter holds the turn while it waits for a lease
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	defer tcancel()
	if _, err := m.TryAcquire(tctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryAcquire while the Semaphore's own Acquire waits = %v, want ErrLocked", err)
	}
}

// Invalid options are an error naming the option from every constructor, before
// any I/O (they were ignored).
func TestConstructorsRefuseInvalidOptions(t *testing.T) {
	c, s := open(t)
	bad := recipes.WithRequestTimeout(-time.Second)
	for name, mk := range map[string]func() error{
		"NewMutex":     func() error { _, err := lock.NewMutex(c, s, "/o", bad); return err },
		"NewRWMutex":   func() error { _, err := lock.NewRWMutex(c, s, "/o", bad); return err },
		"NewSemaphore": func() error { _, err := lock.NewSemaphore(c, s, "/o", 2, bad); return err },
		"NewMultiLock": func() error { _, err := lock.NewMultiLock(c, s, []string{"/o", "/p"}, bad); return err },
	} {
		if err := mk(); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("%s with a negative request timeout = %v, want ErrInvalid", name, err)
		}
	}
}
