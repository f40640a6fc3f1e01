package mem

import (
	"fmt"
	"sync"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

var _ driver.EventWatcher = (*Conn)(nil)

// events is a Conn's delivery of event subscriptions: the server marks a
// subscription dirty (never calling into package registry under its lock), and
// one goroutine per Conn, started with the first subscription, reads each dirty
// service and hands over the listing as a Reset.
type events struct {
	mu      sync.Mutex
	queue   []*esub
	wake    chan struct{} // 1-buffered
	running bool
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the goroutine has ended
}

// esub is one SubscribeEvents.
type esub struct {
	c       *Conn
	service string
	fn      func(driver.Change)
	w       *watch

	mu     sync.Mutex // serialises fn calls and cancel
	closed bool
	queued bool  // under events.mu
	err    error // why the server broke it, under events.mu
}

// SubscribeEvents follows service: a complete listing as a Reset at once and
// after every change; a fault (Cut, ExpireSession, Close) ends the subscription
// with Err.
func (c *Conn) SubscribeEvents(service string, fn func(driver.Change)) (func(), error) {
	s := c.s
	sub := &esub{c: c, service: service, fn: fn}
	sub.w = &watch{conn: c, service: service, notify: func() { c.ev.enqueue(sub) },
		broken: make(chan error, 1), onBreak: func(err error) {
			c.ev.mu.Lock() // not sub.mu: deliver holds it while it takes the server's lock
			sub.err = err
			c.ev.mu.Unlock()
			c.ev.enqueue(sub)
		}}
	s.mu.Lock()
	if err := s.check(c); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("mem: watch %s: %w", service, err)
	}
	if !c.ev.start() {
		s.mu.Unlock()
		return nil, fmt.Errorf("mem: watch %s: %w", service, driver.ErrClosed)
	}
	s.watches[sub.w] = struct{}{}
	s.mu.Unlock()
	c.ev.enqueue(sub)
	return func() {
		s.mu.Lock()
		delete(s.watches, sub.w)
		s.mu.Unlock()
		sub.mu.Lock()
		sub.closed = true
		sub.mu.Unlock()
	}, nil
}

// start starts the delivery goroutine once; false after close.
func (e *events) start() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stop == nil {
		e.stop, e.wake, e.done = make(chan struct{}), make(chan struct{}, 1), make(chan struct{})
	}
	select {
	case <-e.stop:
		return false
	default:
	}
	if !e.running {
		e.running = true
		go e.run()
	}
	return true
}

func (e *events) enqueue(s *esub) {
	e.mu.Lock()
	if !s.queued {
		s.queued = true
		e.queue = append(e.queue, s)
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *events) run() {
	defer close(e.done)
	for {
		select {
		case <-e.stop:
			return
		case <-e.wake:
		}
		e.mu.Lock()
		q := e.queue
		e.queue = nil
		for _, s := range q {
			s.queued = false
		}
		e.mu.Unlock()
		for _, s := range q {
			s.deliver()
		}
	}
}

func (s *esub) deliver() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.c.ev.mu.Lock()
	broke := s.err
	s.c.ev.mu.Unlock()
	if broke != nil {
		s.closed = true
		s.fn(driver.Change{Err: broke})
		return
	}
	at := time.Now()
	l, err := s.c.listQuiet(s.service)
	if err != nil {
		s.closed = true
		s.fn(driver.Change{Err: err})
		return
	}
	s.fn(driver.Change{Reset: true, Listing: l, Revision: l.Revision, ReadAt: at})
}

// close stops the delivery goroutine and waits for it.
func (e *events) close() {
	e.mu.Lock()
	if e.stop == nil {
		e.stop, e.wake, e.done = make(chan struct{}), make(chan struct{}, 1), make(chan struct{})
	}
	select {
	case <-e.stop:
	default:
		close(e.stop)
	}
	running := e.running
	e.mu.Unlock()
	if running {
		<-e.done
	}
}
