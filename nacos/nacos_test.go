package nacos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	"go.uber.org/goleak"
)

// The in-process test server's connection goroutines outlive single tests.
var leakOpts = []goleak.Option{
	goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
	goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leakOpts...) }

// fastParams make liveness and watches quick enough for tests.
const fastParams = "poll_interval=200ms&beat_interval=500ms&presence_check=1s&timeout=10s"

// polarisEnv is a real Polaris with a fault proxy in front of its Nacos API.
type polarisEnv struct {
	srv   *testenv.Polaris
	proxy *testenv.Proxy
	hc    *http.Client
}

func newPolaris(t *testing.T) *polarisEnv {
	srv := testenv.StartPolaris(t)
	proxy := testenv.NewProxy(t, srv.NacosAddr())
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &polarisEnv{srv: srv, proxy: proxy, hc: &http.Client{Timeout: 5 * time.Second, Transport: tr}}
}

// withParams returns the query base with the parameters of extra added, those
// already in base replaced (a URL may give a parameter only once).
func withParams(base, extra string) string {
	q, _ := url.ParseQuery(base)
	x, _ := url.ParseQuery(extra)
	for k, v := range x {
		q[k] = v
	}
	if q.Get("ephemeral") == "false" {
		q.Del("beat_interval") // persistent instances send no heartbeat: the URL may not set one
	}
	return q.Encode()
}

func openURL(t testing.TB, u string, opts ...registry.Option) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var c *registry.Client
	// Polaris may still be creating the namespace or warming its caches.
	testenv.Eventually(t, 15*time.Second, "open "+u, func() error {
		var err error
		c, err = registry.Open(ctx, u, append([]registry.Option{registry.WithRetryBackoff(50*time.Millisecond, time.Second),
			registry.WithRequestTimeout(10 * time.Second)}, opts...)...)
		return err
	})
	return c
}

func (e *polarisEnv) open(t testing.TB, ns string) *registry.Client {
	return openURL(t, "nacos://"+e.proxy.Addr()+"?namespace="+ns+"&"+fastParams)
}

// openLazy opens a client as open does, with registry.WithLazyConnect.
func (e *polarisEnv) openLazy(t testing.TB, ns string) *registry.Client {
	return openURL(t, "nacos://"+e.proxy.Addr()+"?namespace="+ns+"&"+fastParams, registry.WithLazyConnect())
}

// raw calls the server's Nacos API directly (not through the proxy).
func (e *polarisEnv) raw(t testing.TB, method, path string, q url.Values) []byte {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.srv.NacosAddr()+"/nacos"+path+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

// dropAll deletes every instance of namespace ns straight on the server, as an
// expiry would. Polaris lists from caches refreshed about every second, so it
// retries until it has found and deleted at least one.
func (e *polarisEnv) dropAll(t testing.TB, ns string) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, "dropAll("+ns+") finds an instance", func() error {
		if e.dropOnce(t, ns) == 0 {
			return fmt.Errorf("no instance on the server")
		}
		return nil
	})
}

func (e *polarisEnv) dropOnce(t testing.TB, ns string) int {
	t.Helper()
	var svcs struct {
		Doms []string `json:"doms"`
	}
	b := e.raw(t, http.MethodGet, "/v1/ns/service/list", url.Values{"namespaceId": {ns}, "pageNo": {"1"}, "pageSize": {"1000"}})
	if err := json.Unmarshal(b, &svcs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range svcs.Doms {
		var l struct {
			Hosts []struct {
				IP          string `json:"ip"`
				Port        int    `json:"port"`
				ClusterName string `json:"clusterName"`
			} `json:"hosts"`
		}
		svc := nacos.DefaultGroup + "@@" + s
		b := e.raw(t, http.MethodGet, "/v1/ns/instance/list", url.Values{"namespaceId": {ns}, "serviceName": {svc}})
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatal(err)
		}
		for _, h := range l.Hosts {
			e.raw(t, http.MethodDelete, "/v1/ns/instance", url.Values{"namespaceId": {ns}, "serviceName": {svc},
				"ip": {h.IP}, "port": {fmt.Sprint(h.Port)}, "clusterName": {h.ClusterName}, "ephemeral": {"true"}})
			n++
		}
	}
	return n
}

func nsOf(c *registry.Client) string { return c.Conn().(*nacos.Conn).Namespace() }

