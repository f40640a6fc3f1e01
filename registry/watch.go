package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// Snapshot is one complete view of a service. Every snapshot returned by
// Watcher.Next (and every slice returned by Client.Instances) is the caller's own
// deep copy: sorting it or editing an instance or its Metadata changes nothing
// anyone else sees. (Package registry/cache's Lookup is the exception, for speed;
// its doc says so.)
type Snapshot struct {
	Service string
	// Instances are all registered instances, healthy or not, sorted by ID.
	Instances []Instance
	// Revision is the backend's revision of the read behind this snapshot (0 where
	// the backend has none).
	Revision uint64
	// Seq increases by one with every snapshot published for this service in this
	// process.
	Seq uint64
	// Stale is true while the backend cannot be read: Instances is then the last
	// good view, as of LastGood.
	Stale bool
	// Err says why the snapshot is stale.
	Err error
	// LastGood is when the backend last answered.
	LastGood time.Time
	// Resynced is true on the first snapshot after a gap (a broken watch, an
	// outage): it was re-listed, and its Instances equal the backend's. A watcher
	// that read too slowly to see that snapshot gets Resynced on the first fresh
	// one it reads after it, so no watcher misses that a gap happened.
	Resynced bool
	// ReplicaLag is how far behind its leader the answering server may be (Consul
	// with stale reads); 0 for a consistent read.
	ReplicaLag time.Duration
	// NoLeader: the answering server knew no leader.
	NoLeader bool
	// ProtectThreshold: the backend returned unhealthy instances as healthy to
	// protect the service (Nacos).
	ProtectThreshold bool

	clock clockwork.Clock // the Client's (see WithClock); nil: the real clock
}

// Age is how long ago the backend last answered, as of now (on the Client's
// clock, see WithClock).
func (s Snapshot) Age() time.Duration {
	if s.LastGood.IsZero() {
		return 0
	}
	if s.clock != nil {
		return s.clock.Since(s.LastGood)
	}
	return time.Since(s.LastGood)
}

// Clone returns a deep copy of s: its own Instances slice and Metadata maps.
func (s Snapshot) Clone() Snapshot {
	s.Instances = cloneInstances(s.Instances)
	return s
}

// Healthy returns the instances whose Healthy is true (a new slice).
func (s Snapshot) Healthy() []Instance {
	out := make([]Instance, 0, len(s.Instances))
	for _, in := range s.Instances {
		if in.Healthy {
			out = append(out, in)
		}
	}
	return out
}

// Watcher follows one service. Next returns complete snapshots; bursts of changes
// are coalesced, so a watcher sees every final state but maybe not each step. A
// Watcher never stops by itself while the context given to Watch lives: after any
// error or gap its loop backs off, reconnects, re-lists and publishes a Resynced
// snapshot; while the backend is unreachable it publishes the last good view marked
// Stale.
type Watcher interface {
	// Next returns the next snapshot: on the first call, the current one (waiting
	// for the first read); after that, the first one newer than the last returned.
	// It returns ctx's error, or ErrClosed once the Watcher or its Client is closed
	// or the Watch context is done. The snapshot is the caller's own copy.
	Next(ctx context.Context) (Snapshot, error)
	// Close stops the watcher and waits for its goroutine, and for the service's
	// shared loop when it was the loop's last watcher; a Next in progress returns
	// ErrClosed. Idempotent; it always returns nil.
	Close() error
}

