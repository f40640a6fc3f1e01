package cache_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	"github.com/regkit/regkit/registry/driver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDiscovery is a registry.Discovery whose watchers are fed by Publish.
type fakeDiscovery struct {
	watches atomic.Int32 // Watch calls

	mu       sync.Mutex
	watchers []*fakeWatcher
	current  map[string]registry.Snapshot // what a new watch starts with
	funcs    map[*pushSub]struct{}        // WatchFunc subscriptions (pushFake)
}

// publisher is a fake backend a test publishes snapshots to.
type publisher interface {
	registry.Discovery
	Publish(s registry.Snapshot)
}

// pushFake is a fakeDiscovery that also pushes (registry.Client.WatchFunc's
// shape): the Cache then follows services without goroutines.
type pushFake struct{ *fakeDiscovery }

type pushSub struct {
	service string
	fn      func(registry.Snapshot, error)
}

func (p pushFake) WatchFunc(ctx context.Context, service string, fn func(registry.Snapshot, error)) (func(), error) {
	f := p.fakeDiscovery
	f.watches.Add(1)
	sub := &pushSub{service: service, fn: fn}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.funcs == nil {
		f.funcs = map[*pushSub]struct{}{}
	}
	f.funcs[sub] = struct{}{}
	if s, ok := f.current[service]; ok {
		fn(s, nil)
	}
	return func() {
		f.mu.Lock()
		delete(f.funcs, sub)
		f.mu.Unlock()
	}, nil
}

// backends runs a test over the goroutine-per-service loop (a Discovery that
// only offers Watch) and over the pushed one (WatchFunc).
func backends(t *testing.T, test func(t *testing.T, newD func() publisher)) {
	t.Run("watch", func(t *testing.T) { test(t, func() publisher { return &fakeDiscovery{} }) })
	t.Run("push", func(t *testing.T) { test(t, func() publisher { return pushFake{&fakeDiscovery{}} }) })
}

func (f *fakeDiscovery) Instances(ctx context.Context, service string) ([]registry.Instance, error) {
	return nil, registry.ErrNotSupported
}

func (f *fakeDiscovery) Watch(ctx context.Context, service string) (registry.Watcher, error) {
	f.watches.Add(1)
	w := &fakeWatcher{service: service, ch: make(chan registry.Snapshot, 16), closed: make(chan struct{}), ctx: ctx}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, w)
	if s, ok := f.current[service]; ok {
		w.ch <- s
	}
	return w, nil
}

// Publish sends s to every watcher of s.Service, and to later ones.
func (f *fakeDiscovery) Publish(s registry.Snapshot) {
	driver.SortInstances(s.Instances)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current == nil {
		f.current = map[string]registry.Snapshot{}
	}
	f.current[s.Service] = s
	for sub := range f.funcs {
		if sub.service == s.Service {
			sub.fn(s, nil)
		}
	}
	for _, w := range f.watchers {
		if w.service != s.Service {
			continue
		}
		select {
		case w.ch <- s:
		case <-w.closed:
		}
	}
}

type fakeWatcher struct {
	service string
	ch      chan registry.Snapshot
	ctx     context.Context
	once    sync.Once
	closed  chan struct{}
}

func (w *fakeWatcher) Next(ctx context.Context) (registry.Snapshot, error) {
	select {
	case s := <-w.ch:
		return s, nil
	case <-ctx.Done():
		return registry.Snapshot{}, ctx.Err()
	case <-w.ctx.Done():
		return registry.Snapshot{}, registry.ErrClosed
	case <-w.closed:
		return registry.Snapshot{}, registry.ErrClosed
	}
}

func (w *fakeWatcher) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

func insts(service string, ids ...string) []registry.Instance {
	out := make([]registry.Instance, 0, len(ids))
	for i, id := range ids {
		out = append(out, registry.Instance{ID: id, Service: service, Host: "10.0.0.1", Port: 8000 + i, Weight: 100, Healthy: true})
	}
	return out
}

func ids(s registry.Snapshot) []string {
	var out []string
	for _, in := range s.Instances {
		out = append(out, in.ID)
	}
	return out
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newCache(t testing.TB, d registry.Discovery, opts ...cache.Option) *cache.Cache {
	t.Helper()
	c, err := cache.New(d, append([]cache.Option{cache.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond until it holds or 5s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 5*time.Second, what, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSharedWatchAndMemoryLookup(t *testing.T) {
	f := &fakeDiscovery{}
	c := newCache(t, f)
	ctx := ctxT(t)

	// Many concurrent first lookups share one watch.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.Lookup(ctx, "svc")
			if err == nil && !slices.Equal(ids(s), []string{"a", "b"}) {
				err = errors.New("wrong instances")
			}
			errs <- err
		}()
	}
	eventually(t, "the watch", func() bool { return f.watches.Load() == 1 })
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "b", "a"), LastGood: time.Now()})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got, err := c.Instances(ctx, "svc"); err != nil || len(got) != 2 {
		t.Fatalf("Instances = %v, %v", got, err)
	}
	if n := f.watches.Load(); n != 1 {
		t.Fatalf("backend Watch called %d times, want 1", n)
	}

	// Lookup answers from memory: with an expired context, no backend call.
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := c.Lookup(dead, "svc")
	if err != nil || s.Seq != 1 || !slices.Equal(ids(s), []string{"a", "b"}) {
		t.Fatalf("Lookup from memory = %v seq %d, %v", ids(s), s.Seq, err)
	}

	// The cache's watcher sees the current snapshot, then the next one.
	if s, err := w.Next(ctx); err != nil || s.Seq != 1 {
		t.Fatalf("first Next = seq %d, %v", s.Seq, err)
	}
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b", "c")})
	if s, err := w.Next(ctx); err != nil || s.Seq != 2 || len(s.Instances) != 3 {
		t.Fatalf("second Next = seq %d %v, %v", s.Seq, ids(s), err)
	}
	eventually(t, "lookup to see c", func() bool {
		s, _ := c.Lookup(ctx, "svc")
		return len(s.Instances) == 3
	})
}

