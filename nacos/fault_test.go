package nacos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// Fault and backend-specific tests beyond the conformance suite.

const faultTimeout = 60 * time.Second

var nsSeq int

// newNS returns a namespace unique to this process.
func newNS(t *testing.T) string {
	nsSeq++
	return fmt.Sprintf("ft%d-%d", time.Now().UnixNano()%1e6, nsSeq)
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*faultTimeout)
	t.Cleanup(cancel)
	return ctx
}

func snapIDs(s registry.Snapshot) []string {
	out := make([]string, len(s.Instances))
	for i, in := range s.Instances {
		out[i] = in.ID
	}
	return out
}

// next reads w until ok accepts a snapshot.
func next(t *testing.T, w registry.Watcher, what string, ok func(registry.Snapshot) error) registry.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	last := errors.New("no snapshot")
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("%s: %v (last mismatch: %v)", what, err, last)
		}
		if last = ok(s); last == nil {
			return s
		}
	}
}

func wantIDs(ids ...string) func(registry.Snapshot) error {
	return func(s registry.Snapshot) error {
		if s.Stale || !slices.Equal(snapIDs(s), ids) {
			return fmt.Errorf("got %v stale=%v err=%v", snapIDs(s), s.Stale, s.Err)
		}
		return nil
	}
}

func inst(service, id string, port int) registry.Instance {
	return registry.Instance{Service: service, ID: id, Host: "127.0.0.1", Port: port, Zone: "z1",
		Metadata: map[string]string{"k": "v"}}
}

// polarisIDs reads the regkit IDs of a service straight from Polaris.
func (e *polarisEnv) hosts(t testing.TB, ns, service string) []map[string]any {
	var l struct {
		Hosts []map[string]any `json:"hosts"`
	}
	b := e.raw(t, http.MethodGet, "/v1/ns/instance/list", url.Values{"namespaceId": {ns},
		"serviceName": {nacos.DefaultGroup + "@@" + service}, "healthyOnly": {"false"}})
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return l.Hosts
}

func (e *polarisEnv) serverIDs(t testing.TB, ns, service string) []string {
	var out []string
	for _, h := range e.hosts(t, ns, service) {
		md, _ := h["metadata"].(map[string]any)
		id, _ := md[nacos.MetaID].(string)
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// A whole-server outage on Polaris: the watch serves the last good view marked
// stale, registrations survive, and after the server is back a change made then
// reaches the watcher, whose view equals the server's.
func polarisOutage(t *testing.T, e *polarisEnv) {
	ns := newNS(t)
	ctx := ctxFor(t)
	a, b := e.open(t, ns), e.open(t, ns)
	defer a.Close()
	defer b.Close()
	r1, err := a.Register(ctx, inst("out", "o1", 7401))
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "out")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w, "before outage", wantIDs("o1"))
	e.srv.Stop()
	stale := next(t, w, "stale during outage", func(s registry.Snapshot) error {
		if !s.Stale {
			return errors.New("not stale")
		}
		return nil
	})
	if !slices.Equal(snapIDs(stale), []string{"o1"}) || stale.Err == nil || !errors.Is(stale.Err, registry.ErrUnavailable) {
		t.Errorf("stale snapshot = %v err %v, want the last good view and ErrUnavailable", snapIDs(stale), stale.Err)
	}
	e.srv.Restart(t)
	testenv.Eventually(t, faultTimeout, "register after outage", func() error {
		_, err := a.Register(ctx, inst("out", "o2", 7402))
		return err
	})
	next(t, w, "caught up", wantIDs("o1", "o2"))
	testenv.Eventually(t, faultTimeout, "server has both", func() error {
		if got := e.serverIDs(t, ns, "out"); !slices.Equal(got, []string{"o1", "o2"}) {
			return fmt.Errorf("server %v", got)
		}
		return nil
	})
	if r1.State() != registry.Registered {
		t.Errorf("r1 state %v", r1.State())
	}
	// Deregistering everything delivers an empty list.
	if err := r1.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	next(t, w, "o1 gone", wantIDs("o2"))
}

