package mirror

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/regkit/regkit/registry"
)

// taskKey names one (route, service) pair.
type taskKey struct {
	route   int
	service string
}

// task follows one service of one route: it holds this member's copies of it.
// Its goroutine is owned by the Syncer (Syncer.wg).
type task struct {
	s     *Syncer
	key   taskKey
	route Route
	name  string // route.String()

	mu     sync.Mutex
	own    bool
	wanted bool
	alone  bool      // no other member to hand over to
	since  time.Time // when own last became false
	poke   chan struct{}

	// Owned by the task's goroutine.
	src, dst   *registry.Snapshot // last fresh views; nil before the first
	srcAt      time.Time          // when src was read
	copies     map[string]*held   // by source ID
	emptySince time.Time          // the source listed nothing usable since (empty-push guard)
	retryAt    time.Time
	refused    map[string]registry.Instance // copies the destination refused for good, by source ID
	// conflicts are the copies (by source ID) whose register failed because the
	// destination holds their ID for another owner: a crashed predecessor with
	// this member ID, whose copies expire with its session or lease.
	conflicts map[string]*conflict
}

// conflict is a copy ID another owner holds on the destination.
type conflict struct {
	id     string
	listed bool // the destination's view listed it since the register failed
}

// held is one copy this member holds.
type held struct {
	reg      registry.Registration
	want     registry.Instance // the copy as last written, without MetaHeldSince
	holdTill time.Time         // under the empty-push guard: when it goes
}

func newTask(s *Syncer, k taskKey) *task {
	r := s.routes[k.route]
	return &task{s: s, key: k, route: r, name: r.String(), own: true, wanted: true,
		poke: make(chan struct{}, 1), copies: map[string]*held{}, refused: map[string]registry.Instance{},
		conflicts: map[string]*conflict{}}
}

func (t *task) set(own, wanted, alone bool) {
	t.mu.Lock()
	if t.own && !own {
		t.since = time.Now()
	}
	changed := t.own != own || t.wanted != wanted || t.alone != alone
	t.own, t.wanted, t.alone = own, wanted, alone
	t.mu.Unlock()
	if changed {
		select {
		case t.poke <- struct{}{}:
		default:
		}
	}
}

func (t *task) flags() (own, wanted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.own, t.wanted
}

type view struct {
	src  bool
	snap registry.Snapshot
}

func (t *task) run(ctx context.Context) {
	svc := t.key.service
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		t.closeAll("sync stopped")
	}()
	views := make(chan view)
	for _, side := range []struct {
		src bool
		c   *registry.Client
	}{{true, t.route.From.Client}, {false, t.route.To.Client}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wctx.Err() == nil {
				w, err := side.c.Watch(wctx, svc)
				if err != nil {
					if wctx.Err() == nil {
						t.s.m.errors(ctx, "watch")
						t.s.o.logger.Warn("mirror: watch", "service", svc, "route", t.name, "err", err)
						sleep(wctx, jitter(retryDelay))
					}
					continue
				}
				for {
					snap, err := w.Next(wctx)
					if err != nil {
						break
					}
					select {
					case views <- view{side.src, snap}:
					case <-wctx.Done():
					}
				}
				w.Close()
			}
		}()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := t.reconcile(ctx)
		own, wanted := t.flags()
		if ctx.Err() != nil || (!own || !wanted) && len(t.copies) == 0 {
			if t.s.finish(t) {
				return
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case v := <-views:
			if v.snap.Stale {
				continue // never act on a stale view
			}
			s := v.snap
			if v.src {
				t.src, t.srcAt = &s, time.Now()
			} else {
				t.dst = &s
			}
		case <-t.poke:
		case <-timer.C:
		}
	}
}

// srcUsable reports whether the source's view lists an instance that could be
// copied: healthy and not a copy. One that lists none (nothing at all, or only
// unhealthy instances: Nacos marking every instance unhealthy when beats stop
// reaching it, a Consul agent failing every check) is what the empty-push guard
// holds copies through.
func (t *task) srcUsable() bool {
	return slices.ContainsFunc(t.src.Instances, func(in registry.Instance) bool {
		return in.Healthy && in.Metadata[MetaSourceCluster] == ""
	})
}

// whyGone says why the copy of source instance id is no longer wanted.
func (t *task) whyGone(id string) string {
	for _, in := range t.src.Instances {
		if in.ID != id {
			continue
		}
		switch {
		case !in.Healthy:
			return "source instance unhealthy"
		case in.Metadata[MetaSourceCluster] != "":
			return "source instance is a copy"
		default:
			return "native on both sides"
		}
	}
	return "source instance gone"
}

// desired computes, from the last fresh views, the copy each source instance
// should have (by source ID), this member being its owner.
func (t *task) desired() map[string]registry.Instance {
	natives := map[string]bool{}
	for _, in := range t.dst.Instances {
		if in.Metadata[MetaSourceCluster] == "" {
			natives[in.Addr()] = true
		}
	}
	out := map[string]registry.Instance{}
	for _, in := range t.src.Instances {
		if !in.Healthy || in.Metadata[MetaSourceCluster] != "" || natives[in.Addr()] {
			continue
		}
		out[in.ID] = t.copyOf(in)
	}
	return out
}

