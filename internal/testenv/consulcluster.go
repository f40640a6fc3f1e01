//go:build unix

package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ConsulCluster is a real Consul cluster on loopback: three server agents
// (-server -bootstrap-expect=3, the cached Consul binary, raft_multiplier 1: a
// follower notices a dead leader within about a second) and one client agent that
// regkit's clients register and watch through, as in production. Each agent binds
// a loopback address of its own (servers 127.0.11.1-3, the client agent
// 127.0.12.1), so every connection it opens carries its source address. Every
// server's RPC port (raft and the agents' RPCs: Consul multiplexes both on it) is
// behind a fault Proxy that tags each connection with its source, so Isolate cuts a
// server off from its peers and from the client agent in both directions: a server
// advertises 127.0.21.N (Consul advertises one address for gossip and RPC, with the
// RPC port it binds), where its proxy listens on its RPC port and its gossip, bound
// to every address, answers too. The client agent's HTTP port is
// behind a Proxy too (Addr): what regkit's clients dial, and what counts their
// connections and bytes. Serf gossip (TCP and UDP) is not proxied: an isolated
// server still gossips, so the others see it alive while it can neither lead nor
// follow. DNS and gRPC are off. Kill is kill -9; Start restarts a member on its
// data directory; KillMajority and Start of those make a quorum loss.
// Autopilot's dead-server cleanup is off, so a killed server stays a voter.
type ConsulCluster struct {
	servers []*consulMember
	agent   *consulMember
	httpP   *Proxy // in front of the client agent's HTTP port
}

type consulMember struct {
	name, ip, dir                      string
	advIP                              string // the address advertised: the proxy's for servers
	http, serfLAN, serfWAN, serverPort int
	rpcP                               *Proxy // servers: in front of the RPC port, advertised
	server                             bool

	mu   sync.Mutex
	up   bool
	proc procSlot
}

