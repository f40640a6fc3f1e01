package nacos_test

// nacos-sdk-go against the in-repo Nacos server (nacos/nacostest), which serves
// Nacos's HTTP client API only, no gRPC:
//
//   - nacos-sdk-go v1.0.8 (github.com/nacos-group/nacos-sdk-go, the official Go
//     client's HTTP line, the one v1 the module proxy serves) is a full peer there:
//     ephemeral instances with its beat reactor, persistent ones, queries, and
//     subscriptions by its polling host reactor, all over the v1 HTTP API.
//   - nacos-sdk-go v2.3.2 speaks HTTP only for persistent instances (register and
//     deregister); its ephemeral instances, queries and subscriptions are gRPC
//     (Nacos 2's API on the HTTP port + 1000), which nacostest does not serve, so
//     they are tested against Polaris only (sdk_test.go).

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	sdk1 "github.com/nacos-group/nacos-sdk-go/clients"
	naming1 "github.com/nacos-group/nacos-sdk-go/clients/naming_client"
	constant1 "github.com/nacos-group/nacos-sdk-go/common/constant"
	model1 "github.com/nacos-group/nacos-sdk-go/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	vo1 "github.com/nacos-group/nacos-sdk-go/vo"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
)

// sdk1Dir holds nacos-sdk-go v1's logs and service cache files. Its clients have
// no Close: their beat and update goroutines live until the test binary exits and
// may still write there after a test's end, so the directory is one per binary,
// removed by TestMain.
var sdk1Dir = sync.OnceValue(func() string {
	d, err := os.MkdirTemp("", "regkit-nacos-sdk-v1-")
	if err != nil {
		panic(err)
	}
	return d
})

func TestMain(m *testing.M) {
	code := m.Run()
	_ = os.RemoveAll(sdk1Dir())
	os.Exit(code)
}

// startNacostest starts the in-repo Nacos server (v1 API) with a short
// cacheMillis, so that nacos-sdk-go v1's host reactor re-queries every second
// (its loop's period), and a 1s clientBeatInterval.
func startNacostest(t *testing.T) *nacostest.Server {
	t.Helper()
	return nacostest.Start(t, nacostest.WithCacheMillis(200), nacostest.WithBeatInterval(time.Second))
}

// sdk1Client is a nacos-sdk-go v1.0.8 naming client of the Nacos HTTP API at addr.
func sdk1Client(t *testing.T, addr string) naming1.INamingClient {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.ParseUint(p, 10, 64)
	cc := constant1.ClientConfig{TimeoutMs: 5000, BeatInterval: 1000, NotLoadCacheAtStart: true, UpdateCacheWhenEmpty: true,
		LogDir: sdk1Dir(), CacheDir: sdk1Dir(), LogLevel: "error"}
	cli, err := sdk1.NewNamingClient(vo1.NacosClientParam{ClientConfig: &cc,
		ServerConfigs: []constant1.ServerConfig{{IpAddr: host, Port: port, ContextPath: "/nacos"}}})
	if err != nil {
		t.Fatalf("nacos-sdk-go v1: %v", err)
	}
	return cli
}

func fromSDK1(in model1.Instance) sdkInstance {
	return sdkInstance{IP: in.Ip, Port: in.Port, Cluster: in.ClusterName, Weight: in.Weight, Enabled: in.Enable,
		Healthy: in.Healthy, Ephemer: in.Ephemeral, Metadata: userMeta(in.Metadata)}
}

// nacos-sdk-go v1 registers on nacostest (ephemeral, kept by its beats, and
// persistent; weight, cluster, group, metadata), regkit reads the same fields; the
// SDK's deregistration reaches regkit.
func TestSDK1RegistersRegkitReadsNacostest(t *testing.T) {
	srv := startNacostest(t)
	sdk := sdk1Client(t, srv.Addr())
	c := open(t, srv.Addr(), "group=orders-group")

	eph := vo1.RegisterInstanceParam{Ip: "10.1.0.1", Port: 8080, Weight: 3, Enable: true, Healthy: true,
		ClusterName: "eu-1", ServiceName: "orders", GroupName: "orders-group", Ephemeral: true,
		Metadata: map[string]string{"version": "v1", "protocol": "grpc"}}
	if ok, err := sdk.RegisterInstance(eph); err != nil || !ok {
		t.Fatalf("nacos-sdk-go v1 register ephemeral: %v, %v", ok, err)
	}
	persistent := vo1.RegisterInstanceParam{Ip: "10.1.0.2", Port: 8081, Weight: 1, Enable: true, Healthy: true,
		ServiceName: "orders", GroupName: "orders-group", Ephemeral: false}
	if ok, err := sdk.RegisterInstance(persistent); err != nil || !ok {
		t.Fatalf("nacos-sdk-go v1 register persistent: %v, %v", ok, err)
	}
	t.Cleanup(func() {
		_, _ = sdk.DeregisterInstance(vo1.DeregisterInstanceParam{Ip: "10.1.0.1", Port: 8080, Cluster: "eu-1",
			ServiceName: "orders", GroupName: "orders-group", Ephemeral: true})
	})
	ephInst := registry.Instance{ID: "10.1.0.1:8080", Service: "orders", Host: "10.1.0.1", Port: 8080,
		Weight: 300, Zone: "eu-1", Healthy: true, Metadata: map[string]string{"version": "v1", "protocol": "grpc"}}
	persInst := registry.Instance{ID: "10.1.0.2:8081", Service: "orders", Host: "10.1.0.2", Port: 8081,
		Weight: 100, Healthy: true}
	waitInstances(t, c, "orders", []registry.Instance{ephInst, persInst})
	// What the server holds: the SDK's instance is ephemeral, kept by its beats.
	for _, in := range srv.Instances("", "orders-group", "orders") {
		if want := in.IP == "10.1.0.1"; in.Ephemeral != want {
			t.Errorf("server holds %s:%d with ephemeral %v, want %v", in.IP, in.Port, in.Ephemeral, want)
		}
	}
	testenv.Eventually(t, wait, "the SDK's beat reactor beats", func() error {
		if n := srv.Stats().Beats; n == 0 {
			return fmt.Errorf("no beat yet")
		}
		return nil
	})

	// Another group is another service for regkit.
	other := open(t, srv.Addr(), "group=other-group")
	waitInstances(t, other, "orders", nil)

	if ok, err := sdk.DeregisterInstance(vo1.DeregisterInstanceParam{Ip: "10.1.0.2", Port: 8081,
		ServiceName: "orders", GroupName: "orders-group", Ephemeral: false}); err != nil || !ok {
		t.Fatalf("nacos-sdk-go v1 deregister: %v, %v", ok, err)
	}
	waitInstances(t, c, "orders", []registry.Instance{ephInst})
}

