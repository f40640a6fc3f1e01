package lb

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/regkit/regkit/lb/internal/follow"
	"github.com/regkit/regkit/registry"
)

// Balancer follows one service and balances calls over its instances: a Pool fed
// from a watch of the service, with the empty-push guard between them.
//
// Give it the Discovery every caller shares, a *cache.Cache (package
// registry/cache): all Balancers, resolvers and lookups of a service then share
// one backend watch, and the stale-serving view goes with it. (A
// *registry.Client works too; its watches of a service are shared per Client.)
//
// Every snapshot builds a new Picker, stale ones included (a stale snapshot is the
// last good view, and keeps serving). An empty snapshot after a non-empty one is
// held back, the previous instances still serving, until the backend confirms
// it: the service's newest snapshot is still empty and fresh (not Stale)
// WithEmptyGrace after the first fresh empty one (kratos's empty-push guard,
// bounded). Resynced snapshots count as fresh: after a gap the loop re-listed the
// backend, and the grace period is what covers instances re-registering after a
// session loss. A stale snapshot restarts the clock; any non-empty one ends it.
type Balancer struct {
	*Pool
	service string
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // why the follow loop ended, before done closes
	last    atomic.Pointer[registry.Snapshot]
	ready   chan struct{}
	once    sync.Once
}

// New starts following service through d and waits, within ctx, for its first
// snapshot (an empty one included). The Balancer's watch lives until Close, not
// ctx. It returns an error matching registry.ErrInvalid for bad options or a
// policy built from bad settings, or why the watch could not start or no
// snapshot came in time.
func New(ctx context.Context, d registry.Discovery, service string, policy Policy, opts ...Option) (*Balancer, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, fmt.Errorf("lb: New: nil Discovery: %w", registry.ErrInvalid)
	}
	pool, err := NewPool(policy, opts...)
	if err != nil {
		return nil, err
	}
	life, cancel := context.WithCancel(context.Background())
	w, err := d.Watch(life, service)
	if err != nil {
		cancel()
		pool.Close()
		return nil, fmt.Errorf("lb: watch %s: %w", service, err)
	}
	b := &Balancer{Pool: pool, service: service, cancel: cancel, done: make(chan struct{}), ready: make(chan struct{})}
	g := follow.Guard{Grace: o.grace, Clock: o.gc, Held: func(s registry.Snapshot) {
		o.log.Warn("lb: empty snapshot held back", "service", service, "grace", o.grace, "resynced", s.Resynced)
	}}
	go func() {
		defer close(b.done)
		defer w.Close()
		b.err = g.Run(life, w, func(s registry.Snapshot) {
			pool.Update(s.Instances)
			b.last.Store(&s)
			b.once.Do(func() { close(b.ready) })
		})
	}()
	select {
	case <-b.ready:
		return b, nil
	case <-b.done:
		err := b.err
		b.Close()
		return nil, fmt.Errorf("lb: watch %s: %w", service, err)
	case <-ctx.Done():
		b.Close()
		return nil, fmt.Errorf("lb: first snapshot of %s: %w", service, ctx.Err())
	}
}

// Service returns the service followed.
func (b *Balancer) Service() string { return b.service }

// Snapshot returns the snapshot the current Picker was built from (the previous
// one while an empty snapshot is held back).
func (b *Balancer) Snapshot() registry.Snapshot {
	if s := b.last.Load(); s != nil {
		return *s
	}
	return registry.Snapshot{Service: b.service}
}

// Close stops following the service and waits for the Balancer's goroutine; Pick
// keeps answering from the last Picker. Idempotent.
func (b *Balancer) Close() error {
	b.cancel()
	<-b.done
	return b.Pool.Close()
}