// serviceWatch is the one loop per service shared by all watchers of a Client.
type serviceWatch struct {
	c       *Client
	service string
	cancel  context.CancelFunc
	done    chan struct{}
	started time.Time // on the Client's clock, for the staleness gauge

	refs     int // watchers and guarded registrations, under c.mu
	userRefs int // of which opened by Watch (not by a registration's guard), under c.mu
	// users is userRefs, readable without c.mu: while it is 0 an event loop
	// keeps the changes aside instead of building snapshots nobody reads.
	users atomic.Int32
	ev    *eventLoop // the event loop, nil for a goroutine loop (set before the loop runs)
	// linger ends the loop guardLinger after the last internal reference went
	// (see releaseWatch); lingerGen tells its callback whether it is still the
	// current one. Under c.mu.
	linger    clockwork.Timer
	lingerGen uint64
	evented   bool // followed through driver events, without a goroutine: it may linger

	guard serviceGuard // this Client's registrations of the service; see guard.go

	mu        sync.Mutex
	snap      *Snapshot
	resyncSeq uint64           // Seq of the last Resynced snapshot
	changed   broadcast.Signal // at every publish
	funcs     []*watchFunc     // WatchFunc subscriptions; copied on write
}

func (w *serviceWatch) current() *Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap
}

// wait returns the latest snapshot, the Seq of the last Resynced one and a channel
// closed when a newer one exists.
func (w *serviceWatch) wait() (*Snapshot, uint64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap, w.resyncSeq, w.changed.C()
}

func (w *serviceWatch) publish(s Snapshot) {
	w.mu.Lock()
	if w.snap != nil {
		s.Seq = w.snap.Seq + 1
	} else {
		s.Seq = 1
	}
	if s.Resynced {
		w.resyncSeq = s.Seq
	}
	w.snap = &s
	w.changed.Notify()
	funcs := w.funcs
	w.mu.Unlock()
	for _, f := range funcs {
		f.deliver(&s, nil)
	}
}

// watchFunc is one WatchFunc subscription.
type watchFunc struct {
	fn func(Snapshot, error)
	sw *serviceWatch

	mu      sync.Mutex // serialises fn; held while a call is in progress
	lastSeq uint64
	ended   bool
	// While the first snapshot is held back because the view lags behind a
	// Register of this Client (serviceGuard.lagging), held delivers the
	// current one anyway after the request timeout; gaveUp is then set.
	held   clockwork.Timer
	gaveUp bool
}

// deliver calls fn with s unless an equal or newer snapshot was delivered, or
// with err (which ends the subscription). A first snapshot that lags behind a
// Register of this Client that returned is held back for the next one (at most
// the request timeout).
func (f *watchFunc) deliver(s *Snapshot, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return
	}
	if err != nil {
		f.ended = true
		if f.held != nil {
			f.held.Stop()
		}
		f.fn(Snapshot{}, err)
		return
	}
	if s == nil || s.Seq <= f.lastSeq {
		return
	}
	if f.lastSeq == 0 && !f.gaveUp && !s.Stale {
		if f.sw.guard.lagging(s.Instances) {
			if f.held == nil {
				f.held = f.sw.c.clock.AfterFunc(f.sw.c.opt.reqTimeout, f.giveUp)
			}
			return
		}
		if cur := f.sw.current(); cur != nil && cur.Seq > s.Seq {
			return // a newer snapshot was published after f joined: it is delivered too
		}
	}
	f.lastSeq = s.Seq
	f.fn(*s, nil)
}

// giveUp delivers the current snapshot even if it lags (see deliver).
func (f *watchFunc) giveUp() {
	f.mu.Lock()
	f.gaveUp = true
	f.mu.Unlock()
	f.deliver(f.sw.current(), nil)
}

// end stops further calls, waiting for one in progress.
func (f *watchFunc) end() {
	f.mu.Lock()
	f.ended = true
	if f.held != nil {
		f.held.Stop()
	}
	f.mu.Unlock()
}

