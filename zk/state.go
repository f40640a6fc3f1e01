package zk

import (
	"context"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// stateLog turns the registration connection's events into Curator's connection
// states and keeps them for listeners.
type stateLog struct {
	qmu    sync.Mutex
	queue  []sessEvent
	signal chan struct{}

	mu      sync.Mutex
	events  []driver.SessionState // the last one, and those a listener has yet to read
	base    int                   // the number of events dropped before events[0]
	readers map[*int]struct{}     // each listener's next event, counted from the start
	changed broadcast.Signal      // at every add
}

func newStateLog() *stateLog {
	return &stateLog{signal: make(chan struct{}, 1)}
}

// hook runs on go-zookeeper's goroutine: it only queues.
func (l *stateLog) hook(_ *zkConn, st zk.State, sid int64) {
	l.qmu.Lock()
	l.queue = append(l.queue, sessEvent{st, sid})
	l.qmu.Unlock()
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

func (l *stateLog) add(st driver.SessionState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, st)
	l.trim()
	l.changed.Notify()
}

// trim drops the events every listener has read, but the last (the current
// state), so that a connection that flaps for months keeps a bounded log. Under
// l.mu.
func (l *stateLog) trim() {
	keep := l.base + len(l.events) - 1
	for r := range l.readers {
		keep = min(keep, *r)
	}
	if n := keep - l.base; n > 0 {
		// A copy: a listener may still range over the old slice.
		l.events = append([]driver.SessionState(nil), l.events[n:]...)
		l.base = keep
	}
}

// monitor maps events to states, in order: Connected for the first session;
// Suspended when the connection drops; Reconnected when a session is back (the same
// one, or a new one after Lost); Lost when the server reports the session expired
// or the connection stayed down for a whole session timeout.
func (l *stateLog) monitor(ctx context.Context, timeout time.Duration) {
	var sid int64
	connected, suspended, lost := false, false, false
	timer := time.NewTimer(timeout)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			if suspended && !lost {
				lost = true
				l.add(driver.StateLost)
			}
			continue
		case <-l.signal:
		}
		l.qmu.Lock()
		evs := l.queue
		l.queue = nil
		l.qmu.Unlock()
		for _, ev := range evs {
			switch ev.state {
			case zk.StateHasSession:
				switch {
				case !connected:
					connected = true
					sid = ev.sid
					l.add(driver.StateConnected)
				case suspended || lost || ev.sid != sid:
					if ev.sid != sid && !lost {
						l.add(driver.StateLost)
					}
					sid = ev.sid
					suspended, lost = false, false
					timer.Stop()
					l.add(driver.StateReconnected)
				}
			case zk.StateExpired:
				if !lost {
					lost = true
					l.add(driver.StateLost)
				}
			case zk.StateDisconnected, zk.StateConnecting:
				if connected && !suspended && !lost {
					suspended = true
					l.add(driver.StateSuspended)
					timer.Reset(timeout)
				}
			}
		}
	}
}

// ConnectionState returns the latest connection state of the registration
// connection (StateConnected before any change).
func (c *Conn) ConnectionState() driver.SessionState {
	c.states.mu.Lock()
	defer c.states.mu.Unlock()
	if len(c.states.events) == 0 {
		return driver.StateConnected
	}
	return c.states.events[len(c.states.events)-1]
}

// Listen calls fn with every state change of the registration connection from now
// on, in order, on a goroutine of its own owned by the Conn, as Curator's
// ConnectionStateListener: Suspended when the connection drops, Reconnected when a
// session is back, Lost when the session expired or the connection stayed down for
// a whole session timeout. Unlike a store session the connection goes on after Lost:
// the next session is reported Reconnected (and registrations are put again in it).
// stop ends the listener and waits for fn to return; so does Close.
func (c *Conn) Listen(fn func(driver.SessionState)) (stop func()) {
	l := c.states
	idx := new(int) // the next event to read, counted from the start
	l.mu.Lock()
	*idx = l.base + len(l.events)
	if l.readers == nil {
		l.readers = map[*int]struct{}{}
	}
	l.readers[idx] = struct{}{}
	l.mu.Unlock()
	unread := func() {
		l.mu.Lock()
		delete(l.readers, idx)
		l.mu.Unlock()
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	if !c.spawn(func() {
		defer close(done)
		defer unread()
		for {
			l.mu.Lock()
			evs, ch := l.events[*idx-l.base:], l.changed.C()
			*idx = l.base + len(l.events)
			l.mu.Unlock()
			for _, st := range evs {
				fn(st)
			}
			select {
			case <-ch:
			case <-quit:
				return
			case <-c.life.Done():
				return
			}
		}
	}) {
		unread()
		return func() {}
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}
