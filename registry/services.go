package registry

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// Services returns the sorted names of the services that have at least one
// registered instance, healthy or not, as the backend lists them (Curator's
// queryForNames, Consul's catalog, Nacos's service list); see each backend's
// package doc for where the names come from. A backend that cannot list services
// fails with ErrNotSupported.
func (c *Client) Services(ctx context.Context) ([]string, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: services: %w", err)
	}
	sl, ok := c.conn.(driver.ServiceLister)
	if !ok {
		return nil, fmt.Errorf("registry: services: %w", ErrNotSupported)
	}
	names, err := sl.Services(ctx)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// ServiceSet is one view of the services a backend holds.
type ServiceSet struct {
	// Services are the sorted names of the services with at least one instance.
	Services []string
	// Stale is true while the backend cannot be read: Services is the last good
	// view, and Err says why.
	Stale bool
	Err   error
}

// ServicesWatcher follows the set of services. Next returns the current set on
// its first call and then each newer one; changes are coalesced, so every final
// set is seen but maybe not each step.
type ServicesWatcher interface {
	// Next returns the next set, ctx's error, or ErrClosed once the watcher, its
	// Client or the context given to WatchServices is done.
	Next(ctx context.Context) (ServiceSet, error)
	// Close stops the watcher and waits for its goroutine; Next returns ErrClosed
	// from then on, as a Watcher's does. Idempotent; it always returns nil.
	Close() error
}

// WatchServices follows the set of services on the loop every watch runs on: the
// backend's watch of all services marks it dirty, the loop re-lists, and after any
// error or gap backs off, re-arms and re-lists (marking the last set Stale
// meanwhile). The watcher ends when ctx is done or Close is called. A backend that
// cannot list services fails with ErrNotSupported; a ctx already done fails with
// its error.
func (c *Client) WatchServices(ctx context.Context) (ServicesWatcher, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: watch services: %w", err)
	}
	sl, ok := c.conn.(driver.ServiceLister)
	if !ok {
		return nil, fmt.Errorf("registry: watch services: %w", ErrNotSupported)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &servicesWatcher{cancel: cancel, done: make(chan struct{})}
	if !c.goOwned(func() {
		defer close(w.done)
		lctx, lcancel := context.WithCancel(wctx)
		defer lcancel()
		stop := context.AfterFunc(c.life, lcancel)
		defer stop()
		var last ServiceSet
		have := false
		c.relistLoop(lctx, "services", sl.WatchServices,
			func(ctx context.Context, _ bool) error {
				names, err := sl.Services(ctx)
				if err != nil {
					return err
				}
				slices.Sort(names)
				names = slices.Compact(names)
				if have && !last.Stale && slices.Equal(last.Services, names) {
					return nil
				}
				last, have = ServiceSet{Services: names}, true
				w.publish(last)
				return nil
			},
			func(err error) {
				if have && !last.Stale {
					last.Stale, last.Err = true, err
					w.publish(last)
				}
			})
	}) {
		cancel()
		return nil, ErrClosed
	}
	return w, nil
}

type servicesWatcher struct {
	cancel context.CancelFunc
	done   chan struct{} // the loop ended
	closed atomic.Bool   // Close was called

	mu      sync.Mutex
	set     ServiceSet
	seq     uint64
	changed broadcast.Signal // at every publish

	nmu     sync.Mutex // serialises Next
	lastSeq uint64
}

func (w *servicesWatcher) publish(s ServiceSet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.set = s
	w.seq++
	w.changed.Notify()
}

func (w *servicesWatcher) Next(ctx context.Context) (ServiceSet, error) {
	w.nmu.Lock()
	defer w.nmu.Unlock()
	for {
		if w.closed.Load() {
			return ServiceSet{}, ErrClosed
		}
		w.mu.Lock()
		set, seq, ch := w.set, w.seq, w.changed.C()
		w.mu.Unlock()
		if seq > w.lastSeq {
			w.lastSeq = seq
			set.Services = slices.Clone(set.Services)
			return set, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ServiceSet{}, ctx.Err()
		case <-w.done:
			w.mu.Lock()
			newer := w.seq > w.lastSeq
			w.mu.Unlock()
			if !newer {
				return ServiceSet{}, ErrClosed
			}
		}
	}
}

func (w *servicesWatcher) Close() error {
	w.closed.Store(true)
	w.cancel()
	<-w.done
	return nil
}
