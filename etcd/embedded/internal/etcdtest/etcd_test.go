package etcdtest_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/internal/reliability"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// The embedded server's and gRPC's background goroutines outlive single tests.
var leakOpts = []goleak.Option{
	goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
}

func TestMain(m *testing.M) {
	reliability.ChildMain() // the registering child of TestClusterReliability's process kill
	goleak.VerifyTestMain(m, leakOpts...)
}

// env is a real embedded etcd, a fault proxy in front of it, and an admin client
// that talks to the server directly (never through the proxy).
type env struct {
	srv   *etcdtest.Server
	proxy *testenv.Proxy
	admin *clientv3.Client
	query string // appended to the URL of open
}

func newEnv(t *testing.T, opts ...etcdtest.Option) *env {
	srv := etcdtest.Start(t, opts...)
	proxy := testenv.NewProxy(t, srv.Endpoint())
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	return &env{srv: srv, proxy: proxy, admin: admin}
}

// open opens a client through the proxy under prefix /ns.
func (e *env) open(t testing.TB, ns string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "etcd://"+e.proxy.Addr()+"/"+ns+"?lease_ttl=3s&dial_timeout=10s"+e.query,
		registry.WithRetryBackoff(50*time.Millisecond, time.Second), registry.WithRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openLazy opens a client as open does, with registry.WithLazyConnect (for the
// conformance case that opens during an outage).
func (e *env) openLazy(t testing.TB, ns string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "etcd://"+e.proxy.Addr()+"/"+ns+"?lease_ttl=3s&dial_timeout=2s"+e.query,
		registry.WithLazyConnect(), registry.WithRetryBackoff(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatalf("lazy Open during an outage: %v", err)
	}
	return c
}

// revokeAll revokes every lease the server has: what an expiry does to clients.
func (e *env) revokeAll(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.admin.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range resp.Leases {
		if _, err := e.admin.Revoke(ctx, l.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) harness() registrytest.Harness {
	return registrytest.Harness{
		Name: "etcd",
		UnreachableURL: func(t testing.TB) string {
			return "etcd://" + testenv.ClosedAddr(t) + "/x?dial_timeout=2s"
		},
		NewClient:     e.open,
		NewLazyClient: e.openLazy,
		ExpireSession: func(t testing.TB, _ *registry.Client) { e.revokeAll(t) },
		Restart:       func(t testing.TB) { e.srv.Restart(t, false) },
		Cut: func(t testing.TB) func() {
			e.proxy.Cut()
			return e.proxy.Heal
		},
		Blackhole: func(t testing.TB) func() {
			e.proxy.Blackhole()
			return e.proxy.Heal
		},
		Timeout:      30 * time.Second,
		LeakOptions:  leakOpts,
		WriteForeign: e.writeForeign,
		DeleteInstance: func(t testing.TB, c *registry.Client, service, id string) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := e.admin.Delete(ctx, c.Conn().(*etcd.Conn).InstanceKey(service, id))
			if err != nil || resp.Deleted != 1 {
				t.Fatalf("DeleteInstance %s/%s: %v (deleted %v)", service, id, err, resp)
			}
		},
	}
}

// writeForeign writes entries under service that are not instances: garbage, an
// empty object, a record of another service, a nested key, and a record carrying
// id under another key.
func (e *env) writeForeign(t testing.TB, c *registry.Client, service, id string) {
	t.Helper()
	conn := c.Conn().(*etcd.Conn)
	rec := func(id, svc string) string {
		return `{"id":"` + id + `","service":"` + svc + `","host":"10.9.9.9","port":9999,"weight":100}`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k, v := range map[string]string{
		conn.InstanceKey(service, "garbage"):         "not json",
		conn.InstanceKey(service, "empty"):           "{}",
		conn.InstanceKey(service, "other"):           rec("other", "elsewhere"),
		conn.InstanceKey(service, "nested/deeper"):   rec("deeper", service),
		conn.InstanceKey(service, "shadow-of-"+id):   rec(id, service),
		conn.InstanceKey(service, "null"):            "null",
		conn.InstanceKey(service, "no-port"):         `{"id":"no-port","service":"` + service + `","host":"10.9.9.9"}`,
		conn.InstanceKey(service, "") + "/x":         rec("x", service),
		conn.InstanceKey(service+"-more", "sibling"): rec("sibling", service+"-more"),
	} {
		if _, err := e.admin.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRegistryConformance(t *testing.T) { registrytest.RunRegistry(t, newEnv(t).harness()) }

// The same over one watch of the whole services prefix (service_watches=0).
func TestRegistryConformancePrefixWatch(t *testing.T) {
	e := newEnv(t)
	e.query = "&service_watches=0"
	registrytest.RunRegistry(t, e.harness())
}

func TestStoreConformance(t *testing.T) { registrytest.RunStore(t, newEnv(t).harness()) }

// New wraps a client the caller holds: its typed options apply, the logger option
// is honoured, another backend's option is rejected before any I/O, and Close
// leaves the caller's client open.
func TestNew(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := etcd.New(e.admin, registry.DriverOption("consul.WithTags", 1)); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("New with another backend's option = %v, want ErrInvalid", err)
	}
	if _, err := etcd.New(e.admin, etcd.WithLeaseTTL(time.Second)); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("New with a 1s lease = %v, want ErrInvalid", err)
	}
	c, err := etcd.New(e.admin, etcd.WithPrefix("/direct"), etcd.WithLeaseTTL(5*time.Second),
		registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.Register(ctx, registry.Instance{Service: "svc", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.admin.Get(ctx, "/direct/services/svc/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 1 {
		t.Fatalf("under /direct: %v, %v", resp, err)
	}
	_ = reg.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Get(ctx, "/direct"); err != nil {
		t.Fatalf("the caller's client was closed: %v", err)
	}
}
