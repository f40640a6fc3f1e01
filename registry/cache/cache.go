// Package cache keeps an in-memory, always-answering view of services found
// through a registry.Discovery (usually a *registry.Client).
//
// The first Lookup of a service starts one watch of it, owned by the Cache and
// shared by every later Lookup, Instances and Watch call for that service; it
// waits for the first snapshot (or its context). Later lookups answer from
// memory without locks or allocations. While the backend is unreachable the
// Cache keeps serving the last good instances, marked Stale, as the underlying
// watcher publishes them.
//
// Defaults: no snapshot files, no protect threshold, warnings logged to
// standard error. Options:
//
//   - WithSnapshotDir persists each service's last good snapshot as JSON and,
//     when the backend has not answered a first lookup within the startup wait
//     (WithStartupWait, default 1s) or before the lookup's context ends, serves
//     the file's instances marked Stale, so a process that starts during an
//     outage still has an answer.
//   - WithProtectThreshold keeps the previous instances for a grace period when
//     one update would drop too large a share of them at once (see Protected).
//
// Snapshots returned by the Cache carry the Cache's own Seq (1, 2, ... per
// service, also across re-watches). Lookup's snapshots are shared by every
// caller, so that a lookup does not allocate: do not modify them. Instances and
// Watch's Next return the caller's own copies, as registry.Client's do.
// Over a Discovery that pushes snapshots (registry.Client.WatchFunc) the Cache
// runs no goroutine per service: the Client's calls and timers on the Cache's
// clock drive each service's state, and one goroutine per Cache writes the
// snapshot files. Over any other Discovery one goroutine per service reads its
// Watcher. Close stops every goroutine the Cache started; it does not close
// the Discovery.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/metric"

	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// DefaultStartupWait is how long a first lookup waits for the backend before a
// snapshot file is served, unless WithStartupWait says otherwise.
const DefaultStartupWait = time.Second

// Option configures New.
type Option func(*options)

type options struct {
	dir         string
	share       float64
	grace       time.Duration
	protect     bool
	startupWait time.Duration
	log         *slog.Logger
	backoffMin  time.Duration
	backoffMax  time.Duration
	clock       clockwork.Clock
	meter       metric.MeterProvider // see WithMeterProvider in metrics.go
	errs        []error
}

// WithSnapshotDir persists each service's last good (non-stale, accepted)
// snapshot as dir/<service>.json, written to a temporary file and renamed. At
// the first lookup of a service, when the backend has given no answer yet, the
// file's instances are served marked Stale, with LastGood set to the time the
// file's snapshot was taken. The directory is created by New if needed.
func WithSnapshotDir(dir string) Option { return func(o *options) { o.dir = dir } }

// WithStartupWait sets how long the watch of a service waits for the backend's
// first answer before it publishes the snapshot file's instances (only with
// WithSnapshotDir; default DefaultStartupWait). A Lookup whose context ends
// first gets the file's instances at once.
func WithStartupWait(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.errs = append(o.errs, fmt.Errorf("cache: WithStartupWait: negative duration %v: %w", d, driver.ErrInvalid))
		}
		o.startupWait = d
	}
}

// WithProtectThreshold turns on protection (off by default): when one update
// would remove more than share (0 < share <= 1) of a service's instances at
// once, the Cache keeps serving the previous instances for grace, logs a
// warning and reports Protected(service) as true. An update that drops no more
// than share ends the protection at once; otherwise, after grace, the newest
// update is accepted. New returns an error for share outside (0, 1] or a
// negative grace.
func WithProtectThreshold(share float64, grace time.Duration) Option {
	return func(o *options) {
		if !(share > 0 && share <= 1) {
			o.errs = append(o.errs, fmt.Errorf("cache: WithProtectThreshold: share %v not in (0, 1]: %w", share, driver.ErrInvalid))
		}
		if grace < 0 {
			o.errs = append(o.errs, fmt.Errorf("cache: WithProtectThreshold: negative grace %v: %w", grace, driver.ErrInvalid))
		}
		o.protect, o.share, o.grace = true, share, grace
	}
}

// WithClock sets the clock the Cache's timers run on (default: the real clock): the
// startup wait, the protect threshold's grace and the re-watch backoff. It exists
// for tests, which pass a clockwork.FakeClock and advance it instead of waiting.
func WithClock(c clockwork.Clock) Option { return func(o *options) { o.clock = c } }

// WithLogger sets the logger (default: warnings and errors to standard error).
// A nil logger keeps the default.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Cache serves snapshots of services from memory; see the package doc. It is
// safe for concurrent use.
type Cache struct {
	d     registry.Discovery
	opt   options
	log   *slog.Logger
	stale metric.Int64Counter // see metrics.go

	life   context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	files  fileWriter // see push.go

	// entries: a read-only map, replaced under mu and read without locks, plus
	// dirty, the entries added since, under mu. dirty is merged into a new read
	// map once it is as large as the read map (so an initial sync copies each
	// entry a constant number of times on average) or once lookups missed the
	// read map as many times as there are entries.
	entries atomic.Pointer[map[string]*entry]
	mu      sync.Mutex
	dirty   map[string]*entry
	misses  int
}

