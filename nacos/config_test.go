package nacos_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
)

// Tests of the configuration client and the store beyond the conformance suite.

func openConfig(t *testing.T, addr, ns string) *nacos.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var f *nacos.Config
	testenv.Eventually(t, 15*time.Second, "open config on "+addr, func() error {
		var err error
		f, err = nacos.OpenConfig(ctx, "nacos://"+addr+"?namespace="+ns+"&"+fastParams)
		return err
	})
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// waitContent polls Get until it shows want (Polaris reads from a cache that lags
// writes by about a second).
func waitContent(t *testing.T, f *nacos.Config, id, want string) {
	t.Helper()
	ctx := ctxFor(t)
	testenv.Eventually(t, faultTimeout, "content of "+id, func() error {
		got, md5, err := f.Get(ctx, id)
		if want == "" {
			if !errors.Is(err, registry.ErrNotFound) {
				return fmt.Errorf("Get = %q, %v; want ErrNotFound", got, err)
			}
			return nil
		}
		if err != nil || got != want || md5 != nacos.MD5(want) {
			return fmt.Errorf("Get = %q %s, %v; want %q", got, md5, err, want)
		}
		return nil
	})
}

// listenAsync runs one Listen in a goroutine owned by the test.
func listenAsync(ctx context.Context, f *nacos.Config, md5s map[string]string, wait time.Duration) <-chan listenResult {
	ch := make(chan listenResult, 1)
	go func() {
		ids, err := f.Listen(ctx, md5s, wait)
		ch <- listenResult{ids, err}
	}()
	return ch
}

type listenResult struct {
	ids []string
	err error
}

func recvListen(t *testing.T, ch <-chan listenResult) listenResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(faultTimeout):
		t.Fatal("Listen did not return")
		return listenResult{}
	}
}

// configClient checks what every server with the v1 config API offers: get,
// publish, CAS as far as the server allows, delete, listen.
func configClient(t *testing.T, addr string, wantCAS bool) {
	ns := newNS(t)
	f := openConfig(t, addr, ns)
	ctx := ctxFor(t)
	const id = "app.yaml"
	if _, _, err := f.Get(ctx, id); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get missing = %v, want ErrNotFound", err)
	}
	if err := f.Publish(ctx, id, "", ""); err == nil {
		t.Error("Publish of empty content succeeded; Nacos refuses it")
	}
	if err := f.Publish(ctx, id, "v: 1", ""); err != nil {
		t.Fatal(err)
	}
	waitContent(t, f, id, "v: 1")

	enforced, err := f.CASEnforced(ctx)
	if err != nil || enforced != wantCAS {
		t.Fatalf("CASEnforced = %v, %v; want %v", enforced, err, wantCAS)
	}
	// A wrong casMd5 is refused, by the server or by the client's own check.
	if err := f.Publish(ctx, id, "v: bad", nacos.MD5("something else")); !errors.Is(err, registry.ErrVersionConflict) {
		t.Fatalf("Publish with a wrong casMd5 = %v, want ErrVersionConflict", err)
	}
	if err := f.Publish(ctx, id, "v: 2", nacos.MD5("v: 1")); err != nil {
		t.Fatalf("Publish with the right casMd5: %v", err)
	}
	waitContent(t, f, id, "v: 2")

	// Listen answers at once for a stale MD5 and holds for a current one.
	r := recvListen(t, listenAsync(ctx, f, map[string]string{id: nacos.MD5("v: 1")}, 20*time.Second))
	if r.err != nil || !slices.Equal(r.ids, []string{id}) {
		t.Fatalf("Listen with a stale md5 = %v, %v", r.ids, r.err)
	}
	r = recvListen(t, listenAsync(ctx, f, map[string]string{id: nacos.MD5("v: 2")}, 300*time.Millisecond))
	if r.err != nil || len(r.ids) != 0 {
		t.Fatalf("Listen without change = %v, %v; want nothing after the wait", r.ids, r.err)
	}
	ch := listenAsync(ctx, f, map[string]string{id: nacos.MD5("v: 2"), "other": ""}, 30*time.Second)
	if err := f.Publish(ctx, id, "v: 3", ""); err != nil {
		t.Fatal(err)
	}
	r = recvListen(t, ch)
	if r.err != nil || !slices.Equal(r.ids, []string{id}) {
		t.Fatalf("Listen during a publish = %v, %v", r.ids, r.err)
	}
	// A configuration that appears is heard too ("" = absent).
	ch = listenAsync(ctx, f, map[string]string{"later": ""}, 30*time.Second)
	if err := f.Publish(ctx, "later", "x", ""); err != nil {
		t.Fatal(err)
	}
	if r = recvListen(t, ch); r.err != nil || !slices.Equal(r.ids, []string{"later"}) {
		t.Fatalf("Listen for a new config = %v, %v", r.ids, r.err)
	}
	// Deletion is heard, and deleting a missing config is not an error.
	waitContent(t, f, id, "v: 3")
	ch = listenAsync(ctx, f, map[string]string{id: nacos.MD5("v: 3")}, 30*time.Second)
	if err := f.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if r = recvListen(t, ch); r.err != nil || !slices.Equal(r.ids, []string{id}) {
		t.Fatalf("Listen during a delete = %v, %v", r.ids, r.err)
	}
	waitContent(t, f, id, "")
	if err := f.Delete(ctx, id); err != nil {
		t.Errorf("Delete missing = %v", err)
	}
}