func TestFirstLookupHonoursContext(t *testing.T) {
	c := newCache(t, &fakeDiscovery{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Lookup(ctx, "svc"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if _, err := c.Lookup(ctxT(t), "bad/name"); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func TestStaleServedDuringOutage(t *testing.T) {
	f := &fakeDiscovery{}
	c := newCache(t, f)
	ctx := ctxT(t)
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b"), LastGood: time.Now()})
	if _, err := c.Lookup(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	outage := errors.New("connection refused")
	lastGood := time.Now().Add(-time.Minute)
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b"), Stale: true, Err: outage, LastGood: lastGood})
	eventually(t, "stale snapshot", func() bool {
		s, err := c.Lookup(ctx, "svc")
		return err == nil && s.Stale
	})
	s, _ := c.Lookup(ctx, "svc")
	if !errors.Is(s.Err, outage) || !s.LastGood.Equal(lastGood) || !slices.Equal(ids(s), []string{"a", "b"}) {
		t.Fatalf("stale snapshot = %+v", s)
	}
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a"), Resynced: true, LastGood: time.Now()})
	eventually(t, "recovery", func() bool {
		s, _ := c.Lookup(ctx, "svc")
		return !s.Stale && s.Resynced && len(s.Instances) == 1
	})
}

func TestSnapshotFileServedWhenBackendSilent(t *testing.T) { backends(t, testSnapshotFileServed) }

func testSnapshotFileServed(t *testing.T, newD func() publisher) {
	dir := t.TempDir()
	ctx := ctxT(t)

	// A first process sees the backend and persists its answer.
	f := newD()
	c1 := newCache(t, f, cache.WithSnapshotDir(dir))
	saved := time.Now().Add(-time.Hour).Round(0)
	f.Publish(registry.Snapshot{Service: "svc:v1", Instances: insts("svc:v1", "a", "b"), Revision: 7, LastGood: saved})
	if _, err := c1.Lookup(ctx, "svc:v1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "snapshot file", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		return len(m) == 1
	})
	c1.Close()
	if _, err := c1.Lookup(ctx, "svc:v1"); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("after Close err = %v", err)
	}

	// A second process starts during an outage: the backend never answers.
	silent := newD()
	c2 := newCache(t, silent, cache.WithSnapshotDir(dir), cache.WithStartupWait(time.Hour))
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	s, err := c2.Lookup(short, "svc:v1")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Stale || !errors.Is(s.Err, registry.ErrUnavailable) || !s.LastGood.Equal(saved) ||
		s.Revision != 7 || !slices.Equal(ids(s), []string{"a", "b"}) {
		t.Fatalf("file snapshot = %+v", s)
	}

	// With a short startup wait the file is published for every caller.
	c3 := newCache(t, newD(), cache.WithSnapshotDir(dir), cache.WithStartupWait(10*time.Millisecond))
	s, err = c3.Lookup(ctx, "svc:v1")
	if err != nil || !s.Stale || s.Seq != 1 || len(s.Instances) != 2 {
		t.Fatalf("published file snapshot = %+v, %v", s, err)
	}
	// No file for another service: the lookup times out.
	short2, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if _, err := c3.Lookup(short2, "other"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no file: err = %v", err)
	}
}

func TestSnapshotFileReplacedByBackend(t *testing.T) { backends(t, testSnapshotFileReplaced) }

func testSnapshotFileReplaced(t *testing.T, newD func() publisher) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "svc.json"),
		[]byte(`{"service":"svc","saved":"2020-01-01T00:00:00Z","instances":[{"ID":"old","Service":"svc","Host":"h","Port":1}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newD()
	c := newCache(t, f, cache.WithSnapshotDir(dir), cache.WithStartupWait(time.Millisecond))
	ctx := ctxT(t)
	s, err := c.Lookup(ctx, "svc")
	if err != nil || !s.Stale || !slices.Equal(ids(s), []string{"old"}) {
		t.Fatalf("file snapshot = %+v, %v", s, err)
	}
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "new")})
	eventually(t, "backend answer", func() bool {
		s, _ := c.Lookup(ctx, "svc")
		return !s.Stale && slices.Equal(ids(s), []string{"new"})
	})
}

func TestProtectThreshold(t *testing.T) {
	if _, err := cache.New(&fakeDiscovery{}, cache.WithProtectThreshold(0, time.Second)); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("share 0: err = %v", err)
	}
	if _, err := cache.New(&fakeDiscovery{}, cache.WithProtectThreshold(1.5, time.Second)); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("share 1.5: err = %v", err)
	}
	backends(t, testProtectThreshold)
}

func testProtectThreshold(t *testing.T, newD func() publisher) {
	f := newD()
	grace := 300 * time.Millisecond
	c := newCache(t, f, cache.WithProtectThreshold(0.5, grace))
	ctx := ctxT(t)
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b", "c", "d")})
	if _, err := c.Lookup(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	// Dropping 1 of 4 (25%) is accepted at once.
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b", "c")})
	eventually(t, "small drop accepted", func() bool {
		s, _ := c.Lookup(ctx, "svc")
		return len(s.Instances) == 3
	})
	if c.Protected("svc") {
		t.Fatal("protected after a small drop")
	}
	// Dropping 2 of 3 (67%) is held back for grace.
	start := time.Now()
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a")})
	eventually(t, "protection", func() bool { return c.Protected("svc") })
	s, _ := c.Lookup(ctx, "svc")
	if !slices.Equal(ids(s), []string{"a", "b", "c"}) {
		t.Fatalf("protected set = %v", ids(s))
	}
	eventually(t, "grace to expire", func() bool { return !c.Protected("svc") })
	if el := time.Since(start); el < grace {
		t.Fatalf("accepted after %v, before grace %v", el, grace)
	}
	s, _ = c.Lookup(ctx, "svc")
	if !slices.Equal(ids(s), []string{"a"}) {
		t.Fatalf("after grace = %v", ids(s))
	}

	// A recovery within grace ends protection at once.
	f2 := newD()
	c3 := newCache(t, f2, cache.WithProtectThreshold(0.5, time.Hour))
	f2.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b")})
	if _, err := c3.Lookup(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	f2.Publish(registry.Snapshot{Service: "svc", Instances: nil})
	eventually(t, "protection", func() bool { return c3.Protected("svc") })
	f2.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b", "c")})
	eventually(t, "recovery", func() bool {
		s, _ := c3.Lookup(ctx, "svc")
		return !c3.Protected("svc") && len(s.Instances) == 3
	})
}

func TestCloseStopsEverything(t *testing.T) {
	f := &fakeDiscovery{}
	c, err := cache.New(f, cache.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for _, svc := range []string{"a", "b", "c"} {
		f.Publish(registry.Snapshot{Service: svc, Instances: insts(svc, "x")})
		if _, err := c.Lookup(ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Watch(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	nextErr := make(chan error, 1)
	go func() { _, err := w.Next(ctx); nextErr <- err }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := <-nextErr; !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	if _, err := c.Lookup(ctx, "a"); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Lookup after Close = %v", err)
	}
	if _, err := c.Watch(ctx, "a"); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Watch after Close = %v", err)
	}
	f.mu.Lock()
	for _, fw := range f.watchers {
		select {
		case <-fw.closed:
		default:
			t.Error("backend watcher not closed")
		}
	}
	f.mu.Unlock()
	goleak.VerifyNone(t)
}

func BenchmarkLookup(b *testing.B) {
	f := &fakeDiscovery{}
	c := newCache(b, f)
	ctx := context.Background()
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a", "b", "c")})
	if _, err := c.Lookup(ctx, "svc"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Lookup(ctx, "svc"); err != nil {
			b.Fatal(err)
		}
	}
}

// flakyDiscovery fails its first `fails` Watch calls with err, then delegates.
type flakyDiscovery struct {
	*fakeDiscovery
	err   error
	fails atomic.Int32
}

func (f *flakyDiscovery) Watch(ctx context.Context, service string) (registry.Watcher, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, f.err
	}
	return f.fakeDiscovery.Watch(ctx, service)
}

func TestWatchErrors(t *testing.T) {
	ctx := ctxT(t)
	// A transient error is retried.
	f := &flakyDiscovery{fakeDiscovery: &fakeDiscovery{}, err: registry.ErrUnavailable}
	f.fails.Store(1)
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a")})
	c := newCache(t, f)
	if s, err := c.Lookup(ctx, "svc"); err != nil || len(s.Instances) != 1 {
		t.Fatalf("after a transient error: %v, %v", ids(s), err)
	}
	if n := f.watches.Load(); n != 1 {
		t.Fatalf("backend watches = %d, want 1", n)
	}
	// A permanent one is returned, and the next lookup tries again.
	p := &flakyDiscovery{fakeDiscovery: &fakeDiscovery{}, err: registry.ErrClosed}
	p.fails.Store(1)
	p.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a")})
	c2 := newCache(t, p)
	if _, err := c2.Lookup(ctx, "svc"); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("permanent error: %v", err)
	}
	eventually(t, "retry after a permanent error", func() bool {
		s, err := c2.Lookup(ctx, "svc")
		return err == nil && len(s.Instances) == 1
	})
}
