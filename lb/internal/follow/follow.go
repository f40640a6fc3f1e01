// Package follow reads a registry Watcher and applies the empty-push guard, for
// lb.Balancer and the gRPC resolver alike.
package follow

import (
	"context"
	"errors"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/registry"
)

// Guard is the empty-push guard's state; see Run.
type Guard struct {
	// Grace is how long an empty snapshot after a non-empty one is held back.
	Grace time.Duration
	// Held, if set, is called when an empty snapshot is held back.
	Held func(s registry.Snapshot)
	// Clock measures Grace; nil is the real clock. Tests pass a
	// clockwork.FakeClock.
	Clock clockwork.Clock
}

// errGraceOver is the cause a hold's context is cancelled with when its grace
// period ends.
var errGraceOver = errors.New("follow: grace period over")

// Run reads w until ctx ends or w fails, and calls apply with every snapshot
// accepted, in order. A snapshot with instances is accepted at once, stale ones
// too (a stale snapshot is the last good view). An empty snapshot is accepted at
// once when nothing non-empty was accepted before; after a non-empty one it is
// held back, and accepted only when the backend confirms it: the newest snapshot
// is still empty and fresh (not Stale) Grace after the first fresh empty one. A
// stale snapshot restarts the clock at the next fresh one; a non-empty one ends
// the hold. The hold ends when Clock's timer fires, or at the next fresh empty
// snapshot read once Clock's time has reached the deadline, whichever the loop
// sees first. Run returns ctx's error, or w's.
func (g Guard) Run(ctx context.Context, w registry.Watcher, apply func(registry.Snapshot)) error {
	clock := g.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	nonEmpty := false
	var (
		pending  *registry.Snapshot // held-back fresh empty snapshot
		deadline time.Time
		hold     context.Context // while pending: cancelled with errGraceOver at deadline
		stop     func()          // stops hold's timer and cancels hold
	)
	endHold := func() {
		if stop != nil {
			stop()
		}
		pending, hold, stop = nil, nil, nil
	}
	defer endHold()
	confirm := func() {
		s := *pending
		endHold()
		nonEmpty = false
		apply(s) // confirmed: empty and fresh for the whole grace period
	}
	for {
		nctx := ctx
		if pending != nil {
			nctx = hold
		}
		s, err := w.Next(nctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pending != nil && errors.Is(context.Cause(hold), errGraceOver) {
				confirm()
				continue
			}
			return err
		}
		switch {
		case len(s.Instances) > 0:
			endHold()
			nonEmpty = true
			apply(s)
		case !nonEmpty:
			apply(s)
		case s.Stale:
			endHold() // the clock restarts at the next fresh empty snapshot
		case g.Grace <= 0:
			nonEmpty = false
			apply(s)
		default:
			if pending == nil {
				deadline = clock.Now().Add(g.Grace)
				hctx, cancel := context.WithCancelCause(ctx)
				t := clock.AfterFunc(g.Grace, func() { cancel(errGraceOver) })
				hold, stop = hctx, func() { t.Stop(); cancel(nil) }
				if g.Held != nil {
					g.Held(s)
				}
			}
			pending = &s
			if !clock.Now().Before(deadline) {
				confirm()
			}
		}
	}
}
