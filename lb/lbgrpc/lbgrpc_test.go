package lbgrpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/lb/lbgrpc"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	_ "github.com/regkit/regkit/zk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

type env struct {
	c    *registry.Client
	view *cache.Cache
	b    *lbgrpc.Builder
}

func newEnv(t *testing.T, name string, opts ...lbgrpc.Option) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "mem://"+name, registry.WithLogger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	view, err := cache.New(c, cache.WithLogger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	return &env{c: c, view: view, b: lbgrpc.NewBuilder(view, append([]lbgrpc.Option{lbgrpc.WithLogger(quietLog)}, opts...)...)}
}

// server is a gRPC health server that says its name in a response header.
type server struct {
	name    string
	serving *lbgrpc.Serving
}

func startServer(t *testing.T, e *env, name string, weight int, zone string, opts ...lbgrpc.ServeOption) *server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		grpc.SetHeader(ctx, metadata.Pairs("server", name))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	s, err := lbgrpc.Serve(ctx, e.c, srv, lis, registry.Instance{Service: "greeter", ID: name, Host: "127.0.0.1",
		Weight: weight, Zone: zone, Metadata: map[string]string{"name": name}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return &server{name: name, serving: s}
}

func dial(t *testing.T, e *env, serviceConfig string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("regkit:///greeter", grpc.WithResolvers(e.b),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultServiceConfig(serviceConfig))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func call(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	var hdr metadata.MD
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
	if err != nil {
		return "", err
	}
	return hdr.Get("server")[0], nil
}

func spread(t *testing.T, cc *grpc.ClientConn, n int) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := map[string]int{}
	for range n {
		s, err := call(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		got[s]++
	}
	return got
}

func waitServers(t *testing.T, cc *grpc.ClientConn, want int) {
	t.Helper()
	poll.Until(t, 20*time.Second, fmt.Sprintf("%d servers answer", want), func() error {
		if got := spread(t, cc, 4*want*10); len(got) != want {
			return fmt.Errorf("answered: %v", got)
		}
		return nil
	})
}

func TestWeightedRoundRobinOverResolver(t *testing.T) {
	e := newEnv(t, "grpc-wrr")
	startServer(t, e, "s1", 100, "eu-1")
	startServer(t, e, "s2", 100, "eu-1")
	startServer(t, e, "s3", 200, "us-1")
	cc := dial(t, e, `{"loadBalancingConfig":[{"regkit_weighted_round_robin":{}}]}`)
	waitServers(t, cc, 3)
	if got := spread(t, cc, 400); got["s1"] != 100 || got["s2"] != 100 || got["s3"] != 200 {
		t.Errorf("weighted shares over gRPC: %v, want 100/100/200", got)
	}
}

func TestZoneAwareOverResolver(t *testing.T) {
	e := newEnv(t, "grpc-zone")
	s1 := startServer(t, e, "s1", 100, "eu-1")
	startServer(t, e, "s2", 100, "eu-1")
	startServer(t, e, "s3", 100, "us-1")
	cc := dial(t, e, `{"loadBalancingConfig":[{"regkit_zone_aware":{"zone":"eu-1","minHealthyShare":0.6,"policy":"round_robin"}}]}`)
	poll.Until(t, 20*time.Second, "both local servers answer", func() error {
		if got := spread(t, cc, 20); got["s1"] == 0 || got["s2"] == 0 {
			return fmt.Errorf("answered: %v", got)
		}
		return nil
	})
	if got := spread(t, cc, 40); got["s3"] != 0 {
		t.Errorf("remote zone picked with the local zone healthy: %v", got)
	}
	// One of two local servers leaves (1 of 1 registered is ready... the zone
	// keeps one instance, 100% of it): still local.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s1.serving.GracefulStop(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "s2 alone in eu-1", func() error {
		if got := spread(t, cc, 20); got["s2"] != 20 {
			return fmt.Errorf("answered: %v", got)
		}
		return nil
	})
}

