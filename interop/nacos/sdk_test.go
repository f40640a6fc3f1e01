package nacos_test

// nacos-sdk-go v2 (the official Go client, github.com/nacos-group/nacos-sdk-go/v2 at
// the version go.mod requires) as a live peer of regkit's nacos backend, against
// Polaris (nacostest_test.go: against the in-repo server). nacos-sdk-go v2 speaks
// Nacos 2's gRPC API for ephemeral instances, queries and subscriptions (the
// server's HTTP port + 1000, which Polaris's Nacos plugin serves) and the v1 HTTP
// API for persistent instances; regkit speaks HTTP only. Both land in the same Polaris service.

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	_ "github.com/regkit/regkit/nacos"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

const wait = 30 * time.Second

// sdkClient is a nacos-sdk-go v2 naming client of the Nacos API at addr (HTTP;
// gRPC on its port + 1000), logging and caching under t.TempDir(), closed by
// t.Cleanup.
//
// Its view of a service is fed by the server's gRPC pushes after the first query
// (which subscribes). Polaris 1.18.1 pushes changes only to subscribers of
// DEFAULT_GROUP services: its push center splits the already split service name
// again, so every other group's changes are announced as DEFAULT_GROUP's. The
// SDK's own re-query loop (ClientConfig.AsyncUpdateService) would work around it
// but races (go test -race reports a data race inside nacos-sdk-go v2.3.2's
// ServiceInfoUpdater), so tests of other groups read with fresh clients.
func sdkClient(t *testing.T, addr string) naming_client.INamingClient {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.ParseUint(p, 10, 64)
	dir := t.TempDir()
	cc := constant.NewClientConfig(
		constant.WithTimeoutMs(5000),
		constant.WithNotLoadCacheAtStart(true),
		constant.WithUpdateCacheWhenEmpty(true),
		constant.WithLogDir(dir), constant.WithCacheDir(dir), constant.WithLogLevel("error"),
	)
	sc := []constant.ServerConfig{*constant.NewServerConfig(host, port, constant.WithContextPath("/nacos"),
		constant.WithGrpcPort(port+1000))}
	cli, err := clients.NewNamingClient(vo.NacosClientParam{ClientConfig: cc, ServerConfigs: sc})
	if err != nil {
		t.Fatalf("nacos-sdk-go: %v", err)
	}
	t.Cleanup(cli.CloseClient)
	return cli
}

// open opens a regkit client of the Nacos API at addr with the URL's query.
func open(t *testing.T, addr, query string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "nacos://"+addr+"/nacos?poll_interval=200ms&"+query,
		registry.WithRetryBackoff(50*time.Millisecond, time.Second),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitInstances polls regkit's view of service until it equals want.
func waitInstances(t *testing.T, c *registry.Client, service string, want []registry.Instance) {
	t.Helper()
	testenv.Eventually(t, wait, "regkit lists "+service, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := c.Instances(ctx, service)
		if err != nil {
			return err
		}
		if !slices.EqualFunc(got, want, registry.Instance.Equal) {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		return nil
	})
}

// sdkInstance is what the checks compare of a nacos-sdk-go instance.
type sdkInstance struct {
	IP, Cluster               string
	Port                      uint64
	Weight                    float64
	Enabled, Healthy, Ephemer bool
	Metadata                  map[string]string
}

func fromSDK(in model.Instance) sdkInstance {
	return sdkInstance{IP: in.Ip, Port: in.Port, Cluster: in.ClusterName, Weight: in.Weight, Enabled: in.Enable,
		Healthy: in.Healthy, Ephemer: in.Ephemeral, Metadata: userMeta(in.Metadata)}
}

// userMeta drops Polaris's own keys.
func userMeta(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if !strings.HasPrefix(k, "internal-nacos-") {
			out[k] = v
		}
	}
	return out
}

func sortSDK(list []sdkInstance) {
	slices.SortFunc(list, func(a, b sdkInstance) int { return strings.Compare(a.IP, b.IP) })
}

func equalSDK(a, b []sdkInstance) bool {
	return slices.EqualFunc(a, b, func(x, y sdkInstance) bool {
		return x.IP == y.IP && x.Port == y.Port && x.Cluster == y.Cluster && x.Weight == y.Weight &&
			x.Enabled == y.Enabled && x.Healthy == y.Healthy && x.Ephemer == y.Ephemer && maps.Equal(x.Metadata, y.Metadata)
	})
}

