//go:build unix

package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	consul "github.com/hashicorp/consul/api"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func since(t *testing.T, what string, start time.Time) {
	t.Logf("%s took %v", what, time.Since(start).Round(time.Millisecond))
}

type nopZKLogger struct{}

func (nopZKLogger) Printf(string, ...any) {}

func TestZooKeeper(t *testing.T) {
	start := time.Now()
	z := StartZooKeeper(t)
	since(t, "zookeeper start", start)

	conn, _, err := zk.Connect([]string{z.Addr()}, 5*time.Second, zk.WithLogger(nopZKLogger{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The session is being established in the background: retry until it is.
	Eventually(t, 15*time.Second, "zk create", func() error {
		_, err := conn.Create("/testenv", []byte("v1"), 0, zk.WorldACL(zk.PermAll))
		if err == zk.ErrNodeExists {
			return nil
		}
		return err
	})
	get := func(want string) {
		t.Helper()
		// The client reconnects on its own after a restart.
		Eventually(t, 15*time.Second, "zk get", func() error {
			b, _, err := conn.Get("/testenv")
			if err != nil {
				return err
			}
			if string(b) != want {
				return fmt.Errorf("got %q, want %q", b, want)
			}
			return nil
		})
	}
	get("v1")

	start = time.Now()
	z.Restart(t)
	since(t, "zookeeper restart", start)
	get("v1") // same data dir: the znode survived
	Eventually(t, 15*time.Second, "zk set", func() error {
		_, err := conn.Set("/testenv", []byte("v2"), -1)
		return err
	})
	get("v2")
}

func TestConsul(t *testing.T) {
	for _, acl := range []bool{false, true} {
		t.Run(fmt.Sprintf("acl=%v", acl), func(t *testing.T) {
			var opts []ConsulOption
			if acl {
				opts = append(opts, WithConsulACL("3f2c7c1e-6f0a-4a43-9a5e-6b1e1f7b7e01"))
			}
			start := time.Now()
			c := StartConsul(t, opts...)
			since(t, "consul start", start)

			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			cli, err := consul.NewClient(&consul.Config{
				Address:    c.Addr(),
				Token:      c.Token(),
				HttpClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
			})
			if err != nil {
				t.Fatal(err)
			}
			roundTrip := func(val string) {
				t.Helper()
				if _, err := cli.Agent().Self(); err != nil {
					t.Fatalf("agent self: %v", err)
				}
				if _, err := cli.KV().Put(&consul.KVPair{Key: "testenv/k", Value: []byte(val)}, nil); err != nil {
					t.Fatalf("kv put: %v", err)
				}
				kv, _, err := cli.KV().Get("testenv/k", nil)
				if err != nil || kv == nil || string(kv.Value) != val {
					t.Fatalf("kv get: %v %v, want %q", kv, err, val)
				}
			}
			roundTrip("v1")
			if acl {
				anon, err := consul.NewClient(&consul.Config{
					Address:    c.Addr(),
					HttpClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
				})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := anon.KV().Put(&consul.KVPair{Key: "testenv/k", Value: []byte("x")}, nil); err == nil {
					t.Fatal("anonymous kv put succeeded with default_policy deny")
				}
			}

			start = time.Now()
			c.Restart(t)
			since(t, "consul restart", start)
			kv, _, err := cli.KV().Get("testenv/k", nil)
			if err != nil || kv != nil {
				t.Fatalf("after restart: %v %v, want no key (dev mode lost its state)", kv, err)
			}
			roundTrip("v2")
		})
	}
}

func TestPolaris(t *testing.T) {
	start := time.Now()
	pl := StartPolaris(t)
	since(t, "polaris start", start)

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	const svc = "DEFAULT_GROUP@@testenv-svc"
	register := func(port int) {
		t.Helper()
		form := url.Values{
			"serviceName": {svc},
			"ip":          {"10.0.0.1"},
			"port":        {fmt.Sprint(port)},
			"ephemeral":   {"false"},
			// Polaris rejects a missing metadata ("metadata format incorrect");
			// Nacos clients always send it.
			"metadata": {"{}"},
		}
		Eventually(t, 15*time.Second, "nacos register", func() error {
			resp, err := hc.Post("http://"+pl.NacosAddr()+"/nacos/v1/ns/instance",
				"application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
				return fmt.Errorf("register: %d %s", resp.StatusCode, b)
			}
			return nil
		})
	}
	listed := func(port int) {
		t.Helper()
		Eventually(t, 20*time.Second, "nacos list", func() error {
			resp, err := hc.Get("http://" + pl.NacosAddr() + "/nacos/v1/ns/instance/list?serviceName=" + url.QueryEscape(svc))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("list: %d %s", resp.StatusCode, b)
			}
			var out struct {
				Hosts []struct {
					IP   string `json:"ip"`
					Port int    `json:"port"`
				} `json:"hosts"`
			}
			if err := json.Unmarshal(b, &out); err != nil {
				return fmt.Errorf("list: %v: %s", err, b)
			}
			for _, h := range out.Hosts {
				if h.IP == "10.0.0.1" && h.Port == port {
					return nil
				}
			}
			return fmt.Errorf("10.0.0.1:%d not listed: %s", port, b)
		})
	}
	start = time.Now()
	register(8080)
	since(t, "polaris register", start)
	start = time.Now()
	listed(8080)
	since(t, "polaris list", start)

	start = time.Now()
	pl.Restart(t)
	since(t, "polaris restart", start)
	start = time.Now()
	register(8081)
	since(t, "polaris register after restart", start)
	start = time.Now()
	listed(8081)
	since(t, "polaris list after restart", start)
	listed(8080) // the store survived the restart
}

func TestZooKeeperEnsemble(t *testing.T) {
	start := time.Now()
	z := StartZooKeeperEnsemble(t)
	since(t, "zookeeper ensemble start", start)
	conn, _, err := zk.Connect(z.Addrs(), 4*time.Second, zk.WithLogger(nopZKLogger{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	Eventually(t, 30*time.Second, "zk create", func() error {
		_, err := conn.Create("/ens", []byte("v1"), 0, zk.WorldACL(zk.PermAll))
		if err == zk.ErrNodeExists {
			return nil
		}
		return err
	})
	l := z.Leader()
	start = time.Now()
	z.Kill(l)
	z.WaitQuorum(t, time.Minute)
	since(t, "new leader after leader kill -9", start)
	if nl := z.Leader(); nl == l || nl < 0 {
		t.Fatalf("leader %d after killing %d", nl, l)
	}
	// Another process took the killed member's client port meanwhile: it comes
	// back on fresh ports behind the same proxies.
	taken, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", z.members[l].clientPort()))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	z.Start(t, l)
	z.WaitQuorum(t, time.Minute)
	// Isolate the leader: the other two elect a new one; it rejoins as a follower.
	l = z.Leader()
	start = time.Now()
	z.Isolate(l)
	Eventually(t, time.Minute, "a new leader among the others", func() error {
		for i := range EnsembleSize {
			if i != l && z.Mode(i) == "leader" {
				return nil
			}
		}
		return fmt.Errorf("no leader besides the isolated %d", l)
	})
	since(t, "new leader after isolating the leader", start)
	z.Rejoin(l)
	z.WaitQuorum(t, time.Minute)
	Eventually(t, 30*time.Second, "zk set after rejoin", func() error {
		_, err := conn.Set("/ens", []byte("v2"), -1)
		return err
	})
}

// TestConsulCluster: a write through the client agent, the leader killed and
// restarted, the leader isolated (a new leader among the others; it rejoins), a
// quorum loss (the client agent's consistent reads fail, then work again), and the
// client agent restarted keeping what was registered through it.
func TestConsulCluster(t *testing.T) {
	start := time.Now()
	c := StartConsulCluster(t)
	since(t, "consul cluster start", start)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cli, err := consul.NewClient(&consul.Config{Address: c.Addr(), Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	put := func(v string) error {
		_, err := cli.KV().Put(&consul.KVPair{Key: "k", Value: []byte(v)}, nil)
		return err
	}
	Eventually(t, 30*time.Second, "kv put through the client agent", func() error { return put("v1") })
	if err := cli.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "s1", Name: "s", Port: 80}); err != nil {
		t.Fatal(err)
	}

	l := c.Leader()
	start = time.Now()
	c.Kill(l)
	c.WaitQuorum(t, time.Minute)
	since(t, "new leader after leader kill -9", start)
	if nl := c.Leader(); nl == l || nl < 0 {
		t.Fatalf("leader %d after killing %d", nl, l)
	}
	c.Start(t, l)
	c.WaitQuorum(t, time.Minute)

	l = c.Leader()
	start = time.Now()
	c.Isolate(l)
	Eventually(t, time.Minute, "a new leader among the others", func() error {
		if nl := c.Follower(); nl >= 0 && nl != l {
			if f := c.leaderOf(c.servers[nl]); f != c.servers[l].rpcP.Addr() {
				return nil
			}
		}
		return fmt.Errorf("no leader besides the isolated %d", l)
	})
	since(t, "new leader after isolating the leader", start)
	c.Rejoin(l)
	c.WaitQuorum(t, time.Minute)

	down := c.KillMajority()
	Eventually(t, time.Minute, "a consistent read fails without a quorum", func() error {
		if _, _, err := cli.KV().Get("k", &consul.QueryOptions{RequireConsistent: true}); err == nil {
			return fmt.Errorf("consistent read answered")
		}
		return nil
	})
	for _, i := range down {
		c.Start(t, i)
	}
	c.WaitQuorum(t, time.Minute)
	Eventually(t, 30*time.Second, "kv put after the quorum is back", func() error { return put("v2") })

	c.RestartAgent(t)
	c.WaitQuorum(t, time.Minute)
	Eventually(t, 30*time.Second, "the service registered through the client agent survives its restart", func() error {
		svcs, err := cli.Agent().Services()
		if err != nil {
			return err
		}
		if svcs["s1"] == nil {
			return fmt.Errorf("agent services %v", svcs)
		}
		return nil
	})
}
