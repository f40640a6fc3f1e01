package zk_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

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
