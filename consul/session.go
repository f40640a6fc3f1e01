package consul

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/registry/driver"
)

// session is a Consul session with behavior "delete" and its renewal goroutine
// (owned by the Conn).
type session struct {
	c       *Conn
	id      string
	ttl     time.Duration
	onState func(driver.SessionState)
	cancel  context.CancelFunc
	stopped chan struct{} // renewal goroutine ended
	kick    chan struct{} // renew now: Consul refused the session in a write

	mu   sync.Mutex
	err  error
	done chan struct{}
}

// NewSession creates a Consul session (TTL clamped to 10s–24h, behavior delete) and
// renews it every TTL/3.
func (c *Conn) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	if c.life.Err() != nil {
		return nil, fmt.Errorf("consul: new session: %w", driver.ErrClosed)
	}
	ttl := spec.TTL
	if ttl <= 0 {
		ttl = c.s.sessionTTL
	}
	ttl = clampTTL(ttl)
	delay := c.s.lockDelay
	if delay <= 0 {
		delay = time.Millisecond // the api omits a zero lock delay, which means Consul's 15s
	}
	id, _, err := c.cli.Session().Create(&api.SessionEntry{
		Name: "regkit", Behavior: api.SessionBehaviorDelete, LockDelay: delay,
		TTL: strconv.FormatInt(int64(ttl/time.Second), 10) + "s",
	}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return nil, wrap("create session", "", err)
	}
	rctx, cancel := context.WithCancel(c.life)
	s := &session{c: c, id: id, ttl: ttl, onState: spec.OnState, cancel: cancel,
		stopped: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}
	s.state(driver.StateConnected) // before the renewals can report anything
	if !c.spawn(func() {
		defer close(s.stopped)
		s.renew(rctx)
	}) {
		cancel()
		s.end(fmt.Errorf("consul: session %s: %w", id, driver.ErrClosed), driver.StateClosed)
		_, _ = c.cli.Session().Destroy(id, (&api.WriteOptions{}).WithContext(ctx))
		return nil, fmt.Errorf("consul: new session: %w", driver.ErrClosed)
	}
	return s, nil
}

func (s *session) state(st driver.SessionState) {
	if s.onState != nil {
		s.onState(st)
	}
}

// renew renews the session every TTL/3 (every second while renewals fail), reports
// Suspended on a failed renewal and Reconnected on the next good one, and Lost when
// Consul says the session is gone or no renewal succeeded for a whole TTL.
func (s *session) renew(ctx context.Context) {
	last := time.Now()
	suspended := false
	next := s.ttl / 3
	for {
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.kick:
			t.Stop()
		}
		rctx, cancel := context.WithTimeout(ctx, s.ttl/3)
		entry, _, err := s.c.cli.Session().Renew(s.id, (&api.WriteOptions{}).WithContext(rctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && entry == nil:
			s.end(fmt.Errorf("consul: session %s: Consul no longer knows it: %w", s.id, driver.ErrSessionLost), driver.StateLost)
			return
		case err != nil:
			if time.Since(last) >= s.ttl {
				s.end(fmt.Errorf("consul: session %s: not renewed for %v, Consul may have invalidated it: %w (last error: %w)",
					s.id, s.ttl, driver.ErrSessionLost, err), driver.StateLost)
				return
			}
			if !suspended {
				suspended = true
				s.state(driver.StateSuspended)
			}
			next = min(time.Second, s.ttl/3)
		default:
			last = time.Now()
			next = s.ttl / 3
			if suspended {
				suspended = false
				s.state(driver.StateReconnected)
			}
		}
	}
}

// check makes the renewal goroutine renew at once, so that a session Consul refused
// in a write is reported lost without waiting for the next renewal.
func (s *session) check() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// end closes Done with err and reports st, once.
func (s *session) end(err error, st driver.SessionState) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	s.err = err
	close(s.done)
	s.mu.Unlock()
	s.state(st)
	return true
}

// ID returns the Consul session ID.
func (s *session) ID() string { return s.id }

// Done is closed when the session was lost or closed.
func (s *session) Done() <-chan struct{} { return s.done }

// Err says why Done is closed.
func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops the renewals and destroys the session: Consul deletes its keys.
func (s *session) Close(ctx context.Context) error {
	s.cancel()
	<-s.stopped
	if !s.end(fmt.Errorf("consul: session %s: %w", s.id, driver.ErrClosed), driver.StateClosed) {
		// Lost already; if it was lost for want of renewals, Consul may still hold it.
		_, _ = s.c.cli.Session().Destroy(s.id, (&api.WriteOptions{}).WithContext(ctx))
		return nil
	}
	if _, err := s.c.cli.Session().Destroy(s.id, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return wrap("destroy session", s.id, err)
	}
	return nil
}
