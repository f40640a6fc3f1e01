package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
)

// MultiLock holds the locks of several keys as one (Curator's
// InterProcessMultiLock): Lock acquires a Mutex on every key, one after the
// other in the keys' sorted order, and Unlock releases them all, in reverse
// order. Because every MultiLock takes its keys in that one order, two MultiLocks
// whose key sets overlap never deadlock each other (Curator's takes them in the
// order given; regkit sorts them, so the order the caller lists them in does not
// matter).
//
// Each key is an ordinary Mutex (see Mutex for its node naming, fairness,
// re-entrancy and per-backend guarantees), so a MultiLock excludes, and queues
// fairly with, plain Mutexes on any of its keys, and on ZooKeeper Curator's
// InterProcessMutex on the same path. What the MultiLock adds:
//   - All or nothing: Lock returns holding every key, or holding none. When an
//     acquisition fails (ctx ends, the session ends, TryLock finds a key held, a
//     key's Hold ended while the later keys were being acquired), the keys
//     already taken are released, in reverse order, before Lock returns.
//   - One Hold per key, in Keys order: each Hold's token is the CreateRevision of
//     that key's node and grows from holder to holder of that key; tokens of
//     different keys are not comparable. Pass each resource the token of the key
//     that guards it. Each Hold's context ends on its own; since all share the
//     session, a session loss (or, under SuspendedIsLost, a suspension) ends them
//     all.
//   - Lock is re-entrant as Mutex's is: Lock while holding increments every key's
//     count and returns the same Holds; Unlock decrements them.
//
// A MultiLock is one holder; its methods are serialised. It reads the Options a
// Mutex reads.
type MultiLock struct {
	keys []string
	ms   []*Mutex
	opts recipes.Options
	sem  chan struct{} // serialises Lock, TryLock and Unlock
}

// NewMultiLock returns a MultiLock on keys bound to session s of client c. It
// fails with an error matching registry.ErrNotSupported on a backend without
// sessions, ephemeral and sequential keys (Nacos), and registry.ErrInvalid for
// no keys, a key that is not valid, or a key listed twice.
func NewMultiLock(c *registry.Client, s *registry.Session, keys []string, opts ...recipes.Option) (*MultiLock, error) {
	if err := queue.Check(c, "multi-lock"); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, &registry.FieldError{Field: "session", Value: nil, Reason: "required"}
	}
	if len(keys) == 0 {
		return nil, &registry.FieldError{Field: "keys", Value: keys, Reason: "a multi-lock needs at least one key"}
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	for i, k := range sorted {
		if err := queue.ValidDir(k); err != nil {
			return nil, err
		}
		if i > 0 && sorted[i-1] == k {
			return nil, &registry.FieldError{Field: "keys", Value: k, Reason: "listed twice"}
		}
	}
	o := recipes.Apply(opts)
	if err := o.Err(); err != nil {
		return nil, err
	}
	m := &MultiLock{keys: sorted, opts: o, sem: make(chan struct{}, 1)}
	for _, k := range sorted {
		m.ms = append(m.ms, newMutex(c, s, k, "lock-", nil, queue.Predecessor, o))
	}
	return m, nil
}

// Keys returns the keys, sorted: the order in which Lock acquires them and in
// which it returns their Holds.
func (m *MultiLock) Keys() []string { return slices.Clone(m.keys) }

// Lock waits until the MultiLock holds every key, ctx ends or the session ends,
// and returns one Hold per key, in Keys order. On failure it holds none: the
// keys it had taken are released before it returns ctx's error, the session's
// (wrapping registry.ErrSessionLost or registry.ErrClosed), or the cause of a
// Hold that ended meanwhile. The Holds outlive ctx; only Unlock and the session
// end them.
func (m *MultiLock) Lock(ctx context.Context) ([]*recipes.Hold, error) { return m.lock(ctx, false) }

// TryLock acquires every key if none is held or waited for by someone else, else
// releases what it took and returns ErrLocked; see Lock.
func (m *MultiLock) TryLock(ctx context.Context) ([]*recipes.Hold, error) { return m.lock(ctx, true) }

func (m *MultiLock) lock(ctx context.Context, try bool) ([]*recipes.Hold, error) {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-m.sem }()
	holds := make([]*recipes.Hold, 0, len(m.ms))
	for _, mu := range m.ms {
		var h *recipes.Hold
		var err error
		if try {
			h, err = mu.TryLock(ctx)
		} else {
			h, err = mu.Lock(ctx)
		}
		if err == nil {
			holds = append(holds, h)
			continue
		}
		_ = m.unlock(ctx, len(holds))
		return nil, err // it names the key
	}
	for i, h := range holds {
		if err := h.Err(); err != nil {
			_ = m.unlock(ctx, len(holds))
			return nil, fmt.Errorf("lock: multi-lock: %s: the hold ended while the other keys were acquired: %w", m.keys[i], err)
		}
	}
	return holds, nil
}

// unlock releases the first n keys in reverse order, even if ctx has ended (each
// Unlock bounded by a few request timeouts), and returns what failed. A key whose
// node could not be deleted is deleted by the next call of any recipe on the
// session (see Mutex.Unlock).
func (m *MultiLock) unlock(ctx context.Context, n int) error {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*m.opts.RequestTimeout)
	defer cancel()
	if ctx.Err() == nil {
		uctx = ctx
	}
	var errs []error
	for i := n - 1; i >= 0; i-- {
		if err := m.ms[i].Unlock(uctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unlock releases one count of every key's hold, in reverse Keys order; at zero
// each Hold ends (recipes.ErrReleased) and its node is deleted, retrying until
// ctx ends. It tries every key whatever failed before, and returns the failures
// joined. It is idempotent, and succeeds after the session ended (see
// Mutex.Unlock).
func (m *MultiLock) Unlock(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.sem }()
	var errs []error
	for i := len(m.ms) - 1; i >= 0; i-- {
		if err := m.ms[i].Unlock(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Holds returns the current Holds in Keys order, or nil when the MultiLock does
// not hold.
func (m *MultiLock) Holds() []*recipes.Hold {
	var out []*recipes.Hold
	for _, mu := range m.ms {
		h := mu.Hold()
		if h == nil {
			return nil
		}
		out = append(out, h)
	}
	return out
}
