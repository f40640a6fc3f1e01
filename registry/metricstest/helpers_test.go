package metricstest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	"github.com/regkit/regkit/registry/driver"
)

// The helpers below are those of the registry and registry/cache tests the
// metric tests use, copied from registry/core_test.go and
// registry/cache/cache_test.go (test files of another module).

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ctxT is registry's test context: 20s.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// cacheCtxT is registry/cache's test context: 5s.
func cacheCtxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fakeDiscovery is a registry.Discovery whose watchers are fed by Publish.
type fakeDiscovery struct {
	mu       sync.Mutex
	watchers []*fakeWatcher
	current  map[string]registry.Snapshot // what a new watch starts with
}

func (f *fakeDiscovery) Instances(ctx context.Context, service string) ([]registry.Instance, error) {
	return nil, registry.ErrNotSupported
}

func (f *fakeDiscovery) Watch(ctx context.Context, service string) (registry.Watcher, error) {
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
