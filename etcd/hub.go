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

// hub demultiplexes the Conn's watches to the event subscriptions of each
// service. It runs in one of two modes, chosen when a subscription needs a
// watch:
//
//   - per-service watches (the default while the Conn follows at most
//     maxServiceWatches services, 64 unless the URL's service_watches says
//     otherwise): one etcd watch on <prefix>/services/<service>/ per followed
//     service, all multiplexed by clientv3 on the Client's one gRPC stream, so
//     the server sends this Client the changes of the services it follows and
//     nothing else;
//   - one prefix watch on <prefix>/services/ (past that number, or with
//     service_watches=0): one server-side watcher and one goroutine however
//     many services are followed, but every change of the whole fleet reaches
//     the Client. Crossing the threshold moves every subscription onto the
//     prefix watch, each with a new complete listing (a Reset, not an Err: the
//     views do not go stale); the prefix watch stays until it has had no
//     subscription for streamLinger.
//
// Either way the goroutines are bounded: one per watch (at most
// maxServiceWatches, or one) and one connection monitor per Conn while any
// watch runs, whose probe breaks every watch after two failures.
type hub struct {
	mu     sync.Mutex
	subs   map[string]map[*esub]struct{} // by service
	live   *liveness                     // the monitor of the running watches; nil while none runs
	prefix *stream                       // the prefix watch, nil unless in that mode
	per    map[string]*stream            // per-service watches, by service
}

// DefaultServiceWatches is how many services a Conn follows with one etcd watch
// each before it switches to one watch of the whole services prefix (URL
// parameter service_watches; 0: always the prefix watch).
const DefaultServiceWatches = 64

// streamLinger is how long a watch outlives its last subscription, so that a
// service watched and released over and over (a registration guard per
// Register and Deregister) does not re-arm the watch each time.
const streamLinger = 10 * time.Second

// liveness is one run of the hub's connection monitor; every watch's context
// derives from ctx, which the monitor cancels (with the cause) when the
// connection is lost.
type liveness struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// stream is one watch of the hub: of one service's instances, or (service "")
// of the whole services prefix.
type stream struct {
	service string
	cancel  context.CancelCauseFunc
	ctx     context.Context
	ready   chan struct{} // closed once the watch is created on the server
	ended   chan struct{} // closed when it broke or was stopped
	n       int           // subscriptions on it, under hub.mu
	idle    *time.Timer   // stops it once it has had no subscription for streamLinger
}

// esub is one SubscribeEvents.
type esub struct {
	service string
	fn      func(driver.Change)

	mu     sync.Mutex         // serialises fn calls, cancel and the end
	st     *stream            // the watch it follows (changes only when moved to the prefix watch, under hub.mu and mu)
	cancel context.CancelFunc // the initial listing's
	closed bool               // cancelled, or ended with Err
	listed bool               // the Reset was delivered
	rev    int64              // the Reset's revision: events up to it are in it
	buf    []event            // events that came before the listing answered
}

// event is one change of an instance key, with its revision.
type event struct {
	rev     int64
	id      string
	deleted bool
	inst    driver.Instance // put of a valid instance
}

// SubscribeEvents follows service through the hub's watches (see hub): it
// lists the service at revision R once its watch is armed and hands over every
// event after R, one call per watch response. A compacted history, a failed or
// cancelled watch, or a connection down for two seconds ends every
// subscription on it with Err. The naming layout (keys are not instance IDs) is
// not offered: driver.ErrNotSupported.
func (c *Conn) SubscribeEvents(service string, fn func(driver.Change)) (func(), error) {
	if c.layout == LayoutNaming {
		return nil, fmt.Errorf("etcd: events in the naming layout: %w", driver.ErrNotSupported)
	}
	if c.life.Err() != nil {
		return nil, fmt.Errorf("etcd: watch %s: %w", service, driver.ErrClosed)
	}
	h := &c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	st := c.streamFor(service)
	if st == nil {
		return nil, fmt.Errorf("etcd: watch %s: %w", service, driver.ErrClosed)
	}
	s := &esub{service: service, fn: fn}
	if h.subs == nil {
		h.subs = map[string]map[*esub]struct{}{}
	}
	if h.subs[service] == nil {
		h.subs[service] = map[*esub]struct{}{}
	}
	h.subs[service][s] = struct{}{}
	s.mu.Lock()
	c.attach(s, st)
	s.mu.Unlock()
	return func() { c.unsubscribe(s) }, nil
}

// Watches reports the etcd watches the Conn holds for its event subscriptions:
// how many per-service watches, and whether it holds the one watch of the whole
// services prefix instead (see the package doc, Watches).
func (c *Conn) Watches() (services int, prefix bool) {
	h := &c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range h.per {
		if st.ctx.Err() == nil {
			services++
		}
	}
	return services, h.prefix != nil && h.prefix.ctx.Err() == nil
}

// streamFor returns the running watch that covers service, starting one (and
// switching to the prefix watch past the threshold); nil once the Conn is
// closing. Under hub.mu.
func (c *Conn) streamFor(service string) *stream {
	h := &c.hub
	if h.prefix != nil && h.prefix.ctx.Err() == nil {
		return h.prefix
	}
	if st := h.per[service]; st != nil && st.ctx.Err() == nil {
		return st
	}
	if h.live == nil || h.live.ctx.Err() != nil {
		if !c.startLiveness() {
			return nil
		}
	}
	running := 0
	for _, st := range h.per {
		if st.ctx.Err() == nil {
			running++
		}
	}
	if running+1 <= c.serviceWatches {
		st := c.startStream(service)
		if st != nil {
			if h.per == nil {
				h.per = map[string]*stream{}
			}
			h.per[service] = st
		}
		return st
	}
	st := c.startStream("")
	if st == nil {
		return nil
	}
	h.prefix = st
	// Move every subscription onto the prefix watch: each lists its service
	// again there and hands it over as a Reset.
	for _, m := range h.subs {
		for s := range m {
			s.mu.Lock()
			if !s.closed && s.st != st {
				old := s.st
				old.n--
				s.cancel()
				c.attach(s, st)
			}
			s.mu.Unlock()
		}
	}
	for svc, old := range h.per {
		old.cancel(context.Canceled)
		if old.idle != nil {
			old.idle.Stop()
		}
		delete(h.per, svc)
	}
	return st
}

