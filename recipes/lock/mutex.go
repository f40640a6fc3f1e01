package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
)

// ErrLocked: TryLock found the lock held by someone else (etcd's
// concurrency.ErrLocked).
var ErrLocked = errors.New("lock: held by another holder")

// Mutex is a distributed, fair, re-entrant mutual-exclusion lock on one store key:
// Curator's InterProcessMutex, with etcd concurrency.Mutex's session-first API.
//
// Each Lock creates an ephemeral sequential node under the key, bound to the
// Mutex's session ("_c_<uuid>-lock-<10-digit sequence>", Curator's protected
// naming). Waiters queue in creation order (by the sequence suffix) and each
// watches only its predecessor's node, so a release wakes exactly one waiter. The
// holder is the first node; its CreateRevision is the fencing token.
//
// A Mutex is one holder: it is re-entrant (Lock while held increments a count,
// Unlock decrements it and releases at zero), and its methods are serialised, so
// goroutines that must exclude each other need a Mutex each (they may share a
// Session: unlike etcd's concurrency.Mutex, two Mutexes on one session exclude
// each other).
//
// Guarantees, on every backend with sessions (mem, etcd, ZooKeeper, Consul):
//   - At most one Mutex holds at a time, as the store sees it: a holder's node is
//     deleted only by its Unlock or with its session.
//   - The Hold's context is cancelled as soon as the holder can no longer be sure
//     it holds: its session is lost or closed, or (default policy) suspended. See
//     the package recipes doc for the window in which a holder that has not yet
//     noticed may still believe it holds, per backend; a fenced resource checking
//     Hold.Token rejects its writes in that window.
//   - Tokens only grow across holders: each acquisition's token is its node's
//     CreateRevision, and the queue is in creation order.
//   - Lock and TryLock whose context ends leave no node behind; a Lock whose
//     session ends stops waiting at once with the session's error (wrapping
//     registry.ErrSessionLost).
//   - Unlock is idempotent and succeeds after the session was lost (the node went
//     with it).
//
// The Mutex reads Options.Policy and Options.Value (the node's value: the holder's
// identity), RequestTimeout and the retry backoff.
type Mutex struct {
	q     *queue.Queue
	s     *registry.Session
	opts  recipes.Options
	block queue.Blocker

	sem chan struct{} // serialises Lock, TryLock and Unlock

	mu      sync.Mutex
	entry   queue.Entry
	hold    *recipes.Hold
	release func(error)
	count   int
}

// NewMutex returns a Mutex on key bound to session s of client c. It fails with
// an error matching registry.ErrNotSupported on a backend without sessions,
// ephemeral and sequential keys (Nacos), and registry.ErrInvalid for a bad key.
func NewMutex(c *registry.Client, s *registry.Session, key string, opts ...recipes.Option) (*Mutex, error) {
	if err := queue.Check(c, "mutex"); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, &registry.FieldError{Field: "session", Value: nil, Reason: "required"}
	}
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	o := recipes.Apply(opts)
	if err := o.Err(); err != nil {
		return nil, err
	}
	return newMutex(c, s, key, "lock-", nil, queue.Predecessor, o), nil
}

func newMutex(c *registry.Client, s *registry.Session, key, prefix string, others []string, block queue.Blocker, o recipes.Options) *Mutex {
	return &Mutex{
		q:     &queue.Queue{St: c.Store(), Sess: s, Dir: key, Prefix: prefix, Others: others, Opts: o},
		s:     s,
		opts:  o,
		block: block,
		sem:   make(chan struct{}, 1),
	}
}

// Key returns the lock's key (the parent of the waiters' nodes).
func (m *Mutex) Key() string { return m.q.Dir }

// tryAcquireSem is acquireSem for TryLock: when another call of this Mutex is in
// progress and the Mutex does not hold (a Lock waiting for its turn), the lock is
// not free now: ErrLocked at once instead of waiting for that call.
func (m *Mutex) tryAcquireSem(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	default:
	}
	m.mu.Lock()
	holds := m.count > 0
	m.mu.Unlock()
	if !holds {
		return ErrLocked
	}
	return m.acquireSem(ctx) // re-entrant: the call in progress is short
}

func (m *Mutex) acquireSem(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Mutex) releaseSem() { <-m.sem }

// Lock waits until the Mutex holds the lock, ctx ends or the session ends, and
// returns the Hold: its fencing token and a context cancelled when the holding
// becomes uncertain. The Hold outlives ctx; only Unlock and the session end it.
//
// If the Mutex already holds, Lock increments the hold count and returns the same
// Hold; if that Hold has ended (the session was suspended or lost), Lock returns
// its cause: Unlock first. When ctx ends first Lock returns ctx's error and its
// node is deleted; when the session ends first, the session's error (wrapping
// registry.ErrSessionLost or registry.ErrClosed).
func (m *Mutex) Lock(ctx context.Context) (*recipes.Hold, error) {
	return m.lock(ctx, false)
}

