package lbgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/lb/internal/follow"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// Scheme is the default target scheme of the resolver: regkit:///greeter.
const Scheme = "regkit"

// Option configures NewBuilder and Open.
type Option func(*builderOptions)

type builderOptions struct {
	scheme string
	grace  time.Duration
	log    *slog.Logger
	clock  clockwork.Clock
	ropts  []registry.Option
}

// WithScheme sets the target scheme the Builder answers to (default "regkit").
func WithScheme(s string) Option { return func(o *builderOptions) { o.scheme = s } }

// WithEmptyGrace sets the empty-push guard's grace period (default
// lb.DefaultEmptyGrace; 0 pushes empty updates at once). See lb.Balancer.
func WithEmptyGrace(d time.Duration) Option { return func(o *builderOptions) { o.grace = d } }

// WithClock sets the clock that times the empty-push guard's grace period
// (default: the real clock). It exists for tests, which pass a
// clockwork.FakeClock and advance it instead of waiting; production code has no
// reason to set it. A nil clock keeps the default.
func WithClock(c clockwork.Clock) Option { return func(o *builderOptions) { o.clock = c } }

// WithLogger sets the logger (default: warnings to standard error).
func WithLogger(l *slog.Logger) Option { return func(o *builderOptions) { o.log = l } }

// WithRegistryOptions passes options to registry.Open (Open only).
func WithRegistryOptions(opts ...registry.Option) Option {
	return func(o *builderOptions) { o.ropts = append(o.ropts, opts...) }
}

// Builder is a gRPC resolver.Builder over a registry: the target
// "regkit:///greeter" resolves to the instances of service "greeter", pushed to
// the ClientConn on every snapshot. All resolvers a Builder builds follow their
// services through one Discovery, which should be a *cache.Cache (package
// registry/cache): every ClientConn of a service then shares one backend watch.
type Builder struct {
	d      registry.Discovery
	o      builderOptions
	closer []io.Closer // what Open opened, closed by Close
}

var _ resolver.Builder = (*Builder)(nil)

// NewBuilder returns a Builder over d (a *cache.Cache, or any Discovery). Pass it
// to grpc.NewClient with grpc.WithResolvers, or register it with
// resolver.Register.
func NewBuilder(d registry.Discovery, opts ...Option) *Builder {
	o := builderOptions{scheme: Scheme, grace: lb.DefaultEmptyGrace}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return &Builder{d: d, o: o}
}

// Open opens the registry at url (any backend URL registry.Open accepts; import
// the backend's package) and a cache over it, and returns a Builder over them
// that Close closes.
func Open(ctx context.Context, url string, opts ...Option) (*Builder, error) {
	b := NewBuilder(nil, opts...)
	c, err := registry.Open(ctx, url, b.o.ropts...)
	if err != nil {
		return nil, err
	}
	ca, err := cache.New(c, cache.WithLogger(b.o.log))
	if err != nil {
		c.Close()
		return nil, err
	}
	b.d, b.closer = ca, []io.Closer{ca, c}
	return b, nil
}

// Scheme returns the scheme the Builder answers to.
func (b *Builder) Scheme() string { return b.o.scheme }

