package etcd_test

import (
	"context"
	"testing"
	"time"

	_ "github.com/regkit/regkit/etcd"
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

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leakOpts...) }

// harness runs the suites against a real etcd, with clients dialling through a
// fault proxy so that Cut breaks their connections for real.
func harness(t *testing.T) registrytest.Harness {
	srv := testenv.StartEtcd(t)
	proxy := testenv.NewProxy(t, srv.Endpoint())
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	return registrytest.Harness{
		Name: "etcd",
		NewClient: func(t testing.TB, ns string) *registry.Client {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := registry.Open(ctx, "etcd://"+proxy.Addr()+"/"+ns+"?lease_ttl=3s&dial_timeout=2s",
				registry.WithRetryBackoff(50*time.Millisecond, time.Second), registry.WithRequestTimeout(3*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		ExpireSession: func(t testing.TB, c *registry.Client) {
			// Revoke every lease the server has: what an expiry does to this client.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := admin.Leases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range resp.Leases {
				if _, err := admin.Revoke(ctx, l.ID); err != nil {
					t.Fatal(err)
				}
			}
		},
		Restart: func(t testing.TB) { srv.Restart(t, false) },
		Cut: func(t testing.TB) func() {
			proxy.Cut()
			return proxy.Heal
		},
		Timeout:     30 * time.Second,
		LeakOptions: leakOpts,
	}
}

func TestRegistryConformance(t *testing.T) { registrytest.RunRegistry(t, harness(t)) }

func TestStoreConformance(t *testing.T) { registrytest.RunStore(t, harness(t)) }
