// Package retry paces the retry loops of package registry and its subpackages (watch
// re-arming, re-listing, re-creating a persistent node, a cache's re-watch): a
// jittered exponential backoff, from github.com/cenkalti/backoff/v4, that never
// gives up and starts again from its minimum only once the operation it paces has
// stayed up for a while, on a clock tests can drive.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jonboulle/clockwork"
)

// New returns an exponential backoff from min to max with 50% jitter that never
// gives up.
func New(min, max time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = min
	b.MaxInterval = max
	b.MaxElapsedTime = 0
	b.RandomizationFactor = 0.5
	b.Reset()
	return b
}

// Backoff paces the retries of a long-lived operation (a watch, a kept node):
// Up marks it healthy, Fail returns how long to wait before the next attempt. The
// delay grows with every failure and goes back to the minimum only after the
// operation stayed up for Stable (the backoff's maximum), so an operation that
// breaks right after every successful restart retries ever more slowly instead of
// at the minimum forever. Not safe for concurrent use: one loop owns it.
type Backoff struct {
	b       *backoff.ExponentialBackOff
	clock   clockwork.Clock
	stable  time.Duration
	upSince time.Time // zero while not up
	failing bool      // in a streak of failures (since the last stable period)
}

// NewBackoff returns a Backoff from min to max on clock; it counts an operation as
// recovered after it stayed up for max.
func NewBackoff(clock clockwork.Clock, min, max time.Duration) *Backoff {
	return &Backoff{b: New(min, max), clock: clock, stable: max}
}

// Stable is how long the operation must stay up for the next failure to start
// again from the minimum delay.
func (b *Backoff) Stable() time.Duration { return b.stable }

// Up records that the operation is up (a watch armed, a read answered). Only the
// first Up after a failure counts: the operation is up since then.
func (b *Backoff) Up() {
	if b.upSince.IsZero() {
		b.upSince = b.clock.Now()
	}
}

// Fail records a failure and returns the delay before the next attempt, and
// whether this failure starts a new streak: the first failure, or the first after
// the operation stayed up for Stable. Callers log only such failures, so an
// operation that keeps failing is reported once, not at every retry.
func (b *Backoff) Fail() (delay time.Duration, first bool) {
	if !b.upSince.IsZero() && b.clock.Since(b.upSince) >= b.stable {
		b.b.Reset()
		b.failing = false
	}
	b.upSince = time.Time{}
	first = !b.failing
	b.failing = true
	return b.b.NextBackOff(), first
}

// Sleep waits d on clock, or until ctx is done (returning its error).
func Sleep(ctx context.Context, clock clockwork.Clock, d time.Duration) error {
	t := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
