package registry

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// The registration guard notices when one of the Client's own instances is
// deleted from the backend by someone else while its lease lives (an operator, a
// second process with the same ID deregistering on its way out), and has the
// registration put it again. It costs one shared watch loop per service that has
// registrations in this Client (the same loop Client.Watch uses), and per read of
// that service one map walk over this Client's own IDs of it with a binary search
// each: O(own × log n), whatever the number of registrations elsewhere. No
// registration lists the service by itself, except to confirm a suspected
// deletion, and confirmations close together share one read.
//
// A read counts against a registration only if it started after the
// registration's last put returned: every read of a service is stamped on the
// monotonic clock as it starts (stamp), and a registration is armed with the
// stamp taken when its put returned. A view that lags behind a burst of puts is
// therefore never mistaken for a deletion, without reading anything again. With
// a driver that hands over events (driver.EventWatcher), a delete event of an
// own ID is acted on directly, and complete listings are stamped as above.

// serviceGuard is the guard's part of one service's shared loop: this Client's
// registrations of the service, by ID.
type serviceGuard struct {
	mu  sync.Mutex
	own map[string][]*registration // by instance ID; usually one each

	// The last confirmation read, shared by the registrations whose suspicion it
	// answers (see confirm).
	confirmMu  sync.Mutex
	confirmAt  time.Time  // when it started, on the Client's clock
	confirmGen int64      // its stamp
	confirmed  []Instance // sorted by ID; nil until the first
}

// guardState is a registration's part of the guard, under its service's
// serviceGuard.mu.
type guardState struct {
	armed bool  // absence in a read stamped after from means it was deleted
	from  int64 // stamp when the last put returned
	// The stamps of the newest reads that showed r absent and present, so that
	// an absence seen while r was disarmed is not lost (see arm).
	absent, present int64
}

// add guards r from now on. Its put has returned.
func (g *serviceGuard) add(r *registration, gen int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.own == nil {
		g.own = map[string][]*registration{}
	}
	g.own[r.id] = append(g.own[r.id], r)
	r.gs = guardState{armed: true, from: gen}
}

// signal tells r's keeper it may have been deleted, and disarms r until the
// keeper has looked. Under g.mu.
func (g *serviceGuard) signal(r *registration) {
	r.gs.armed = false
	select {
	case r.suspect <- struct{}{}:
	default:
	}
}

// remove stops guarding r.
func (g *serviceGuard) remove(r *registration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rs := slices.DeleteFunc(g.own[r.id], func(x *registration) bool { return x == r })
	if len(rs) == 0 {
		delete(g.own, r.id)
	} else {
		g.own[r.id] = rs
	}
}

// arm makes absence in reads numbered above gen count against r again (after a
// put returned, or after a confirmation showed r present). A read after gen that
// already showed r absent, and none newer present, signals at once.
func (g *serviceGuard) arm(r *registration, gen int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r.gs.armed, r.gs.from = true, gen
	if r.gs.absent > gen && r.gs.absent > r.gs.present {
		g.signal(r)
	}
}

// disarm ignores reads until the next arm (while r is being put again).
func (g *serviceGuard) disarm(r *registration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r.gs.armed = false
}

// check is called by the service's loop after each successful read, stamped gen
// when it started, with its instances sorted by ID. It tells every armed
// registration missing from a read that started after its put that it may have
// been deleted.
func (g *serviceGuard) check(gen int64, sorted []Instance) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, rs := range g.own {
		present := hasSortedID(sorted, id)
		for _, r := range rs {
			if present {
				r.gs.present = max(r.gs.present, gen)
				continue
			}
			r.gs.absent = max(r.gs.absent, gen)
			if r.gs.armed && gen > r.gs.from {
				g.signal(r)
			}
		}
	}
}

// lagging reports whether view (sorted by ID) may predate one of this Client's
// own puts: a registration whose put has returned is absent from it, and no
// read or event since that put has said anything about it (a delete, or an
// absence in a listing, makes the view the truth again). A reader of the shared
// view waits for a newer one (Watch, WatchFunc) or reads the backend (Instances)
// instead, so that an instance whose Register returned is seen.
func (g *serviceGuard) lagging(view []Instance) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, rs := range g.own {
		for _, r := range rs {
			if r.gs.armed && r.gs.present < r.gs.from && r.gs.absent < r.gs.from && !hasSortedID(view, id) {
				return true
			}
		}
	}
	return false
}

