package etcdtest

import (
	"bytes"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// Cluster is a real 3-member etcd cluster running in-process (embed) on loopback,
// every port of every member behind a fault proxy: clients dial Endpoints (each
// member's client proxy); members reach each other through peer proxies that tag
// every connection with the member id that opened it (rafthttp's X-Server-From
// header), so Isolate cuts one member off from its peers and clients in both
// directions. Kill stops a member abruptly, as kill -9 would (its connections die
// at once, no leadership transfer); Start restarts it on the same data dir.
type Cluster struct {
	token   string
	members []*member
}

type member struct {
	name                 string
	dir                  string
	clientPort, peerPort int
	clientP, peerP       *testenv.Proxy
	id                   string // hex member id, known after the first start

	mu sync.Mutex
	e  *embed.Etcd
}

// Size is the number of members of a Cluster.
const Size = 3

// StartCluster starts a 3-member cluster (heartbeat 100ms, election timeout 1s)
// with its data under t.TempDir() and waits until it has a leader. It is stopped
// by t.Cleanup.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{token: fmt.Sprintf("regkit-%d", time.Now().UnixNano())}
	root := t.TempDir()
	for i := range Size {
		m := &member{name: fmt.Sprintf("m%d", i), dir: filepath.Join(root, fmt.Sprintf("m%d", i)),
			clientPort: testenv.FreePort(t), peerPort: testenv.FreePort(t)}
		m.clientP = testenv.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", m.clientPort))
		m.peerP = testenv.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", m.peerPort))
		m.peerP.SetClassifier(classifyRaftHTTP)
		c.members = append(c.members, m)
	}
	t.Cleanup(c.Stop)
	for i := range c.members {
		c.Start(t, i)
	}
	c.WaitQuorum(t, time.Minute)
	for _, m := range c.members {
		m.mu.Lock()
		m.id = m.e.Server.MemberID().String()
		m.mu.Unlock()
	}
	return c
}

// classifyRaftHTTP tags a peer connection by the X-Server-From header of its first
// HTTP request: the id of the member that opened it.
func classifyRaftHTTP(b []byte) (string, []byte, bool) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return "", b, false
	}
	for _, line := range strings.Split(string(b[:end]), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), "X-Server-From") {
			return "id:" + strings.TrimSpace(v), b, true
		}
	}
	return "", b, true
}

func (c *Cluster) config(m *member) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", m.clientPort)}
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{{Scheme: "http", Host: m.clientP.Addr()}}
	cfg.ListenPeerUrls = []url.URL{{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", m.peerPort)}}
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: m.peerP.Addr()}}
	var ic []string
	for _, o := range c.members {
		ic = append(ic, o.name+"=http://"+o.peerP.Addr())
	}
	cfg.InitialCluster = strings.Join(ic, ",")
	cfg.InitialClusterToken = c.token
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.BcryptCost = uint(bcrypt.MinCost)
	// No HTTP grpc-gateway: it dials its own member with a gRPC client whose
	// goroutines carry no etcd server frame, so a restarted member's gateway
	// connection counted as a leaked client goroutine in the reliability checks.
	// The tests speak gRPC only.
	cfg.EnableGRPCGateway = false
	return cfg
}

// Start starts member i (again) on its ports and data dir. It does not wait for a
// quorum (see WaitQuorum): a member started alone during a quorum loss waits for
// its peers.
func (c *Cluster) Start(t testing.TB, i int) {
	t.Helper()
	m := c.members[i]
	cfg := c.config(m)
	var (
		e   *embed.Etcd
		err error
	)
	// After a Kill the kernel may hold the ports for a few milliseconds; and a
	// port FreePort returned may have been taken by another test process before
	// the member bound it. After a second of retries the member moves to fresh
	// ports: everyone dials it through its proxies (the advertised addresses),
	// which are pointed at the new ports, so nothing else changes.
	deadline := time.Now().Add(10 * time.Second)
	moveAt := time.Now().Add(time.Second)
	for {
		e, err = embed.StartEtcd(cfg)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Now().After(deadline) {
			break
		}
		if time.Now().After(moveAt) {
			m.clientPort, m.peerPort = testenv.FreePort(t), testenv.FreePort(t)
			m.clientP.SetUpstream(fmt.Sprintf("127.0.0.1:%d", m.clientPort))
			m.peerP.SetUpstream(fmt.Sprintf("127.0.0.1:%d", m.peerPort))
			cfg = c.config(m)
			moveAt = time.Now().Add(time.Second)
		}
		time.Sleep(50 * time.Millisecond) // retry interval
	}
	if err != nil {
		t.Fatalf("etcdtest: start member %d: %v", i, err)
	}
	m.mu.Lock()
	m.e = e
	m.mu.Unlock()
}