// WatchFunc follows service like WatchShared, but pushes: fn is called with
// every snapshot the service's loop publishes (none skipped), in order and one
// call at a time, from the Client's goroutines (the first call, with the
// snapshot already published if there is one, may come before WatchFunc
// returns). It runs no goroutine of its own, so a cache of many services costs
// no goroutine per service. The snapshots are shared as with WatchShared:
// never modify them. fn must return quickly and must not call into the Client
// (nor stop); it is called with a zero Snapshot and ErrClosed, once and last,
// when the Client closes. stop ends the subscription and waits for a call in
// progress; so does the end of ctx (without waiting). It fails like Watch.
func (c *Client) WatchFunc(ctx context.Context, service string, fn func(Snapshot, error)) (stop func(), err error) {
	if err := ValidServiceName(service); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, invalid("fn", nil, "WatchFunc needs a function to call")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: watch %s: %w", service, err)
	}
	sw, err := c.acquireWatch(service, true)
	if err != nil {
		return nil, err
	}
	f := &watchFunc{fn: fn, sw: sw}
	sw.mu.Lock()
	sw.funcs = append(slices.Clip(sw.funcs), f)
	cur := sw.snap
	sw.mu.Unlock()
	f.deliver(cur, nil)
	var once sync.Once
	end := func() {
		once.Do(func() {
			sw.mu.Lock()
			i := slices.Index(sw.funcs, f)
			if i >= 0 {
				sw.funcs = slices.Delete(slices.Clone(sw.funcs), i, i+1)
			}
			sw.mu.Unlock()
			f.end()
			c.releaseWatch(sw, true)
		})
	}
	unhookCtx := context.AfterFunc(ctx, end)
	unhookClose := context.AfterFunc(c.life, func() { f.deliver(nil, ErrClosed) })
	return func() {
		unhookCtx()
		unhookClose()
		end()
	}, nil
}

// Watch starts following service. All watchers of one service in this Client share
// one backend watch. The Watcher ends when ctx is done or Close is called. A ctx
// already done fails Watch with its error. The first snapshot holds the
// instances of this Client whose Register returned before (see the package
// doc, Guarantees).
func (c *Client) Watch(ctx context.Context, service string) (Watcher, error) {
	if err := ValidServiceName(service); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: watch %s: %w", service, err)
	}
	w, err := c.watch(ctx, service, true)
	if err != nil {
		return nil, err // not a nil *watcher in a non-nil interface
	}
	return w, nil
}

// WatchShared is Watch without the copies: Next returns the snapshot the
// service's loop published, shared with every other WatchShared caller and with
// the loop itself. It is for caches that hold many services (package
// registry/cache uses it, so that a service's instances are held once): never
// modify what it returns, not even by sorting.
func (c *Client) WatchShared(ctx context.Context, service string) (Watcher, error) {
	w, err := c.Watch(ctx, service)
	if err != nil {
		return nil, err
	}
	w.(*watcher).shared = true
	return w, nil
}

// watch opens a watcher; user is false for the library's own watchers, which do
// not make Instances answer from the shared view.
func (c *Client) watch(ctx context.Context, service string, user bool) (*watcher, error) {
	if err := ValidServiceName(service); err != nil {
		return nil, err
	}
	sw, err := c.acquireWatch(service, user)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &watcher{sw: sw, ctx: wctx, cancel: cancel, user: user}
	// Release the shared loop when the watch context ends, even if Close is never
	// called: no goroutine waits for it, the context runs the release.
	w.stop = context.AfterFunc(wctx, w.release)
	return w, nil
}

// acquireWatch takes one reference on service's shared loop, starting the loop
// if it is the first; user counts it as a Watch (see Client.Instances).
func (c *Client) acquireWatch(service string, user bool) (*serviceWatch, error) {
	sw, err := c.acquireWatchLocked(service, user)
	if err == nil && user && sw.ev != nil {
		sw.ev.fold() // a view kept lazily for guards only is now read
	}
	return sw, err
}