// An instance deleted behind the client's back on Polaris comes back by itself.
// Polaris answered heartbeats for unknown instances with success (10200) when
// probed by hand, and with 20404 in this flow; the "presence" case turns
// heartbeats practically off, so only the presence check can notice.
func polarisDeletedInstanceComesBack(t *testing.T, e *polarisEnv) {
	t.Run("beats", func(t *testing.T) { polarisDeleted(t, e, "", "") })
	t.Run("presence", func(t *testing.T) { polarisDeleted(t, e, "&beat_interval=1h", "no longer listed") })
}

func polarisDeleted(t *testing.T, e *polarisEnv, extra, errText string) {
	ns := newNS(t)
	ctx := ctxFor(t)
	a := openURL(t, "nacos://"+e.proxy.Addr()+"?"+withParams("namespace="+ns+"&"+fastParams, extra))
	defer a.Close()
	r, err := a.Register(ctx, inst("del", "d1", 7501))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, faultTimeout, "listed", func() error {
		if got := e.serverIDs(t, ns, "del"); !slices.Equal(got, []string{"d1"}) {
			return fmt.Errorf("server %v", got)
		}
		return nil
	})
	changed := r.Changed()
	e.dropAll(t, ns)
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("deletion never noticed")
	}
	testenv.Eventually(t, faultTimeout, "back on the server", func() error {
		if got := e.serverIDs(t, ns, "del"); !slices.Equal(got, []string{"d1"}) || r.State() != registry.Registered {
			return fmt.Errorf("server %v state %v", got, r.State())
		}
		return nil
	})
	// Either this driver's check noticed, or package registry's guard (which follows
	// the service's view and wraps ErrNotFound) was faster.
	err = r.Err()
	byDriver := errors.Is(err, registry.ErrSessionLost) && strings.Contains(err.Error(), errText)
	if !byDriver && !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("registration error %v, want ErrSessionLost saying %q, or the registry guard's ErrNotFound", err, errText)
	}
}

// What other Nacos clients see on Polaris: a weight on Nacos's scale (ours/100,
// integer on Polaris), the group@@service name, the zone as cluster; and an
// instance registered by a foreign client reads back with ID host:port and its
// weight scaled up.
func polarisDataLayout(t *testing.T, e *polarisEnv) {
	ns := newNS(t)
	ctx := ctxFor(t)
	a := e.open(t, ns)
	defer a.Close()
	in := inst("lay", "l1", 7601)
	in.Weight = 300
	if _, err := a.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	testenv.Eventually(t, faultTimeout, "listed", func() error {
		hs := e.hosts(t, ns, "lay")
		if len(hs) != 1 {
			return fmt.Errorf("%d hosts", len(hs))
		}
		h = hs[0]
		return nil
	})
	md, _ := h["metadata"].(map[string]any)
	if h["weight"] != 3.0 || h["clusterName"] != "z1" || md[nacos.MetaID] != "l1" || md[nacos.MetaWeight] != "300" || md["k"] != "v" {
		t.Errorf("server view %v", h)
	}
	// A foreign instance (no regkit metadata).
	form := url.Values{"namespaceId": {ns}, "serviceName": {nacos.DefaultGroup + "@@lay"}, "ip": {"10.1.2.3"},
		"port": {"9000"}, "weight": {"2"}, "metadata": {`{"app":"java"}`}, "ephemeral": {"false"}}
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.srv.NacosAddr()+"/nacos/v1/ns/instance", stringsReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testenv.Eventually(t, faultTimeout, "foreign instance read", func() error {
		got, err := a.Conn().List(ctx, "lay")
		if err != nil {
			return err
		}
		for _, g := range got.Instances {
			if g.ID == "10.1.2.3:9000" {
				if g.Weight != 200 || g.Metadata["app"] != "java" || g.Zone != "" || len(g.Metadata) != 1 {
					return fmt.Errorf("foreign instance read as %+v", g)
				}
				return nil
			}
		}
		return fmt.Errorf("not listed: %+v", got.Instances)
	})
}