// polarisConfig runs the config client against Polaris: everything but search,
// and casMd5 is ignored by Polaris, so the client's read-check-write-read-back is
// what refuses a wrong one.
func polarisConfig(t *testing.T, e *polarisEnv) {
	configClient(t, e.proxy.Addr(), false)
	ctx := ctxFor(t)
	f := openConfig(t, e.proxy.Addr(), newNS(t))
	if _, err := f.Search(ctx, "a"); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("Search on Polaris = %v, want ErrNotSupported", err)
	}
	// So the store is not offered.
	if c := e.open(t, newNS(t)); c.Capabilities().Store {
		t.Error("Polaris: store offered without search")
	}
	// A listener cut by a dead connection returns an error, not silence.
	if err := f.Publish(ctx, "cut", "x", ""); err != nil {
		t.Fatal(err)
	}
	waitContent(t, f, "cut", "x")
	ch := listenAsync(ctx, f, map[string]string{"cut": nacos.MD5("x")}, 30*time.Second)
	e.proxy.Cut()
	r := recvListen(t, ch)
	e.proxy.Heal()
	if !errors.Is(r.err, registry.ErrUnavailable) {
		t.Errorf("Listen across a cut = %v, %v; want ErrUnavailable", r.ids, r.err)
	}
}

func TestConfigTestServer(t *testing.T) {
	srv := nacostest.Start(t)
	configClient(t, srv.Addr(), true)
}