// deleteInstance deletes instance id of service in c's namespace with the Nacos
// API of the server at base ("http://host:port"), as an operator would: its
// ip:port and cluster are read through c.
func deleteInstance(t testing.TB, base string, c *registry.Client, service, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Conn().List(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range l.Instances {
		if in.ID != id {
			continue
		}
		cluster := in.Zone
		if cluster == "" {
			cluster = nacos.DefaultCluster
		}
		conn := c.Conn().(*nacos.Conn)
		q := url.Values{"namespaceId": {conn.Namespace()}, "serviceName": {conn.Group() + "@@" + service},
			"ip": {in.Host}, "port": {fmt.Sprint(in.Port)}, "clusterName": {cluster}, "ephemeral": {"true"}}
		path := "/nacos/v1/ns/instance"
		if conn.API() == nacos.APIV3 {
			path = "/nacos/v3/client/ns/instance"
			q.Set("serviceName", service)
			q.Set("groupName", conn.Group())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, base+path+"?"+q.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DeleteInstance %s/%s: %d %s", service, id, resp.StatusCode, b)
		}
		return
	}
	t.Fatalf("DeleteInstance: no instance %s of %s listed", id, service)
}

// writeForeign registers hosts under service straight on Polaris that are not
// valid instances: an ID in regkit.id the registry refuses ("a/b", ".."), and,
// where Polaris accepts them, a cluster name and an ip the registry refuses.
func (e *polarisEnv) writeForeign(t testing.TB, c *registry.Client, service, id string) {
	t.Helper()
	conn := c.Conn().(*nacos.Conn)
	for _, f := range []struct {
		ip, cluster, rid string
		port             int
		must             bool
	}{
		{"10.9.9.9", nacos.DefaultCluster, "a/b", 9998, true},
		{"10.9.9.9", nacos.DefaultCluster, "..", 9997, true},
		{"10.9.9.9", "bad cluster", "", 9996, false},
		{"bad host/x", nacos.DefaultCluster, "", 9995, false},
	} {
		md := "{}"
		if f.rid != "" {
			b, _ := json.Marshal(map[string]string{nacos.MetaID: f.rid})
			md = string(b)
		}
		q := url.Values{"namespaceId": {conn.Namespace()}, "serviceName": {conn.Group() + "@@" + service},
			"ip": {f.ip}, "port": {fmt.Sprint(f.port)}, "clusterName": {f.cluster}, "weight": {"1"},
			"healthy": {"true"}, "enabled": {"true"}, "ephemeral": {"true"}, "metadata": {md}}
		req, err := http.NewRequest(http.MethodPost, "http://"+e.srv.NacosAddr()+"/nacos/v1/ns/instance", strings.NewReader(q.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := e.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
		case f.must:
			t.Fatalf("writeForeign %s:%d: %d %s", f.ip, f.port, resp.StatusCode, b)
		default:
			t.Logf("writeForeign: Polaris refuses %s:%d#%s: %d %s", f.ip, f.port, f.cluster, resp.StatusCode, b)
		}
	}
}

func (e *polarisEnv) harness() registrytest.Harness {
	return registrytest.Harness{
		Name: "nacos/polaris",
		UnreachableURL: func(t testing.TB) string {
			return "nacos://" + testenv.ClosedAddr(t) + "?timeout=2s"
		},
		NewClient:     e.open,
		NewLazyClient: e.openLazy,
		ExpireSession: func(t testing.TB, c *registry.Client) { e.dropAll(t, nsOf(c)) },
		Restart:       func(t testing.TB) { e.srv.Restart(t) },
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
			deleteInstance(t, "http://"+e.srv.NacosAddr(), c, service, id)
		},
	}
}

// TestPolaris runs everything that needs Polaris against one server (each case in
// namespaces of its own): the conformance suites, then the fault and layout tests.
func TestPolaris(t *testing.T) {
	e := newPolaris(t)
	t.Run("RegistryConformance", func(t *testing.T) { registrytest.RunRegistry(t, e.harness()) })
	t.Run("StoreConformance", func(t *testing.T) { registrytest.RunStore(t, e.harness()) })
	t.Run("Outage", func(t *testing.T) { polarisOutage(t, e) })
	t.Run("DeletedInstanceComesBack", func(t *testing.T) { polarisDeletedInstanceComesBack(t, e) })
	t.Run("DataLayout", func(t *testing.T) { polarisDataLayout(t, e) })
	t.Run("AddressTaken", func(t *testing.T) { addressTaken(t, e.open, false) })
	t.Run("Login", func(t *testing.T) { polarisLogin(t, e) })
	t.Run("TLS", func(t *testing.T) { polarisTLS(t, e) })
	t.Run("Config", func(t *testing.T) { polarisConfig(t, e) })
}

// fakeEnv is the in-repo test server with a fault proxy in front of it.
type fakeEnv struct {
	srv   *nacostest.Server
	proxy *testenv.Proxy
	extra string // more URL parameters
}

func newFake(t *testing.T, extra string, opts ...nacostest.Option) *fakeEnv {
	srv := nacostest.Start(t, append([]nacostest.Option{nacostest.WithCacheMillis(200)}, opts...)...)
	return &fakeEnv{srv: srv, proxy: testenv.NewProxy(t, srv.Addr()), extra: extra}
}

func (e *fakeEnv) open(t testing.TB, ns string) *registry.Client {
	return openURL(t, "nacos://"+e.proxy.Addr()+"?"+withParams("namespace="+ns+"&"+fastParams, e.extra))
}

// openLazy opens a client as open does, with registry.WithLazyConnect.
func (e *fakeEnv) openLazy(t testing.TB, ns string) *registry.Client {
	return openURL(t, "nacos://"+e.proxy.Addr()+"?"+withParams("namespace="+ns+"&"+fastParams, e.extra),
		registry.WithLazyConnect())
}

func (e *fakeEnv) harness(name string) registrytest.Harness {
	return registrytest.Harness{
		Name:          name,
		NewClient:     e.open,
		NewLazyClient: e.openLazy,
		UnreachableURL: func(t testing.TB) string {
			return "nacos://" + testenv.ClosedAddr(t) + "?timeout=2s"
		},
		ExpireSession: func(t testing.TB, c *registry.Client) {
			if e.srv.DropNamespace(nsOf(c)) == 0 {
				t.Fatalf("ExpireSession: no instance in namespace %s", nsOf(c))
			}
		},
		Restart: func(t testing.TB) { e.srv.Restart(t) },
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
			deleteInstance(t, "http://"+e.srv.Addr(), c, service, id)
		},
	}
}