// nacos-sdk-go registers (ephemeral over gRPC, persistent over HTTP; weight,
// cluster, group, metadata), regkit reads the same fields; a deregistration by the
// SDK reaches regkit.
func TestSDKRegistersRegkitReads(t *testing.T) {
	pl := testenv.StartPolaris(t)
	sdk := sdkClient(t, pl.NacosAddr())
	c := open(t, pl.NacosAddr(), "group=orders-group")

	eph := vo.RegisterInstanceParam{Ip: "10.1.0.1", Port: 8080, Weight: 3, Enable: true, Healthy: true,
		ClusterName: "eu-1", ServiceName: "orders", GroupName: "orders-group", Ephemeral: true,
		Metadata: map[string]string{"version": "v1", "protocol": "grpc"}}
	if ok, err := sdk.RegisterInstance(eph); err != nil || !ok {
		t.Fatalf("nacos-sdk-go register ephemeral: %v, %v", ok, err)
	}
	persistent := vo.RegisterInstanceParam{Ip: "10.1.0.2", Port: 8081, Weight: 1, Enable: true, Healthy: true,
		ServiceName: "orders", GroupName: "orders-group", Ephemeral: false}
	if ok, err := sdk.RegisterInstance(persistent); err != nil || !ok {
		t.Fatalf("nacos-sdk-go register persistent: %v, %v", ok, err)
	}
	t.Cleanup(func() {
		_, _ = sdk.DeregisterInstance(vo.DeregisterInstanceParam{Ip: "10.1.0.2", Port: 8081,
			ServiceName: "orders", GroupName: "orders-group", Ephemeral: false})
	})
	ephInst := registry.Instance{ID: "10.1.0.1:8080", Service: "orders", Host: "10.1.0.1", Port: 8080,
		Weight: 300, Zone: "eu-1", Healthy: true, Metadata: map[string]string{"version": "v1", "protocol": "grpc"}}
	persInst := registry.Instance{ID: "10.1.0.2:8081", Service: "orders", Host: "10.1.0.2", Port: 8081,
		Weight: 100, Healthy: true}
	waitInstances(t, c, "orders", []registry.Instance{ephInst, persInst})

	// Another group is another service for regkit.
	other := open(t, pl.NacosAddr(), "group=other-group")
	waitInstances(t, other, "orders", nil)

	if ok, err := sdk.DeregisterInstance(vo.DeregisterInstanceParam{Ip: "10.1.0.1", Port: 8080, Cluster: "eu-1",
		ServiceName: "orders", GroupName: "orders-group", Ephemeral: true}); err != nil || !ok {
		t.Fatalf("nacos-sdk-go deregister: %v, %v", ok, err)
	}
	waitInstances(t, c, "orders", []registry.Instance{persInst})
}