// Credentials against Polaris: its login lives at /v1/auth/login (outside the
// Nacos context path) and answers an empty token while client auth is off; the
// driver finds it and works.
func polarisLogin(t *testing.T, e *polarisEnv) {
	ctx := ctxFor(t)
	c := openURL(t, "nacos://polaris:polaris@"+e.proxy.Addr()+"?namespace="+newNS(t)+"&"+fastParams)
	defer c.Close()
	if _, err := c.Register(ctx, inst("auth", "a1", 7701)); err != nil {
		t.Fatal(err)
	}
}

// After a test-server restart (ephemeral instances gone), heartbeats get 20404 and
// the registration comes back, with presence checks off.
func TestReregisterOn20404(t *testing.T) {
	for _, m := range []nacostest.Mode{nacostest.Mode1x, nacostest.Mode32} {
		t.Run(string(m), func(t *testing.T) {
			e := newFake(t, "presence_check=0", nacostest.WithMode(m))
			ns := newNS(t)
			ctx := ctxFor(t)
			a := e.open(t, ns)
			defer a.Close()
			r, err := a.Register(ctx, inst("rr", "x1", 7801))
			if err != nil {
				t.Fatal(err)
			}
			changed := r.Changed()
			e.srv.Restart(t)
			if n := len(e.srv.Instances(ns, nacos.DefaultGroup, "rr")); n != 0 {
				t.Fatalf("%d instances after restart", n)
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatal("restart never noticed")
			}
			testenv.Eventually(t, faultTimeout, "back", func() error {
				got := e.srv.Instances(ns, nacos.DefaultGroup, "rr")
				if len(got) != 1 || got[0].Metadata[nacos.MetaID] != "x1" || r.State() != registry.Registered {
					return fmt.Errorf("server %+v state %v", got, r.State())
				}
				return nil
			})
			if !errors.Is(r.Err(), registry.ErrSessionLost) {
				t.Errorf("Err = %v, want ErrSessionLost", r.Err())
			}
		})
	}
}

// api=auto picks the API each server version serves; a forced API the server lacks
// fails at Open.
func TestAPIProbe(t *testing.T) {
	ctx := ctxFor(t)
	for _, tc := range []struct {
		mode nacostest.Mode
		want string
	}{{nacostest.Mode1x, nacos.APIV1}, {nacostest.Mode30, nacos.APIV3}, {nacostest.Mode32, nacos.APIV3}} {
		srv := nacostest.Start(t, nacostest.WithMode(tc.mode))
		c, err := registry.Open(ctx, "nacos://"+srv.Addr())
		if err != nil {
			t.Fatalf("%s: %v", tc.mode, err)
		}
		if got := c.Conn().(*nacos.Conn).API(); got != tc.want {
			t.Errorf("%s: API %s, want %s", tc.mode, got, tc.want)
		}
		c.Close()
	}
	srv := nacostest.Start(t, nacostest.WithMode(nacostest.Mode32))
	if _, err := registry.Open(ctx, "nacos://"+srv.Addr()+"?api=v1"); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("api=v1 on 3.2: %v, want ErrUnavailable", err)
	}
	c, err := registry.Open(ctx, "nacos://"+srv.Addr()+"?api=v3")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A server upgraded behind the address (1.x -> 3.2: v1 answers 404): the next
