package etcdtest_test

// layout=naming against etcd's own gRPC naming: endpoints.Manager and its resolver
// are the live peer (go.etcd.io/etcd/client/v3/naming, the version this module
// requires), with a real gRPC server and client.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/registrytest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// openNaming opens a layout=naming client through the proxy whose targets are
// <targetPrefix>/<service>.
func (e *env) openNaming(t testing.TB, targetPrefix string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "etcd://"+e.proxy.Addr()+"/regkit?layout=naming&target_prefix="+targetPrefix+"&lease_ttl=3s&dial_timeout=10s",
		registry.WithRetryBackoff(50*time.Millisecond, time.Second), registry.WithRequestTimeout(10*time.Second),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNamingConformance(t *testing.T) {
	e := newEnv(t)
	h := e.harness()
	h.Name = "etcd layout=naming"
	h.NewClient = func(t testing.TB, ns string) *registry.Client { return e.openNaming(t, "naming/"+ns) }
	registrytest.RunRegistry(t, h)
}

func TestNamingURLValidation(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ query, field string }{
		{"target_prefix=svc", "target_prefix"},                     // without layout=naming
		{"layout=naming&target_prefix=/regkit/x", "target_prefix"}, // under the key prefix
		{"layout=naming&target_prefix=/regkit", "target_prefix"},
		{"layout=naming&target_prefix=a//b", "target_prefix"},
		{"layout=dns", "layout"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := registry.Open(ctx, "etcd://"+e.srv.Endpoint()+"/regkit?"+tc.query)
		cancel()
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Open ?%s = %v, want a FieldError naming %s", tc.query, err, tc.field)
		}
	}
	if _, err := etcd.New(e.admin, etcd.WithPrefix("/a"), etcd.WithNaming("/a/b")); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("New with a target prefix under the key prefix = %v, want ErrInvalid", err)
	}
}

