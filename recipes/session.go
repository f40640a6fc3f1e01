package recipes

import "github.com/regkit/regkit/registry"

// nextChange is the one place that learns of a session's state changes. It
// subscribes at once and returns a channel closed by the first state change of s
// after the call, and a function that ends the subscription (call it when done
// waiting; it does not wait for anything). Read s.State() after calling it, so that
// no change between the read and the wait is missed.
//
// It is written against Session.Listen; once Session offers an etcd-style
// Changed() channel it becomes `return s.Changed(), func() {}`.
func nextChange(s *registry.Session) (changed <-chan struct{}, stop func()) {
	ch := make(chan struct{})
	fired := false
	// Listen calls fn on a goroutine of its own, one call at a time, and may call
	// it once more after stop returns: fn only closes ch, once.
	stopListen := s.Listen(func(registry.SessionState) {
		if !fired {
			fired = true
			close(ch)
		}
	})
	return ch, stopListen
}
