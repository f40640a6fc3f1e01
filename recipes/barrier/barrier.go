// Package barrier holds the barrier recipes, written once over registry.Store and
// registry.Session: Barrier (Curator's DistributedBarrier: processes wait until
// the barrier key is removed) and Double (Curator's DistributedDoubleBarrier:
// n processes enter together and leave together).
//
// Barrier needs only the store; Double needs sessions with ephemeral keys and
// fails with an error matching registry.ErrNotSupported on Nacos.
package barrier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// Barrier is Curator's DistributedBarrier: while its key exists, Wait blocks;
// Remove releases every waiter at once. It reads Options.RequestTimeout.
type Barrier struct {
	st   *registry.Store
	key  string
	opts recipes.Options
}

// New returns the barrier on key; a bad key or option fails with an error
// matching registry.ErrInvalid.
func New(c *registry.Client, key string, opts ...recipes.Option) (*Barrier, error) {
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	o := recipes.Apply(opts)
	if err := o.Err(); err != nil {
		return nil, err
	}
	return &Barrier{st: c.Store(), key: key, opts: o}, nil
}

// Set raises the barrier (creates its key); raising a raised barrier is no error.
func (b *Barrier) Set(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	if _, err := b.st.Create(rctx, b.key, nil); err != nil && !errors.Is(err, registry.ErrExists) {
		return fmt.Errorf("barrier: %s: %w", b.key, err)
	}
	return nil
}

// Remove lowers the barrier: every Wait returns. Removing a lowered barrier is
// no error.
func (b *Barrier) Remove(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	if err := b.st.Delete(rctx, b.key, registry.Recursive()); err != nil && !errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("barrier: %s: %w", b.key, err)
	}
	return nil
}

// Wait blocks until the barrier is lowered (a fresh read shows its key absent) or
// ctx ends.
func (b *Barrier) Wait(ctx context.Context) error {
	q := &queue.Queue{St: b.st, Dir: b.key, Opts: b.opts}
	if err := q.WaitGone(ctx, b.key); err != nil {
		return fmt.Errorf("barrier: %s: %w", b.key, err)
	}
	return nil
}

// Double is Curator's DistributedDoubleBarrier: n participants Enter, and none
// proceeds until all n have; then each Leaves, and none proceeds until all have.
// Each participant is an ephemeral node under the key bound to the Double's
// session, so a participant whose process dies stops counting when its session
// ends. A Double is one participant for one round at a time, and may go round
// after round (Enter, Leave, Enter, ...): each Enter creates a node of a new
// name, and Leave waits only for the participants of its own round, so one that
// left and entered the next round already does not hold the others back. Its
// methods must not be called concurrently. It reads Options.RequestTimeout and
// the retry backoff.
type Double struct {
	q     *queue.Queue
	n     int
	me    *queue.Entry
	round []string // the participants seen when Enter returned, ours included
}

const readyName = "ready"

// NewDouble returns a participant of the double barrier of n on key, bound to
// session s of client c.
func NewDouble(c *registry.Client, s *registry.Session, key string, n int, opts ...recipes.Option) (*Double, error) {
	if err := queue.Check(c, "double barrier"); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, &registry.FieldError{Field: "session", Value: nil, Reason: "required"}
	}
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, &registry.FieldError{Field: "n", Value: n, Reason: "at least one participant"}
	}
	o := recipes.Apply(opts)
	if err := o.Err(); err != nil {
		return nil, err
	}
	return &Double{q: &queue.Queue{St: c.Store(), Sess: s, Dir: key, Opts: o}, n: n}, nil
}

func newName() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// participants returns the names of the entered participants.
func (d *Double) participants(ctx context.Context) ([]string, bool, error) {
	rctx, cancel := context.WithTimeout(ctx, d.q.Opts.RequestTimeout)
	defer cancel()
	names, err := d.q.St.Children(rctx, d.q.Dir)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	ready := slices.Contains(names, readyName)
	names = slices.DeleteFunc(names, func(n string) bool { return n == readyName })
	return names, ready, nil
}