// regkit registers (ephemeral and persistent connections; weight, zone, group,
// metadata), nacos-sdk-go reads the same fields with SelectAllInstances.
func TestRegkitRegistersSDKReads(t *testing.T) {
	pl := testenv.StartPolaris(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	registerBilling(t, ctx, pl.NacosAddr())
	// Polaris 1.18.1 ignores the ephemeral parameter and lists every instance as
	// ephemeral (model.Instance.FromSpecInstance).
	want := billingWant(true)
	testenv.Eventually(t, wait, "nacos-sdk-go lists regkit's instances", func() error {
		// A fresh client each time: its first query is a fresh read (see sdkClient).
		sdk := sdkClient(t, pl.NacosAddr())
		list, err := sdk.SelectAllInstances(vo.SelectAllInstancesParam{ServiceName: "billing", GroupName: "billing-group"})
		if err != nil {
			return err
		}
		got := make([]sdkInstance, 0, len(list))
		for _, in := range list {
			got = append(got, fromSDK(in))
		}
		return sameOwned(got, want)
	})
}

// registerBilling registers, through regkit on the Nacos server at addr, the
// instances of service billing in group billing-group that billingWant describes:
// two on an ephemeral connection (cluster main; one with an ID, weight, zone and
// metadata of its own) and one on a persistent one. They are deregistered when
// the test ends.
func registerBilling(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	eph := open(t, addr, "group=billing-group&cluster=main")
	pers := open(t, addr, "group=billing-group&ephemeral=false")
	for _, r := range []struct {
		c    *registry.Client
		inst registry.Instance
	}{
		{eph, registry.Instance{ID: "go-1", Service: "billing", Host: "10.2.0.1", Port: 9000,
			Weight: 300, Zone: "eu-2", Metadata: map[string]string{"version": "v2"}}},
		{eph, registry.Instance{Service: "billing", Host: "10.2.0.2", Port: 9001}},
		{pers, registry.Instance{Service: "billing", Host: "10.2.0.3", Port: 9002, Weight: 200}},
	} {
		reg, err := r.c.Register(ctx, r.inst)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
	}
}

// billingWant is what a Nacos client reads of registerBilling's instances;
// persistentListedEphemeral is the ephemeral flag the server reports for the
// persistent one.
func billingWant(persistentListedEphemeral bool) []sdkInstance {
	return []sdkInstance{
		{IP: "10.2.0.1", Port: 9000, Cluster: "eu-2", Weight: 3, Enabled: true, Healthy: true, Ephemer: true,
			Metadata: map[string]string{"version": "v2", "regkit.id": "go-1", "regkit.weight": "300"}},
		{IP: "10.2.0.2", Port: 9001, Cluster: "main", Weight: 1, Enabled: true, Healthy: true, Ephemer: true,
			Metadata: map[string]string{"regkit.id": "10.2.0.2:9001", "regkit.weight": "100"}},
		{IP: "10.2.0.3", Port: 9002, Cluster: "DEFAULT", Weight: 2, Enabled: true, Healthy: true, Ephemer: persistentListedEphemeral,
			Metadata: map[string]string{"regkit.id": "10.2.0.3:9002", "regkit.weight": "200"}},
	}
}

// sameOwned reports how got, the instances a Nacos client listed, differs from
// want. regkit.owner marks which connection owns an ID (one owner per ID): a
// token of its own, different per run, present on every instance; it is checked
// for and then left out of the comparison. got is sorted in place.
func sameOwned(got, want []sdkInstance) error {
	for _, g := range got {
		if g.Metadata["regkit.owner"] == "" {
			return fmt.Errorf("%s:%d has no regkit.owner: %+v", g.IP, g.Port, g.Metadata)
		}
		delete(g.Metadata, "regkit.owner")
	}
	sortSDK(got)
	if !equalSDK(got, want) {
		return fmt.Errorf("got %+v, want %+v", got, want)
	}
	return nil
}

// A nacos-sdk-go Subscribe callback is notified of regkit's register and
// deregister, by the server's gRPC push (in DEFAULT_GROUP: see sdkClient).
func TestSDKSubscriberSeesRegkit(t *testing.T) {
	const group = "DEFAULT_GROUP"
	pl := testenv.StartPolaris(t)
	sdk := sdkClient(t, pl.NacosAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	c := open(t, pl.NacosAddr(), "group="+group)

	var mu sync.Mutex
	var last []model.Instance
	calls := 0
	sub := &vo.SubscribeParam{ServiceName: "pay", GroupName: group,
		SubscribeCallback: func(services []model.Instance, err error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			last = slices.Clone(services)
		}}
	if err := sdk.Subscribe(sub); err != nil {
		t.Fatalf("nacos-sdk-go subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sdk.Unsubscribe(sub) })
	seen := func(want ...string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			var got []string
			for _, in := range last {
				if in.Enable && in.Healthy {
					got = append(got, fmt.Sprintf("%s:%d@%s", in.Ip, in.Port, in.ClusterName))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("after %d callbacks the subscriber has %v, want %v", calls, got, want)
			}
			return nil
		}
	}

	r1, err := c.Register(ctx, registry.Instance{Service: "pay", Host: "10.3.0.1", Port: 7000, Zone: "eu-3"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told of regkit's first instance", seen("10.3.0.1:7000@eu-3"))
	r2, err := c.Register(ctx, registry.Instance{Service: "pay", Host: "10.3.0.2", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told of regkit's second instance", seen("10.3.0.1:7000@eu-3", "10.3.0.2:7000@DEFAULT"))
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told of regkit's deregistration", seen("10.3.0.2:7000@DEFAULT"))
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told the service is empty", seen())
}
