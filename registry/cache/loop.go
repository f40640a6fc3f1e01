package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
	"github.com/regkit/regkit/registry/internal/retry"
)

// errNoAnswer is the Err of snapshots served from a file before the backend answered.
var errNoAnswer = fmt.Errorf("cache: no answer from the backend yet, serving the snapshot file: %w", driver.ErrUnavailable)

// loop is the state of one service's watch loop; only its goroutine touches it.
type loop struct {
	c *Cache
	e *entry
	b *retry.Backoff // re-watch delays; up while snapshots arrive

	startDeadline time.Time          // when to publish the file snapshot; zero if not pending
	accepted      *registry.Snapshot // last good backend snapshot served
	protectUntil  time.Time          // zero unless protecting
	pending       *registry.Snapshot // newest held-back update while protecting
}

// run follows e.service until the Cache closes (nil) or a permanent error. A
// watch that fails is opened again after a jittered exponential backoff (the
// registry's own, package internal/retry), which starts again from its minimum
// only once a watch delivered snapshots for the backoff's maximum; a streak of
// failures is logged once.
func (c *Cache) run(e *entry) error {
	l := &loop{c: c, e: e, b: retry.NewBackoff(c.opt.clock, c.opt.backoffMin, c.opt.backoffMax)}
	if e.file != nil {
		l.startDeadline = c.opt.clock.Now().Add(c.opt.startupWait)
	}
	for c.life.Err() == nil {
		w, err := c.watch(e.service)
		if err != nil {
			if c.life.Err() != nil {
				return nil
			}
			if permanent(err) {
				c.log.Warn("cache: cannot watch service", "service", e.service, "err", err)
				return err
			}
		} else {
			err = l.follow(w)
			w.Close()
			if c.life.Err() != nil {
				return nil
			}
			if permanent(err) {
				c.log.Warn("cache: watch of service ended", "service", e.service, "err", err)
				return err
			}
		}
		delay, first := l.b.Fail()
		if first {
			c.log.Warn("cache: watch of service failed, retrying (further failures in a row are not logged)",
				"service", e.service, "err", err, "in", delay)
		}
		if !l.sleep(delay) {
			return nil
		}
	}
	return nil
}

// sharedWatcher is a Discovery whose watches can hand over the loop's own
// snapshots without copies (registry.Client.WatchShared): the Cache never
// modifies them, and holds each service's instances once instead of twice.
type sharedWatcher interface {
	WatchShared(ctx context.Context, service string) (registry.Watcher, error)
}

func (c *Cache) watch(service string) (registry.Watcher, error) {
	if sw, ok := c.d.(sharedWatcher); ok {
		return sw.WatchShared(c.life, service)
	}
	return c.d.Watch(c.life, service)
}

// permanent reports errors after which watching again is pointless.
func permanent(err error) bool {
	return errors.Is(err, driver.ErrClosed) || errors.Is(err, driver.ErrInvalid) ||
		errors.Is(err, driver.ErrNotSupported)
}

// sleep waits d while still handling timers; false if the Cache closed.
func (l *loop) sleep(d time.Duration) bool {
	clock := l.c.opt.clock
	until := clock.Now().Add(d)
	for {
		l.timers()
		wait := clock.Until(until)
		if wait <= 0 {
			return l.c.life.Err() == nil
		}
		if dl := l.deadline(); !dl.IsZero() {
			wait = max(min(wait, clock.Until(dl)), 0)
		}
		if retry.Sleep(l.c.life, clock, wait) != nil {
			return false
		}
	}
}

// deadline is the nearest pending timer, or zero.
func (l *loop) deadline() time.Time {
	d := l.startDeadline
	if !l.protectUntil.IsZero() && (d.IsZero() || l.protectUntil.Before(d)) {
		d = l.protectUntil
	}
	return d
}

// timers fires the due timers: the startup wait and the protection grace.
func (l *loop) timers() {
	now := l.c.opt.clock.Now()
	if !l.startDeadline.IsZero() && !now.Before(l.startDeadline) {
		l.startDeadline = time.Time{}
		if l.e.cur.Load() == nil {
			l.c.log.Warn("cache: backend has not answered, serving snapshot file", "service", l.e.service,
				"saved", l.e.file.LastGood, "instances", len(l.e.file.Instances))
			l.e.publish(*l.e.file, false)
		}
	}
	if !l.protectUntil.IsZero() && !now.Before(l.protectUntil) {
		s := *l.pending
		l.c.log.Warn("cache: protect threshold grace expired, accepting update", "service", l.e.service,
			"instances", len(s.Instances))
		l.protectUntil, l.pending = time.Time{}, nil
		l.accept(s)
	}
}

// follow reads w until an error.
func (l *loop) follow(w registry.Watcher) error {
	for {
		l.timers()
		ctx, cancel := context.WithCancel(l.c.life)
		stop := func() bool { return false }
		if dl := l.deadline(); !dl.IsZero() {
			t := l.c.opt.clock.AfterFunc(l.c.opt.clock.Until(dl), cancel) // on the Cache's clock
			stop = t.Stop
		}
		s, err := w.Next(ctx)
		expired := ctx.Err() != nil
		stop()
		cancel()
		if err != nil {
			if l.c.life.Err() != nil {
				return l.c.life.Err()
			}
			if expired {
				continue // a timer is due
			}
			return err
		}
		l.update(s)
	}
}

// update handles one snapshot from the backend's watcher.
func (l *loop) update(s registry.Snapshot) {
	if l.b != nil { // a pushed loop has no re-watch backoff
		l.b.Up()
	}
	if s.Service == "" {
		s.Service = l.e.service
	}
	if s.Stale {
		// The last good view, marked stale: keep what is served.
		if l.accepted != nil {
			st := l.e.cur.Load()
			s.Instances = st.snap.Instances
			l.e.publish(s, st.protected)
			return
		}
		if len(s.Instances) == 0 && l.e.file != nil {
			s.Instances, s.LastGood = l.e.file.Instances, l.e.file.LastGood
		}
		l.e.publish(s, false)
		return
	}
	if l.accepted != nil && l.c.opt.protect {
		base := l.e.cur.Load().snap.Instances // held set while protecting
		if dropShare(base, s.Instances) > l.c.opt.share {
			if l.protectUntil.IsZero() {
				l.protectUntil = l.c.opt.clock.Now().Add(l.c.opt.grace)
				l.c.log.Warn("cache: update would drop too many instances, keeping the previous set",
					"service", l.e.service, "previous", len(base), "new", len(s.Instances),
					"threshold", l.c.opt.share, "grace", l.c.opt.grace)
			}
			l.pending = &s
			held := s
			held.Instances = base
			l.e.publish(held, true)
			return
		}
		if !l.protectUntil.IsZero() {
			l.c.log.Warn("cache: instances recovered, protection ended", "service", l.e.service)
			l.protectUntil, l.pending = time.Time{}, nil
		}
	}
	l.accept(s)
}

// accept serves s and persists it.
func (l *loop) accept(s registry.Snapshot) {
	l.startDeadline = time.Time{}
	l.accepted = &s
	l.e.publish(s, false)
	if l.c.opt.dir != "" {
		l.c.save(s)
	}
}

// dropShare is the share of old's instances (by ID) missing from new.
func dropShare(old, new []driver.Instance) float64 {
	if len(old) == 0 {
		return 0
	}
	ids := make(map[string]struct{}, len(new))
	for _, in := range new {
		ids[in.ID] = struct{}{}
	}
	dropped := 0
	for _, in := range old {
		if _, ok := ids[in.ID]; !ok {
			dropped++
		}
	}
	return float64(dropped) / float64(len(old))
}
