package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/regkit/regkit/registry/driver"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var _ driver.EventWatcher = (*Conn)(nil)

// hub is the Conn's one watch stream over <prefix>/services/, demultiplexed to
// the event subscriptions of each service: however many services a Client
// follows, the server holds one watcher for it, and the Conn runs two goroutines
// for it (the stream and its connection monitor), started with the first
// subscription and ended with the last.
type hub struct {
	mu     sync.Mutex
	subs   map[string]map[*esub]struct{} // by service
	stream *stream                       // nil while none runs
	idle   *time.Timer                   // stops the stream once it has had no subscription for streamLinger
}

// streamLinger is how long the stream outlives its last subscription, so that a
// service watched and released over and over (a registration guard per
// Register and Deregister) does not re-arm the watch each time.
const streamLinger = 10 * time.Second

// stream is one run of the hub's watch. A new one starts when a subscription
// comes after the previous one ended.
type stream struct {
	cancel context.CancelCauseFunc
	ctx    context.Context
	ready  chan struct{} // closed once the watch is created on the server
	ended  chan struct{} // closed when it broke or was stopped
}

// esub is one SubscribeEvents.
type esub struct {
	service string
	fn      func(driver.Change)
	st      *stream
	cancel  context.CancelFunc // the initial listing's

	mu     sync.Mutex // serialises fn calls, cancel and the end
	closed bool       // cancelled, or ended with Err
	listed bool       // the Reset was delivered
	rev    int64      // the Reset's revision: events up to it are in it
	buf    []event    // events that came before the listing answered
}

// event is one change of an instance key, with its revision.
type event struct {
	rev     int64
	id      string
	deleted bool
	inst    driver.Instance // put of a valid instance
}

// SubscribeEvents follows service through the Conn's shared watch stream: it
// lists the service at revision R once the stream is armed and hands over every
// event after R, one call per watch response. A compacted history, a failed or
// cancelled stream, or a connection down for two seconds ends every
// subscription with Err. The naming layout (keys are not instance IDs) is not
// offered: driver.ErrNotSupported.
func (c *Conn) SubscribeEvents(service string, fn func(driver.Change)) (func(), error) {
	if c.layout == LayoutNaming {
		return nil, fmt.Errorf("etcd: events in the naming layout: %w", driver.ErrNotSupported)
	}
	if c.life.Err() != nil {
		return nil, fmt.Errorf("etcd: watch %s: %w", service, driver.ErrClosed)
	}
	h := &c.hub
	h.mu.Lock()
	st := h.stream
	if st == nil || st.ctx.Err() != nil {
		st = c.startStream()
		if st == nil {
			h.mu.Unlock()
			return nil, fmt.Errorf("etcd: watch %s: %w", service, driver.ErrClosed)
		}
		h.stream = st
	}
	lctx, lcancel := context.WithCancel(st.ctx)
	s := &esub{service: service, fn: fn, st: st, cancel: lcancel}
	if h.subs == nil {
		h.subs = map[string]map[*esub]struct{}{}
	}
	if h.subs[service] == nil {
		h.subs[service] = map[*esub]struct{}{}
	}
	h.subs[service][s] = struct{}{}
	h.mu.Unlock()
	if !c.watchers.Go(func() { c.initialList(lctx, s) }) {
		lcancel()
	}
	return func() { c.unsubscribe(s) }, nil
}

// unsubscribe ends s: no call of its fn follows, and the stream stops with its
// last subscription.
func (c *Conn) unsubscribe(s *esub) {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	h := &c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.subs[s.service]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.subs, s.service)
		}
	}
	if len(h.subs) == 0 && h.stream != nil {
		st := h.stream
		if h.idle != nil {
			h.idle.Stop()
		}
		h.idle = time.AfterFunc(streamLinger, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.stream == st && len(h.subs) == 0 {
				st.cancel(context.Canceled)
				h.stream = nil
			}
		})
	}
}

// initialList reads s's service once the stream is armed, delivers it as a Reset
// and then the events that came meanwhile.
func (c *Conn) initialList(ctx context.Context, s *esub) {
	select {
	case <-s.st.ready:
	case <-s.st.ended:
		return // the stream's end reaches every subscription
	case <-ctx.Done():
		return
	}
	at := time.Now()
	l, err := c.List(ctx, s.service)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if err != nil {
		s.closed = true
		s.fn(driver.Change{Err: err})
		return
	}
	s.fn(driver.Change{Reset: true, Listing: l, Revision: l.Revision, ReadAt: at})
	s.listed, s.rev = true, int64(l.Revision)
	var after []event
	for _, ev := range s.buf {
		if uint64(ev.rev) > l.Revision {
			after = append(after, ev)
		}
	}
	s.buf = nil
	if ch, ok := change(after); ok {
		s.fn(ch)
	}
}

