package registry

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/registry/driver"
	"github.com/regkit/regkit/registry/internal/retry"
)

// resyncEvery is how often a service followed through driver events is listed
// again from scratch, as a safety net under the driver's own gap detection (with
// up to a quarter more, at random, so that services do not all re-list at once).
const resyncEvery = 10 * time.Minute

// eventLoop follows one service through a driver.EventWatcher: it applies the
// driver's changes to its view and publishes, without a goroutine of its own
// (the driver's calls and the Client's timers drive it). After a broken
// subscription it marks the view stale, backs off and subscribes again, which
// starts with a complete listing; so does the periodic check.
type eventLoop struct {
	w    *serviceWatch
	ew   driver.EventWatcher
	life context.Context // the loop's; done once it stops

	mu        sync.Mutex
	stopped   bool
	cur       *subscription // nil between a broken subscription and the next
	timer     clockwork.Timer
	busy      sync.WaitGroup // timer callbacks in progress (Add only under mu, before stopped)
	b         *retry.Backoff
	view      []Instance // sorted by ID; shared with published snapshots, never modified
	prev      *Snapshot  // last published (nil before the first)
	lastGood  time.Time
	gap       bool // a subscription broke since the last complete listing
	revision  uint64
	meta      driver.Listing // the last Reset's flags (NoLeader, ReplicaLag, ProtectThreshold)
	resynced  bool           // the current subscription has delivered its Reset
	checkNext bool           // the next Reset is the periodic check's
	waking    bool           // a goroutine waits for the connection to come back (see failed)
	// While only registration guards follow the service (no Watch reads its
	// snapshots), changes are kept aside here, by ID, and folded into the view
	// when a reader comes, a Reset arrives or the subscription breaks: a burst of
	// n registrations then costs O(n), not a new n-instance snapshot per event.
	pendPuts map[string]Instance
	pendDels map[string]struct{}
}

type subscription struct {
	cancel func()
	at     int64 // stamp when it began: its first Reset was read after
}

// startEvents follows w through ew without a goroutine; false if ew cannot
// (driver.ErrNotSupported), and w must be followed with Watch and List. stop
// is run when ctx (the loop's life) ends; it closes w.done and calls wgDone.
func (w *serviceWatch) startEvents(ctx context.Context, ew driver.EventWatcher, wgDone func()) bool {
	l := &eventLoop{w: w, ew: ew, b: w.c.newRetry(), life: ctx}
	w.ev = l
	l.mu.Lock()
	err := l.subscribe()
	l.mu.Unlock()
	if errors.Is(err, driver.ErrNotSupported) {
		w.ev = nil
		return false
	}
	context.AfterFunc(ctx, func() {
		l.stop()
		close(w.done)
		wgDone()
	})
	return true
}

// subscribe starts a subscription, or schedules another attempt. Under l.mu.
func (l *eventLoop) subscribe() error {
	s := &subscription{at: stamp()}
	cancel, err := l.ew.SubscribeEvents(l.w.service, func(ch driver.Change) { l.onChange(s, ch) })
	if err != nil {
		if !errors.Is(err, driver.ErrNotSupported) {
			l.failed("list", err)
		}
		return err
	}
	s.cancel = cancel
	l.cur = s
	l.resynced = false
	return nil
}

// failed marks the view stale and schedules the next subscription; op says
// what failed for the request-error metric ("list" before the first listing of
// a subscription, "watch" after). Under l.mu.
func (l *eventLoop) failed(op string, err error) {
	l.foldLocked(l.w.c.clock.Now())
	l.cur = nil
	l.gap = true
	l.w.c.requestError(l.life, op, err)
	delay, first := l.b.Fail()
	if first {
		l.w.c.log.warn("registry: watch broke, re-arming (further failures in a row are not logged)",
			"watch", "service "+l.w.service, "err", err)
	}
	l.prev = l.w.markStale(l.prev, l.lastGood, err)
	l.schedule(delay, false)
	l.wakeOnReconnect()
}