func (c *Client) acquireWatchLocked(service string, user bool) (*serviceWatch, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	sw := c.watches[service]
	if sw == nil {
		lctx, cancel := context.WithCancel(c.life)
		sw = &serviceWatch{c: c, service: service, cancel: cancel, done: make(chan struct{}), started: c.clock.Now()}
		c.watches[service] = sw
		c.wg.Add(1)
		// A driver that hands over changes drives the view itself (events.go);
		// otherwise one goroutine watches and lists.
		ew, ok := c.conn.(driver.EventWatcher)
		if ok && sw.startEvents(lctx, ew, c.wg.Done) {
			sw.evented = true
		} else {
			c.goTracked(func() { sw.run(lctx) }, func() { close(sw.done) }, c.wg.Done)
		}
	}
	if sw.linger != nil { // lingering after its last reference: taken again
		sw.linger.Stop()
		sw.linger = nil
	}
	sw.refs++
	if user {
		sw.userRefs++
		sw.users.Add(1)
	}
	return sw, nil
}

// guardLinger is how long a service's shared loop outlives its last reference
// when that was a registration's guard (or another library-internal watcher):
// a service registered and deregistered again and again (a rolling restart, a
// health check that withdraws and restores) keeps its subscription instead of
// listing the service anew at every registration.
const guardLinger = 10 * time.Second

// releaseWatch drops a reference taken by acquireWatch and reports whether it was
// the last one, whose loop is then stopping (wait for sw.done). The last
// reference of a library-internal watcher (user false) leaves a loop that
// follows driver events (no goroutine of the Client's) running for guardLinger
// on the Client's clock, and reports false.
func (c *Client) releaseWatch(sw *serviceWatch, user bool) (last bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sw.refs--
	if user {
		sw.userRefs--
		sw.users.Add(-1)
	}
	if sw.refs > 0 {
		return false
	}
	if !user && !c.closed && sw.evented {
		sw.lingerGen++
		gen := sw.lingerGen
		if sw.linger != nil {
			sw.linger.Stop()
		}
		sw.linger = c.clock.AfterFunc(guardLinger, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if sw.refs > 0 || sw.lingerGen != gen {
				return // taken again meanwhile
			}
			c.endWatch(sw)
		})
		return false
	}
	c.endWatch(sw)
	return true
}

// endWatch stops sw's loop. Under c.mu, with no reference left.
func (c *Client) endWatch(sw *serviceWatch) {
	if sw.linger != nil {
		sw.linger.Stop()
		sw.linger = nil
	}
	if c.watches[sw.service] == sw {
		delete(c.watches, sw.service)
	}
	sw.cancel()
}

type watcher struct {
	sw      *serviceWatch
	ctx     context.Context
	cancel  context.CancelFunc
	stop    func() bool // unhooks the release from ctx
	once    sync.Once
	lastSeq uint64
	user    bool       // opened by Watch: snapshots are copied for the caller
	shared  bool       // opened by WatchShared: they are not (set before the first Next)
	last    bool       // released the shared loop's last reference (set in once)
	mu      sync.Mutex // serialises Next
}

// release drops the watcher's reference on the shared loop, once; a concurrent
// call waits for the first (sync.Once), so after it returns last is set.
func (w *watcher) release() {
	w.once.Do(func() { w.last = w.sw.c.releaseWatch(w.sw, w.user) })
}

func (w *watcher) Next(ctx context.Context) (Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var held <-chan time.Time // set while a first snapshot waits for a lagging view
	for {
		if w.ctx.Err() != nil || w.sw.c.life.Err() != nil {
			return Snapshot{}, ErrClosed
		}
		s, resyncSeq, ch := w.sw.wait()
		if s != nil && s.Seq > w.lastSeq && w.lastSeq == 0 && w.user && !s.Stale && held != closedTime {
			if w.sw.guard.lagging(s.Instances) {
				// The view predates a Register of this Client that returned: wait
				// for the next snapshot, which carries it, or take this one when
				// none comes within the request timeout.
				if held == nil {
					held = w.sw.c.clock.After(w.sw.c.opt.reqTimeout)
				}
				s = nil
			} else if cur := w.sw.current(); cur != s {
				// The guard heard of a registration after s was read: its
				// snapshot is published (the loop publishes before it tells the
				// guard); take that one.
				continue
			}
		}
		if s != nil && s.Seq > w.lastSeq {
			out := *s
			if w.user && !w.shared {
				out = out.Clone()
			}
			if w.lastSeq > 0 && !out.Stale && resyncSeq > w.lastSeq {
				out.Resynced = true // the re-listed snapshot was skipped
			}
			w.lastSeq = s.Seq
			return out, nil
		}
		select {
		case <-ch:
		case <-held:
			held = closedTime
		case <-ctx.Done():
			return Snapshot{}, ctx.Err()
		case <-w.ctx.Done():
			return Snapshot{}, ErrClosed
		case <-w.sw.done:
			if s2 := w.sw.current(); s2 != nil && s2.Seq > w.lastSeq {
				continue
			}
			return Snapshot{}, ErrClosed
		}
	}
}

