package consul_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/consul"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// TestInstanceMapping checks how Instance fields land in Consul (tags, meta,
// weights) and come back unchanged, including metadata Consul cannot hold as meta,
// and that instances registered by other Consul clients are discovered too.
func TestInstanceMapping(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, time.Minute)
	c := s.open(t, "map", "", consul.WithTags("blue"))
	defer c.Close()
	long := strings.Repeat("x", 600)
	in := registry.Instance{Service: "svc", ID: "odd id #1?", Host: "127.0.0.1", Port: 7600, Weight: 7, Zone: "z1",
		Metadata: map[string]string{"version": "v1", "dubbo.version": "2.7", "zone": "user-zone", "consul-x": "y",
			"regkit-id": "spoof", "long": long, "with space": "v"}}
	r, err := c.Register(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	want := r.Instance()
	testenv.Eventually(t, 10*time.Second, "instance read back equal", func() error {
		got, err := c.Instances(ctx, "svc")
		if err != nil {
			return err
		}
		if len(got) != 1 || !got[0].Equal(want) {
			return fmt.Errorf("got %+v, want %+v", got, want)
		}
		return nil
	})
	svc, _, err := s.admin.Agent().Service("map/svc@odd id #1?", nil)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Service != "map/svc" || svc.Weights.Passing != 7 || svc.Meta["zone"] != "z1" || svc.Meta["version"] != "v1" ||
		svc.Meta["regkit-id"] != "odd id #1?" || !slices.Contains(svc.Tags, "blue") || !slices.Contains(svc.Tags, "regkit") {
		t.Errorf("agent service = %+v", svc)
	}
	for _, k := range []string{"dubbo.version", "consul-x", "long", "with space"} {
		if _, ok := svc.Meta[k]; ok {
			t.Errorf("meta %q should travel in the regkit-meta tag", k)
		}
	}

	// A service registered by another client, without any regkit marker.
	if err := s.admin.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "foreign-1", Name: "map/svc",
		Address: "10.0.0.9", Port: 80, Meta: map[string]string{"zone": "z9", "k": "v"}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "foreign instance discovered", func() error {
		got, err := c.Conn().List(ctx, "svc")
		if err != nil {
			return err
		}
		i := slices.IndexFunc(got.Instances, func(in registry.Instance) bool { return in.ID == "foreign-1" })
		if i < 0 {
			return fmt.Errorf("got %v", ids(got.Instances))
		}
		f := got.Instances[i]
		if f.Host != "10.0.0.9" || f.Port != 80 || f.Zone != "z9" || f.Metadata["k"] != "v" || f.Weight != 1 || !f.Healthy {
			return fmt.Errorf("foreign = %+v", f)
		}
		if got.Revision == 0 || got.NoLeader {
			return fmt.Errorf("listing revision %d noLeader %v", got.Revision, got.NoLeader)
		}
		return nil
	})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestHealthFiltering registers with a caller HTTP check: passing_only (the default)
// hides the instance while the check fails; passing_only=false shows it unhealthy.
func TestHealthFiltering(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, time.Minute)
	var failing atomic.Bool
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer hs.Close()
	host, portStr, _ := strings.Cut(strings.TrimPrefix(hs.URL, "http://"), ":")
	port, _ := strconv.Atoi(portStr)

	a := s.open(t, "hf", "", consul.WithChecks(consul.HTTPCheck("/health", time.Second)))
	defer a.Close()
	all := s.open(t, "hf", "passing_only=false")
	defer all.Close()
	passing := s.open(t, "hf", "")
	defer passing.Close()
	w, err := passing.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := a.Register(ctx, registry.Instance{Service: "web", ID: "w1", Host: host, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	list := func(c *registry.Client) ([]registry.Instance, error) {
		l, err := c.Conn().List(ctx, "web")
		return l.Instances, err
	}
	nextUntil(t, w, 30*time.Second, "passing once the HTTP check passed", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 || !s.Instances[0].Healthy {
			return fmt.Errorf("got %+v", s.Instances)
		}
		return nil
	})
	failing.Store(true)
	nextUntil(t, w, 30*time.Second, "hidden while the HTTP check fails", func(s registry.Snapshot) error {
		if len(s.Instances) != 0 {
			return fmt.Errorf("got %+v", s.Instances)
		}
		return nil
	})
	got, err := list(all)
	if err != nil || len(got) != 1 || got[0].Healthy {
		t.Errorf("passing_only=false: %+v, %v; want w1 unhealthy", got, err)
	}
	failing.Store(false)
	nextUntil(t, w, 30*time.Second, "back when the check passes again", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 {
			return fmt.Errorf("got %+v", s.Instances)
		}
		return nil
	})
}

