package registry

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// Session is a liveness the store's ephemeral keys are bound to (an etcd lease, a
// ZooKeeper session, a Consul session). It keeps itself alive; while the connection
// is interrupted it is Suspended, and when the backend ends it, it is Lost for good
// and its ephemeral keys are gone: open a new one. Recipes take a Session, as etcd's
// concurrency package does.
type Session struct {
	c    *Client
	conn driver.SessionConn

	mu      sync.Mutex
	events  []SessionState // every state reported, in order
	changed chan struct{}
	wg      sync.WaitGroup
	stop    chan struct{}
	once    sync.Once
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
	s := &Session{c: c, changed: make(chan struct{}), stop: make(chan struct{})}
	var spec driver.SessionSpec
	for _, o := range opts {
		o(&spec)
	}
	if spec.TTL < 0 {
		return nil, invalid("TTL", spec.TTL, "must not be negative")
	}
	spec.OnState = s.report
	conn, err := sc.NewSession(ctx, spec)
	if err != nil {
		return nil, err
	}
	s.conn = conn
	s.mu.Lock()
	if len(s.events) == 0 {
		s.appendLocked(StateConnected)
	}
	s.mu.Unlock()
	// Close the session with the Client. The goroutine is owned by the Client.
	if !c.goOwned(func() {
		select {
		case <-c.life.Done():
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Close(ctx)
		case <-s.stop:
		}
	}) {
		_ = conn.Close(ctx)
		return nil, ErrClosed
	}
	return s, nil
}

func (s *Session) report(st SessionState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appendLocked(st)
}

func (s *Session) appendLocked(st SessionState) {
	if n := len(s.events); n > 0 {
		last := s.events[n-1]
		if last == st || last == StateLost || last == StateClosed {
			return
		}
	}
	s.events = append(s.events, st)
	close(s.changed)
	s.changed = make(chan struct{})
}

// ID returns the backend's id of the session.
func (s *Session) ID() string { return s.conn.ID() }

// State returns the latest state.
func (s *Session) State() SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.events) == 0 {
		return StateConnected
	}
	return s.events[len(s.events)-1]
}

// Done is closed when the session ended (lost or closed).
func (s *Session) Done() <-chan struct{} { return s.conn.Done() }

// Err is nil while the session lives, then wraps ErrSessionLost or ErrClosed.
func (s *Session) Err() error { return s.conn.Err() }

// Listen calls fn with every state change from now on, in order, on a goroutine of
// its own (a slow listener delays only itself). It stops after the terminal state
// (lost or closed) or when stop is called; stop waits for fn to return.
func (s *Session) Listen(fn func(SessionState)) (stop func()) {
	s.mu.Lock()
	idx := len(s.events)
	s.mu.Unlock()
	quit := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			s.mu.Lock()
			evs, ch := s.events[idx:], s.changed
			idx = len(s.events)
			s.mu.Unlock()
			for _, st := range evs {
				fn(st)
				if st == StateLost || st == StateClosed {
					return
				}
			}
			select {
			case <-ch:
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
	}
}

// Close ends the session: its ephemeral keys are deleted. Listeners get
// StateClosed. Idempotent.
func (s *Session) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		err = s.conn.Close(ctx)
		s.report(StateClosed)
		close(s.stop)
	})
	s.wg.Wait()
	return err
}