func TestConfigTestServerSearch(t *testing.T) {
	srv := nacostest.Start(t)
	ns := newNS(t)
	f := openConfig(t, srv.Addr(), ns)
	ctx := ctxFor(t)
	// '_' is SQL LIKE's one-character wildcard on Nacos: Search filters again.
	for _, id := range []string{"a_b.1", "axb.1", "a_b.2", "other"} {
		if err := f.Publish(ctx, id, "c-"+id, ""); err != nil {
			t.Fatal(err)
		}
	}
	items, err := f.Search(ctx, "a_b")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range items {
		ids = append(ids, it.DataID)
		if it.Content != "c-"+it.DataID || it.MD5 != nacos.MD5(it.Content) || it.ID <= 0 {
			t.Errorf("item %+v", it)
		}
	}
	if !slices.Equal(ids, []string{"a_b.1", "a_b.2"}) {
		t.Errorf("Search(a_b) = %v", ids)
	}
	// Pages are followed (the page size is 200).
	for i := range 450 {
		srv.PublishConfig(ns, nacos.DefaultGroup, fmt.Sprintf("many.%03d", i), "x")
	}
	items, err = f.Search(ctx, "many.")
	if err != nil || len(items) != 450 || items[449].DataID != "many.449" {
		t.Fatalf("Search(many.) = %d items, %v", len(items), err)
	}
	// Lookup reads one with its database id, which orders creations.
	a, err := f.Lookup(ctx, "a_b.1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.Lookup(ctx, "a_b.2")
	if err != nil || b.ID <= a.ID {
		t.Errorf("Lookup ids %d then %d (%v): want increasing", a.ID, b.ID, err)
	}
	if _, err := f.Lookup(ctx, "a_b"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Lookup missing = %v", err)
	}
}

// Without a listener (404), Listen falls back to polling Get.
func TestConfigListenFallback(t *testing.T) {
	srv := nacostest.Start(t, nacostest.WithoutConfigListener())
	f := openConfig(t, srv.Addr(), newNS(t))
	ctx := ctxFor(t)
	if err := f.Publish(ctx, "k", "1", ""); err != nil {
		t.Fatal(err)
	}
	ch := listenAsync(ctx, f, map[string]string{"k": nacos.MD5("1")}, 30*time.Second)
	if err := f.Publish(ctx, "k", "2", ""); err != nil {
		t.Fatal(err)
	}
	if r := recvListen(t, ch); r.err != nil || !slices.Equal(r.ids, []string{"k"}) {
		t.Fatalf("polling Listen = %v, %v", r.ids, r.err)
	}
	r := recvListen(t, listenAsync(ctx, f, map[string]string{"k": nacos.MD5("2")}, 300*time.Millisecond))
	if r.err != nil || len(r.ids) != 0 {
		t.Fatalf("polling Listen without change = %v, %v", r.ids, r.err)
	}
}

// The store over the test server without a listener: tree watches poll.
func TestStoreConformanceNoListener(t *testing.T) {
	registrytest.RunStore(t, newFake(t, "", nacostest.WithoutConfigListener()).harness("nacos/test-nolistener"))
}

// A server that cannot list configurations (as Polaris) or has no v1 config API
// (Nacos 3.2) offers no store; store=false turns it off.
func TestStoreNotOffered(t *testing.T) {
	for name, e := range map[string]*fakeEnv{
		"nosearch":    newFake(t, "", nacostest.WithoutConfigSearch()),
		"3.2":         newFake(t, "", nacostest.WithMode(nacostest.Mode32)),
		"store=false": newFake(t, "store=false"),
	} {
		t.Run(name, func(t *testing.T) {
			if e.open(t, newNS(t)).Capabilities().Store {
				t.Fatal("store offered")
			}
			registrytest.RunStore(t, e.harness("nacos/"+name))
		})
	}
}

func TestKeyEncoding(t *testing.T) {
	for _, k := range []string{"/", "/a", "/app/config/db", "/a:b/c_d/e f/ü/x.y-z", "/_41", "/%2F"} {
		id := nacos.KeyToDataID(k)
		if strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") != "" {
			t.Errorf("KeyToDataID(%q) = %q: characters Nacos refuses", k, id)
		}
		back, ok := nacos.DataIDToKey(id)
		if !ok || back != k {
			t.Errorf("DataIDToKey(KeyToDataID(%q) = %q) = %q, %v", k, id, back, ok)
		}
	}
	if got := nacos.KeyToDataID("/app/config/db"); got != "regkit.kv:app:config:db" {
		t.Errorf("KeyToDataID = %q", got)
	}
	for _, id := range []string{"other", "regkit.kvx", "regkit.kv:", "regkit.kv:a::b", "regkit.kv:_4", "regkit.kv:_ZZ"} {
		if k, ok := nacos.DataIDToKey(id); ok {
			t.Errorf("DataIDToKey(%q) = %q, want not a store key", id, k)
		}
	}
}