// regkit_zone_aware spills over to the other zone when fewer than
// minHealthyShare of the local zone's instances are healthy, and comes back when
// they are: eu-1 has s1 and s2, us-1 has s3, the share is 0.6. s2 failing its
// health check (still registered, marked unhealthy) leaves eu-1 with 1 of 2
// healthy, 0.5: round-robin over every ready instance, s1 and s3.
func TestZoneAwareSpillsOverResolver(t *testing.T) {
	e := newEnv(t, "grpc-zone-spill")
	startServer(t, e, "s3", 100, "us-1")
	cc := dial(t, e, `{"loadBalancingConfig":[{"regkit_zone_aware":{"zone":"eu-1","minHealthyShare":0.6,"policy":"round_robin"}}]}`)
	// No instance in eu-1 yet: the remote zone serves.
	waitServers(t, cc, 1)
	var broken atomic.Bool
	startServer(t, e, "s1", 100, "eu-1")
	s2 := startServer(t, e, "s2", 100, "eu-1", lbgrpc.WithRegisterOptions(registry.WithHealthCheck(func(context.Context) error {
		if broken.Load() {
			return errors.New("broken")
		}
		return nil
	}, 10*time.Millisecond, registry.MarkUnhealthy)))
	local := func(what string) {
		t.Helper()
		poll.Until(t, 20*time.Second, what, func() error {
			if got := spread(t, cc, 20); got["s1"] != 10 || got["s2"] != 10 {
				return fmt.Errorf("answered: %v", got)
			}
			return nil
		})
	}
	local("eu-1 healthy: s1 and s2 alone")

	broken.Store(true)
	poll.Until(t, 20*time.Second, "s2 marked unhealthy", func() error {
		if s2.serving.Registration().Healthy() {
			return errors.New("healthy")
		}
		return nil
	})
	poll.Until(t, 20*time.Second, "spill-over: s1 and s3, even", func() error {
		if got := spread(t, cc, 20); got["s1"] != 10 || got["s3"] != 10 {
			return fmt.Errorf("answered: %v", got)
		}
		return nil
	})

	broken.Store(false)
	local("eu-1 healthy again: back to s1 and s2 alone")
}

// An instance the registry reports unhealthy (its health check fails while its
// server still accepts calls) gets no calls while a healthy one is ready, and
// gets them again once it passes: lb's ready set is the healthy instances.
func TestUnhealthyInstanceGetsNoCalls(t *testing.T) {
	e := newEnv(t, "grpc-unhealthy")
	startServer(t, e, "s1", 100, "")
	var broken atomic.Bool
	s2 := startServer(t, e, "s2", 100, "", lbgrpc.WithRegisterOptions(registry.WithHealthCheck(func(context.Context) error {
		if broken.Load() {
			return errors.New("broken")
		}
		return nil
	}, 10*time.Millisecond, registry.MarkUnhealthy)))
	for _, policy := range []string{"regkit_round_robin", "regkit_random", "regkit_least_loaded"} {
		t.Run(policy, func(t *testing.T) {
			broken.Store(false)
			cc := dial(t, e, `{"loadBalancingConfig":[{"`+policy+`":{}}]}`)
			waitServers(t, cc, 2)
			broken.Store(true)
			poll.Until(t, 20*time.Second, "s2 marked unhealthy", func() error {
				if s2.serving.Registration().Healthy() {
					return errors.New("healthy")
				}
				return nil
			})
			poll.Until(t, 20*time.Second, "s2 gets no calls", func() error {
				if got := spread(t, cc, 20); got["s2"] != 0 {
					return fmt.Errorf("answered: %v", got)
				}
				return nil
			})
			broken.Store(false)
			waitServers(t, cc, 2)
		})
	}
}

// A stopping server deregisters, drains, then stops: a client calling all the
// while never sees an error, and ends on the other server.
func TestGracefulStopFailover(t *testing.T) {
	e := newEnv(t, "grpc-failover")
	s1 := startServer(t, e, "s1", 100, "", lbgrpc.WithDrainDelay(300*time.Millisecond))
	startServer(t, e, "s2", 100, "")
	cc := dial(t, e, `{"loadBalancingConfig":[{"regkit_round_robin":{}}]}`)
	waitServers(t, cc, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var callErr error
	var calls int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := call(ctx, cc); err != nil && callErr == nil {
				callErr = err
			}
			calls++
		}
	}()
	if err := s1.serving.GracefulStop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := spread(t, cc, 10); got["s2"] != 10 {
		t.Errorf("after s1 stopped: %v", got)
	}
	close(stop)
	wg.Wait()
	if callErr != nil {
		t.Errorf("a call failed during the graceful stop (%d calls): %v", calls, callErr)
	}
}

// closeHook runs a function when the server closes its listener, which it does
// as it stops accepting (Stop and GracefulStop alike).
type closeHook struct {
	net.Listener
	once    sync.Once
	onClose func()
}

func (l *closeHook) Close() error {
	l.once.Do(l.onClose)
	return l.Listener.Close()
}