// wakeOnReconnect subscribes again as soon as a driver that reports its
// connection's health (driver.Health) says it is back, instead of sleeping out
// the backoff, as the re-list loop does: a goroutine waits for that, only while
// the connection is down. Under l.mu.
func (l *eventLoop) wakeOnReconnect() {
	h, ok := l.w.c.conn.(driver.Health)
	if !ok || l.waking || l.stopped || h.Health() == nil {
		return
	}
	l.waking = true
	l.busy.Add(1)
	l.w.c.goTracked(func() {
		defer l.busy.Done()
		for {
			changed := h.HealthChanged() // before Health, so no change is missed
			if h.Health() == nil {
				break
			}
			select {
			case <-changed:
			case <-l.life.Done():
				l.mu.Lock()
				l.waking = false
				l.mu.Unlock()
				return
			}
		}
		l.mu.Lock()
		l.waking = false
		pending := l.cur == nil && !l.stopped
		l.mu.Unlock()
		if pending {
			l.fire(false)
		}
	})
}

// schedule (re)sets the one timer: a new subscription after d, replacing the
// current one if there is one. Under l.mu.
func (l *eventLoop) schedule(d time.Duration, check bool) {
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timer = l.w.c.clock.AfterFunc(d, func() { l.fire(check) })
}

// fire is the timer's callback: subscribe again (after a failure, or for the
// periodic check, replacing the live subscription).
func (l *eventLoop) fire(check bool) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.busy.Add(1)
	defer l.busy.Done()
	old := l.cur
	l.cur = nil
	l.mu.Unlock()
	if old != nil {
		old.cancel() // outside mu: it waits for a call in progress, which takes mu
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.checkNext = check
	if l.timer != nil {
		l.timer.Stop() // a wake-up before the backoff's end replaces it
	}
	_ = l.subscribe()
}

// stop ends the subscription and the timer, and waits for the callbacks in
// progress; nothing is published after it returns.
func (l *eventLoop) stop() {
	l.mu.Lock()
	l.stopped = true
	cur, t := l.cur, l.timer
	l.cur = nil
	l.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	if cur != nil {
		cur.cancel()
	}
	l.busy.Wait()
}

// onChange applies one call of subscription s.
func (l *eventLoop) onChange(s *subscription, ch driver.Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || l.cur != s {
		return // a replaced subscription's last word
	}
	w := l.w
	if ch.Err != nil {
		op := "watch"
		if !l.resynced {
			op = "list"
		}
		l.failed(op, ch.Err)
		return
	}
	now := w.c.clock.Now()
	if ch.Revision != 0 {
		l.revision = ch.Revision
	}
	if ch.Reset {
		l.foldLocked(now) // so that the periodic check compares like with like
		list := ch.Listing.Instances
		driver.SortInstances(list)
		w.c.intern.instances(list)
		// The first Reset was read after the subscription began; a later one
		// counts against registrations only if the driver says when it was read.
		at := stampOf(ch.ReadAt)
		if ch.ReadAt.IsZero() {
			at = 0
			if !l.resynced {
				at = s.at
			}
		}
		if at != 0 {
			// After the publish below: a reader that sees the guard's news of
			// an own registration (Client.Watch's first Next, Instances) must
			// find the snapshot that carries it already published.
			defer w.guard.check(at, list)
		}
		check := l.checkNext && !l.resynced && l.prev != nil
		l.checkNext = false
		l.meta = ch.Listing
		l.lastGood = now
		l.b.Up()
		first := !l.resynced
		l.resynced = true
		snap := l.snapshot(list, now)
		snap.Resynced = l.gap && l.prev != nil
		if snap.Resynced {
			w.c.watchResynced(w.service)
		}
		if check && !l.prev.Stale && !sameView(l.prev, &snap) {
			w.c.log.warn("registry: the periodic re-list of an event-following watch found a difference; corrected", "service", w.service)
			snap.Resynced = true
		}
		l.gap = false
		if l.prev == nil || l.prev.Stale || snap.Resynced || !sameView(l.prev, &snap) {
			l.view = list
			w.publish(snap)
			l.prev = w.current()
		}
		if first {
			l.schedule(resyncEvery+rand.N(resyncEvery/4), true)
		}
		return
	}
	if !l.resynced {
		return // changes before the first listing are in it
	}
	w.c.intern.instances(ch.Puts)
	defer w.guard.changed(stamp(), ch.Puts, ch.Deletes) // after the publish (see the Reset above)
	l.lastGood = now
	if w.users.Load() == 0 && !l.prev.Stale {
		l.setAside(ch.Puts, ch.Deletes)
		return
	}
	l.foldLocked(now)
	view, changed := applyChange(l.view, ch.Puts, ch.Deletes)
	if !changed && !l.prev.Stale {
		return
	}
	l.view = view
	w.publish(l.snapshot(view, now))
	l.prev = w.current()
}

