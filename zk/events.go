package zk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry/driver"
)

var _ driver.EventWatcher = (*Conn)(nil)

// eventHub routes the registration connection's watch events (go-zookeeper's
// event callback, which sees every watch event with its path before the
// channel of the call that armed it does) to the subscriptions of the service
// directory the path is, or is a child of. It never blocks: a subscription
// only records what is dirty and is woken.
type eventHub struct {
	mu   sync.Mutex
	subs map[string]map[*eventSub]struct{} // by service directory
	own  map[string]*ownCreates            // the Conn's own creates, by service directory
}

// ownCreates is the Conn's own creates of instance nodes in one service
// directory (Put), which a subscription of that directory waits out before it
// re-arms its child watch (see eventSub.settle).
type ownCreates struct {
	inflight int       // sent, not answered
	last     time.Time // when the last one was answered
}

// ownSettle is how long a subscription waits after the Conn's last own create in
// its directory was answered before it re-arms the directory's child watch, and
// ownMaxDefer the longest it defers a re-arm after the child event: a burst of
// own creates (one Client registering many instances) then costs one child
// listing per burst instead of one per create, each listing all the children.
const ownSettle = 2 * time.Millisecond

var ownMaxDefer = 20 * time.Millisecond // a variable for tests

// putStart records that the Conn sends an own create of a node in dir.
func (h *eventHub) putStart(dir string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.own == nil {
		h.own = map[string]*ownCreates{}
	}
	o := h.own[dir]
	if o == nil {
		o = &ownCreates{}
		h.own[dir] = o
	}
	o.inflight++
}

// putDone records the answer to an own create of dir/name started with putStart;
// created says the node was created (the subscriptions of dir then remember
// name, see eventSub.ownNew).
func (h *eventHub) putDone(dir, name string, created bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.own[dir]
	o.inflight--
	o.last = time.Now()
	if created {
		for s := range h.subs[dir] {
			s.mu.Lock()
			s.ownNew[name] = struct{}{}
			s.mu.Unlock()
		}
	}
	// An entry settled long ago tells nothing: drop it, so that the map holds
	// only the directories with recent own creates.
	for d, o := range h.own {
		if o.inflight == 0 && time.Since(o.last) > ownMaxDefer {
			delete(h.own, d)
		}
	}
}

// ownBusy says whether the Conn has own creates in dir in flight or answered
// less than ownSettle ago, and if only the latter, when that ends.
func (h *eventHub) ownBusy(dir string) (busy bool, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.own[dir]
	switch {
	case o == nil:
		return false, time.Time{}
	case o.inflight > 0:
		return true, time.Time{}
	}
	until = o.last.Add(ownSettle)
	return time.Now().Before(until), until
}

func (h *eventHub) add(s *eventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs = map[string]map[*eventSub]struct{}{}
	}
	if h.subs[s.dir] == nil {
		h.subs[s.dir] = map[*eventSub]struct{}{}
	}
	h.subs[s.dir][s] = struct{}{}
}

func (h *eventHub) remove(s *eventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[s.dir], s)
	if len(h.subs[s.dir]) == 0 {
		delete(h.subs, s.dir)
	}
}

// dispatch is the zkConn's watch callback.
func (h *eventHub) dispatch(ev zk.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	for s := range h.subs[ev.Path] {
		s.mark("", ev)
	}
	parent := driver.ParentKey(ev.Path)
	if ss := h.subs[parent]; len(ss) > 0 {
		name := ev.Path[len(parent):]
		if len(name) > 0 && name[0] == '/' {
			name = name[1:]
		}
		for s := range ss {
			s.mark(name, ev)
		}
	}
}

// eventSub is one SubscribeEvents: a goroutine owned by the Conn that keeps a
// child watch on the service directory (an exists watch while it is missing)
// and a data watch on every child (layouts whose instances live in the node's
// data), and keeps the children's data from the replies that arm those
// watches. A child event costs one ChildrenW (and a GetW per new child), a data
// event one GetW of that child; nothing is listed again until the subscription
// breaks. While the Conn's own creates in the directory are under way (its
// Client registering instances of the service), the ChildrenW waits until they
// settle (ownSettle after the last, at most ownMaxDefer after the event): a
// burst of registrations costs one listing, not one per registration.
type eventSub struct {
	c       *Conn
	service string
	dir     string
	cd      codec
	fn      func(driver.Change)
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{} // 1-buffered

	mu       sync.Mutex
	dirty    map[string]zk.EventType // children with a watch event not yet handled
	dirDirty bool                    // the directory's child (or exists) watch fired
	lost     error                   // a watch of the subscription was dropped
	// ownNew holds the children the Conn's own Puts created since the last
	// listing of the directory (layouts whose node names are IDs): one absent
	// from the next listing was deleted before the subscription saw it, and is
	// reported deleted, so that the registration guard learns of it.
	ownNew map[string]struct{}

	// Owned by the goroutine.
	nodes    map[string]znode               // by child name
	byID     map[string]map[string]struct{} // child names by instance ID (layouts not by name)
	rev      uint64
	dirSince time.Time // when the directory's re-arm became due, while it is deferred (see settle)
}

