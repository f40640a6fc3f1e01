// Package broadcast is the close-and-replace signal every changing value uses to
// wake its waiters (in package registry: a Registration's state, a Session's
// state, a service watch's, a services watch's and a tree watch's latest publish;
// a registry/cache entry; in the drivers: the ZooKeeper connection's state and
// state log, Consul's health verdict; in recipes/leader: a Latch's or Selector's
// current term): a channel that is closed at the next change and replaced by a
// fresh one. It lives at the module's root so that drivers and recipes can use it
// too.
//
// A Signal has no lock of its own: its owner calls C and Notify under the mutex
// that guards the value it announces, so that a waiter reads the value and the
// channel for its next change atomically and can never miss a change between them.
package broadcast

// Signal wakes every waiter at each change. The zero value is ready to use.
type Signal struct {
	ch chan struct{}
}

// C returns the channel closed at the next Notify. Call it under the owner's lock,
// together with reading the value it announces.
func (s *Signal) C() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes every waiter of the current channel and starts a new one. Call it
// under the owner's lock, after changing the value.
func (s *Signal) Notify() {
	if s.ch != nil {
		close(s.ch)
	}
	// Lazily made again by the next C: a value nobody waits for costs nothing.
	s.ch = nil
}