// setAside keeps a change for foldLocked, the last change of an ID winning.
// Under l.mu.
func (l *eventLoop) setAside(puts []Instance, deletes []string) {
	if l.pendPuts == nil {
		l.pendPuts, l.pendDels = map[string]Instance{}, map[string]struct{}{}
	}
	for _, in := range puts {
		l.pendPuts[in.ID] = in
		delete(l.pendDels, in.ID)
	}
	for _, id := range deletes {
		delete(l.pendPuts, id)
		l.pendDels[id] = struct{}{}
	}
}

// fold applies the changes set aside and publishes the view (a Watch just
// started reading it).
func (l *eventLoop) fold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.foldLocked(l.w.c.clock.Now())
	}
}

// foldLocked applies the changes set aside to the view and publishes it if it
// changed. Under l.mu.
func (l *eventLoop) foldLocked(now time.Time) {
	if len(l.pendPuts) == 0 && len(l.pendDels) == 0 {
		return
	}
	puts := make([]Instance, 0, len(l.pendPuts))
	for _, in := range l.pendPuts {
		puts = append(puts, in)
	}
	dels := make([]string, 0, len(l.pendDels))
	for id := range l.pendDels {
		dels = append(dels, id)
	}
	l.pendPuts, l.pendDels = nil, nil
	view, changed := applyChange(l.view, puts, dels)
	if !changed || l.prev == nil {
		return
	}
	l.view = view
	l.w.publish(l.snapshot(view, now))
	l.prev = l.w.current()
}

func (l *eventLoop) snapshot(list []Instance, now time.Time) Snapshot {
	return Snapshot{Service: l.w.service, Instances: list, Revision: l.revision, LastGood: now,
		ReplicaLag: l.meta.ReplicaLag, NoLeader: l.meta.NoLeader, ProtectThreshold: l.meta.ProtectThreshold,
		clock: l.w.c.clock}
}

// applyChange returns view (sorted by ID, not modified) with puts and deletes
// applied, and whether anything differs. It costs one pass over view and a sort
// of the new IDs.
func applyChange(view []Instance, puts []Instance, deletes []string) ([]Instance, bool) {
	if len(puts) == 0 && len(deletes) == 0 {
		return view, false
	}
	byID := make(map[string]int, len(puts)) // index in puts
	for i, in := range puts {
		byID[in.ID] = i
	}
	del := make(map[string]struct{}, len(deletes))
	for _, id := range deletes {
		del[id] = struct{}{}
	}
	changed := false
	used := make([]bool, len(puts))
	out := make([]Instance, 0, len(view)+len(puts))
	for _, in := range view {
		if i, ok := byID[in.ID]; ok {
			used[i] = true
			if !in.Equal(puts[i]) {
				changed = true
			}
			out = append(out, puts[i])
			continue
		}
		if _, ok := del[in.ID]; ok {
			changed = true
			continue
		}
		out = append(out, in)
	}
	var added []Instance
	for i, in := range puts {
		if !used[i] {
			added = append(added, in)
		}
	}
	if len(added) == 0 {
		if !changed {
			return view, false
		}
		return out, true
	}
	driver.SortInstances(added)
	merged := make([]Instance, 0, len(out)+len(added))
	i, j := 0, 0
	for i < len(out) || j < len(added) {
		if j == len(added) || i < len(out) && strings.Compare(out[i].ID, added[j].ID) < 0 {
			merged = append(merged, out[i])
			i++
		} else {
			merged = append(merged, added[j])
			j++
		}
	}
	return slices.Clip(merged), true
}