// znode is what a subscription knows of one child of the service directory.
type znode struct {
	id   string // the instance ID it stands for ("" if none)
	inst driver.Instance
	ok   bool // a valid instance of the service
}

// SubscribeEvents follows service with ZooKeeper's one-shot watches, applying
// what their re-arming replies carry: the first call is a Reset with the
// children and their data (read with the watches armed), later calls carry the
// children created, changed and deleted since. The subscription ends with Err
// when the connection leaves the session it started in (a disconnection, a new
// session, an expiry: a watch event may have been lost in between), when
// go-zookeeper drops its watches, or when a read fails; package registry then
// subscribes again, which starts with a complete listing.
func (c *Conn) SubscribeEvents(service string, fn func(driver.Change)) (func(), error) {
	cd := c.codec()
	ctx, cancel := context.WithCancel(c.life)
	s := &eventSub{c: c, service: service, dir: cd.dir(service), cd: cd, fn: fn, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), wake: make(chan struct{}, 1), dirty: map[string]zk.EventType{},
		ownNew: map[string]struct{}{}}
	c.hub.add(s)
	if !c.spawn(s.run) {
		c.hub.remove(s)
		cancel()
		return nil, fmt.Errorf("zk: watch %s: connection closed: %w", s.dir, driver.ErrClosed)
	}
	return func() {
		cancel()
		<-s.done
	}, nil
}

// mark records a watch event for the directory (name "") or one of its
// children. Called by the hub, under its lock; never blocks.
func (s *eventSub) mark(name string, ev zk.Event) {
	s.mu.Lock()
	switch {
	case ev.Type == zk.EventNotWatching:
		if s.lost == nil {
			s.lost = notWatching(ev)
		}
	case name == "":
		if ev.Type != zk.EventNodeDataChanged {
			s.dirDirty = true
		}
	default:
		s.dirty[name] = ev.Type
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *eventSub) run() {
	defer close(s.done)
	defer s.c.hub.remove(s)
	st, sid, changed := s.c.zc.status()
	if st != zk.StateHasSession {
		s.fail(fmt.Errorf("not connected (%v): %w", st, driver.ErrUnavailable))
		return
	}
	readAt := time.Now()
	list, err := s.relist()
	if err != nil {
		s.fail(err)
		return
	}
	if !s.emit(driver.Change{Reset: true, Listing: list, Revision: s.rev, ReadAt: readAt}) {
		return
	}
	var retry *time.Timer // wakes the loop when a deferred re-arm is due
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-retryC:
			retryC = nil
			select {
			case s.wake <- struct{}{}:
			default:
			}
		case <-changed:
			var nst zk.State
			var nsid int64
			nst, nsid, changed = s.c.zc.status()
			if nst != zk.StateHasSession || nsid != sid {
				s.fail(fmt.Errorf("connection state %v: %w", nst, driver.ErrUnavailable))
				return
			}
		case <-s.wake:
			ch, wait, err := s.step()
			if err != nil {
				s.fail(err)
				return
			}
			if len(ch.Puts)+len(ch.Deletes) > 0 && !s.emit(ch) {
				return
			}
			if wait > 0 && retryC == nil {
				if retry == nil {
					retry = time.NewTimer(wait)
				} else {
					retry.Reset(wait)
				}
				retryC = retry.C
			}
		}
	}
}

// emit calls fn unless the subscription was cancelled.
func (s *eventSub) emit(ch driver.Change) bool {
	if s.ctx.Err() != nil {
		return false
	}
	s.fn(ch)
	return true
}

func (s *eventSub) fail(err error) {
	if s.ctx.Err() != nil {
		return
	}
	s.fn(driver.Change{Err: wrap("watch", s.dir, err)})
}