// GracefulStop deregisters first, waits the drain delay, and only then stops
// accepting: when the server stops, the registry no longer has it.
func TestGracefulStopDeregistersFirst(t *testing.T) {
	e := newEnv(t, "grpc-order")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const drain = 200 * time.Millisecond
	var start time.Time
	var registered = -1
	var elapsed time.Duration
	hook := &closeHook{Listener: lis, onClose: func() {
		elapsed = time.Since(start)
		got, err := e.c.Instances(ctx, "greeter")
		if err != nil {
			t.Error(err)
		}
		registered = len(got)
	}}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	s, err := lbgrpc.Serve(ctx, e.c, srv, hook, registry.Instance{Service: "greeter", ID: "s1", Host: "127.0.0.1"},
		lbgrpc.WithDrainDelay(drain))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Instances(ctx, "greeter"); len(got) != 1 {
		t.Fatalf("registered while serving: %v", got)
	}
	start = time.Now()
	if err := s.GracefulStop(ctx); err != nil {
		t.Fatal(err)
	}
	if registered != 0 {
		t.Errorf("the server stopped accepting with %d instance(s) still registered", registered)
	}
	if elapsed < drain {
		t.Errorf("the server stopped accepting %v after GracefulStop began, before the drain delay %v", elapsed, drain)
	}
}