// hasSortedID reports whether list, sorted by ID, has an instance with this ID.
func hasSortedID(list []Instance, id string) bool {
	_, ok := slices.BinarySearchFunc(list, id, func(in Instance, id string) int { return strings.Compare(in.ID, id) })
	return ok
}

// guardWatch takes a reference on service's shared loop for a registration's
// guard, nil when the driver guards registrations itself
// (Capabilities.GuardsRegistrations). It fails only once the Client is closed.
func (c *Client) guardWatch(service string) (*serviceWatch, error) {
	if c.conn.Capabilities().GuardsRegistrations {
		return nil, nil
	}
	return c.acquireWatch(service, false)
}

// unguard drops a reference taken by guardWatch (nil: none) and, when it was the
// last, waits for the loop to end.
func (c *Client) unguard(sw *serviceWatch) {
	if sw != nil && c.releaseWatch(sw, false) {
		<-sw.done
	}
}

// monoBase anchors stamps on the monotonic clock.
var monoBase = time.Now()

// stamp is the time on the monotonic clock, in nanoseconds since monoBase: the
// guard's order of puts and reads.
func stamp() int64 { return int64(time.Since(monoBase)) }

// stampOf converts a driver's time (driver.Change.ReadAt) to a stamp; zero is now.
func stampOf(t time.Time) int64 {
	if t.IsZero() {
		return stamp()
	}
	return int64(t.Sub(monoBase))
}

// changed is called with the IDs a change event put and deleted, received at
// stamp at: a delete of an armed own ID signals it, as an absence would.
func (g *serviceGuard) changed(at int64, puts []Instance, deletes []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.own) == 0 {
		return
	}
	for _, in := range puts {
		for _, r := range g.own[in.ID] {
			r.gs.present = max(r.gs.present, at)
		}
	}
	for _, id := range deletes {
		for _, r := range g.own[id] {
			r.gs.absent = max(r.gs.absent, at)
			if r.gs.armed && at > r.gs.from {
				g.signal(r)
			}
		}
	}
}

// stopGuard stops guarding r and, when r held the last reference on its
// service's loop, waits for the loop to end.
func (r *registration) stopGuard() {
	if r.sw == nil {
		return
	}
	r.sw.guard.remove(r)
	r.c.unguard(r.sw)
}

// goneForSure confirms an absence seen in the shared view with a fresh read a
// moment later (the retry backoff's minimum). A backend whose re-put is a delete
// and a create (a ZooKeeper node owned by another session, a Dubbo URL node)
// shows a short gap; two processes registering the same ID must not take turns
// deleting each other because of it. Present again, r is armed from that read.
func (r *registration) goneForSure(ctx context.Context) bool {
	suspected := r.c.clock.Now()
	if r.c.sleep(ctx, r.c.opt.backoffMin) != nil {
		return false
	}
	sw := r.sw
	list, gen, err := sw.confirm(ctx, suspected.Add(r.c.opt.backoffMin))
	if err != nil {
		sw.guard.arm(r, stamp()) // the watch reports again when the backend answers
		return false
	}
	if hasSortedID(list, r.id) {
		sw.guard.arm(r, gen)
		return false
	}
	return true
}

// confirm returns a read of the service started no earlier than notBefore: the
// last confirmation's if it qualifies (so that the registrations of a service
// deleted at once share one read), else a new one. gen is the read's stamp.
func (w *serviceWatch) confirm(ctx context.Context, notBefore time.Time) ([]Instance, int64, error) {
	g := &w.guard
	g.confirmMu.Lock()
	defer g.confirmMu.Unlock()
	if g.confirmed != nil && !g.confirmAt.Before(notBefore) {
		return g.confirmed, g.confirmGen, nil
	}
	at := w.c.clock.Now()
	gen := stamp()
	lctx, cancel := context.WithTimeout(ctx, w.c.opt.reqTimeout)
	defer cancel()
	l, err := w.c.conn.List(lctx, w.service)
	if err != nil {
		return nil, 0, err
	}
	driver.SortInstances(l.Instances)
	if l.Instances == nil {
		l.Instances = []Instance{}
	}
	g.confirmAt, g.confirmGen, g.confirmed = at, gen, l.Instances
	return l.Instances, gen, nil
}
