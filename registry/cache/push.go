package cache

import (
	"context"
	"errors"
	"sync"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/registry"
)

// pushWatcher is a Discovery that pushes snapshots (registry.Client.WatchFunc):
// the Cache then follows each service without a goroutine of its own, its
// timers on the Cache's clock and its snapshot files written by one goroutine
// per Cache.
type pushWatcher interface {
	WatchFunc(ctx context.Context, service string, fn func(registry.Snapshot, error)) (stop func(), err error)
}

// pushLoop is a loop driven by pushed snapshots and by its timer.
type pushLoop struct {
	loop
	mu     sync.Mutex // serialises the callbacks and the timer
	timer  clockwork.Timer
	ended  bool
	stopFn func()
}

// newPushLoop returns e's loop, to be started with start; e.stop ends it.
func (c *Cache) newPushLoop(e *entry) *pushLoop {
	l := &pushLoop{loop: loop{c: c, e: e}}
	if e.file != nil {
		l.startDeadline = c.opt.clock.Now().Add(c.opt.startupWait)
	}
	e.stop = l.stop
	return l
}

// start subscribes through d's WatchFunc. Called without locks (the first
// snapshot may be handed over before WatchFunc returns). A refusal ends e as a
// failed goroutine loop would.
func (l *pushLoop) start(d pushWatcher) {
	c, e := l.c, l.e
	stop, err := d.WatchFunc(c.life, e.service, l.onSnapshot)
	l.mu.Lock()
	if err != nil {
		if !l.ended && c.life.Err() == nil {
			c.log.Warn("cache: cannot watch service", "service", e.service, "err", err)
			e.err = err
		}
		l.ended = true
		l.mu.Unlock()
		c.endEntry(e)
		return
	}
	if l.ended { // Close came first
		l.mu.Unlock()
		stop()
		return
	}
	l.stopFn = stop
	l.rearm()
	l.mu.Unlock()
}

// onSnapshot is the WatchFunc callback.
func (l *pushLoop) onSnapshot(s registry.Snapshot, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || l.c.life.Err() != nil {
		return
	}
	if err != nil {
		l.c.log.Warn("cache: watch of service ended", "service", l.e.service, "err", err)
		l.e.err = err
		l.ended = true
		l.stopTimer()
		l.c.endEntry(l.e)
		return
	}
	l.update(s)
	l.rearm()
}

// rearm sets the timer to the nearest deadline. Under mu.
func (l *pushLoop) rearm() {
	dl := l.deadline()
	if dl.IsZero() {
		l.stopTimer()
		return
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timer = l.c.opt.clock.AfterFunc(l.c.opt.clock.Until(dl), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.ended || l.c.life.Err() != nil {
			return
		}
		l.timers()
		l.rearm()
	})
}

func (l *pushLoop) stopTimer() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
}

// stop ends the subscription and the timer (Cache.Close).
func (l *pushLoop) stop() {
	l.mu.Lock()
	l.ended = true
	l.stopTimer()
	stop := l.stopFn
	l.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// endEntry marks e's loop ended (done closed) and, after a failure, removes
// it so that the next lookup starts again.
func (c *Cache) endEntry(e *entry) {
	e.endOnce.Do(func() {
		if e.err != nil {
			c.remove(e)
		}
		close(e.done)
	})
}

// fileWriter writes snapshot files on one goroutine per Cache, newest snapshot
// of each service first come first written; it drains what is queued when the
// Cache closes.
type fileWriter struct {
	mu      sync.Mutex
	queue   map[string]registry.Snapshot
	order   []string
	running bool
	wake    chan struct{}
}

// save queues s to be written to its service's snapshot file.
func (c *Cache) save(s registry.Snapshot) {
	w := &c.files
	w.mu.Lock()
	if w.queue == nil {
		w.queue, w.wake = map[string]registry.Snapshot{}, make(chan struct{}, 1)
	}
	if _, ok := w.queue[s.Service]; !ok {
		w.order = append(w.order, s.Service)
	}
	if !w.running && c.life.Err() != nil { // closing: no new goroutine
		w.mu.Unlock()
		if err := c.saveFile(s); err != nil {
			c.log.Warn("cache: cannot write snapshot file", "service", s.Service, "err", err)
		}
		return
	}
	w.queue[s.Service] = s
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		c.wg.Add(1)
		go c.writeFiles()
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (c *Cache) writeFiles() {
	defer c.wg.Done()
	w := &c.files
	for {
		w.mu.Lock()
		if len(w.order) == 0 {
			if c.life.Err() != nil {
				w.running = false
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			select {
			case <-w.wake:
			case <-c.life.Done():
			}
			continue
		}
		svc := w.order[0]
		w.order = w.order[1:]
		s := w.queue[svc]
		delete(w.queue, svc)
		w.mu.Unlock()
		if err := c.saveFile(s); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Warn("cache: cannot write snapshot file", "service", s.Service, "err", err)
		}
	}
}