func (m *member) server() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e
}

// Up reports whether member i runs.
func (c *Cluster) Up(i int) bool { return c.members[i].server() != nil }

// Endpoints are the client addresses of every member (their client proxies), in
// member order.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientP.Addr()
	}
	return out
}

// DirectEndpoints are the members' own client addresses, bypassing the proxies
// (for admin reads that must not count as the client's traffic).
func (c *Cluster) DirectEndpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = fmt.Sprintf("127.0.0.1:%d", m.clientPort)
	}
	return out
}

// ClientProxy is member i's client proxy (Cut, Blackhole, counters).
func (c *Cluster) ClientProxy(i int) *testenv.Proxy { return c.members[i].clientP }

// Leader returns the index of the running member that is leader, or -1.
func (c *Cluster) Leader() int {
	for i, m := range c.members {
		if e := m.server(); e != nil && e.Server.Leader() == e.Server.MemberID() {
			select {
			case <-e.Server.StopNotify():
				continue
			default:
			}
			return i
		}
	}
	return -1
}

// Follower returns the index of a running member that is not the leader, or -1.
func (c *Cluster) Follower() int {
	l := c.Leader()
	for i := range c.members {
		if i != l && c.Up(i) {
			return i
		}
	}
	return -1
}

// WaitQuorum waits until every running member is ready and they agree on one
// leader that runs.
func (c *Cluster) WaitQuorum(t testing.TB, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, "etcd cluster has a leader and every running member is ready", func() error {
		var lead uint64
		for i, m := range c.members {
			e := m.server()
			if e == nil {
				continue
			}
			select {
			case <-e.Server.ReadyNotify():
			default:
				return fmt.Errorf("member %d not ready", i)
			}
			l := uint64(e.Server.Leader())
			if l == 0 || lead != 0 && l != lead {
				return fmt.Errorf("member %d sees leader %x (others %x)", i, l, lead)
			}
			lead = l
		}
		if lead == 0 {
			return fmt.Errorf("no member runs")
		}
		for _, m := range c.members {
			if e := m.server(); e != nil && uint64(e.Server.MemberID()) == lead {
				return nil
			}
		}
		return fmt.Errorf("the leader %x the members see is down", lead)
	})
}

// Kill stops member i abruptly, as kill -9 would: its client and peer connections
// are dropped at once, then raft stops without a leadership transfer
// (EtcdServer.HardStop) and the rest is closed. A no-op when it is down.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	m.mu.Lock()
	e := m.e
	m.e = nil
	m.mu.Unlock()
	if e == nil {
		return
	}
	c.isolate(m)
	e.Server.HardStop()
	e.Close()
	c.rejoin(m) // the proxies now lead to a closed port, as a dead process's would
}

// KillMajority kills the leader and one follower (the quorum is lost) and returns
// their indexes, to Start again later.
func (c *Cluster) KillMajority() []int {
	l := c.Leader()
	var out []int
	if l >= 0 {
		out = append(out, l)
	}
	for i := range c.members {
		if len(out) == Size/2+1 {
			break
		}
		if i != l && c.Up(i) {
			out = append(out, i)
		}
	}
	for _, i := range out {
		c.Kill(i)
	}
	return out
}

// Isolate cuts member i off: its clients' and peers' connections to it carry
// nothing, and its own connections to the other members are dropped and refused,
// until Rejoin.
func (c *Cluster) Isolate(i int) { c.isolate(c.members[i]) }

// Rejoin undoes Isolate.
func (c *Cluster) Rejoin(i int) { c.rejoin(c.members[i]) }

func (c *Cluster) isolate(m *member) {
	m.clientP.Blackhole()
	m.peerP.Blackhole()
	for _, o := range c.members {
		if o != m && m.id != "" {
			o.peerP.Block("id:" + m.id)
		}
	}
}

func (c *Cluster) rejoin(m *member) {
	for _, o := range c.members {
		if o != m && m.id != "" {
			o.peerP.Unblock("id:" + m.id)
		}
	}
	m.clientP.Heal()
	m.peerP.Heal()
}

// Stop stops every member.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for i := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Kill(i)
		}()
	}
	wg.Wait()
}