// StartConsulCluster starts the three servers and the client agent and waits until
// the servers have elected a leader that the client agent knows. It is stopped by
// t.Cleanup.
func StartConsulCluster(t testing.TB) *ConsulCluster {
	t.Helper()
	Binary(t, "consul")
	c := &ConsulCluster{}
	root := t.TempDir()
	for i := range EnsembleSize {
		ip := fmt.Sprintf("127.0.11.%d", i+1)
		m := &consulMember{name: fmt.Sprintf("server%d", i+1), ip: ip, advIP: fmt.Sprintf("127.0.21.%d", i+1),
			server: true, dir: filepath.Join(root, fmt.Sprintf("server%d", i+1))}
		m.pickPorts(t)
		m.rpcP = NewProxyOn(t, fmt.Sprintf("%s:%d", m.advIP, m.serverPort), fmt.Sprintf("%s:%d", ip, m.serverPort))
		m.rpcP.TagBySource()
		c.servers = append(c.servers, m)
	}
	c.agent = &consulMember{name: "client", ip: "127.0.12.1", advIP: "127.0.12.1", dir: filepath.Join(root, "client")}
	c.agent.pickPorts(t)
	c.httpP = NewProxy(t, c.agent.httpAddr())
	for _, m := range append(c.servers, c.agent) {
		if err := os.MkdirAll(filepath.Join(m.dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := c.writeConfig(m); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	t.Cleanup(c.Stop)
	var wg sync.WaitGroup
	errs := make([]error, EnsembleSize)
	for i := range c.servers {
		wg.Add(1)
		go func() { // the servers wait for each other to bootstrap: start them together
			defer wg.Done()
			errs[i] = c.tryStart(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	c.StartAgent(t)
	c.WaitQuorum(t, 2*time.Minute)
	return c
}

// pickPorts picks free ports on m's own loopback address.
func (m *consulMember) pickPorts(t testing.TB) {
	m.http, m.serfWAN, m.serverPort = freePortOn(t, m.ip), freePortOn(t, m.ip), freePortOn(t, m.ip)
	m.serfLAN = freePortOn(t, m.advIP)
}

// freePortOn returns a port free for both TCP and UDP on ip.
func freePortOn(t testing.TB, ip string) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatalf("testenv: free port on %s: %v", ip, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", ip, port))
		l.Close()
		if err == nil {
			u.Close()
			if claimPort(port) {
				return port
			}
		}
	}
	t.Fatalf("testenv: no port free for TCP and UDP on %s", ip)
	return 0
}

// writeConfig writes m's consul.hcl.
func (c *ConsulCluster) writeConfig(m *consulMember) error {
	var join []string
	for _, o := range c.servers {
		if o != m {
			join = append(join, fmt.Sprintf("%q", fmt.Sprintf("%s:%d", o.advIP, o.serfLAN)))
		}
	}
	// Gossip is reached at the advertised address. It binds that address only,
	// not 0.0.0.0: a wildcard bind collides with any other process's listener on
	// the port, and a server restarted after a while found its port taken so.
	serfBind := m.advIP
	var b strings.Builder
	fmt.Fprintf(&b, `node_name = %q
datacenter = "dc1"
data_dir = %q
bind_addr = %q
serf_lan = %q
advertise_addr = %q
client_addr = %q
log_level = "warn"
disable_update_check = true
leave_on_terminate = false
skip_leave_on_interrupt = true
retry_join = [%s]
retry_interval = "1s"
ports {
  http = %d
  https = -1
  dns = -1
  grpc = -1
  grpc_tls = -1
  serf_lan = %d
  serf_wan = %d
  server = %d
}
performance {
  raft_multiplier = 1
}
`, m.name, filepath.Join(m.dir, "data"), m.ip, serfBind, m.advIP, m.ip, strings.Join(join, ", "), m.http, m.serfLAN, m.serfWAN, m.serverPort)
	if m.server {
		fmt.Fprintf(&b, `server = true
bootstrap_expect = %d
autopilot {
  cleanup_dead_servers = false
  server_stabilization_time = "1s"
}
`, EnsembleSize)
	} else {
		b.WriteString("server = false\n")
	}
	return os.WriteFile(filepath.Join(m.dir, "consul.hcl"), []byte(b.String()), 0o644)
}

func (m *consulMember) httpAddr() string { return fmt.Sprintf("%s:%d", m.ip, m.http) }

func (m *consulMember) isUp() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.up
}

func (m *consulMember) setUp(up bool) {
	m.mu.Lock()
	m.up = up
	m.mu.Unlock()
}

// launch starts m's agent and waits until its HTTP API answers (not for a leader).
func (m *consulMember) launch() error {
	args := []string{"agent", "-config-file=" + filepath.Join(m.dir, "consul.hcl")}
	ready := func() error {
		code, _, err := consulGet(m.httpAddr(), "/v1/agent/self")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("agent/self answered %d", code)
		}
		return nil
	}
	bin := filepath.Join(ServersDir(), "consul")
	if err := m.proc.tryLaunch("consul-"+m.name, bin, args, m.dir, filepath.Join(m.dir, "consul.log"),
		[]string{"CHECKPOINT_DISABLE=1"}, 60*time.Second, ready); err != nil {
		return err
	}
	m.setUp(true)
	return nil
}

func (c *ConsulCluster) tryStart(i int) error { return c.servers[i].launch() }

// consulGet GETs path from an agent's HTTP API at addr.
func consulGet(addr, path string) (int, string, error) {
	resp, err := consulHTTP.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// Addr is the client agent's HTTP address as regkit's clients dial it (through its
// proxy).
func (c *ConsulCluster) Addr() string { return c.httpP.Addr() }

// AgentProxy is the proxy in front of the client agent's HTTP port.
func (c *ConsulCluster) AgentProxy() *Proxy { return c.httpP }

// ClientProxy is the proxy regkit's clients go through to reach member i: for
// Consul the client agent's, the same for every i (the client agent reaches the
// servers through their RPC proxies, see RPCProxy).
func (c *ConsulCluster) ClientProxy(int) *Proxy { return c.httpP }

// RPCProxy is server i's RPC proxy.
func (c *ConsulCluster) RPCProxy(i int) *Proxy { return c.servers[i].rpcP }

// ServerHTTPAddrs are the servers' own HTTP addresses, bypassing every proxy (for
// admin reads that must not count as the clients' traffic).
func (c *ConsulCluster) ServerHTTPAddrs() []string {
	out := make([]string, len(c.servers))
	for i, m := range c.servers {
		out[i] = m.httpAddr()
	}
	return out
}

// Start starts server i (again) on its ports and data directory and waits until its
// HTTP API answers (not for a leader: see WaitQuorum).
func (c *ConsulCluster) Start(t testing.TB, i int) {
	t.Helper()
	if err := c.servers[i].launch(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Kill SIGKILLs server i: a crash.
func (c *ConsulCluster) Kill(i int) {
	c.servers[i].proc.kill()
	c.servers[i].setUp(false)
}

// Up reports whether server i's process runs.
func (c *ConsulCluster) Up(i int) bool { return c.servers[i].isUp() }

// StartAgent starts the client agent (again) on its data directory, which keeps
// the services and checks registered through it, and waits until it answers.
func (c *ConsulCluster) StartAgent(t testing.TB) {
	t.Helper()
	if err := c.agent.launch(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// KillAgent SIGKILLs the client agent.
func (c *ConsulCluster) KillAgent() {
	c.agent.proc.kill()
	c.agent.setUp(false)
}

// RestartAgent kills the client agent with SIGKILL and starts it again.
func (c *ConsulCluster) RestartAgent(t testing.TB) {
	t.Helper()
	c.KillAgent()
	c.StartAgent(t)
}

// leaderOf is the leader server i knows ("" for none or no answer), as its
// advertised RPC address.
func (c *ConsulCluster) leaderOf(m *consulMember) string {
	code, body, err := consulGet(m.httpAddr(), "/v1/status/leader")
	if err != nil || code != http.StatusOK {
		return ""
	}
	var l string
	if json.Unmarshal([]byte(body), &l) != nil {
		return ""
	}
	return l
}

// Leader returns the index of the running server that believes itself leader,
// or -1.
func (c *ConsulCluster) Leader() int {
	for i, m := range c.servers {
		if m.isUp() && c.leaderOf(m) == m.rpcP.Addr() {
			return i
		}
	}
	return -1
}

// Follower returns the index of a running server that knows a leader other than
// itself, or -1.
func (c *ConsulCluster) Follower() int {
	for i, m := range c.servers {
		if l := c.leaderOf(m); m.isUp() && l != "" && l != m.rpcP.Addr() {
			return i
		}
	}
	return -1
}

// WaitQuorum waits until every running server knows one leader, that leader is up,
// the client agent knows it too and can read the catalog through it.
func (c *ConsulCluster) WaitQuorum(t testing.TB, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "consul cluster has a leader every running agent knows", func() error {
		leader := ""
		for i, m := range c.servers {
			if !m.isUp() {
				continue
			}
			l := c.leaderOf(m)
			if l == "" {
				return fmt.Errorf("server %d knows no leader", i)
			}
			if leader != "" && l != leader {
				return fmt.Errorf("servers disagree on the leader: %s, %s", leader, l)
			}
			leader = l
		}
		if li := c.Leader(); li < 0 || c.servers[li].rpcP.Addr() != leader {
			return fmt.Errorf("leader %q is not a running server", leader)
		}
		if c.agent.isUp() {
			if l := c.leaderOf(c.agent); l != leader {
				return fmt.Errorf("client agent knows leader %q, servers %q", l, leader)
			}
			code, body, err := consulGet(c.agent.httpAddr(), "/v1/catalog/nodes")
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("client agent's catalog read: %d %s %v", code, body, err)
			}
		}
		return nil
	})
}

// KillMajority kills the leader and one follower (the quorum is lost) and returns
// their indexes, to Start again later.
func (c *ConsulCluster) KillMajority() []int {
	l := c.Leader()
	var out []int
	if l >= 0 {
		out = append(out, l)
	}
	for i, m := range c.servers {
		if len(out) == EnsembleSize/2+1 {
			break
		}
		if i != l && m.isUp() {
			out = append(out, i)
		}
	}
	for _, i := range out {
		c.Kill(i)
	}
	return out
}

// Isolate cuts server i off: connections to its RPC port (from its peers and the
// client agent) carry nothing (blackholed), and its own connections to the other
// servers' RPC ports are dropped and refused, until Rejoin. Gossip still flows.
func (c *ConsulCluster) Isolate(i int) {
	m := c.servers[i]
	m.rpcP.Blackhole()
	for _, o := range c.servers {
		if o != m {
			o.rpcP.Block("ip:" + m.ip)
		}
	}
}

// Rejoin undoes Isolate.
func (c *ConsulCluster) Rejoin(i int) {
	m := c.servers[i]
	for _, o := range c.servers {
		if o != m {
			o.rpcP.Unblock("ip:" + m.ip)
		}
	}
	m.rpcP.Heal()
}

// Stop stops every agent.
func (c *ConsulCluster) Stop() {
	var wg sync.WaitGroup
	for _, m := range append(c.servers, c.agent) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.proc.stop(5 * time.Second)
		}()
	}
	wg.Wait()
}

// AgentLogTail is the end of the client agent's log, for failure messages.
func (c *ConsulCluster) AgentLogTail() string {
	b, _ := os.ReadFile(filepath.Join(c.agent.dir, "consul.log"))
	const max = 6000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
