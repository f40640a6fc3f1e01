package consul_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/consul"
	"github.com/regkit/regkit/internal/reliability"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	reliability.ChildMain() // in the child process of the client process kill scenario
	goleak.VerifyTestMain(m)
}

// server is one dev agent with a fault proxy in front and an admin client dialling
// the agent directly.
type server struct {
	srv   *testenv.Consul
	proxy *testenv.Proxy
	admin *api.Client
	tr    *http.Transport // admin's
}

// leakOpts ignore what the tests' servers and fault proxies run (tests running in
// parallel start theirs at any time), such as the goroutine waiting for a restarted
// agent process.
func (s *server) leakOpts(extra ...goleak.Option) []goleak.Option {
	s.tr.CloseIdleConnections()
	const te = "github.com/regkit/regkit/internal/testenv."
	return append([]goleak.Option{
		goleak.IgnoreAnyFunction(te + "startProc.func1"),
		goleak.IgnoreAnyFunction(te + "(*Proxy).accept"),
		goleak.IgnoreAnyFunction(te + "(*Proxy).accept.func1"),
		goleak.IgnoreAnyFunction(te + "(*Proxy).accept.func1.1"),
		goleak.IgnoreAnyFunction(te + "(*Proxy).accept.func1.2"),
	}, extra...)
}

