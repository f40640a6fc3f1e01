package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// Session is a liveness the store's ephemeral keys are bound to (an etcd lease, a
// ZooKeeper session, a Consul session). It keeps itself alive; while the connection
// is interrupted it is Suspended, and when the backend ends it, it is Lost for good
// and its ephemeral keys are gone: open a new one. Recipes take a Session, as etcd's
// concurrency package does.
//
// Its state is read, not pushed: State returns the current one, Changed a channel
// closed at the next change, and Done and Err say when and why it ended, as in
// etcd. A Session starts no goroutine, so there is no listener to stop and nothing
// a reader can deadlock with; any goroutine may call Close, including one that is
// waiting on Changed. A reader never misses that the session was suspended: from
// Connected or Reconnected the only next states are Suspended, Lost and Closed, so
// a Changed channel taken while the state was Connected or Reconnected and found
// closed means the session was not sure of itself at some moment since, even if
// it is Reconnected again by the time State is read. Lost and Closed are final,
// and Done is closed with them. A Session keeps no history: its memory does not
// grow however often it flaps.
//
// The usual loop of a recipe that must stop when the session can no longer be
// trusted:
//
//	for {
//		ch := sess.Changed() // before State: no change can fall between them
//		if st := sess.State(); st != registry.StateConnected && st != registry.StateReconnected {
//			return st // Suspended, Lost or Closed
//		}
//		select {
//		case <-ch:
//			return sess.State() // whatever it is now, it was unsure since
//		case <-ctx.Done():
//			return ctx.Err()
//		}
//	}
type Session struct {
	c    *Client
	conn driver.SessionConn

	mu      sync.Mutex
	state   SessionState
	changed broadcast.Signal

	closer closeOnce
}

// SessionOption configures NewSession.
type SessionOption func(*sessionSpec)

// WithTTL sets the session's time to live (default: the backend's, see its docs).
func WithTTL(d time.Duration) SessionOption { return func(s *sessionSpec) { s.TTL = d } }

// NewSession starts a session. It is closed by Close or by the Client's Close.
func (c *Client) NewSession(ctx context.Context, opts ...SessionOption) (*Session, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: new session: %w", err)
	}
	sc, ok := c.conn.(driver.StoreConn)
	if !ok || !c.conn.Capabilities().Sessions {
		return nil, fmt.Errorf("registry: sessions: %w", ErrNotSupported)
	}
	var spec driver.SessionSpec
	for _, o := range opts {
		o(&spec)
	}
	if spec.TTL < 0 {
		return nil, invalid("TTL", spec.TTL, "must not be negative")
	}
	opDone, ok := c.beginOp()
	if !ok {
		return nil, ErrClosed
	}
	defer opDone()
	s := &Session{c: c, state: StateConnected}
	spec.OnState = s.report
	conn, err := sc.NewSession(ctx, spec)
	if err != nil {
		c.requestError(ctx, "session", err)
		return nil, err
	}
	s.conn = conn
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cctx, cancel := c.closingTimeout(closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
		return nil, ErrClosed
	}
	c.sessions[s] = struct{}{}
	c.mu.Unlock()
	return s, nil
}

// report records a state the driver reported. Repeats are dropped, Lost and
// Closed are final, and a driver's Connected or Reconnected while already
// connected is no change (so that a change from a sure state always means the
// session was unsure since; see Session).
func (s *Session) report(st SessionState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state
	switch {
	case cur == st, cur == StateLost, cur == StateClosed:
		return
	case sure(cur) && sure(st):
		return
	case cur == StateSuspended && st == StateConnected:
		st = StateReconnected
	}
	s.c.sessionState(cur, st)
	s.state = st
	s.changed.Notify()
}

// sure reports whether a session in state st can be trusted.
func sure(st SessionState) bool { return st == StateConnected || st == StateReconnected }

// ID returns the backend's id of the session.
func (s *Session) ID() string { return s.conn.ID() }

// State returns the current state. Once Done is closed it is Lost or Closed.
func (s *Session) State() SessionState {
	select {
	case <-s.conn.Done():
		// The driver may close Done a moment before it reports the final state.
		if errors.Is(s.conn.Err(), ErrSessionLost) {
			s.report(StateLost)
		} else {
			s.report(StateClosed)
		}
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Changed returns a channel closed at the next state change after the call. Take
// it before reading State, so that no change falls between the two (see Session).
func (s *Session) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed.C()
}

// Done is closed when the session ended (lost or closed).
func (s *Session) Done() <-chan struct{} { return s.conn.Done() }

// Err is nil while the session lives, then wraps ErrSessionLost or ErrClosed.
func (s *Session) Err() error { return s.conn.Err() }

// Close ends the session: its ephemeral keys are deleted, its state becomes
// Closed (unless it was Lost already) and Done is closed. It waits for the
// backend, at most 10 seconds, and returns what failed; concurrent and later
// calls wait for the first and return the same. The Client's Close closes every
// session still open.
func (s *Session) Close() error {
	return s.closer.do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		return s.close(ctx)
	})
}

// close ends the session with ctx, also abandoned when a Client's Shutdown gives
// up.
func (s *Session) close(ctx context.Context) error {
	ctx, cancel := s.c.closingCtx(ctx)
	defer cancel()
	err := s.conn.Close(ctx)
	s.report(StateClosed)
	s.c.mu.Lock()
	delete(s.c.sessions, s)
	s.c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("registry: close session %s: %w", s.conn.ID(), err)
	}
	return nil
}