// heartbeat reports the registration lost, the API is probed again and the
// instance is registered through v3; the watch follows.
func TestServerUpgradeSwitchesAPI(t *testing.T) {
	e := newFake(t, "presence_check=0")
	ns := newNS(t)
	ctx := ctxFor(t)
	a := e.open(t, ns)
	defer a.Close()
	if got := a.Conn().(*nacos.Conn).API(); got != nacos.APIV1 {
		t.Fatalf("API %s", got)
	}
	r, err := a.Register(ctx, inst("up", "u1", 7901))
	if err != nil {
		t.Fatal(err)
	}
	w, err := a.Watch(ctx, "up")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w, "before upgrade", wantIDs("u1"))
	e.srv.SetMode(nacostest.Mode32)
	e.srv.DropNamespace(ns) // an upgrade restarts the server
	testenv.Eventually(t, faultTimeout, "re-registered through v3", func() error {
		got := e.srv.Instances(ns, nacos.DefaultGroup, "up")
		if len(got) != 1 || r.State() != registry.Registered || a.Conn().(*nacos.Conn).API() != nacos.APIV3 {
			return fmt.Errorf("server %d instances, state %v, API %s", len(got), r.State(), a.Conn().(*nacos.Conn).API())
		}
		return nil
	})
	next(t, w, "watch after upgrade", wantIDs("u1"))
}

// reachProtectionThreshold is surfaced on the snapshot, with the instances the
// server returned as healthy, and goes away when the threshold is lifted.
func TestProtectThreshold(t *testing.T) {
	e := newFake(t, "")
	ns := newNS(t)
	ctx := ctxFor(t)
	a := e.open(t, ns)
	defer a.Close()
	if _, err := a.Register(ctx, inst("pt", "good", 8001)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.srv.AddInstance(nacostest.Instance{Namespace: ns, Group: nacos.DefaultGroup, Service: "pt", IP: "10.0.0.1",
			Port: 9000 + i, Weight: 1, Healthy: false, Enabled: true})
	}
	w, err := a.Watch(ctx, "pt")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w, "unhealthy instances listed", func(s registry.Snapshot) error {
		if len(s.Instances) != 4 || len(s.Healthy()) != 1 || s.ProtectThreshold {
			return fmt.Errorf("%d instances, %d healthy, protect=%v", len(s.Instances), len(s.Healthy()), s.ProtectThreshold)
		}
		return nil
	})
	e.srv.SetProtectThreshold(ns, nacos.DefaultGroup, "pt", 0.5)
	next(t, w, "protect threshold reached", func(s registry.Snapshot) error {
		if len(s.Instances) != 4 || len(s.Healthy()) != 4 || !s.ProtectThreshold {
			return fmt.Errorf("%d instances, %d healthy, protect=%v", len(s.Instances), len(s.Healthy()), s.ProtectThreshold)
		}
		return nil
	})
	e.srv.SetProtectThreshold(ns, nacos.DefaultGroup, "pt", 0)
	next(t, w, "threshold lifted", func(s registry.Snapshot) error {
		if len(s.Healthy()) != 1 || s.ProtectThreshold {
			return fmt.Errorf("%d healthy, protect=%v", len(s.Healthy()), s.ProtectThreshold)
		}
		return nil
	})
}

// Tokens expiring every 2s are refreshed before they run out: the registration and
// the watch keep working over several lifetimes and the server never has to refuse
// a call; wrong credentials are ErrPermission.
func TestAuthTokenRefresh(t *testing.T) {
	for _, m := range []nacostest.Mode{nacostest.Mode1x, nacostest.Mode32} {
		t.Run(string(m), func(t *testing.T) {
			e := newFake(t, "", nacostest.WithMode(m), nacostest.WithAuth("nacos", "secret", 2*time.Second))
			ctx := ctxFor(t)
			ns := newNS(t)
			a := openURL(t, "nacos://nacos:secret@"+e.proxy.Addr()+"?namespace="+ns+"&"+fastParams)
			defer a.Close()
			r, err := a.Register(ctx, inst("tok", "t1", 8101))
			if err != nil {
				t.Fatal(err)
			}
			w, err := a.Watch(ctx, "tok")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			next(t, w, "watch", wantIDs("t1"))
			testenv.Eventually(t, faultTimeout, "several token lifetimes", func() error {
				if st := e.srv.Stats(); st.Logins < 4 {
					return fmt.Errorf("%d logins", st.Logins)
				}
				return nil
			})
			if st := e.srv.Stats(); st.Forbidden != 0 {
				t.Errorf("server refused %d calls: token not refreshed in time", st.Forbidden)
			}
			if r.State() != registry.Registered {
				t.Errorf("state %v (%v)", r.State(), r.Err())
			}
			if _, err := a.Register(ctx, inst("tok", "t2", 8102)); err != nil {
				t.Fatal(err)
			}
			next(t, w, "watch after refreshes", wantIDs("t1", "t2"))

			_, err = registry.Open(ctx, "nacos://nacos:wrong@"+e.proxy.Addr()+"?namespace="+ns)
			if !errors.Is(err, registry.ErrPermission) {
				t.Errorf("wrong password: %v, want ErrPermission", err)
			}
		})
	}
}