// closedTime is a closed channel: Next's wait for a lagging view has ended.
var closedTime = func() <-chan time.Time {
	ch := make(chan time.Time)
	close(ch)
	return ch
}()

func (w *watcher) Close() error {
	w.stop()
	w.cancel()
	w.release() // or waits for the release the context started
	if w.last {
		<-w.sw.done // the last watcher of a service waits for its loop too
	}
	return nil
}

// run is the service's watch loop, over the shared re-arm/re-list loop.
func (w *serviceWatch) run(ctx context.Context) {
	var prev *Snapshot
	var lastGood time.Time
	w.c.relistLoop(ctx, "service "+w.service,
		func(ctx context.Context, notify func()) error { return w.c.conn.Watch(ctx, w.service, notify) },
		func(ctx context.Context, gap bool) error {
			gen := stamp()
			l, err := w.c.conn.List(ctx, w.service)
			if err != nil {
				return err
			}
			lastGood = w.c.clock.Now()
			driver.SortInstances(l.Instances)
			w.c.intern.instances(l.Instances)
			// After the publish: see eventLoop.onChange.
			defer w.guard.check(gen, l.Instances)
			s := Snapshot{Service: w.service, Instances: l.Instances, Revision: l.Revision,
				LastGood: lastGood, Resynced: gap && prev != nil, ReplicaLag: l.ReplicaLag,
				NoLeader: l.NoLeader, ProtectThreshold: l.ProtectThreshold, clock: w.c.clock}
			if s.Resynced {
				w.c.watchResynced(w.service)
			}
			if prev != nil && !prev.Stale && !s.Resynced && sameView(prev, &s) {
				return nil
			}
			w.publish(s)
			prev = w.current()
			return nil
		},
		func(err error) { prev = w.markStale(prev, lastGood, err) })
}