// Serve registers only once the server is serving, and a server whose context
// ends first is stopped, not registered.
func TestServeRegistersWhenServing(t *testing.T) {
	e := newEnv(t, "grpc-serve")
	s := startServer(t, e, "s1", 0, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := e.c.Instances(ctx, "greeter")
	if err != nil || len(got) != 1 || got[0].Port != s.serving.Registration().Instance().Port || got[0].Port == 0 {
		t.Fatalf("registered: %v, %v", got, err)
	}
	if err := s.serving.GracefulStop(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Instances(ctx, "greeter"); len(got) != 0 {
		t.Errorf("still registered after GracefulStop: %v", got)
	}
	select {
	case <-s.serving.Done():
	default:
		t.Error("server still serving after GracefulStop")
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close() // nothing will ever serve: Serve fails with its context
	lis2, _ := net.Listen("tcp", "127.0.0.1:0")
	defer lis2.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := lbgrpc.Serve(short, e.c, grpc.NewServer(), lis, registry.Instance{Service: "greeter", Host: "127.0.0.1"}); err == nil {
		t.Error("Serve on a closed listener succeeded")
	}
	if got, _ := e.c.Instances(ctx, "greeter"); len(got) != 0 {
		t.Errorf("registered though never serving: %v", got)
	}
}

// fakeCC records what a resolver pushes.
type fakeCC struct {
	resolver.ClientConn
	mu     sync.Mutex
	states []resolver.State
	errs   []error
}

func (f *fakeCC) UpdateState(s resolver.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, s)
	return nil
}

func (f *fakeCC) ReportError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

func (f *fakeCC) last() (int, []resolver.Address, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.states) == 0 {
		return 0, nil, len(f.errs)
	}
	return len(f.states), f.states[len(f.states)-1].Addresses, len(f.errs)
}

func build(t *testing.T, b *lbgrpc.Builder, service string) *fakeCC {
	t.Helper()
	cc := &fakeCC{}
	r, err := b.Build(resolver.Target{URL: url.URL{Scheme: "regkit", Path: "/" + service}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return cc
}

// The resolver pushes every change with the instance in the attributes, reports
// an error only while it has no list, and holds an empty update back for the
// grace period.
func TestResolverPushesAndGuards(t *testing.T) {
	const grace = 10 * time.Second
	clk := clockwork.NewFakeClock()
	e := newEnv(t, "grpc-resolver", lbgrpc.WithEmptyGrace(grace), lbgrpc.WithClock(clk))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cc := build(t, e.b, "greeter")
	poll.Until(t, 5*time.Second, "error for a service with no instances", func() error {
		if _, _, nerr := cc.last(); nerr == 0 {
			return errors.New("no error reported")
		}
		return nil
	})
	reg, err := e.c.Register(ctx, registry.Instance{Service: "greeter", ID: "a", Host: "10.0.0.1", Port: 80, Weight: 7, Zone: "eu-1",
		Metadata: map[string]string{"v": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "address pushed", func() error {
		if _, addrs, _ := cc.last(); len(addrs) != 1 {
			return fmt.Errorf("addresses %v", addrs)
		}
		return nil
	})
	_, addrs, nerr := cc.last()
	a := addrs[0]
	in, ok := lbgrpc.InstanceOf(a)
	if a.Addr != "10.0.0.1:80" || !ok || in.ID != "a" || lbgrpc.Weight(a) != 7 || lbgrpc.Zone(a) != "eu-1" || lbgrpc.Metadata(a)["v"] != "2" {
		t.Errorf("address %+v, instance %+v", a, in)
	}
	// Deregistered: the empty update is held back for the grace period (the
	// guard's timer armed), no error reported (the list is kept), then pushed.
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	held, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	if err := clk.BlockUntilContext(held, 1); err != nil {
		_, addrs, _ := cc.last()
		t.Fatalf("the empty update is not held back: no grace timer (%v); addresses %v", err, addrs)
	}
	if _, addrs, n := cc.last(); len(addrs) != 1 || n != nerr {
		t.Fatalf("while held back: addresses %v, %d errors reported (want the list, %d errors)", addrs, n, nerr)
	}
	clk.Advance(grace)
	poll.Until(t, 5*time.Second, "empty update after the grace period", func() error {
		if _, addrs, _ := cc.last(); len(addrs) != 0 {
			return fmt.Errorf("addresses %v", addrs)
		}
		return nil
	})
	if _, _, n := cc.last(); n != nerr+1 {
		t.Errorf("%d errors reported, want one more (for no list) than the %d before", n, nerr)
	}

	// Bad targets fail Build.
	if _, err := e.b.Build(resolver.Target{URL: url.URL{Scheme: "regkit", Path: "/bad name"}}, &fakeCC{}, resolver.BuildOptions{}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("bad service name: %v", err)
	}
}

// While the backend is unreachable the resolver keeps the last good list: the
// stale snapshots push the same addresses, and no error is reported (an error
// with a list would have the ClientConn treat the list as broken). On a real
// ZooKeeper, stopped and restarted.
func TestResolverKeepsListWhileBackendDown(t *testing.T) {
	zk := testenv.StartZooKeeper(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "zk://"+zk.Addr()+"/lbgrpc", registry.WithLogger(quietLog),
		registry.WithRetryBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	view, err := cache.New(c, cache.WithLogger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: "a", Host: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	cc := build(t, lbgrpc.NewBuilder(view, lbgrpc.WithLogger(quietLog)), "greeter")
	poll.Until(t, 20*time.Second, "address pushed", func() error {
		if _, addrs, _ := cc.last(); len(addrs) != 1 {
			return fmt.Errorf("addresses %v", addrs)
		}
		return nil
	})
	pushes, _, errs := cc.last()

	zk.Stop()
	poll.Until(t, 30*time.Second, "a stale snapshot pushed", func() error {
		s, err := view.Lookup(ctx, "greeter")
		if err != nil {
			return err
		}
		if n, _, _ := cc.last(); !s.Stale || n == pushes {
			return fmt.Errorf("stale=%v, %d pushes", s.Stale, n)
		}
		return nil
	})
	if _, addrs, n := cc.last(); len(addrs) != 1 || addrs[0].Addr != "10.0.0.1:80" || n != errs {
		t.Errorf("backend down: addresses %v, %d errors reported (%d before)", addrs, n, errs)
	}

	zk.Restart(t)
	poll.Until(t, 30*time.Second, "fresh again", func() error {
		s, err := view.Lookup(ctx, "greeter")
		if err != nil {
			return err
		}
		if s.Stale || len(s.Instances) != 1 {
			return fmt.Errorf("stale=%v, %d instances", s.Stale, len(s.Instances))
		}
		return nil
	})
	if _, addrs, n := cc.last(); len(addrs) != 1 || n != errs {
		t.Errorf("backend back: addresses %v, %d errors reported (%d before)", addrs, n, errs)
	}
}

func TestBadServiceConfig(t *testing.T) {
	e := newEnv(t, "grpc-badcfg")
	cc, err := grpc.NewClient("regkit:///greeter", grpc.WithResolvers(e.b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"regkit_zone_aware":{"policy":"nope"}}]}`))
	if err == nil {
		cc.Close()
		t.Fatal("unknown policy accepted")
	}
}

// TestParseConfigRefusesBadSettings: settings the lb constructors refuse come
// back from the service config's parse as errors naming the field.
func TestParseConfigRefusesBadSettings(t *testing.T) {
	for _, c := range []struct{ name, js, field string }{
		{lbgrpc.ZoneAwareName, `{"minHealthyShare":1.5}`, "minHealthyShare"},
		{lbgrpc.ZoneAwareName, `{"minHealthyShare":-0.5}`, "minHealthyShare"},
		{lbgrpc.ConsistentHashName, `{"replicas":1000000000}`, "Replicas"},
		{lbgrpc.ConsistentHashName, `{"replicas":-1}`, "Replicas"},
		{lbgrpc.ZoneAwareName, `{"policy":"consistent_hash","replicas":1000000000}`, "Replicas"},
		{lbgrpc.ConsistentHashName, `{"loadFactor":0.5}`, "LoadFactor"},
	} {
		p := balancer.Get(c.name).(balancer.ConfigParser)
		_, err := p.ParseConfig(json.RawMessage(c.js))
		if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(fmt.Sprint(err), c.field) {
			t.Errorf("%s %s: ParseConfig error %v, want ErrInvalid naming %s", c.name, c.js, err, c.field)
		}
	}
	if _, err := balancer.Get(lbgrpc.ZoneAwareName).(balancer.ConfigParser).ParseConfig(json.RawMessage(`{"minHealthyShare":0}`)); err != nil {
		t.Errorf("minHealthyShare 0: %v", err)
	}
}