// writeForeign puts hosts under service that are not valid instances: no ip, port
// 0, an ID in regkit.id the registry refuses, a cluster name it refuses. (A Nacos
// instance is keyed by ip, port and cluster; a foreign host carrying a live ID in
// regkit.id at another address cannot be told from a second owner of the ID.)
func (e *fakeEnv) writeForeign(t testing.TB, c *registry.Client, service, id string) {
	ns := nsOf(c)
	for _, in := range []nacostest.Instance{
		{IP: "", Port: 9999},
		{IP: "10.9.9.9", Port: 0},
		{IP: "10.9.9.9", Port: 9998, Metadata: map[string]string{nacos.MetaID: "a/b"}},
		{IP: "10.9.9.9", Port: 9997, Metadata: map[string]string{nacos.MetaID: ".."}},
		{IP: "10.9.9.9", Port: 9996, Cluster: "bad cluster"},
		{IP: "bad host/x", Port: 9995},
	} {
		in.Namespace, in.Service, in.Weight, in.Healthy, in.Enabled, in.Ephemeral = ns, service, 1, true, true, false
		e.srv.AddInstance(in)
	}
}

// The conformance suite against the test server in each version mode; presence
// checks are off, so re-registration must come from 20404/21003.
func TestRegistryConformanceTestServer(t *testing.T) {
	for _, m := range []nacostest.Mode{nacostest.Mode1x, nacostest.Mode30, nacostest.Mode32} {
		t.Run(string(m), func(t *testing.T) {
			registrytest.RunRegistry(t, newFake(t, "presence_check=0", nacostest.WithMode(m)).harness("nacos/test-"+string(m)))
		})
	}
}

func TestStoreConformanceTestServer(t *testing.T) {
	registrytest.RunStore(t, newFake(t, "").harness("nacos/test"))
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := nacostest.Start(t)
	for _, tc := range []struct{ url, field string }{
		{"nacos://" + srv.Addr() + "?bogus=1", "url"},
		{"nacos://" + srv.Addr() + "?api=v2", "api"},
		{"nacos://" + srv.Addr() + "?poll_interval=abc", "poll_interval"},
		{"nacos://" + srv.Addr() + "?group=a@@b", "group"},
		{"nacos://" + srv.Addr() + "?ephemeral=maybe", "ephemeral"},
		// The cluster reads back as the instances' Zone: one that is not a
		// valid Zone would hide them from every reader.
		{"nacos://" + srv.Addr() + "?cluster=my@cluster", "cluster"},
		{"nacos://" + srv.Addr() + "?cluster=a%20b", "cluster"},
	} {
		_, err := registry.Open(ctx, tc.url)
		var fe *registry.FieldError
		if err == nil || !strings.Contains(err.Error(), tc.field) || !errors.As(err, &fe) {
			t.Errorf("Open(%s) = %v, want a FieldError naming %s", tc.url, err, tc.field)
		}
	}
}
