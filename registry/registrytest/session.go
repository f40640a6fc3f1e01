package registrytest

import (
	"sync"

	"github.com/regkit/regkit/registry"
)

// Follow calls fn, on a goroutine of its own, with every state sess moves to after
// the call, as a reader of Session.State and Session.Changed sees them, until the
// session ends or stop is called; stop waits for that goroutine (call it from
// outside fn). A suspension already over when the reader looked (a sure state
// followed by Reconnected) is reported as Suspended then Reconnected, since
// Reconnected only ever follows Suspended; other states too short to be seen are
// not reported. It is for tests that check a backend's state sequence.
func Follow(sess *registry.Session, fn func(registry.SessionState)) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	ch := sess.Changed()
	last := sess.State()
	go func() {
		defer close(done)
		for {
			if last == registry.StateLost || last == registry.StateClosed {
				return
			}
			select {
			case <-ch:
			case <-quit:
				return
			}
			ch = sess.Changed()
			st := sess.State()
			sure := last == registry.StateConnected || last == registry.StateReconnected
			if sure && st == registry.StateReconnected {
				fn(registry.StateSuspended)
			}
			if st != last || st == registry.StateReconnected {
				fn(st)
			}
			last = st
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}