// Enter joins and waits until n participants have joined (or the barrier was
// already opened for this round), ctx ends or the session ends. When ctx or the
// session ends first, the participant's node is deleted.
func (d *Double) Enter(ctx context.Context) error {
	name := newName()
	key := driver.JoinKey(d.q.Dir, name)
	rctx, cancel := context.WithTimeout(ctx, d.q.Opts.RequestTimeout)
	n, err := d.q.St.Create(rctx, key, nil, registry.Ephemeral(d.q.Sess))
	cancel()
	if err != nil {
		return fmt.Errorf("barrier: %s: enter: %w", d.q.Dir, err)
	}
	d.me, d.round = &queue.Entry{Name: name, Node: n}, nil
	wctx, stop := d.q.SessionContext(ctx)
	defer stop()
	for {
		names, ready, err := d.participants(wctx)
		if err == nil && (ready || len(names) >= d.n) {
			if !ready {
				rctx, cancel := context.WithTimeout(wctx, d.q.Opts.RequestTimeout)
				_, err = d.q.St.Create(rctx, driver.JoinKey(d.q.Dir, readyName), nil)
				cancel()
				if errors.Is(err, registry.ErrExists) {
					err = nil
				}
			}
			if err == nil {
				d.round = names
				return nil
			}
		}
		if err == nil {
			err = d.waitChange(wctx, names, ready)
		}
		if err != nil {
			_ = d.q.Remove(ctx, *d.me)
			d.me = nil
			if serr := d.q.Sess.Err(); serr != nil {
				err = serr
			}
			return fmt.Errorf("barrier: %s: enter: %w", d.q.Dir, err)
		}
	}
}

// waitChange waits until the participants or the ready flag differ.
func (d *Double) waitChange(ctx context.Context, names []string, ready bool) error {
	w, err := d.q.St.Watch(ctx, d.q.Dir)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		tc, err := w.Next(ctx)
		if err != nil {
			return err
		}
		if tc.Stale {
			continue
		}
		var now []string
		r := false
		for _, n := range tc.Nodes {
			if driver.ParentKey(n.Key) != d.q.Dir {
				continue
			}
			name := n.Key[strings.LastIndexByte(n.Key, '/')+1:]
			if name == readyName {
				r = true
			} else {
				now = append(now, name)
			}
		}
		if r != ready || !slices.Equal(now, names) {
			return nil
		}
	}
}

// Leave removes this participant and waits until every participant of its round
// (those present when Enter returned) has left, ctx ends or the session ends;
// then it lowers the ready flag for the next round. Leave without a successful
// Enter does nothing.
func (d *Double) Leave(ctx context.Context) error {
	if d.round == nil {
		return nil
	}
	if d.me != nil {
		if err := d.q.Remove(ctx, *d.me); err != nil {
			return fmt.Errorf("barrier: %s: leave: %w", d.q.Dir, err)
		}
		d.me = nil
	}
	for {
		names, ready, err := d.participants(ctx)
		if err != nil {
			return fmt.Errorf("barrier: %s: leave: %w", d.q.Dir, err)
		}
		if !slices.ContainsFunc(names, func(n string) bool { return slices.Contains(d.round, n) }) {
			d.round = nil
			if ready {
				rctx, cancel := context.WithTimeout(ctx, d.q.Opts.RequestTimeout)
				err := d.q.St.Delete(rctx, driver.JoinKey(d.q.Dir, readyName))
				cancel()
				if err != nil && !errors.Is(err, registry.ErrNotFound) {
					return fmt.Errorf("barrier: %s: leave: %w", d.q.Dir, err)
				}
			}
			return nil
		}
		if err := d.waitChange(ctx, names, ready); err != nil {
			return fmt.Errorf("barrier: %s: leave: %w", d.q.Dir, err)
		}
	}
}