// armDir arms the directory's child watch and returns its children; a missing
// directory gets an exists watch (its creation marks it dirty) and no children.
func (s *eventSub) armDir() ([]string, error) {
	c := s.c
	for {
		type res struct {
			kids []string
			st   *zk.Stat
		}
		r, err := call(s.ctx, c, func() (res, error) {
			kids, st, _, err := c.zc.zk.ChildrenW(s.dir)
			return res{kids, st}, err
		})
		if err == nil {
			s.seen(r.st.Pzxid)
			return r.kids, nil
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return nil, err
		}
		ok, err := call(s.ctx, c, func() (bool, error) {
			ok, _, _, err := c.zc.zk.ExistsW(s.dir)
			return ok, err
		})
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, nil
		}
		// Created in between: its child watch again.
	}
}

func (s *eventSub) seen(zxid int64) {
	if zxid > 0 && uint64(zxid) > s.rev {
		s.rev = uint64(zxid)
	}
}

// relist reads the directory and every child with the watches armed, and
// returns the complete listing.
func (s *eventSub) relist() (driver.Listing, error) {
	s.mu.Lock()
	s.dirty, s.dirDirty = map[string]zk.EventType{}, false // the read below sees all of it
	clear(s.ownNew)
	s.mu.Unlock()
	s.dirSince = time.Time{}
	s.nodes, s.byID = map[string]znode{}, nil
	if !s.cd.byName() {
		s.byID = map[string]map[string]struct{}{}
	}
	kids, err := s.armDir()
	if err != nil {
		return driver.Listing{}, err
	}
	if err := s.read(kids); err != nil {
		return driver.Listing{}, err
	}
	out := make([]driver.Instance, 0, len(s.nodes))
	if s.cd.byName() {
		for _, n := range s.nodes {
			if n.ok {
				out = append(out, n.inst)
			}
		}
	} else {
		for id := range s.byID {
			if in, ok := s.winner(id); ok {
				out = append(out, in)
			}
		}
	}
	return driver.Listing{Instances: out, Revision: s.rev}, nil
}

// settle says how long to defer the directory's re-arm: while the Conn's own
// creates in the directory are in flight or answered less than ownSettle ago,
// for at most ownMaxDefer after the child event. 0: re-arm now. The children's
// own data watches are handled meanwhile; the children created during the wait
// are read (their watches armed) with the re-arm.
func (s *eventSub) settle() time.Duration {
	now := time.Now()
	if s.dirSince.IsZero() {
		s.dirSince = now
	}
	busy, until := s.c.hub.ownBusy(s.dir)
	if !busy || now.Sub(s.dirSince) >= ownMaxDefer {
		s.dirSince = time.Time{}
		return 0
	}
	limit := s.dirSince.Add(ownMaxDefer)
	if until.IsZero() { // in flight: look again soon
		until = now.Add(ownSettle)
	}
	if until.After(limit) {
		until = limit
	}
	return max(until.Sub(now), time.Microsecond)
}

// step handles the watch events recorded since the last step and returns the
// change they made, and, when the directory's re-arm is deferred (settle), how
// long to wait before the next step.
func (s *eventSub) step() (driver.Change, time.Duration, error) {
	s.mu.Lock()
	dirty, dirDirty, lost := s.dirty, s.dirDirty, s.lost
	if len(dirty) > 0 {
		s.dirty = map[string]zk.EventType{}
	} else {
		dirty = nil // the map stays the hub's
	}
	s.dirDirty = false
	s.mu.Unlock()
	if lost != nil {
		return driver.Change{}, 0, lost
	}
	var wait time.Duration
	if dirDirty && s.cd.byName() {
		if wait = s.settle(); wait > 0 {
			dirDirty = false
			s.mu.Lock()
			s.dirDirty = true // still due
			s.mu.Unlock()
		}
	}
	var ownNew []string
	if dirDirty {
		s.mu.Lock()
		for name := range s.ownNew {
			ownNew = append(ownNew, name)
		}
		clear(s.ownNew)
		s.mu.Unlock()
	}
	affected := map[string]string{} // child name -> the ID it stood for before
	drop := func(name string) {
		if n, ok := s.nodes[name]; ok {
			if _, seen := affected[name]; !seen {
				affected[name] = n.id
			}
			s.forget(name, n)
		}
	}
	var toRead []string
	for name, t := range dirty {
		if _, ok := s.nodes[name]; !ok {
			continue // not a child we follow: the directory's watch reports new ones
		}
		if t == zk.EventNodeDeleted {
			drop(name)
		} else {
			toRead = append(toRead, name)
		}
	}
	if dirDirty {
		kids, err := s.armDir()
		if err != nil {
			return driver.Change{}, 0, err
		}
		present := make(map[string]struct{}, len(kids))
		for _, k := range kids {
			present[k] = struct{}{}
			if _, ok := s.nodes[k]; !ok {
				toRead = append(toRead, k)
			}
		}
		for name := range s.nodes {
			if _, ok := present[name]; !ok {
				drop(name)
			}
		}
		for _, name := range ownNew {
			// Created by this Conn and deleted before any listing showed it:
			// reported deleted (the guard puts it again).
			if _, ok := present[name]; !ok {
				if _, seen := affected[name]; !seen {
					affected[name] = ""
				}
			}
		}
	}
	for _, name := range toRead {
		if n, ok := s.nodes[name]; ok {
			if _, seen := affected[name]; !seen {
				affected[name] = n.id
			}
		} else if _, seen := affected[name]; !seen {
			affected[name] = ""
		}
	}
	if err := s.read(toRead); err != nil {
		return driver.Change{}, 0, err
	}
	ch := driver.Change{Revision: s.rev}
	if s.cd.byName() {
		for name := range affected {
			if n, ok := s.nodes[name]; ok && n.ok {
				ch.Puts = append(ch.Puts, n.inst)
			} else {
				ch.Deletes = append(ch.Deletes, name)
			}
		}
		return ch, wait, nil
	}
	ids := map[string]struct{}{}
	for name, old := range affected {
		if old != "" {
			ids[old] = struct{}{}
		}
		if n, ok := s.nodes[name]; ok && n.id != "" {
			ids[n.id] = struct{}{}
		}
	}
	for id := range ids {
		if in, ok := s.winner(id); ok {
			ch.Puts = append(ch.Puts, in)
		} else {
			ch.Deletes = append(ch.Deletes, id)
		}
	}
	return ch, wait, nil
}