// TryLock acquires the lock if no one holds it or waits for it, else returns
// ErrLocked at once (after deleting its node). It is re-entrant as Lock is.
func (m *Mutex) TryLock(ctx context.Context) (*recipes.Hold, error) {
	return m.lock(ctx, true)
}

func (m *Mutex) lock(ctx context.Context, try bool) (*recipes.Hold, error) {
	acquire := m.acquireSem
	if try {
		acquire = m.tryAcquireSem
	}
	if err := acquire(ctx); err != nil {
		return nil, err
	}
	defer m.releaseSem()
	m.mu.Lock()
	if m.count > 0 {
		defer m.mu.Unlock()
		if err := m.hold.Err(); err != nil {
			return nil, fmt.Errorf("lock: %s: held, but the hold ended (Unlock first): %w", m.q.Dir, err)
		}
		m.count++
		return m.hold, nil
	}
	m.mu.Unlock()
	for {
		if err := m.s.Err(); err != nil {
			return nil, fmt.Errorf("lock: %s: %w", m.q.Dir, err)
		}
		e, err := m.q.Enqueue(ctx, m.opts.Value)
		if err != nil {
			return nil, fmt.Errorf("lock: %s: %w", m.q.Dir, err)
		}
		h, release, err := m.await(ctx, e, try)
		if errors.Is(err, queue.ErrVanished) {
			// Our node was missing from a listing: gone, or a read that missed it
			// (a server just restarted). Delete it if it is there, so that no one
			// queues behind it, and queue again.
			_ = m.q.Remove(ctx, e)
			continue
		}
		if err != nil {
			_ = m.q.Remove(ctx, e) // on failure the node is litter for the next call
			return nil, fmt.Errorf("lock: %s: %w", m.q.Dir, err)
		}
		m.mu.Lock()
		m.entry, m.hold, m.release, m.count = e, h, release, 1
		m.mu.Unlock()
		return h, nil
	}
}

// await waits until e is first (or, with try, checks once) and the session is
// usable under the policy, then starts the Hold.
func (m *Mutex) await(ctx context.Context, e queue.Entry, try bool) (*recipes.Hold, func(error), error) {
	for {
		if try {
			pred, err := m.q.Blocked(ctx, e, m.block)
			if err != nil {
				return nil, nil, err
			}
			if pred != "" {
				return nil, nil, ErrLocked
			}
		} else if err := m.q.Wait(ctx, e, m.block); err != nil {
			return nil, nil, err
		}
		if err := recipes.Usable(ctx, m.s, m.opts.Policy); err != nil {
			return nil, nil, err
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		h, release := recipes.NewHold(m.s, m.q.Key(e), e.Node.CreateRevision, m.opts.Policy)
		if h.Err() == nil {
			return h, release, nil
		}
		// Suspended again between the check and the start: wait once more.
		release(nil)
	}
}

// Unlock releases one count of the hold; at zero it ends the Hold (its context is
// cancelled with recipes.ErrReleased before the node goes) and deletes the node,
// retrying with jitter until ctx ends. It is idempotent: Unlock of a Mutex that
// does not hold returns nil, and so does Unlock after the session ended (the node
// went with it). If ctx ends before the node could be deleted, Unlock returns the
// error and the node stays until the next call of any recipe on the same session
// (this Mutex's Lock, TryLock or Unlock among them) deletes it, or the session
// ends; meanwhile no one else can acquire.
func (m *Mutex) Unlock(ctx context.Context) error {
	if err := m.acquireSem(ctx); err != nil {
		return err
	}
	defer m.releaseSem()
	m.mu.Lock()
	if m.count == 0 {
		m.mu.Unlock()
		m.q.Cleanup(ctx)
		return nil
	}
	m.count--
	if m.count > 0 {
		m.mu.Unlock()
		return nil
	}
	e, release := m.entry, m.release
	m.entry, m.hold, m.release = queue.Entry{}, nil, nil
	m.mu.Unlock()
	release(recipes.ErrReleased)
	if err := m.q.Remove(ctx, e); err != nil {
		return fmt.Errorf("lock: %s: unlock: %w", m.q.Dir, err)
	}
	return nil
}

// Hold returns the current Hold, or nil when the Mutex does not hold.
func (m *Mutex) Hold() *recipes.Hold {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hold
}
