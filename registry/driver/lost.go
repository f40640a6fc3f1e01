package driver

import "sync"

// LostSignal is the end signal of a Lease (Lost, Err) or a SessionConn (Done, Err):
// a channel closed once, with the error saying why. Drivers embed or hold one
// instead of writing the channel, the once and the error again. The zero value is
// ready to use; a LostSignal must not be copied after first use.
type LostSignal struct {
	mu  sync.Mutex
	ch  chan struct{}
	err error
}

// chanLocked returns the channel, making it on first use.
func (s *LostSignal) chanLocked() chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Lose closes the channel and records err as the reason, the first time it is
// called; later calls change nothing. It reports whether this call closed it. A nil
// err is recorded as ErrSessionLost, so Err is never nil once Lost is closed.
func (s *LostSignal) Lose(err error) bool {
	if err == nil {
		err = ErrSessionLost
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	s.err = err
	close(s.chanLocked())
	return true
}

// Lost returns the channel Lose closes.
func (s *LostSignal) Lost() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chanLocked()
}

// Err is nil until Lose was called, then the error given to the first Lose.
func (s *LostSignal) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
