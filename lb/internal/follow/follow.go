// Package follow reads a registry Watcher and applies the empty-push guard, for
// lb.Balancer and the gRPC resolver alike.
package follow

import (
	"context"
	"errors"
	"time"

	"github.com/regkit/regkit/registry"
)

// Guard is the empty-push guard's state; see Run.
type Guard struct {
	// Grace is how long an empty snapshot after a non-empty one is held back.
	Grace time.Duration
	// Held, if set, is called when an empty snapshot is held back.
	Held func(s registry.Snapshot)
}

// Run reads w until ctx ends or w fails, and calls apply with every snapshot
// accepted, in order. A snapshot with instances is accepted at once, stale ones
// too (a stale snapshot is the last good view). An empty snapshot is accepted at
// once when nothing non-empty was accepted before; after a non-empty one it is
// held back, and accepted only when the backend confirms it: the newest snapshot
// is still empty and fresh (not Stale) Grace after the first fresh empty one. A
// stale snapshot restarts the clock at the next fresh one; a non-empty one ends
// the hold. Run returns ctx's error, or w's.
func (g Guard) Run(ctx context.Context, w registry.Watcher, apply func(registry.Snapshot)) error {
	nonEmpty := false
	var pending *registry.Snapshot // held-back fresh empty snapshot
	var deadline time.Time
	for {
		nctx, cancel := ctx, context.CancelFunc(func() {})
		if pending != nil {
			nctx, cancel = context.WithDeadline(ctx, deadline)
		}
		s, err := w.Next(nctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pending != nil && errors.Is(err, context.DeadlineExceeded) {
				apply(*pending) // confirmed: empty and fresh for the whole grace period
				pending, nonEmpty = nil, false
				continue
			}
			return err
		}
		switch {
		case len(s.Instances) > 0:
			pending = nil
			nonEmpty = true
			apply(s)
		case !nonEmpty:
			apply(s)
		case s.Stale:
			pending = nil // the clock restarts at the next fresh empty snapshot
		case g.Grace <= 0:
			nonEmpty = false
			apply(s)
		default:
			if pending == nil {
				deadline = time.Now().Add(g.Grace)
				if g.Held != nil {
					g.Held(s)
				}
			}
			pending = &s
		}
	}
}
