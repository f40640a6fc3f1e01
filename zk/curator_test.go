package zk_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// Interop with Apache Curator 5.4 itself (Debian's libcurator-*-java): a Java peer
// (internal/testenv/curator) registers and reads through x-discovery against the
// same ZooKeeper as regkit's layout=curator.

// curatorPeer starts a Curator peer on e's server with chroot ns and x-discovery
// base path /services, and the regkit client that meets it there (extra is added to
// the URL's query).
func curatorPeer(t *testing.T, e *env, ns, extra string) (*testenv.CuratorPeer, *registry.Client) {
	t.Helper()
	return curatorPeerCfg(t, e, testenv.CuratorPeerConfig{Connect: e.srv.Addr() + ns}, ns, extra)
}

// curatorPeerCfg is curatorPeer with the peer's configuration (Connect is given).
func curatorPeerCfg(t *testing.T, e *env, cfg testenv.CuratorPeerConfig, ns, extra string) (*testenv.CuratorPeer, *registry.Client) {
	t.Helper()
	// A chroot in a connect string must exist: Curator creates what is under it.
	if err := e.rawDo(func(zc *zk.Conn) error {
		_, err := zc.Create(ns, nil, 0, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			err = nil
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cfg.SessionTimeout = 4 * time.Second
	p := testenv.StartCuratorPeer(t, cfg)
	c := openURL(t, "zk://"+e.srv.Addr()+ns+"?layout=curator&session_timeout=4s"+extra)
	return p, c
}

func curatorIDs(list []testenv.CuratorInstance) []string {
	var ids []string
	for _, in := range list {
		ids = append(ids, in.ID)
	}
	return ids
}

// waitCurator waits until the peer's ServiceDiscovery<payload> lists exactly ids
// (sorted) for service, and returns that listing.
func waitCurator(t *testing.T, p *testenv.CuratorPeer, payload, service string, ids ...string) []testenv.CuratorInstance {
	t.Helper()
	var got []testenv.CuratorInstance
	testenv.Eventually(t, 20*time.Second, "Curator "+payload+" reader lists "+strings.Join(ids, ","), func() error {
		var err error
		if got, err = p.List(payload, service); err != nil {
			return err
		}
		if g := curatorIDs(got); !slices.Equal(g, ids) {
			return fmt.Errorf("listed %v", g)
		}
		return nil
	})
	return got
}

// waitCuratorCache waits until the peer's ServiceCache (started with StartCache)
// holds exactly ids, and its listener was told of a change since changesBefore.
func waitCuratorCache(t *testing.T, p *testenv.CuratorPeer, payload, service string, changesBefore int, ids ...string) []testenv.CuratorInstance {
	t.Helper()
	var got []testenv.CuratorInstance
	testenv.Eventually(t, 20*time.Second, "Curator "+payload+" ServiceCache holds "+strings.Join(ids, ","), func() error {
		n, list, err := p.Cached(payload, service)
		if err != nil {
			return err
		}
		got = list
		if g := curatorIDs(list); !slices.Equal(g, ids) {
			return fmt.Errorf("cache holds %v after %d changes", g, n)
		}
		if n <= changesBefore {
			return fmt.Errorf("cacheChanged called %d times, want more than %d", n, changesBefore)
		}
		return nil
	})
	return got
}

func cacheChanges(t *testing.T, p *testenv.CuratorPeer, payload, service string) int {
	t.Helper()
	n, _, err := p.Cached(payload, service)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// What regkit registers with the default payload policy is read by every kind of
// Curator reader (Void, Object, an application's own payload class),
// beside Java instances carrying a custom payload, in queryForInstances and live
// through ServiceCache. (With the Spring ZookeeperInstance payload regkit wrote
// before issue 17, the Void, Object and Custom readers failed the whole query.)
func TestCuratorReadsRegkit(t *testing.T) {
	e := newEnv(t)
	p, c := curatorPeer(t, e, "/cur-reads", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	readers := []string{testenv.CuratorVoid, testenv.CuratorObject, testenv.CuratorCustom}
	for _, r := range readers {
		if err := p.StartCache(r, "orders"); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]int{}
	for _, r := range readers {
		before[r] = cacheChanges(t, p, r, "orders")
	}

	reg, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "go-1", Host: "10.1.0.1", Port: 7000, Weight: 9,
		Zone: "eu-2", Metadata: map[string]string{"version": "v3"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range readers {
		got := waitCurator(t, p, r, "orders", "go-1")
		in := got[0]
		if in.Name != "orders" || in.Address != "10.1.0.1" || in.Port == nil || *in.Port != 7000 || in.SSLPort != nil ||
			!in.Enabled || in.PayloadClass != "" || string(in.Payload) != "null" {
			t.Errorf("%s reader: regkit's instance read as %+v", r, in)
		}
	}
	for _, r := range readers {
		waitCuratorCache(t, p, r, "orders", before[r], "go-1")
	}
	// What the null payload keeps, for regkit too: ID, host and port; weight, zone
	// and metadata are lost (see the package doc).
	waitInstances(t, c, "orders", []registry.Instance{{ID: "go-1", Service: "orders", Host: "10.1.0.1", Port: 7000,
		Weight: registry.DefaultWeight, Healthy: true}})

	// Beside a Java instance with the application's own payload class.
	if err := p.Register(testenv.CuratorCustom, "orders", "java-1", "10.2.0.1", 8080, "description=billing"); err != nil {
		t.Fatal(err)
	}
	got := waitCurator(t, p, testenv.CuratorCustom, "orders", "go-1", "java-1")
	if got[1].PayloadClass != "com.example.InstanceDetails" || string(got[1].Payload) != `{"description":"billing"}` {
		t.Errorf("Java instance read as %+v", got[1])
	}
	waitCurator(t, p, testenv.CuratorObject, "orders", "go-1", "java-1")
	before[testenv.CuratorCustom] = cacheChanges(t, p, testenv.CuratorCustom, "orders")

	// Deregistration is seen live.
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	waitCuratorCache(t, p, testenv.CuratorCustom, "orders", before[testenv.CuratorCustom], "java-1")
	waitCurator(t, p, testenv.CuratorObject, "orders", "java-1")
}

// Curator registers, regkit sees it: Void (null payload) and custom payload
// instances, live through a regkit Watch, and gone once Curator unregisters.
func TestCuratorRegistersRegkitReads(t *testing.T) {
	e := newEnv(t)
	p, c := curatorPeer(t, e, "/cur-writes", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := c.Watch(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Register(testenv.CuratorVoid, "billing", "j-void", "10.3.0.1", 9001); err != nil {
		t.Fatal(err)
	}
	if err := p.Register(testenv.CuratorCustom, "billing", "j-custom", "10.3.0.2", 9002, "description=v2"); err != nil {
		t.Fatal(err)
	}
	want := []registry.Instance{
		{ID: "j-custom", Service: "billing", Host: "10.3.0.2", Port: 9002, Weight: registry.DefaultWeight, Healthy: true,
			Metadata: map[string]string{"payload.description": "v2"}},
		{ID: "j-void", Service: "billing", Host: "10.3.0.1", Port: 9001, Weight: registry.DefaultWeight, Healthy: true},
	}
	waitWatch(t, ctx, w, want)
	waitInstances(t, c, "billing", want)

	if err := p.Unregister("j-void"); err != nil {
		t.Fatal(err)
	}
	waitWatch(t, ctx, w, want[:1])
}

// waitWatch reads w until a snapshot equals want.
func waitWatch(t *testing.T, ctx context.Context, w registry.Watcher, want []registry.Instance) {
	t.Helper()
	var last []registry.Instance
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch never showed\n%+v\nlast\n%+v\n(%v)", want, last, err)
		}
		if last = s.Instances; slices.EqualFunc(last, want, registry.Instance.Equal) {
			return
		}
	}
}

// In a Spring Cloud Zookeeper fleet (Spring's ZookeeperInstance on the Java
// classpath): payload=auto follows the Java instances' ZookeeperInstance, so Spring
// readers get weight, zone and metadata, and regkit reads Spring's; payload=null
// and a service with another payload class fall back to null.
func TestCuratorSpringPayload(t *testing.T) {
	e := newEnv(t)
	ns := "/cur-spring"
	p, c := curatorPeerCfg(t, e, testenv.CuratorPeerConfig{Connect: e.srv.Addr() + ns, Spring: true}, ns, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Register(testenv.CuratorSpring, "orders", "spring-1", "10.4.0.1", 8080, "weight=5", "zone=eu-1", "team=a"); err != nil {
		t.Fatal(err)
	}
	spring1 := registry.Instance{ID: "spring-1", Service: "orders", Host: "10.4.0.1", Port: 8080, Weight: 5, Zone: "eu-1",
		Metadata: map[string]string{"team": "a"}, Healthy: true}
	waitInstances(t, c, "orders", []registry.Instance{spring1})
	if err := p.StartCache(testenv.CuratorSpring, "orders"); err != nil {
		t.Fatal(err)
	}
	before := cacheChanges(t, p, testenv.CuratorSpring, "orders")

	goInst := registry.Instance{Service: "orders", ID: "go-1", Host: "10.4.0.2", Port: 7000, Weight: 9, Zone: "eu-2",
		Metadata: map[string]string{"version": "v3"}}
	if _, err := c.Register(ctx, goInst); err != nil {
		t.Fatal(err)
	}
	got := waitCuratorCache(t, p, testenv.CuratorSpring, "orders", before, "go-1", "spring-1")
	const zi = "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance"
	if got[0].PayloadClass != zi || string(got[0].Payload) != `{"id":"orders","name":"orders","metadata":{"version":"v3","weight":"9","zone":"eu-2"}}` {
		t.Errorf("Spring reader: regkit's payload=auto instance read as %s %s", got[0].PayloadClass, got[0].Payload)
	}
	goInst.Healthy = true
	waitInstances(t, c, "orders", []registry.Instance{goInst, spring1})

	// payload=null: readable by Spring's reader too, without metadata.
	cn := openURL(t, "zk://"+e.srv.Addr()+ns+"?layout=curator&payload=null")
	if _, err := cn.Register(ctx, registry.Instance{Service: "orders", ID: "go-null", Host: "10.4.0.3", Port: 7000, Weight: 9}); err != nil {
		t.Fatal(err)
	}
	got = waitCurator(t, p, testenv.CuratorSpring, "orders", "go-1", "go-null", "spring-1")
	if got[1].PayloadClass != "" || string(got[1].Payload) != "null" {
		t.Errorf("Spring reader: payload=null instance read as %s %s", got[1].PayloadClass, got[1].Payload)
	}
	waitCurator(t, p, testenv.CuratorObject, "orders", "go-1", "go-null", "spring-1")

	// Another payload class joins the service: the next auto put writes null.
	if err := p.Register(testenv.CuratorCustom, "orders", "custom-1", "10.4.0.4", 8080, "description=x"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "go-2", Host: "10.4.0.5", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	got = waitCurator(t, p, testenv.CuratorObject, "orders", "custom-1", "go-1", "go-2", "go-null", "spring-1")
	if got[2].PayloadClass != "" {
		t.Errorf("payload=auto beside a custom payload class wrote a %s payload", got[2].PayloadClass)
	}
}

// Curator and regkit instances of one service survive a ZooKeeper restart (the
// sessions survive it), and each side still sees the other's later changes.
func TestCuratorZooKeeperRestart(t *testing.T) {
	e := newEnv(t)
	p, c := curatorPeer(t, e, "/cur-restart", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Register(testenv.CuratorVoid, "orders", "java-1", "10.5.0.1", 8080); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "go-1", Host: "10.5.0.2", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	if err := p.StartCache(testenv.CuratorVoid, "orders"); err != nil {
		t.Fatal(err)
	}
	waitCurator(t, p, testenv.CuratorVoid, "orders", "go-1", "java-1")
	java1 := registry.Instance{ID: "java-1", Service: "orders", Host: "10.5.0.1", Port: 8080, Weight: registry.DefaultWeight, Healthy: true}
	go1 := registry.Instance{ID: "go-1", Service: "orders", Host: "10.5.0.2", Port: 7000, Weight: registry.DefaultWeight, Healthy: true}
	waitInstances(t, c, "orders", []registry.Instance{go1, java1})

	e.srv.Restart(t)
	testenv.Eventually(t, 30*time.Second, "Curator reconnected", func() error {
		for _, ev := range p.Events() {
			if strings.Contains(ev, `"RECONNECTED"`) {
				return nil
			}
		}
		return fmt.Errorf("events %v", p.Events())
	})
	waitCurator(t, p, testenv.CuratorVoid, "orders", "go-1", "java-1")
	waitInstances(t, c, "orders", []registry.Instance{go1, java1})

	// Both sides' changes after the restart reach the other side.
	before := cacheChanges(t, p, testenv.CuratorVoid, "orders")
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "go-2", Host: "10.5.0.3", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	waitCuratorCache(t, p, testenv.CuratorVoid, "orders", before, "go-1", "go-2", "java-1")
	if err := p.Register(testenv.CuratorVoid, "orders", "java-2", "10.5.0.4", 8080); err != nil {
		t.Fatal(err)
	}
	java2 := registry.Instance{ID: "java-2", Service: "orders", Host: "10.5.0.4", Port: 8080, Weight: registry.DefaultWeight, Healthy: true}
	go2 := registry.Instance{ID: "go-2", Service: "orders", Host: "10.5.0.3", Port: 7000, Weight: registry.DefaultWeight, Healthy: true}
	waitInstances(t, c, "orders", []registry.Instance{go1, go2, java1, java2})
}

// A Curator process killed with -9 does not close its session: its ephemeral
// registration disappears for regkit once the session expires, within the session
// timeout (4s, granted as asked: ZooKeeper's tickTime is 500ms) and the expiry
// check's tick.
func TestCuratorKill9(t *testing.T) {
	e := newEnv(t)
	p, c := curatorPeer(t, e, "/cur-kill", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Register(testenv.CuratorVoid, "orders", "java-1", "10.6.0.1", 8080); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	waitWatch(t, ctx, w, []registry.Instance{{ID: "java-1", Service: "orders", Host: "10.6.0.1", Port: 8080,
		Weight: registry.DefaultWeight, Healthy: true}})

	p.Kill()
	killed := time.Now()
	waitWatch(t, ctx, w, nil)
	t.Logf("the killed peer's instance disappeared %v after the kill", time.Since(killed))
	// The server expires a session between one and two ticks after its timeout
	// (the figure above; a liveness bound only here, far above it, so that a
	// loaded machine does not fail the test: a session that never expired would).
	if d := time.Since(killed); d > 30*time.Second {
		t.Errorf("the killed peer's instance disappeared after %v, want about the 4s session timeout", d)
	}
}