// forget drops a child from the subscription's state.
func (s *eventSub) forget(name string, n znode) {
	delete(s.nodes, name)
	if s.byID != nil && n.id != "" {
		delete(s.byID[n.id], name)
		if len(s.byID[n.id]) == 0 {
			delete(s.byID, n.id)
		}
	}
}

// winner is the instance of id where node names are not IDs (Dubbo URLs): the
// valid node of that ID with the greatest name, as dedupeIDs picks.
func (s *eventSub) winner(id string) (driver.Instance, bool) {
	best, found := "", false
	for name := range s.byID[id] {
		if n := s.nodes[name]; n.ok && (!found || name > best) {
			best, found = name, true
		}
	}
	if !found {
		return driver.Instance{}, false
	}
	return s.nodes[best].inst, true
}

// read (re)reads the named children, arming a data watch on each where the
// layout keeps the instance in the node's data (16 requests in flight, which
// go-zookeeper pipelines on its connection), and records them; a child gone
// meanwhile is forgotten (the directory's watch reports it).
func (s *eventSub) read(names []string) error {
	if len(names) == 0 {
		return nil
	}
	c := s.c
	datas := make([][]byte, len(names))
	zxids := make([]int64, len(names))
	errs := make([]error, len(names))
	if s.cd.needsData() {
		next := make(chan int)
		var wg sync.WaitGroup
		for range min(16, len(names)) {
			wg.Add(1)
			go func() { // ends with the loop below; the calls are the Conn's
				defer wg.Done()
				for i := range next {
					type res struct {
						b  []byte
						st *zk.Stat
					}
					r, err := call(s.ctx, c, func() (res, error) {
						b, st, _, err := c.zc.zk.GetW(s.dir + "/" + names[i])
						return res{b, st}, err
					})
					errs[i] = err
					if err == nil {
						datas[i], zxids[i] = r.b, r.st.Mzxid
					}
				}
			}()
		}
		for i := range names {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	for i, name := range names {
		if err := errs[i]; errors.Is(err, zk.ErrNoNode) {
			if old, ok := s.nodes[name]; ok {
				s.forget(name, old)
			}
			continue
		} else if err != nil {
			return err
		}
		s.seen(zxids[i])
		if old, ok := s.nodes[name]; ok {
			s.forget(name, old)
		}
		in, why := s.cd.decode(s.service, name, datas[i])
		node := znode{inst: in, ok: why == ""}
		switch {
		case node.ok:
			node.id = in.ID
		case s.cd.byName():
			node.id = name
		}
		if !node.ok {
			s.c.skipped.Skip(s.dir+"/"+name, why)
		}
		s.nodes[name] = node
		if s.byID != nil && node.id != "" {
			if s.byID[node.id] == nil {
				s.byID[node.id] = map[string]struct{}{}
			}
			s.byID[node.id][name] = struct{}{}
		}
	}
	return nil
}