func (t *task) copyOf(in registry.Instance) registry.Instance {
	c := in.Clone()
	c.ID = CopyID(in.ID, t.s.o.member)
	c.Healthy = true
	if c.Weight == 0 {
		c.Weight = registry.DefaultWeight
	}
	if c.Metadata == nil {
		c.Metadata = map[string]string{}
	}
	c.Metadata[MetaSourceCluster] = t.route.From.Name
	c.Metadata[MetaDestCluster] = t.route.To.Name
	c.Metadata[MetaGroup] = t.s.o.group
	c.Metadata[MetaSourceID] = in.ID
	c.Metadata[MetaOwner] = t.s.o.member
	return c
}

// reconcile brings this member's copies in line with the views and returns when
// it wants to run again (zero: on the next view or poke).
func (t *task) reconcile(ctx context.Context) time.Time {
	if ctx.Err() != nil || t.src == nil || t.dst == nil {
		return time.Time{}
	}
	now := time.Now()
	var next time.Time
	soon := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	want := t.desired()
	t.mu.Lock()
	own, since, alone := t.own, t.since, t.alone
	t.mu.Unlock()
	if !own {
		// Hand over: keep each copy until the destination lists the new owner's,
		// the source instance is gone, or the hand-over times out.
		others := map[string]bool{}
		for _, in := range t.dst.Instances {
			if in.Metadata[MetaGroup] == t.s.o.group && in.Metadata[MetaSourceCluster] == t.route.From.Name &&
				in.Metadata[MetaOwner] != t.s.o.member {
				others[in.Metadata[MetaSourceID]] = true
			}
		}
		deadline := since.Add(t.s.o.handoverTimeout)
		for id := range t.copies {
			switch _, ok := want[id]; {
			case !ok && t.srcUsable():
				// A source listing nothing usable is kept until the deadline, as
				// the empty-push guard would.
				t.remove(ctx, id, t.whyGone(id))
			case others[id]:
				t.remove(ctx, id, "handed over")
			case alone:
				t.remove(ctx, id, "no other member to hand over to")
			case !now.Before(deadline):
				t.remove(ctx, id, "hand-over timed out")
			default:
				soon(deadline)
			}
		}
		return next
	}
	if !t.srcUsable() && len(t.copies) > 0 && t.s.o.emptyGrace > 0 {
		// Empty-push guard.
		if t.emptySince.IsZero() {
			t.emptySince = now
			for id, h := range t.copies {
				h.holdTill = now.Add(t.s.o.emptyGrace + time.Duration(rand.Int64N(int64(t.s.o.emptyGrace/4)+1)))
				in := h.want.Clone()
				in.Metadata[MetaHeldSince] = now.UTC().Format(time.RFC3339)
				uctx, cancel := context.WithTimeout(ctx, registerTimeout)
				err := h.reg.Update(uctx, in)
				cancel()
				if err != nil {
					t.fail(ctx, "update", id, in, err)
				}
				t.event(Event{Kind: Held, SourceID: id, Copy: in, Reason: "the source lists no healthy instance"})
			}
		}
		for id, h := range t.copies {
			if now.Before(h.holdTill) {
				soon(h.holdTill)
				continue
			}
			t.remove(ctx, id, "the source listed no healthy instance for the grace period")
		}
		return next
	}
	held := !t.emptySince.IsZero()
	t.emptySince = time.Time{}
	// Copies no longer wanted go after the new ones are registered (below): a
	// source instance whose ID changed at one address (restarted with a new ID)
	// has its new copy listed before the old one goes, never neither.
	defer func() {
		for id := range t.copies {
			if _, ok := want[id]; !ok {
				t.remove(ctx, id, t.whyGone(id))
			}
		}
	}()
	for id := range t.conflicts {
		if _, ok := want[id]; !ok {
			delete(t.conflicts, id)
		}
	}
	if now.Before(t.retryAt) && t.conflictGone() {
		// The predecessor's copy just expired: register ours now, not at the
		// retry timer, so the address is missing only for a watch round trip.
		t.retryAt = time.Time{}
	}
	if now.Before(t.retryAt) {
		return t.retryAt
	}
	failed := false
	for id, in := range want {
		h := t.copies[id]
		if h == nil {
			if r, ok := t.refused[id]; ok && same(r, in) {
				continue // refused for good; tried again when the source changes
			}
			delete(t.refused, id)
			if !t.register(ctx, id, in) && t.refused[id].ID == "" {
				failed = true
			}
			continue
		}
		in.ID = h.want.ID // CopyID, or this incarnation's (see register)
		if held || !same(h.want, in) {
			uctx, cancel := context.WithTimeout(ctx, registerTimeout)
			err := h.reg.Update(uctx, in)
			cancel()
			if err != nil {
				if errorsIsClosed(err) {
					t.drop(id)
				}
				t.fail(ctx, "update", id, in, err)
				failed = true
				continue
			}
			h.want = in
			t.event(Event{Kind: Updated, SourceID: id, Copy: in})
		}
	}
	if !t.srcAt.IsZero() {
		t.s.m.lag(ctx, t.key.service, time.Since(t.srcAt))
		t.srcAt = time.Time{}
	}
	if failed {
		t.retryAt = now.Add(jitter(retryDelay))
		soon(t.retryAt)
	}
	return next
}