// Persistent instances (ephemeral=false) are registered as such and never beat.
func TestPersistentInstances(t *testing.T) {
	e := newFake(t, "ephemeral=false&presence_check=0")
	ns := newNS(t)
	ctx := ctxFor(t)
	a := e.open(t, ns)
	r, err := a.Register(ctx, inst("per", "p1", 8201))
	if err != nil {
		t.Fatal(err)
	}
	got := e.srv.Instances(ns, nacos.DefaultGroup, "per")
	if len(got) != 1 || got[0].Ephemeral {
		t.Fatalf("server %+v, want one persistent instance", got)
	}
	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Instances(ns, nacos.DefaultGroup, "per")); n != 0 {
		t.Errorf("%d instances after deregister", n)
	}
	a.Close()
	if b := e.srv.Stats().Beats; b != 0 {
		t.Errorf("%d beats for a persistent instance", b)
	}
}

// Two hosts in the URL, the first one down: calls go to the second.
func TestHostFailover(t *testing.T) {
	srv := nacostest.Start(t, nacostest.WithCacheMillis(200))
	down := nacostest.Start(t)
	down.Stop()
	ctx := ctxFor(t)
	ns := newNS(t)
	c := openURL(t, "nacos://"+down.Addr()+","+srv.Addr()+"?namespace="+ns+"&"+fastParams)
	defer c.Close()
	if _, err := c.Register(ctx, inst("fo", "f1", 8301)); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Instances(ns, nacos.DefaultGroup, "fo")); n != 1 {
		t.Errorf("%d instances on the live host", n)
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// With registry.WithLazyConnect, Open returns while the server does not answer
// (the package registry doc: Nacos never waits in Open with it); calls meanwhile
// fail with ErrUnavailable, and once the server answers the API is probed, the
// registry works and the store is offered.
func TestLazyConnect(t *testing.T) {
	ctx := ctxFor(t)
	srv := nacostest.Start(t, nacostest.WithMode(nacostest.Mode30))
	p := testenv.NewProxy(t, testenv.ClosedAddr(t))
	c, err := registry.Open(ctx, "nacos://"+p.Addr()+"?namespace="+newNS(t), registry.WithLazyConnect(),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatalf("lazy Open while the server is down: %v", err)
	}
	defer c.Close()
	if _, err := c.Instances(ctx, "lazy"); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Instances while down: %v, want ErrUnavailable", err)
	}
	if _, err := c.Store().Get(ctx, "/k"); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("store Get while down: %v, want ErrUnavailable", err)
	}
	p.SetUpstream(srv.Addr())
	r, err := c.Register(ctx, inst("lazy", "l1", 7950))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := c.Conn().(*nacos.Conn).API(); got != nacos.APIV3 {
		t.Errorf("API %s, want %s", got, nacos.APIV3)
	}
	if _, err := c.Store().Create(ctx, "/k", []byte("v")); err != nil {
		t.Fatalf("store Create once up: %v", err)
	}
	if !c.Capabilities().Store {
		t.Error("store not offered once probed")
	}
}