// attach makes s follow st from a new complete listing. Under hub.mu and s.mu.
func (c *Conn) attach(s *esub, st *stream) {
	lctx, lcancel := context.WithCancel(st.ctx)
	s.st, s.cancel, s.listed, s.rev, s.buf = st, lcancel, false, 0, nil
	st.n++
	if st.idle != nil {
		st.idle.Stop()
		st.idle = nil
	}
	if !c.watchers.Go(func() { c.initialList(lctx, s, st) }) {
		lcancel()
	}
}

// startLiveness starts the connection monitor of the hub's watches; false once
// the Conn is closing. Under hub.mu.
func (c *Conn) startLiveness() bool {
	ctx, cancel := context.WithCancelCause(c.life)
	lv := &liveness{ctx: ctx, cancel: cancel}
	if !c.watchers.Go(func() {
		c.monitorConnection(ctx, func() {
			cancel(fmt.Errorf("etcd: watch %s: connection lost: %w", c.servicesPrefix(), driver.ErrUnavailable))
		})
	}) {
		cancel(driver.ErrClosed)
		return false
	}
	c.hub.live = lv
	return true
}

// unsubscribe ends s: no call of its fn follows, and its watch stops
// streamLinger after its last subscription.
func (c *Conn) unsubscribe(s *esub) {
	h := &c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	s.cancel()
	s.closed = true
	st := s.st
	s.mu.Unlock()
	if m := h.subs[s.service]; m != nil {
		if _, ok := m[s]; ok {
			st.n--
		}
		delete(m, s)
		if len(m) == 0 {
			delete(h.subs, s.service)
		}
	}
	if st.n > 0 || st.ctx.Err() != nil {
		return
	}
	if st.idle != nil {
		st.idle.Stop()
	}
	st.idle = time.AfterFunc(streamLinger, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if st.n > 0 {
			return
		}
		st.cancel(context.Canceled)
		if h.prefix == st {
			h.prefix = nil
		}
		if h.per[st.service] == st {
			delete(h.per, st.service)
		}
		if h.prefix == nil && len(h.per) == 0 && h.live != nil {
			h.live.cancel(context.Canceled) // no watch left: the monitor stops
			h.live = nil
		}
	})
}

// initialList reads s's service once st is armed, delivers it as a Reset and
// then the events that came meanwhile; nothing if s moved to another watch.
func (c *Conn) initialList(ctx context.Context, s *esub, st *stream) {
	select {
	case <-st.ready:
	case <-st.ended:
		return // the watch's end reaches every subscription on it
	case <-ctx.Done():
		return
	}
	at := time.Now()
	l, err := c.List(ctx, s.service)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.st != st || ctx.Err() != nil {
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

// startStream starts a watch of service ("" for the whole services prefix)
// under the hub's liveness; nil once the Conn is closing. Under hub.mu.
func (c *Conn) startStream(service string) *stream {
	ctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(c.hub.live.ctx))
	st := &stream{service: service, ctx: ctx, cancel: cancel, ready: make(chan struct{}), ended: make(chan struct{})}
	if !c.watchers.Go(func() { c.runStream(st) }) {
		cancel(driver.ErrClosed)
		return nil
	}
	return st
}

// runStream reads the watch until it ends, then ends every subscription on it.
func (c *Conn) runStream(st *stream) {
	err := c.readStream(st)
	close(st.ended)
	h := &c.hub
	h.mu.Lock()
	if h.prefix == st {
		h.prefix = nil
	}
	if h.per[st.service] == st {
		delete(h.per, st.service)
	}
	var subs []*esub
	for svc, m := range h.subs {
		for s := range m {
			s.mu.Lock()
			on := s.st == st
			s.mu.Unlock()
			if on {
				subs = append(subs, s)
				delete(m, s)
			}
		}
		if len(m) == 0 {
			delete(h.subs, svc)
		}
	}
	st.n = 0
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
	key := prefix
	if st.service != "" {
		key = prefix + st.service + "/"
	}
	ch := c.cli.Watch(st.ctx, key, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	for resp := range ch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("etcd: watch %s: history compacted at revision %d: %w", key, resp.CompactRevision, driver.ErrUnavailable)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("etcd: watch %s: %w: %w", key, driver.ErrUnavailable, err)
		}
		if resp.Created {
			close(st.ready)
			continue
		}
		c.dispatch(st, prefix, resp)
	}
	if cause := context.Cause(st.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if c.life.Err() != nil {
		return fmt.Errorf("etcd: watch %s: %w", key, driver.ErrClosed)
	}
	return fmt.Errorf("etcd: watch %s closed: %w", key, driver.ErrUnavailable)
}

// dispatch hands one response of st to the subscriptions on st of the
// services it touches: one call each.
func (c *Conn) dispatch(st *stream, prefix string, resp clientv3.WatchResponse) {
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
		case s.closed, s.st != st:
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