// conflictGone reports whether the destination's view no longer lists a copy
// ID that it listed, held by another owner, when our register failed. (An ID
// the view never listed, say an unhealthy holder a Consul listing leaves out,
// is left to the retry timer.)
func (t *task) conflictGone() bool {
	if len(t.conflicts) == 0 {
		return false
	}
	gone := false
	for _, c := range t.conflicts {
		if t.lists(c.id) {
			c.listed = true
		} else if c.listed {
			gone = true
		}
	}
	return gone
}

// lists reports whether the destination's view lists the instance ID id.
func (t *task) lists(id string) bool {
	return slices.ContainsFunc(t.dst.Instances, func(in registry.Instance) bool { return in.ID == id })
}

// register registers in, the copy of source instance id. When the destination
// holds the copy's ID for another owner (a crashed predecessor with this member
// ID, whose copy lasts until its session or lease ends), it registers the copy
// at once under this process's incarnation ID (IncarnationCopyID) instead, so
// that watchers see both copies until the old one expires, never neither.
func (t *task) register(ctx context.Context, id string, in registry.Instance) bool {
	put := func(in registry.Instance) (registry.Registration, error) {
		rctx, cancel := context.WithTimeout(ctx, registerTimeout)
		defer cancel()
		return t.route.To.Client.Register(rctx, in)
	}
	reg, err := put(in)
	if errors.Is(err, registry.ErrExists) {
		alt := in.Clone()
		alt.ID = IncarnationCopyID(id, t.s.o.member, t.s.incarnation)
		if alt.ID != in.ID {
			t.s.o.logger.Info("mirror: copy ID held by another owner, registering this incarnation's", "service", t.key.service,
				"route", t.name, "source_id", id, "held_id", in.ID, "id", alt.ID)
			if reg, err = put(alt); err == nil {
				in = alt
			}
		}
	}
	delete(t.conflicts, id)
	if err != nil {
		if errors.Is(err, registry.ErrExists) {
			t.conflicts[id] = &conflict{id: in.ID, listed: t.lists(in.ID)}
		}
		if errors.Is(err, registry.ErrInvalid) {
			// No retry can fix it (too many metadata pairs for the destination,
			// a value too long): not tried again until the source changes.
			t.refused[id] = in
		}
		t.fail(ctx, "register", id, in, err)
		return false
	}
	if got := reg.Instance(); got.Host != in.Host || got.Port != in.Port {
		_ = reg.Close()
		t.refused[id] = in
		t.fail(ctx, "register", id, in, fmt.Errorf("the destination client registered %s instead of %s: open it with an address resolver that ignores the environment", got.Addr(), in.Addr()))
		return false
	}
	t.copies[id] = &held{reg: reg, want: in}
	t.s.m.copies(ctx, t.key.service, 1)
	t.event(Event{Kind: Registered, SourceID: id, Copy: in})
	return true
}

func (t *task) remove(ctx context.Context, id, why string) {
	h := t.copies[id]
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registerTimeout)
	err := h.reg.Deregister(dctx)
	cancel()
	t.drop(id)
	if err != nil && !errorsIsClosed(err) {
		// The Registration is finished either way; the backend's liveness
		// removes what the delete missed.
		t.fail(ctx, "deregister", id, h.want, err)
	}
	t.event(Event{Kind: Removed, SourceID: id, Copy: h.reg.Instance(), Reason: why})
}

func (t *task) drop(id string) {
	if _, ok := t.copies[id]; ok {
		delete(t.copies, id)
		t.s.m.copies(context.Background(), t.key.service, -1)
	}
}

// closeAll deregisters every copy still held.
func (t *task) closeAll(why string) {
	for id := range t.copies {
		t.remove(context.Background(), id, why)
	}
}

func (t *task) fail(ctx context.Context, op, id string, in registry.Instance, err error) {
	t.s.m.errors(ctx, op)
	t.s.o.logger.Warn("mirror: "+op+" a copy", "service", t.key.service, "route", t.name, "source_id", id, "err", err)
	t.event(Event{Kind: Failed, SourceID: id, Copy: in, Reason: op, Err: err})
}

func (t *task) event(e Event) {
	if t.s.o.events == nil {
		return
	}
	e.Time, e.Route, e.Service = time.Now(), t.name, t.key.service
	t.s.o.events(e)
}

// same reports whether two copies carry the same data.
func same(a, b registry.Instance) bool {
	return a.Host == b.Host && a.Port == b.Port && a.Weight == b.Weight && a.Zone == b.Zone &&
		maps.Equal(a.Metadata, b.Metadata)
}

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d) }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