// healthServer serves gRPC health on a loopback port, reporting status for the
// service "greeter"; it is stopped by t.Cleanup.
func healthServer(t *testing.T, status healthpb.HealthCheckResponse_ServingStatus) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("greeter", status)
	healthpb.RegisterHealthServer(s, hs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// etcd's resolver dials what regkit registers: a gRPC client with
// resolver.NewBuilder reaches regkit-registered servers by target, follows a
// deregistration, and the values are what endpoints.Manager writes and reads.
func TestNamingResolverDialsRegkit(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	serving := healthServer(t, healthpb.HealthCheckResponse_SERVING)
	notServing := healthServer(t, healthpb.HealthCheckResponse_NOT_SERVING)

	c := e.openNaming(t, "svc")
	defer c.Close()
	rich, err := c.Register(ctx, registry.Instance{Service: "greeter", Host: "127.0.0.1", Port: serving,
		Weight: 250, Zone: "eu-1", Metadata: map[string]string{"version": "v2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer rich.Close()
	plain, err := c.Register(ctx, registry.Instance{Service: "greeter", Host: "127.0.0.1", Port: notServing})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	// The keys are <target>/<addr>; a plain instance's value is byte for byte what
	// endpoints.Manager writes for Endpoint{Addr}.
	richAddr, plainAddr := "127.0.0.1:"+strconv.Itoa(serving), "127.0.0.1:"+strconv.Itoa(notServing)
	mgr, err := endpoints.NewManager(e.admin, "svc/greeter")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := endpoints.NewManager(e.admin, "svc/reference")
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.AddEndpoint(ctx, "svc/reference/"+plainAddr, endpoints.Endpoint{Addr: plainAddr}); err != nil {
		t.Fatal(err)
	}
	got, err := e.admin.Get(ctx, "svc/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{}
	for _, kv := range got.Kvs {
		vals[string(kv.Key)] = string(kv.Value)
		if kv.Lease == 0 && string(kv.Key) != "svc/reference/"+plainAddr {
			t.Errorf("%s is not under a lease", kv.Key)
		}
	}
	if v, ref := vals["svc/greeter/"+plainAddr], vals["svc/reference/"+plainAddr]; v != ref {
		t.Errorf("plain instance value = %s, want what endpoints.Manager writes: %s", v, ref)
	}
	eps, err := mgr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantMeta := `{"weight":250,"zone":"eu-1","metadata":{"version":"v2"}}`
	if ep := eps["svc/greeter/"+richAddr]; ep.Addr != richAddr || ep.Metadata != wantMeta {
		t.Errorf("endpoints.Manager lists %#v for the rich instance, want Addr %s, Metadata %s", ep, richAddr, wantMeta)
	}
	if ep := eps["svc/greeter/"+plainAddr]; ep.Addr != plainAddr || ep.Metadata != nil {
		t.Errorf("endpoints.Manager lists %#v for the plain instance, want Addr %s, no Metadata", ep, plainAddr)
	}

	// A gRPC client through etcd's resolver reaches both, round robin.
	rb, err := etcdresolver.NewBuilder(e.admin)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("etcd:///svc/greeter", grpc.WithResolvers(rb),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	seen := map[healthpb.HealthCheckResponse_ServingStatus]bool{}
	testenv.Eventually(t, 20*time.Second, "gRPC calls through etcd's resolver reach both regkit instances", func() error {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		r, err := hc.Check(rctx, &healthpb.HealthCheckRequest{Service: "greeter"})
		if err != nil {
			return err
		}
		seen[r.Status] = true
		if len(seen) < 2 {
			return fmt.Errorf("only %v answered so far", seen)
		}
		return nil
	})

	// regkit deregisters the serving one: the resolver drops it.
	if err := rich.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the resolver follows regkit's deregistration", func() error {
		for i := 0; i < 6; i++ {
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := hc.Check(rctx, &healthpb.HealthCheckRequest{Service: "greeter"})
			rcancel()
			if err != nil {
				return err
			}
			if r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
				return fmt.Errorf("call %d answered %v: the deregistered server is still picked", i, r.Status)
			}
		}
		return nil
	})
}

// regkit discovers what endpoints.Manager adds, with and without metadata, and
// follows its deletions and its lease's end.
func TestNamingRegkitReadsManager(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := e.openNaming(t, "")
	defer c.Close()
	w, err := c.Watch(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	mgr, err := endpoints.NewManager(e.admin, "orders")
	if err != nil {
		t.Fatal(err)
	}
	lease, err := e.admin.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.AddEndpoint(ctx, "orders/10.0.0.9:7000", endpoints.Endpoint{Addr: "10.0.0.9:7000"}, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if err := mgr.AddEndpoint(ctx, "orders/node-2", endpoints.Endpoint{Addr: "10.0.0.10:7001",
		Metadata: map[string]any{"weight": 5, "zone": "eu-2", "version": "v1", "tags": []string{"a"}}}); err != nil {
		t.Fatal(err)
	}
	if err := mgr.AddEndpoint(ctx, "orders/legacy", endpoints.Endpoint{Addr: "10.0.0.11:7002", Metadata: 42}); err != nil {
		t.Fatal(err)
	}
	if err := mgr.AddEndpoint(ctx, "orders/no-port", endpoints.Endpoint{Addr: "10.0.0.12"}); err != nil {
		t.Fatal(err)
	}
	want := []registry.Instance{
		{ID: "10.0.0.9:7000", Service: "orders", Host: "10.0.0.9", Port: 7000, Weight: 100, Healthy: true},
		{ID: "legacy", Service: "orders", Host: "10.0.0.11", Port: 7002, Weight: 100, Healthy: true,
			Metadata: map[string]string{etcd.MetaNaming: "42"}},
		{ID: "node-2", Service: "orders", Host: "10.0.0.10", Port: 7001, Weight: 5, Zone: "eu-2", Healthy: true,
			Metadata: map[string]string{"version": "v1", "tags": `["a"]`}},
	}
	waitSnapshot(t, ctx, w, want)

	if err := mgr.DeleteEndpoint(ctx, "orders/node-2"); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, ctx, w, []registry.Instance{want[0], want[1]})
	if _, err := e.admin.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, ctx, w, []registry.Instance{want[1]})
}

// waitSnapshot reads w until a snapshot equals want.
func waitSnapshot(t *testing.T, ctx context.Context, w registry.Watcher, want []registry.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var last []registry.Instance
	for {
		snap, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %v: %v (last view %v)", want, err, last)
		}
		last = snap.Instances
		if reflect.DeepEqual(last, want) || (len(last) == 0 && len(want) == 0) {
			return
		}
	}
}
