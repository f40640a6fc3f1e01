package recipes

import "github.com/regkit/regkit/registry"

// nextChange is the one place that learns of a session's state changes. It
// returns a channel closed by the first state change of s after the call, and a
// function that ends the wait (kept so that a subscription-based Session could
// slot in again; with Changed it has nothing to do). Read s.State() after calling
// it, so that no change between the read and the wait is missed.
func nextChange(s *registry.Session) (changed <-chan struct{}, stop func()) {
	return s.Changed(), func() {}
}