// Values round-trip (empty, text, binary) and the version is a content hash.
func TestStoreValues(t *testing.T) {
	e := newFake(t, "")
	ns := newNS(t)
	c := e.open(t, ns)
	ctx := ctxFor(t)
	st := c.Store()
	for i, v := range [][]byte{nil, []byte("text\n with spaces "), {0xff, 0x00, 0xfe}, []byte("=looks encoded")} {
		k := fmt.Sprintf("/v/%d", i)
		if _, err := st.Create(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		n, err := st.Get(ctx, k)
		if err != nil || string(n.Value) != string(v) {
			t.Errorf("Get(%s) = %q, %v; want %q", k, n.Value, err, v)
		}
	}
	// Writing the same content twice keeps the version (a content hash).
	n1, err := st.Set(ctx, "/v/1", []byte("same"), registry.AnyVersion)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := st.Set(ctx, "/v/1", []byte("same"), n1.Version)
	if err != nil || n2.Version != n1.Version || n2.CreateRevision != n1.CreateRevision {
		t.Errorf("same content: %+v then %+v, %v", n1, n2, err)
	}
	// The layout on the server: dataId, group, tenant and the "=" marker.
	var found bool
	for _, it := range e.srv.Configs(ns) {
		if it.DataID == "regkit.kv:v:1" && it.Group == nacos.DefaultGroup && it.Content == "=same" {
			found = true
		}
	}
	if !found {
		t.Errorf("server configs %+v: no regkit.kv:v:1 = \"=same\"", e.srv.Configs(ns))
	}
	// A sequential or ephemeral create, and NewSession, are not supported.
	if _, err := st.Create(ctx, "/q/n-", nil, registry.Sequential()); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("sequential = %v", err)
	}
	if _, err := c.NewSession(ctx); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("NewSession = %v", err)
	}
}

// A key written by another client between Create's read and its write makes
// Create fail with ErrExists: the casMd5 Create sends never matches content.
func TestStoreCreateRace(t *testing.T) {
	e := newFake(t, "")
	ns := newNS(t)
	ctx := ctxFor(t)
	c := e.open(t, ns)
	f, err := nacos.ConfigOf(c)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate the other writer by publishing straight to the server, then make
	// the same publish Create would make.
	e.srv.PublishConfig(ns, nacos.DefaultGroup, nacos.KeyToDataID("/race"), "=theirs")
	if err := f.Publish(ctx, nacos.KeyToDataID("/race"), "=ours", "00000000000000000000000000000000"); !errors.Is(err, registry.ErrVersionConflict) {
		t.Fatalf("create-style publish over an existing key = %v, want ErrVersionConflict", err)
	}
	if _, err := c.Store().Create(ctx, "/race", []byte("ours")); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("Create existing = %v", err)
	}
	n, err := c.Store().Get(ctx, "/race")
	if err != nil || string(n.Value) != "theirs" {
		t.Fatalf("Get = %q, %v", n.Value, err)
	}
}

// A tree watch through a partition serves the last good view as stale, then
// catches up.
func TestStoreWatchBlackhole(t *testing.T) {
	e := newFake(t, "")
	ns := newNS(t)
	ctx := ctxFor(t)
	a := e.open(t, ns)
	if _, err := a.Store().Create(ctx, "/b/one", []byte("1")); err != nil {
		t.Fatal(err)
	}
	w, err := a.Store().Watch(ctx, "/b")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextTree(t, w, "initial", func(tc registry.TreeChange) error {
		if len(tc.Nodes) != 2 {
			return fmt.Errorf("nodes %d", len(tc.Nodes))
		}
		return nil
	})
	e.proxy.Blackhole()
	nextTree(t, w, "stale during the partition", func(tc registry.TreeChange) error {
		if !tc.Stale || len(tc.Nodes) != 2 {
			return fmt.Errorf("stale=%v nodes %d", tc.Stale, len(tc.Nodes))
		}
		return nil
	})
	e.srv.PublishConfig(ns, nacos.DefaultGroup, nacos.KeyToDataID("/b/two"), "=2")
	e.proxy.Heal()
	nextTree(t, w, "caught up", func(tc registry.TreeChange) error {
		if tc.Stale || len(tc.Nodes) != 3 || tc.Nodes[2].Key != "/b/two" || string(tc.Nodes[2].Value) != "2" {
			return fmt.Errorf("stale=%v nodes %v", tc.Stale, tc.Nodes)
		}
		return nil
	})
}