func startServer(t testing.TB, opts ...testenv.ConsulOption) *server {
	srv := testenv.StartConsul(t, opts...)
	proxy := testenv.NewProxy(t, srv.Addr())
	tr := &http.Transport{DisableKeepAlives: true} // no idle goroutines to confuse leak checks
	t.Cleanup(tr.CloseIdleConnections)
	admin, err := api.NewClient(&api.Config{Address: srv.Addr(), Token: srv.Token(), Transport: tr,
		HttpClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Token() != "" {
		// With ACLs the agent syncs deregistrations to the catalog with its agent
		// token, as Consul's docs require of every agent; without one they are
		// "blocked by ACLs" and deregistered services linger in the catalog.
		if _, err := admin.Agent().UpdateAgentACLToken(srv.Token(), nil); err != nil {
			t.Fatal(err)
		}
	}
	return &server{srv: srv, proxy: proxy, admin: admin, tr: tr}
}

// url is the URL of a client of namespace ns dialling through the proxy, with the
// tests' defaults (check_ttl=4s, wait=10s, timeout=10s); extra's parameters
// ("k=v&k2=v2") replace a default of the same name, since a URL that repeats a
// parameter is refused.
func (s *server) url(ns, extra string) string {
	q := url.Values{"check_ttl": {"4s"}, "wait": {"10s"}, "timeout": {"10s"}}
	if extra != "" {
		x, err := url.ParseQuery(extra)
		if err != nil {
			panic("consul test: bad extra query " + extra)
		}
		for k, v := range x {
			q[k] = v
		}
	}
	return "consul://" + s.proxy.Addr() + "/" + ns + "?" + q.Encode()
}

func (s *server) open(t testing.TB, ns, extra string, opts ...registry.Option) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]registry.Option{registry.WithRetryBackoff(50*time.Millisecond, time.Second),
		registry.WithRequestTimeout(10 * time.Second)}, opts...)
	c, err := registry.Open(ctx, s.url(ns, extra), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// forget makes the agent forget every regkit registration and destroys every
// session: what an agent that lost its state or an outage longer than the TTLs does.
func (s *server) forget(t testing.TB) {
	t.Helper()
	svcs, err := s.admin.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for id, svc := range svcs {
		if slices.Contains(svc.Tags, "regkit") {
			if err := s.admin.Agent().ServiceDeregister(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	sessions, _, err := s.admin.Session().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, se := range sessions {
		if _, err := s.admin.Session().Destroy(se.ID, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *server) harness() registrytest.Harness {
	return registrytest.Harness{
		Name: "consul",
		UnreachableURL: func(t testing.TB) string {
			return "consul://" + testenv.ClosedAddr(t) + "?timeout=2s"
		},
		NewClient: func(t testing.TB, ns string) *registry.Client { return s.open(t, ns, "") },
		NewLazyClient: func(t testing.TB, ns string) *registry.Client {
			return s.open(t, ns, "", registry.WithLazyConnect())
		},
		ExpireSession:  func(t testing.TB, c *registry.Client) { s.forget(t) },
		HidesUnhealthy: true, // passing_only, Consul's ?passing
		Restart:        func(t testing.TB) { s.srv.Restart(t) },
		Cut: func(t testing.TB) func() {
			s.proxy.Cut()
			return s.proxy.Heal
		},
		Blackhole: func(t testing.TB) func() {
			s.proxy.Blackhole()
			return s.proxy.Heal
		},
		Timeout:      30 * time.Second,
		WriteForeign: s.writeForeign,
		DeleteInstance: func(t testing.TB, c *registry.Client, service, id string) {
			if err := s.admin.Agent().ServiceDeregister(conn(t, c).ServiceID(service, id)); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// writeForeign registers, on the agent and under the Consul name of service in c's
// namespace, services that are not valid instances: one without address and port,
// regkit-tagged ones whose ID or meta contradict each other (one carrying id in its
// meta under another service ID), and one whose service ID is not "<name>@<id>".
func (s *server) writeForeign(t testing.TB, c *registry.Client, service, id string) {
	t.Helper()
	conn := c.Conn().(*consul.Conn)
	name := conn.ServiceName(service)
	for _, reg := range []*api.AgentServiceRegistration{
		{ID: name + "-no-address", Name: name},
		{ID: conn.ServiceID(service, "shadow"), Name: name, Address: "10.9.9.9", Port: 9999,
			Tags: []string{"regkit"}, Meta: map[string]string{"regkit-id": id}},
		{ID: "elsewhere@" + id, Name: name, Address: "10.9.9.9", Port: 9998,
			Tags: []string{"regkit"}, Meta: map[string]string{"regkit-id": id}},
		{ID: conn.ServiceID(service, "no-meta"), Name: name, Address: "10.9.9.9", Port: 9997, Tags: []string{"regkit"}},
		{ID: conn.ServiceID(service, "bad-meta-tag"), Name: name, Address: "10.9.9.9", Port: 9996,
			Tags: []string{"regkit", "regkit-meta={not json"}, Meta: map[string]string{"regkit-id": "bad-meta-tag"}},
	} {
		if err := s.admin.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.admin.Agent().ServiceDeregister(reg.ID) })
	}
}

func TestRegistryConformance(t *testing.T) { registrytest.RunRegistry(t, startServer(t).harness()) }

// The store suite's restart case wants the data to survive, as it does on a real
// Consul server; a dev agent loses it, so the store runs on a persistent server.
func TestStoreConformance(t *testing.T) {
	registrytest.RunStore(t, startServer(t, testenv.WithConsulPersistent()).harness())
}

// agentView reads the service's passing instances straight from the agent.
func (s *server) agentView(t testing.TB, name string) []string {
	t.Helper()
	entries, _, err := s.admin.Health().Service(name, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.Meta["regkit-id"])
	}
	slices.Sort(ids)
	return ids
}

func ids(list []registry.Instance) []string {
	out := make([]string, len(list))
	for i, in := range list {
		out[i] = in.ID
	}
	return out
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func conn(t testing.TB, c *registry.Client) *consul.Conn {
	t.Helper()
	cc, ok := c.Conn().(*consul.Conn)
	if !ok {
		t.Fatalf("conn is %T", c.Conn())
	}
	return cc
}

func errContains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

// A registration's failing health check turns its TTL check critical: a
// passing_only=false client lists the instance with Healthy false (Consul's
// health endpoint reports it critical), and passing again once the check passes.
func TestHealthCheckFailsTheTTLCheck(t *testing.T) {
	s := startServer(t)
	ns := "health-critical"
	a, b := s.open(t, ns, ""), s.open(t, ns, "passing_only=false")
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ok atomic.Bool
	ok.Store(true)
	check := func(context.Context) error {
		if ok.Load() {
			return nil
		}
		return errors.New("down")
	}
	r, err := a.Register(ctx, registry.Instance{Service: "crit", ID: "c1", Host: "127.0.0.1", Port: 7600},
		registry.WithHealthCheck(check, 100*time.Millisecond, registry.MarkUnhealthy))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := b.Watch(ctx, "crit")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := func(healthy bool) {
		t.Helper()
		for {
			snap, err := w.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for Healthy %v: %v", healthy, err)
			}
			if len(snap.Instances) == 1 && snap.Instances[0].Healthy == healthy && len(snap.Healthy()) == map[bool]int{true: 1}[healthy] {
				return
			}
		}
	}
	want(true)
	ok.Store(false)
	want(false)
	checks, _, err := s.admin.Health().Checks(a.Conn().(*consul.Conn).ServiceName("crit"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if checks.AggregatedStatus() != "critical" {
		t.Fatalf("Consul's health endpoint says %s, want critical", checks.AggregatedStatus())
	}
	ok.Store(true)
	want(true)
}
