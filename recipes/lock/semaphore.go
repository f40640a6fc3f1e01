package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// Semaphore is a distributed counting semaphore with n leases (Curator's
// InterProcessSemaphoreV2): a lease is an ephemeral sequential node under
// key/leases ("_c_<uuid>-lease-<sequence>"), and acquirers take turns through a
// Mutex on key/locks, so only the acquirer at the head of that line watches the
// leases (no herd): it creates its lease node and holds once there are at most n.
//
// Every lease is a *recipes.Hold bound to the Semaphore's session, cancelled as a
// Mutex's is (see Mutex); its token is the lease node's CreateRevision. At most n
// leases exist at any time as the store sees them, on every backend with
// sessions (mem, etcd, ZooKeeper, Consul; NewSemaphore fails with
// registry.ErrNotSupported on Nacos). As with a Mutex, a holder whose session the
// server dropped may still believe it holds its lease for the window package
// recipes gives per backend, so more than n holders may act at once in that window;
// the lease's context is cancelled at the end of it, and a holder must stop
// using the resource then. The conformance suite checks, under session expiries,
// cuts and restarts, that a resource of n slots never refuses an entry except
// for such a holder. All Semaphores on one key must agree on n: the count is each
// acquirer's own. Acquire whose context ends
// leaves no node behind; Release is idempotent and succeeds after a session loss.
// The methods are safe for concurrent use; each Acquire takes a lease of its own.
type Semaphore struct {
	n      int
	s      *registry.Session
	opts   recipes.Options
	leases *queue.Queue
	turn   *Mutex        // key/locks: one acquirer at a time
	one    chan struct{} // one Acquire of this Semaphore at a time through turn

	mu   sync.Mutex
	held map[*recipes.Hold]lease
}

type lease struct {
	e       queue.Entry
	release func(error)
}

// NewSemaphore returns a semaphore of n leases on key, acquiring through session
// s of client c; errors as NewMutex, and registry.ErrInvalid for n < 1.
func NewSemaphore(c *registry.Client, s *registry.Session, key string, n int, opts ...recipes.Option) (*Semaphore, error) {
	if n < 1 {
		return nil, &registry.FieldError{Field: "n", Value: n, Reason: "a semaphore needs at least one lease"}
	}
	turn, err := NewMutex(c, s, driver.JoinKey(key, "locks"), opts...)
	if err != nil {
		return nil, err
	}
	o := recipes.Apply(opts)
	return &Semaphore{
		n:      n,
		s:      s,
		opts:   o,
		leases: &queue.Queue{St: c.Store(), Sess: s, Dir: driver.JoinKey(key, "leases"), Prefix: "lease-", Opts: o},
		turn:   turn,
		one:    make(chan struct{}, 1),
		held:   map[*recipes.Hold]lease{},
	}, nil
}

// Acquire waits for a lease; see Mutex.Lock for ctx, session loss and the Hold.
func (m *Semaphore) Acquire(ctx context.Context) (*recipes.Hold, error) { return m.acquire(ctx, false) }

// TryAcquire takes a lease if one is free now (and no one else is acquiring),
// else returns ErrLocked.
func (m *Semaphore) TryAcquire(ctx context.Context) (*recipes.Hold, error) {
	return m.acquire(ctx, true)
}

func (m *Semaphore) acquire(ctx context.Context, try bool) (*recipes.Hold, error) {
	if try {
		select {
		case m.one <- struct{}{}:
		default: // an Acquire of this Semaphore waits: no lease is free now
			return nil, fmt.Errorf("semaphore: %w", ErrLocked)
		}
	} else {
		select {
		case m.one <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() { <-m.one }()
	var err error
	if try {
		_, err = m.turn.TryLock(ctx)
	} else {
		_, err = m.turn.Lock(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("semaphore: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*m.opts.RequestTimeout)
		_ = m.turn.Unlock(uctx) // if it fails, the next Acquire or the session's end removes it
		cancel()
	}()
	for {
		e, err := m.leases.Enqueue(ctx, m.opts.Value)
		if err != nil {
			return nil, fmt.Errorf("semaphore: %s: %w", m.leases.Dir, err)
		}
		h, release, err := m.await(ctx, e, try)
		if errors.Is(err, queue.ErrVanished) {
			// Our node was missing from a listing: gone, or a read that missed it
			// (a server just restarted). Delete it if it is there, so that no one
			// queues behind it, and queue again.
			_ = m.leases.Remove(ctx, e)
			continue // someone deleted our lease node: take another
		}
		if err != nil {
			_ = m.leases.Remove(ctx, e)
			return nil, fmt.Errorf("semaphore: %s: %w", m.leases.Dir, err)
		}
		m.mu.Lock()
		m.held[h] = lease{e: e, release: release}
		m.mu.Unlock()
		return h, nil
	}
}

func (m *Semaphore) await(ctx context.Context, e queue.Entry, try bool) (*recipes.Hold, func(error), error) {
	for {
		names, _, err := m.leases.Place(ctx, e)
		if err != nil {
			return nil, nil, err
		}
		if len(names) > m.n {
			if try {
				return nil, nil, ErrLocked
			}
			if err := m.leases.WaitChange(ctx, names); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err := recipes.Usable(ctx, m.s, m.opts.Policy); err != nil {
			return nil, nil, err
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		h, release := recipes.NewHold(m.s, m.leases.Key(e), e.Node.CreateRevision, m.opts.Policy)
		if h.Err() == nil {
			return h, release, nil
		}
		release(nil)
	}
}

// Release returns the lease h: its context is cancelled with
// recipes.ErrReleased, then its node is deleted (retrying with jitter until ctx
// ends; if it does first, the lease stays taken until Release is called again or
// the session ends). Releasing a lease twice, or after the session ended, returns
// nil; a Hold this Semaphore did not hand out is ErrInvalid.
func (m *Semaphore) Release(ctx context.Context, h *recipes.Hold) error {
	m.mu.Lock()
	l, ok := m.held[h]
	delete(m.held, h)
	m.mu.Unlock()
	if !ok {
		if h != nil && errors.Is(h.Err(), recipes.ErrReleased) {
			return nil
		}
		return &registry.FieldError{Field: "hold", Value: fmt.Sprint(h), Reason: "not a lease of this semaphore"}
	}
	l.release(recipes.ErrReleased)
	if err := m.leases.Remove(ctx, l.e); err != nil {
		m.mu.Lock()
		m.held[h] = l // a later Release tries again
		m.mu.Unlock()
		return fmt.Errorf("semaphore: %s: release: %w", m.leases.Dir, err)
	}
	return nil
}