// regkit registers on nacostest (ephemeral and persistent connections; weight,
// zone, group, metadata), nacos-sdk-go v1 reads the same fields with
// SelectAllInstances.
func TestRegkitRegistersSDK1ReadsNacostest(t *testing.T) {
	srv := startNacostest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	registerBilling(t, ctx, srv.Addr())
	want := billingWant(false)
	sdk := sdk1Client(t, srv.Addr())
	testenv.Eventually(t, wait, "nacos-sdk-go v1 lists regkit's instances", func() error {
		list, err := sdk.SelectAllInstances(vo1.SelectAllInstancesParam{ServiceName: "billing", GroupName: "billing-group"})
		if err != nil {
			return err
		}
		got := make([]sdkInstance, 0, len(list))
		for _, in := range list {
			got = append(got, fromSDK1(in))
		}
		return sameOwned(got, want)
	})
}

// A nacos-sdk-go v1 Subscribe callback on nacostest is told of regkit's
// registers and deregisters in a group of its own (its host reactor re-queries
// the service every cacheMillis and calls back on a change).
func TestSDK1SubscriberSeesRegkitNacostest(t *testing.T) {
	const group = "pay-group"
	srv := startNacostest(t)
	sdk := sdk1Client(t, srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	c := open(t, srv.Addr(), "group="+group)

	var mu sync.Mutex
	var last []model1.SubscribeService
	calls := 0
	sub := &vo1.SubscribeParam{ServiceName: "pay", GroupName: group,
		SubscribeCallback: func(services []model1.SubscribeService, err error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			last = slices.Clone(services)
		}}
	if err := sdk.Subscribe(sub); err != nil {
		t.Fatalf("nacos-sdk-go v1 subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sdk.Unsubscribe(sub) })
	seen := func(want ...string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			var got []string
			for _, in := range last {
				if in.Enable {
					got = append(got, fmt.Sprintf("%s:%d@%s w=%g v=%s", in.Ip, in.Port, in.ClusterName, in.Weight, in.Metadata["version"]))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("after %d callbacks the subscriber has %v, want %v", calls, got, want)
			}
			return nil
		}
	}

	r1, err := c.Register(ctx, registry.Instance{Service: "pay", Host: "10.3.0.1", Port: 7000, Zone: "eu-3", Weight: 500,
		Metadata: map[string]string{"version": "v5"}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told of regkit's first instance", seen("10.3.0.1:7000@eu-3 w=5 v=v5"))
	r2, err := c.Register(ctx, registry.Instance{Service: "pay", Host: "10.3.0.2", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told of regkit's second instance",
		seen("10.3.0.1:7000@eu-3 w=5 v=v5", "10.3.0.2:7000@DEFAULT w=1 v="))
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told of regkit's deregistration", seen("10.3.0.2:7000@DEFAULT w=1 v="))
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the subscriber is told the service is empty", seen())
}

// nacos-sdk-go v2 on nacostest: its persistent instances go over HTTP (v1 API),
// so they reach regkit with weight, cluster, group and metadata, and its
// deregistration too. (Its ephemeral instances, queries and subscriptions are
// gRPC, which nacostest does not serve: see the file comment.)
func TestSDKPersistentRegkitReadsNacostest(t *testing.T) {
	srv := startNacostest(t)
	sdk := sdkClient(t, srv.Addr())
	c := open(t, srv.Addr(), "group=orders-group")
	pers := vo.RegisterInstanceParam{Ip: "10.4.0.1", Port: 8080, Weight: 4, Enable: true, Healthy: true,
		ClusterName: "eu-4", ServiceName: "orders", GroupName: "orders-group", Ephemeral: false,
		Metadata: map[string]string{"version": "v4"}}
	if ok, err := sdk.RegisterInstance(pers); err != nil || !ok {
		t.Fatalf("nacos-sdk-go register persistent: %v, %v", ok, err)
	}
	waitInstances(t, c, "orders", []registry.Instance{{ID: "10.4.0.1:8080", Service: "orders", Host: "10.4.0.1", Port: 8080,
		Weight: 400, Zone: "eu-4", Healthy: true, Metadata: map[string]string{"version": "v4"}}})
	if in := srv.Instances("", "orders-group", "orders"); len(in) != 1 || in[0].Ephemeral {
		t.Errorf("server holds %+v, want one persistent instance", in)
	}
	if ok, err := sdk.DeregisterInstance(vo.DeregisterInstanceParam{Ip: "10.4.0.1", Port: 8080, Cluster: "eu-4",
		ServiceName: "orders", GroupName: "orders-group", Ephemeral: false}); err != nil || !ok {
		t.Fatalf("nacos-sdk-go deregister persistent: %v, %v", ok, err)
	}
	waitInstances(t, c, "orders", nil)
}
