package zk

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry/driver"
)

// session is a store session: a go-zookeeper connection of its own whose session
// the ephemeral keys created through it are bound to.
type session struct {
	c       *Conn
	zc      *zkConn
	id      int64
	ttl     time.Duration
	onState func(driver.SessionState)

	qmu    sync.Mutex
	queue  []sessEvent
	signal chan struct{} // 1-buffered: queue is non-empty

	stop     chan struct{}
	stopOnce sync.Once
	stopped  chan struct{}

	mu   sync.Mutex
	err  error
	done chan struct{}

	stateMu  sync.Mutex
	terminal bool
}

type sessEvent struct {
	state zk.State
	sid   int64
}

// NewSession opens a connection of its own, with session timeout spec.TTL (default:
// the URL's session_timeout).
func (c *Conn) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	ttl := spec.TTL
	if ttl == 0 {
		ttl = c.cfg.sessionTimeout
	}
	if ttl < time.Second {
		return nil, &driver.FieldError{Field: "TTL", Value: ttl.String(), Reason: "zk sessions need at least 1s"}
	}
	s := &session{c: c, ttl: ttl, onState: spec.OnState, signal: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{}), done: make(chan struct{})}
	zc, err := c.dial(ctx, ttl, s.hook, nil, true)
	if err != nil {
		return nil, err
	}
	s.zc = zc
	s.id, _ = zc.session()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		zc.close()
		return nil, fmt.Errorf("zk: new session: %w", driver.ErrClosed)
	}
	c.sessions[s] = struct{}{}
	c.mu.Unlock()
	if !c.spawn(func() {
		defer close(s.stopped)
		s.monitor()
	}) {
		close(s.stopped)
		zc.close()
		return nil, fmt.Errorf("zk: new session: %w", driver.ErrClosed)
	}
	return s, nil
}

// hook runs on go-zookeeper's goroutine: it must not block. A session the server
// expired must never be replaced by a new one, so reconnection is refused at once.
func (s *session) hook(zc *zkConn, st zk.State, sid int64) {
	if st == zk.StateExpired {
		zc.refuse.Store(true)
	}
	s.qmu.Lock()
	s.queue = append(s.queue, sessEvent{st, sid})
	s.qmu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// monitor turns connection events into session states, in order, on one goroutine,
// and declares the session lost after a whole session timeout without connection.
func (s *session) monitor() {
	connected, suspended := false, false
	var timer *time.Timer
	var timeout <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-s.stop:
			return
		case <-timeout:
			s.lose(fmt.Errorf("zk: session %s: disconnected for longer than the session timeout %v: %w", s.ID(), s.ttl, driver.ErrSessionLost))
			return
		case <-s.signal:
		}
		s.qmu.Lock()
		evs := s.queue
		s.queue = nil
		s.qmu.Unlock()
		for _, ev := range evs {
			switch ev.state {
			case zk.StateHasSession:
				switch {
				case ev.sid != s.id:
					s.lose(fmt.Errorf("zk: session %s replaced by %s: %w", s.ID(), hexID(ev.sid), driver.ErrSessionLost))
					return
				case !connected:
					connected = true
					s.report(driver.StateConnected)
				case suspended:
					suspended = false
					timer.Stop()
					timeout = nil
					s.report(driver.StateReconnected)
				}
			case zk.StateExpired:
				s.lose(fmt.Errorf("zk: session %s expired: %w", s.ID(), driver.ErrSessionLost))
				return
			case zk.StateDisconnected, zk.StateConnecting:
				if connected && !suspended {
					suspended = true
					s.report(driver.StateSuspended)
					timer = time.NewTimer(s.ttl)
					timeout = timer.C
				}
			}
		}
	}
}

func (s *session) report(st driver.SessionState) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.terminal {
		return
	}
	if st == driver.StateLost || st == driver.StateClosed {
		s.terminal = true
	}
	if s.onState != nil {
		s.onState(st)
	}
}

// end marks the session ended with err; false if it had already ended.
func (s *session) end(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	s.err = err
	close(s.done)
	return true
}

// lose ends the session as lost (on the monitor goroutine) and closes its
// connection, which refuses to open a new session.
func (s *session) lose(err error) {
	s.zc.refuse.Store(true)
	if s.end(err) {
		s.report(driver.StateLost)
	}
	s.zc.close()
	s.c.forget(s)
}

func (c *Conn) forget(s *session) {
	c.mu.Lock()
	delete(c.sessions, s)
	c.mu.Unlock()
}

// ID is the ZooKeeper session id in hex (as zkCli shows ephemeralOwner).
func (s *session) ID() string { return hexID(s.id) }

// Done is closed when the session was lost or closed.
func (s *session) Done() <-chan struct{} { return s.done }

// Err says why Done is closed.
func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close closes the session on the server (its ephemeral keys go at once) and its
// connection.
func (s *session) Close(ctx context.Context) error {
	if s.end(fmt.Errorf("zk: session %s: %w", s.ID(), driver.ErrClosed)) {
		s.report(driver.StateClosed)
	}
	s.zc.refuse.Store(true)
	closed := make(chan struct{})
	closeConn := func() {
		defer close(closed)
		s.zc.close()
		s.stopOnce.Do(func() { close(s.stop) })
	}
	if !s.c.spawn(closeConn) {
		closeConn()
	}
	s.c.forget(s)
	select {
	case <-closed:
	case <-ctx.Done():
		return fmt.Errorf("zk: close session %s: %w", s.ID(), ctx.Err())
	}
	<-s.stopped
	return nil
}
