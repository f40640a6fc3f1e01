// Package hooks lets the conformance suites (package registrytest) observe what
// package registry keeps unexported: how many goroutines a Client owns right now.
// Package registry sets the hooks in its init.
package hooks

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Live returns how many goroutines the *registry.Client c owns that have not
// finished yet. Each one is counted from before it starts until after every other
// deferred call of its body, including the one that lets its owner's wait
// return: when a Close that waits for it has returned, it no longer counts.
var Live func(c any) int64

// ExitDelay, when set (nanoseconds), makes every goroutine of a Client wait a
// random time up to that long after its work is done and before it is uncounted
// and joined. A Close that waits for its goroutines then still sees none of them
// counted when it returns; one that forgets a join likely returns while the
// forgotten goroutine still counts, however quickly it would otherwise have ended
// (random, so that a forgotten goroutine is not always outlasted by the joined
// ones it ends alongside). Zero (the default) costs one atomic load per goroutine.
var ExitDelay atomic.Int64

// Delay waits a random part of ExitDelay.
func Delay() {
	if d := ExitDelay.Load(); d > 0 {
		time.Sleep(time.Duration(rand.Int64N(d)))
	}
}