func nextTree(t *testing.T, w registry.TreeWatcher, what string, ok func(registry.TreeChange) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	last := errors.New("no change")
	for {
		tc, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("%s: %v (last mismatch: %v)", what, err, last)
		}
		if last = ok(tc); last == nil {
			return
		}
	}
}

// Nacos 3.2 has no v1 configuration API: Get goes through the v3 client API,
// Listen polls it, writes are not supported, and there is no store.
func TestConfigV3Get(t *testing.T) {
	srv := nacostest.Start(t, nacostest.WithMode(nacostest.Mode32))
	ns := newNS(t)
	f := openConfig(t, srv.Addr(), ns)
	ctx := ctxFor(t)
	if _, _, err := f.Get(ctx, "k"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get missing = %v, want ErrNotFound", err)
	}
	srv.PublishConfig(ns, nacos.DefaultGroup, "k", "one")
	if got, md5, err := f.Get(ctx, "k"); err != nil || got != "one" || md5 != nacos.MD5("one") {
		t.Fatalf("Get = %q %s, %v", got, md5, err)
	}
	ch := listenAsync(ctx, f, map[string]string{"k": nacos.MD5("one")}, 30*time.Second)
	srv.PublishConfig(ns, nacos.DefaultGroup, "k", "two")
	if r := recvListen(t, ch); r.err != nil || !slices.Equal(r.ids, []string{"k"}) {
		t.Fatalf("Listen on 3.2 = %v, %v", r.ids, r.err)
	}
	if err := f.Publish(ctx, "k", "three", ""); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("Publish on 3.2 = %v, want ErrNotSupported", err)
	}
	if err := f.Delete(ctx, "k"); !errors.Is(err, registry.ErrNotSupported) {
		t.Errorf("Delete on 3.2 = %v, want ErrNotSupported", err)
	}
}

// Configurations written by other clients under the store's prefix, in any
// content, are read as they are and watched like the store's own.
func TestStoreForeignContent(t *testing.T) {
	e := newFake(t, "")
	ns := newNS(t)
	ctx := ctxFor(t)
	c := e.open(t, ns)
	e.srv.PublishConfig(ns, nacos.DefaultGroup, "regkit.kv:ext", "=")
	e.srv.PublishConfig(ns, nacos.DefaultGroup, "regkit.kv:ext:raw", "plain text")
	e.srv.PublishConfig(ns, nacos.DefaultGroup, "regkit.kv:ext:bad_zz", "not a store key")
	e.srv.PublishConfig(ns, "OTHER_GROUP", "regkit.kv:ext:other", "=other group")
	w, err := c.Store().Watch(ctx, "/ext")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextTree(t, w, "initial", func(tc registry.TreeChange) error {
		if len(tc.Nodes) != 2 || tc.Nodes[1].Key != "/ext/raw" || string(tc.Nodes[1].Value) != "plain text" {
			return fmt.Errorf("nodes %v", tc.Nodes)
		}
		return nil
	})
	e.srv.PublishConfig(ns, nacos.DefaultGroup, "regkit.kv:ext:raw", "changed")
	nextTree(t, w, "changed", func(tc registry.TreeChange) error {
		if len(tc.Nodes) != 2 || string(tc.Nodes[1].Value) != "changed" {
			return fmt.Errorf("nodes %v", tc.Nodes)
		}
		return nil
	})
	if kids, err := c.Store().Children(ctx, "/ext"); err != nil || !slices.Equal(kids, []string{"raw"}) {
		t.Errorf("Children = %v, %v", kids, err)
	}
}

func TestConfigOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := nacostest.Start(t)
	for _, tc := range []struct{ url, field string }{
		{"nacos://" + srv.Addr() + "?store=maybe", "store"},
		{"http://" + srv.Addr(), "url"},
		{"nacos://" + srv.Addr() + "?bogus=1", "url"},
	} {
		_, err := nacos.OpenConfig(ctx, tc.url)
		var fe *registry.FieldError
		if err == nil || !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("OpenConfig(%s) = %v, want a FieldError naming %s", tc.url, err, tc.field)
		}
	}
}