var _ registry.Discovery = (*Cache)(nil)

// New returns a Cache over d. It returns an error (matching driver.ErrInvalid)
// for invalid options, or when the snapshot directory cannot be created.
func New(d registry.Discovery, opts ...Option) (*Cache, error) {
	if d == nil {
		return nil, fmt.Errorf("cache: New: nil Discovery: %w", driver.ErrInvalid)
	}
	o := options{startupWait: DefaultStartupWait, backoffMin: 100 * time.Millisecond, backoffMax: 5 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	err := errors.Join(o.errs...)
	if err != nil {
		return nil, err
	}
	if o.dir != "" {
		if err := os.MkdirAll(o.dir, 0o755); err != nil {
			return nil, fmt.Errorf("cache: snapshot dir: %w", err)
		}
	}
	if o.clock == nil {
		o.clock = clockwork.NewRealClock()
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	life, cancel := context.WithCancel(context.Background())
	c := &Cache{d: d, opt: o, log: o.log, life: life, cancel: cancel}
	if c.stale, err = newStaleCounter(o.meter); err != nil {
		c.log.Warn("cache: cannot create the stale-lookup counter", "err", err)
	}
	m := map[string]*entry{}
	c.entries.Store(&m)
	return c, nil
}

// Lookup returns the current snapshot of service. The first call for a service
// starts its shared watch and waits for the first snapshot; if ctx ends first it
// returns the snapshot file's instances marked Stale when there is one (Seq 0),
// else ctx's error. Later calls answer from memory. After Close it returns
// driver.ErrClosed.
func (c *Cache) Lookup(ctx context.Context, service string) (registry.Snapshot, error) {
	if c.closed.Load() {
		return registry.Snapshot{}, driver.ErrClosed
	}
	if e := (*c.entries.Load())[service]; e != nil {
		if st := e.cur.Load(); st != nil {
			if st.snap.Stale {
				c.stale.Add(ctx, 1, e.staleOpts...)
			}
			return st.snap, nil
		}
	}
	s, err := c.lookupSlow(ctx, service)
	if err == nil && s.Stale {
		c.stale.Add(ctx, 1, staleOpts(service)...)
	}
	return s, err
}

func (c *Cache) lookupSlow(ctx context.Context, service string) (registry.Snapshot, error) {
	e, err := c.entry(service)
	if err != nil {
		return registry.Snapshot{}, err
	}
	if st := e.cur.Load(); st != nil {
		return st.snap, nil
	}
	select {
	case <-e.ready:
		return e.cur.Load().snap, nil
	case <-e.done:
		if st := e.cur.Load(); st != nil && e.err == nil {
			return st.snap, nil
		}
		if e.err != nil {
			return registry.Snapshot{}, e.err
		}
		return registry.Snapshot{}, driver.ErrClosed
	case <-c.life.Done():
		return registry.Snapshot{}, driver.ErrClosed
	case <-ctx.Done():
		if st := e.cur.Load(); st != nil {
			return st.snap, nil
		}
		if e.file != nil {
			return *e.file, nil
		}
		return registry.Snapshot{}, ctx.Err()
	}
}

// Instances returns a copy of the instances of Lookup's snapshot, sorted by ID;
// stale ones during an outage.
func (c *Cache) Instances(ctx context.Context, service string) ([]driver.Instance, error) {
	s, err := c.Lookup(ctx, service)
	if err != nil {
		return nil, err
	}
	return s.Clone().Instances, nil
}

// Protected reports whether the Cache is currently holding back an update of
// service that would have dropped too many instances (see WithProtectThreshold).
// It is false for services never looked up.
func (c *Cache) Protected(service string) bool {
	if e := c.get(service); e != nil {
		if st := e.cur.Load(); st != nil {
			return st.protected
		}
	}
	return false
}

// Watch follows service through the Cache's single shared watch of it. Next
// returns the current snapshot on its first call (waiting for the first one),
// then the first one newer than the last returned. It returns driver.ErrClosed
// once the Watcher or the Cache is closed or ctx is done.
func (c *Cache) Watch(ctx context.Context, service string) (registry.Watcher, error) {
	if c.closed.Load() {
		return nil, driver.ErrClosed
	}
	e, err := c.entry(service)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	return &watcher{c: c, e: e, ctx: wctx, cancel: cancel}, nil
}

// Close stops every watch the Cache started and waits for its goroutines. It is
// idempotent; afterwards every call returns driver.ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed.Store(true)
	var pushed []*entry
	for _, m := range []map[string]*entry{*c.entries.Load(), c.dirty} {
		for _, e := range m {
			if e.stop != nil {
				pushed = append(pushed, e)
			}
		}
	}
	c.mu.Unlock()
	c.cancel()
	for _, e := range pushed {
		e.stop()
		c.endEntry(e)
	}
	c.wg.Wait()
	return nil
}

// get returns the service's entry, or nil: from the read map without a lock,
// else from dirty.
func (c *Cache) get(service string) *entry {
	if e := (*c.entries.Load())[service]; e != nil {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.getLocked(service)
}

// getLocked looks in both maps, counting a miss of the read map. Under mu.
func (c *Cache) getLocked(service string) *entry {
	read := *c.entries.Load()
	if e := read[service]; e != nil {
		return e
	}
	e := c.dirty[service]
	if e != nil {
		c.misses++
		if c.misses >= len(read)+len(c.dirty) {
			c.promoteLocked()
		}
	}
	return e
}

// promoteLocked merges dirty into a new read map. Under mu.
func (c *Cache) promoteLocked() {
	read := *c.entries.Load()
	m := make(map[string]*entry, len(read)+len(c.dirty))
	for k, v := range read {
		m[k] = v
	}
	for k, v := range c.dirty {
		m[k] = v
	}
	c.entries.Store(&m)
	c.dirty, c.misses = nil, 0
}

// entry returns the service's entry, starting its watch if needed.
func (c *Cache) entry(service string) (*entry, error) {
	if e := c.get(service); e != nil {
		return e, nil
	}
	if err := driver.ValidServiceName(service); err != nil {
		return nil, err
	}
	var file *registry.Snapshot
	if c.opt.dir != "" {
		f, err := c.loadFile(service)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("cache: cannot read snapshot file", "service", service, "err", err)
		}
		file = f
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return nil, driver.ErrClosed
	}
	if e := c.getLocked(service); e != nil {
		return e, nil
	}
	e := &entry{service: service, file: file, ready: make(chan struct{}), done: make(chan struct{}), staleOpts: staleOpts(service)}
	if c.dirty == nil {
		c.dirty = map[string]*entry{}
	}
	c.dirty[service] = e
	if len(c.dirty) >= len(*c.entries.Load()) {
		c.promoteLocked()
	}
	if d, ok := c.d.(pushWatcher); ok {
		l := c.newPushLoop(e)
		c.mu.Unlock() // start may hand over the first snapshot at once
		l.start(d)
		c.mu.Lock() // for the deferred Unlock
		return e, nil
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		e.err = c.run(e)
		c.endEntry(e)
	}()
	return e, nil
}

// remove drops e from the maps so that the next lookup starts a new watch.
func (c *Cache) remove(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirty[e.service] == e {
		delete(c.dirty, e.service)
		return
	}
	old := *c.entries.Load()
	if old[e.service] != e {
		return
	}
	m := make(map[string]*entry, len(old))
	for k, v := range old {
		if k != e.service {
			m[k] = v
		}
	}
	c.entries.Store(&m)
}

// state is one published view.
type state struct {
	snap      registry.Snapshot
	protected bool
}

// entry is the shared watch of one service.
type entry struct {
	service string
	file    *registry.Snapshot // from the snapshot file, Stale; nil if none
	cur     atomic.Pointer[state]
	ready   chan struct{} // closed at the first publish
	done    chan struct{} // closed when the watch loop ends
	err     error         // why the loop ended, set before done is closed
	endOnce sync.Once     // closes done
	stop    func()        // ends a pushed loop (nil for a goroutine loop); set under Cache.mu

	staleOpts []metric.AddOption // how a stale lookup of service is counted

	mu      sync.Mutex
	changed broadcast.Signal // at every publish
	seq     uint64
}

func (e *entry) publish(s registry.Snapshot, protected bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	s.Seq = e.seq
	first := e.cur.Load() == nil
	e.cur.Store(&state{snap: s, protected: protected})
	e.changed.Notify()
	if first {
		close(e.ready)
	}
}

func (e *entry) wait() (*state, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur.Load(), e.changed.C()
}

type watcher struct {
	c       *Cache
	e       *entry
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex // serialises Next
	lastSeq uint64
}

func (w *watcher) Next(ctx context.Context) (registry.Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if w.ctx.Err() != nil || w.c.closed.Load() {
			return registry.Snapshot{}, driver.ErrClosed
		}
		st, ch := w.e.wait()
		if st != nil && st.snap.Seq > w.lastSeq {
			w.lastSeq = st.snap.Seq
			return st.snap.Clone(), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return registry.Snapshot{}, ctx.Err()
		case <-w.ctx.Done():
			return registry.Snapshot{}, driver.ErrClosed
		case <-w.c.life.Done():
			return registry.Snapshot{}, driver.ErrClosed
		case <-w.e.done:
			if st2 := w.e.cur.Load(); st2 != nil && st2.snap.Seq > w.lastSeq {
				continue
			}
			if w.e.err != nil {
				return registry.Snapshot{}, w.e.err
			}
			return registry.Snapshot{}, driver.ErrClosed
		}
	}
}

func (w *watcher) Close() error {
	w.cancel()
	return nil
}