// relistLoop is the one loop behind every watch (services and store trees): arm the
// backend watch, call list after every notify; after a broken watch or a failed list,
// report the failure, back off, re-arm and list again with gap=true. It returns when
// ctx is done.
//
// The backoff of each (re-arming, re-listing) grows with every failure and starts
// again from the minimum only once the watch, or the reads, stayed up for the
// backoff's maximum (see retry.Backoff): a watch that breaks right after every
// re-arm (a proxy that ends long-lived streams) is retried ever more slowly, not at
// the minimum forever. A streak of failures (broken watches, failed re-lists) is
// logged once, until a re-list has answered for the backoff's maximum again.
func (c *Client) relistLoop(ctx context.Context, what string,
	watch func(ctx context.Context, notify func()) error,
	list func(ctx context.Context, gap bool) error,
	fail func(error)) {
	dirty := make(chan struct{}, 1)
	notify := func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	watchErr := make(chan error, 1)
	var watchCancel context.CancelFunc
	var watchDone chan struct{}
	watchB, listB := c.newRetry(), c.newRetry()
	// logB only decides what is logged: the first failure, of either kind, after
	// the loop worked (a re-list answered) for the stable period. Per kind, the
	// re-list's backoff sleeps of an outage outlast the watch's stable period, and
	// every re-arm would start a new streak.
	logB := c.newRetry()
	var watchMark <-chan struct{} // the connection's health mark when the watch started
	startWatch := func() {
		watchMark = c.healthMark()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		watchCancel, watchDone = cancel, done
		watchB.Up()
		c.goTracked(func() { // joined through watchDone by stopWatch
			err := watch(wctx, notify)
			if wctx.Err() == nil {
				if err == nil {
					err = errors.New("watch ended")
				}
				select {
				case watchErr <- err:
				default:
				}
			}
		}, func() { close(done) })
	}
	stopWatch := func() {
		if watchCancel != nil {
			watchCancel()
			<-watchDone
			watchCancel = nil
		}
	}
	defer stopWatch()

	gap := false
	startWatch()
	notify() // list at once, before the watch is armed, for a fast first answer
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-watchErr:
			c.requestError(ctx, "watch", err)
			delay, _ := watchB.Fail()
			if _, first := logB.Fail(); first {
				c.log.warn("registry: watch broke, re-arming (further failures in a row are not logged)",
					"watch", what, "err", err)
			}
			gap = true
			stopWatch()
			fail(err)
			if c.sleepOrReconnect(ctx, delay, watchMark) != nil {
				return
			}
			startWatch()
			notify()
			continue
		case <-dirty:
		}
		mark := c.healthMark()
		lctx, lcancel := context.WithTimeout(ctx, c.opt.reqTimeout)
		err := list(lctx, gap)
		lcancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.requestError(ctx, "list", err)
			gap = true
			fail(err)
			delay, _ := listB.Fail()
			if _, first := logB.Fail(); first {
				c.log.warn("registry: read failed, serving the last good view marked stale (further failures in a row are not logged)",
					"watch", what, "err", err)
			}
			if c.sleepOrReconnect(ctx, delay, mark) != nil {
				return
			}
			notify()
			continue
		}
		gap = false
		listB.Up()
		logB.Up()
	}
}

// sleepOrReconnect waits d on the Client's clock like sleep, but returns early
// once a driver that reports its connection's health (driver.Health) says it is
// back: a reconnect wakes every re-arm and re-list loop at once instead of leaving
// each to sleep out its backoff (up to WithRetryBackoff's maximum, jittered).
// mark is healthMark's channel taken before the call that failed: when the
// connection is healthy now but its health changed since (it went down and came
// back while the call ran, or before this wait began), the loop retries at once;
// when it is healthy and nothing changed, the failure was not the connection's
// and the backoff is slept in full.
func (c *Client) sleepOrReconnect(ctx context.Context, d time.Duration, mark <-chan struct{}) error {
	h, ok := c.conn.(driver.Health)
	if !ok {
		return c.sleep(ctx, d)
	}
	if h.Health() == nil {
		select {
		case <-mark:
			return nil // down and back since the call began
		default:
		}
		return c.sleep(ctx, d)
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	for {
		changed := h.HealthChanged() // before Health, so no change is missed
		if h.Health() == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.Chan():
			return nil
		case <-changed:
		}
	}
}

// markStale publishes prev again marked stale (once per outage) and returns what
// is now published.
func (w *serviceWatch) markStale(prev *Snapshot, lastGood time.Time, err error) *Snapshot {
	if prev == nil || prev.Stale {
		return prev
	}
	s := *prev
	s.Stale, s.Err, s.Resynced, s.LastGood = true, err, false, lastGood
	w.publish(s)
	return w.current()
}

// healthMark returns a channel closed at the connection's next health change
// (driver.Health), or nil for a driver that does not report its health.
func (c *Client) healthMark() <-chan struct{} {
	if h, ok := c.conn.(driver.Health); ok {
		return h.HealthChanged()
	}
	return nil
}

func sameView(a, b *Snapshot) bool {
	// ReplicaLag moves with every read; it is reported, not a reason to publish.
	return a.NoLeader == b.NoLeader && a.ProtectThreshold == b.ProtectThreshold &&
		slices.EqualFunc(a.Instances, b.Instances, Instance.Equal)
}