// change folds events (in revision order) into one Change, the last event of each
// ID winning.
func change(evs []event) (driver.Change, bool) {
	if len(evs) == 0 {
		return driver.Change{}, false
	}
	last := make(map[string]int, len(evs))
	for i, ev := range evs {
		last[ev.id] = i
	}
	var ch driver.Change
	for i, ev := range evs {
		if last[ev.id] != i {
			continue
		}
		if ev.deleted {
			ch.Deletes = append(ch.Deletes, ev.id)
		} else {
			ch.Puts = append(ch.Puts, ev.inst)
		}
	}
	ch.Revision = uint64(evs[len(evs)-1].rev)
	return ch, true
}

// startStream starts the hub's watch and its connection monitor; nil once the
// Conn is closing. Under hub.mu.
func (c *Conn) startStream() *stream {
	ctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(c.life))
	st := &stream{ctx: ctx, cancel: cancel, ready: make(chan struct{}), ended: make(chan struct{})}
	if !c.watchers.Go(func() { c.runStream(st) }) {
		cancel(driver.ErrClosed)
		return nil
	}
	if !c.watchers.Go(func() {
		c.monitorConnection(ctx, func() {
			cancel(fmt.Errorf("etcd: watch %s: connection lost: %w", c.servicesPrefix(), driver.ErrUnavailable))
		})
	}) {
		cancel(driver.ErrClosed)
	}
	return st
}

// runStream reads the stream until it ends, then ends every subscription on it.
func (c *Conn) runStream(st *stream) {
	err := c.readStream(st)
	close(st.ended)
	h := &c.hub
	h.mu.Lock()
	if h.stream == st {
		h.stream = nil
	}
	var subs []*esub
	for svc, m := range h.subs {
		for s := range m {
			if s.st == st {
				subs = append(subs, s)
				delete(m, s)
			}
		}
		if len(m) == 0 {
			delete(h.subs, svc)
		}
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.mu.Lock()
		if !s.closed {
			s.closed = true
			s.fn(driver.Change{Err: err})
		}
		s.mu.Unlock()
	}
}

// readStream delivers the stream's events until it breaks, and says why.
func (c *Conn) readStream(st *stream) error {
	prefix := c.servicesPrefix()
	ch := c.cli.Watch(st.ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	for resp := range ch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("etcd: watch %s: history compacted at revision %d: %w", prefix, resp.CompactRevision, driver.ErrUnavailable)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("etcd: watch %s: %w: %w", prefix, driver.ErrUnavailable, err)
		}
		if resp.Created {
			close(st.ready)
			continue
		}
		c.dispatch(prefix, resp)
	}
	if cause := context.Cause(st.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if c.life.Err() != nil {
		return fmt.Errorf("etcd: watch %s: %w", prefix, driver.ErrClosed)
	}
	return fmt.Errorf("etcd: watch %s closed: %w", prefix, driver.ErrUnavailable)
}

// dispatch hands one watch response to the subscriptions of the services it
// touches: one call each.
func (c *Conn) dispatch(prefix string, resp clientv3.WatchResponse) {
	var bySvc map[string][]event
	for _, ev := range resp.Events {
		rest := strings.TrimPrefix(string(ev.Kv.Key), prefix)
		service, id, ok := strings.Cut(rest, "/")
		if !ok || driver.ValidInstanceID(id) != nil {
			continue // not an instance's key (List skips it too)
		}
		e := event{rev: ev.Kv.ModRevision, id: id}
		if ev.Type == clientv3.EventTypeDelete {
			e.deleted = true
		} else {
			in, why := decodeInstance(service, id, ev.Kv.Value)
			if why != "" {
				c.skipped.Skip(string(ev.Kv.Key), why)
				e.deleted = true // not an instance any more, as List would say
			} else {
				e.inst = in
			}
		}
		if bySvc == nil {
			bySvc = map[string][]event{}
		}
		bySvc[service] = append(bySvc[service], e)
	}
	if len(bySvc) == 0 {
		return
	}
	h := &c.hub
	h.mu.Lock()
	var targets []*esub
	var evs [][]event
	for svc, list := range bySvc {
		for s := range h.subs[svc] {
			targets = append(targets, s)
			evs = append(evs, list)
		}
	}
	h.mu.Unlock()
	for i, s := range targets {
		s.mu.Lock()
		switch {
		case s.closed:
		case !s.listed:
			s.buf = append(s.buf, evs[i]...)
		default:
			// The stream may lag behind the listing: what it already holds is
			// not applied again.
			var after []event
			for _, ev := range evs[i] {
				if ev.rev > s.rev {
					after = append(after, ev)
				}
			}
			if ch, ok := change(after); ok {
				ch.Revision = uint64(resp.Header.Revision)
				s.fn(ch)
			}
		}
		s.mu.Unlock()
	}
}