// Close closes what Open opened (nothing for NewBuilder). Close the ClientConns
// first.
func (b *Builder) Close() error {
	var errs []error
	for _, c := range b.closer {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Build starts resolving target: its endpoint (the path without the leading
// slash; the authority is ignored) is the service name.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.TrimPrefix(target.Endpoint(), "/")
	if err := registry.ValidServiceName(service); err != nil {
		return nil, fmt.Errorf("lbgrpc: target %q: %w", target.URL.String(), err)
	}
	if b.d == nil {
		return nil, fmt.Errorf("lbgrpc: Builder has no Discovery: %w", registry.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := b.d.Watch(ctx, service)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("lbgrpc: watch %s: %w", service, err)
	}
	r := &grpcResolver{service: service, cc: cc, cancel: cancel, log: b.o.log}
	g := follow.Guard{Grace: b.o.grace, Clock: b.o.clock, Held: func(s registry.Snapshot) {
		b.o.log.Warn("lbgrpc: empty update held back", "service", service, "grace", b.o.grace)
	}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer w.Close()
		err := g.Run(ctx, w, r.apply)
		if ctx.Err() == nil && err != nil {
			r.fail(err)
		}
	}()
	return r, nil
}

type grpcResolver struct {
	service string
	cc      resolver.ClientConn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	log     *slog.Logger
	hasList bool // a non-empty list was pushed (only the follow goroutine touches it)
}

// apply pushes a snapshot the guard accepted.
func (r *grpcResolver) apply(s registry.Snapshot) {
	if len(s.Instances) == 0 {
		if r.hasList {
			r.hasList = false
			r.cc.UpdateState(resolver.State{}) // confirmed empty: the list is gone
		}
		err := fmt.Errorf("lbgrpc: service %s has no instances", r.service)
		if s.Stale && s.Err != nil {
			err = fmt.Errorf("lbgrpc: service %s: %w", r.service, s.Err)
		}
		r.cc.ReportError(err)
		return
	}
	if s.Stale {
		r.log.Warn("lbgrpc: serving the last good instances", "service", r.service, "age", s.Age().Round(time.Millisecond), "err", s.Err)
	}
	st := resolver.State{Addresses: make([]resolver.Address, 0, len(s.Instances)), Endpoints: make([]resolver.Endpoint, 0, len(s.Instances))}
	for _, in := range s.Instances {
		a := Address(in)
		st.Addresses = append(st.Addresses, a)
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{a}, Attributes: a.BalancerAttributes})
	}
	r.hasList = true
	r.cc.UpdateState(st) // an error asks for re-resolution; the watch re-pushes on change
}

// fail reports a watch that ended; the last good list, if any, stays.
func (r *grpcResolver) fail(err error) {
	r.log.Warn("lbgrpc: watch ended", "service", r.service, "err", err)
	if !r.hasList {
		r.cc.ReportError(fmt.Errorf("lbgrpc: watch %s: %w", r.service, err))
	}
}

// ResolveNow does nothing: the watch pushes every change.
func (r *grpcResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the resolver and waits for its goroutine.
func (r *grpcResolver) Close() {
	r.cancel()
	r.wg.Wait()
}

// ---- attributes ----

type instanceKey struct{}

// instanceAttr carries an instance in attributes; Instance holds a map, so it is
// compared with Equal, never ==.
type instanceAttr struct{ in registry.Instance }

func (a *instanceAttr) Equal(o any) bool {
	b, ok := o.(*instanceAttr)
	return ok && a.in.Equal(b.in)
}

// Address returns the resolver address of an instance, as the resolver pushes
// it: Addr is Instance.Addr(), and BalancerAttributes carry the whole instance
// (ID, Weight, Zone, Metadata, Healthy), read back with InstanceOf.
func Address(in registry.Instance) resolver.Address {
	return resolver.Address{Addr: in.Addr(), BalancerAttributes: attributes.New(instanceKey{}, &instanceAttr{in: in})}
}

// InstanceOf returns the instance an address from this package's resolver
// carries.
func InstanceOf(a resolver.Address) (registry.Instance, bool) {
	v, ok := a.BalancerAttributes.Value(instanceKey{}).(*instanceAttr)
	if !ok {
		return registry.Instance{}, false
	}
	return v.in, true
}

// Weight returns the instance weight an address carries (registry.DefaultWeight
// for addresses from elsewhere).
func Weight(a resolver.Address) int {
	if in, ok := InstanceOf(a); ok {
		return in.Weight
	}
	return registry.DefaultWeight
}

// Zone returns the zone an address carries ("" if none).
func Zone(a resolver.Address) string {
	in, _ := InstanceOf(a)
	return in.Zone
}

// Metadata returns the metadata an address carries (shared: do not modify).
func Metadata(a resolver.Address) map[string]string {
	in, _ := InstanceOf(a)
	return in.Metadata
}