// TestURL checks the URL and driver option validation and the dc parameter.
func TestURL(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, time.Minute)
	for _, tc := range []struct {
		url   string
		opts  []registry.Option
		field string
	}{
		{"consul://" + s.proxy.Addr() + "?nope=1", nil, "url"},
		{"consul://" + s.proxy.Addr() + "/a/b", nil, "url"},
		{"consul://h1:8500,h2:8500", nil, "url"},
		{"consul://" + s.proxy.Addr() + "?check_ttl=500ms", nil, "check_ttl"},
		{"consul://" + s.proxy.Addr() + "?wait=1h", nil, "wait"},
		{"consul://" + s.proxy.Addr() + "?stale=maybe", nil, "stale"},
		{"consul://" + s.proxy.Addr(), []registry.Option{registry.DriverOption("other.WithX", 1)}, "option"},
		{"consul://" + s.proxy.Addr(), []registry.Option{consul.WithTags("regkit")}, "consul.WithTags"},
		{"consul://" + s.proxy.Addr(), []registry.Option{consul.WithNamespace("a/b")}, "consul.WithNamespace"},
		{"consul://" + s.proxy.Addr() + "/regkit", nil, "url"},
		{"consul://" + s.proxy.Addr(), []registry.Option{consul.WithNamespace("regkit")}, "consul.WithNamespace"},
	} {
		_, err := registry.Open(ctx, tc.url, tc.opts...)
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Open(%s) = %v, want a FieldError for %s", tc.url, err, tc.field)
		}
	}
	// A token given to an agent without ACLs is accepted.
	tok := s.open(t, "dc", "token=whatever")
	tok.Close()
	own := s.open(t, "dc", "dc=dc1&stale=false")
	defer own.Close()
	if _, err := own.Conn().List(ctx, "svc"); err != nil {
		t.Errorf("List in dc1: %v", err)
	}
	other := s.open(t, "dc", "dc=nowhere")
	defer other.Close()
	if _, err := other.Conn().List(ctx, "svc"); !errors.Is(err, registry.ErrUnavailable) || !errContains(err, "nowhere") {
		t.Errorf("List in an unknown dc = %v, want ErrUnavailable naming it", err)
	}
	// An agent that does not answer fails Open with ErrUnavailable.
	s.proxy.Cut()
	defer s.proxy.Heal()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := registry.Open(cctx, s.url("x", "timeout=1s")); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Open of a cut agent = %v, want ErrUnavailable", err)
	}
}

// TestDeregisterAfterAbandon: a lease abandoned (keep-alive stopped) still
// deregisters, and deregistering twice is no error.
func TestDeregisterAfterAbandon(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, time.Minute)
	c := s.open(t, "ab", "")
	defer c.Close()
	l, err := c.Conn().Put(ctx, registry.Instance{Service: "svc", ID: "a1", Host: "127.0.0.1", Port: 7700, Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	l.Abandon()
	l.Abandon()
	if !mustServices(t, s)["ab/svc@a1"] {
		t.Fatal("Abandon must not touch the agent")
	}
	if err := l.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if mustServices(t, s)["ab/svc@a1"] {
		t.Error("still registered after Deregister")
	}
	if err := l.Deregister(ctx); err != nil {
		t.Errorf("second Deregister: %v", err)
	}
}

// TestTLS reaches the agent through a TLS-terminating proxy whose certificate
// comes from a CA generated in the test: registry.WithTLS makes the client speak
// https with that configuration; plain http fails.
func TestTLS(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, time.Minute)
	p := testenv.NewTLSProxy(t, s.srv.Addr())
	pool, addr := p.CA.Pool, p.Addr()

	c, err := registry.Open(ctx, "consul://"+addr+"/tls?check_ttl=2s", registry.WithTLS(&tls.Config{RootCAs: pool}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "t1", Host: "127.0.0.1", Port: 7800})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := c.Instances(ctx, "svc")
	if err != nil || !slices.Equal(ids(got), []string{"t1"}) {
		t.Errorf("Instances over TLS = %v, %v", ids(got), err)
	}
	if _, err := registry.Open(ctx, "consul://"+addr+"/tls?timeout=2s"); !errContains(err, "HTTPS") {
		t.Errorf("plain http to a TLS endpoint = %v, want an error saying it is HTTPS", err)
	}
	if _, err := registry.Open(ctx, "consul://"+addr+"/tls?timeout=2s", registry.WithTLS(&tls.Config{})); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("TLS with an untrusted certificate = %v, want ErrUnavailable", err)
	}
}

// TestTokenNotInErrors: a URL error does not repeat the token.
func TestTokenNotInErrors(t *testing.T) {
	for _, u := range []string{"consul://h1,h2?token=s3cret", "consul://?token=s3cret", "consul://u:s3cret@h1,h2"} {
		_, err := registry.Open(context.Background(), u)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%s) = %v, want an error without the token", u, err)
		}
	}
}

// TestNamesInjective: the Consul service name and ID of (namespace, service, ID) are
// one-to-one, with and without a namespace: "<ns>/<service>" cannot be a plain
// service name ('/' is not allowed in one), so a client without a namespace never
// meets a namespaced one ("team" + "a-b" used to be the Consul service "team-a-b").
func TestNamesInjective(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, time.Minute)
	plain, team, teamA := s.open(t, "", ""), s.open(t, "team", ""), s.open(t, "team-a", "")
	defer plain.Close()
	defer team.Close()
	defer teamA.Close()
	for _, reg := range []struct {
		c   *registry.Client
		svc string
		id  string
	}{{plain, "team-a-b", "p1"}, {team, "a-b", "t1"}, {teamA, "b", "ta1"}} {
		r, err := reg.c.Register(ctx, registry.Instance{Service: reg.svc, ID: reg.id, Host: "127.0.0.1", Port: 7650})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
	}
	names := map[string]bool{}
	for _, n := range []string{plain.Conn().(*consul.Conn).ServiceName("team-a-b"),
		team.Conn().(*consul.Conn).ServiceName("a-b"), teamA.Conn().(*consul.Conn).ServiceName("b")} {
		names[n] = true
	}
	if len(names) != 3 {
		t.Fatalf("Consul names collide: %v", names)
	}
	testenv.Eventually(t, 10*time.Second, "each client sees only its own", func() error {
		for _, tc := range []struct {
			c   *registry.Client
			svc string
			id  string
		}{{plain, "team-a-b", "p1"}, {team, "a-b", "t1"}, {teamA, "b", "ta1"}} {
			got, err := tc.c.Conn().List(ctx, tc.svc)
			if err != nil {
				return err
			}
			if g := ids(got.Instances); !slices.Equal(g, []string{tc.id}) {
				return fmt.Errorf("%s lists %v, want [%s]", tc.svc, g, tc.id)
			}
		}
		return nil
	})
}
