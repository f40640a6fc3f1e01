//go:build unix

package testenv

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ConsulOption configures StartConsul.
type ConsulOption func(*Consul)

// WithConsulACL enables ACLs with default_policy "deny" and managementToken as the
// initial management token.
func WithConsulACL(managementToken string) ConsulOption {
	return func(c *Consul) { c.token = managementToken }
}

// WithConsulPersistent runs a single server agent that keeps its state in a data
// directory (-server -bootstrap-expect=1) instead of -dev, so Restart keeps the KV
// store, sessions and registrations, as a real Consul server does.
func WithConsulPersistent() ConsulOption {
	return func(c *Consul) { c.persistent = true }
}

// WithConsulMaxConnsPerClient sets the agent's limits.http_max_conns_per_client
// (Consul's default 200): benchmarks with many waiters, each in a blocking
// query, from one address need more.
func WithConsulMaxConnsPerClient(n int) ConsulOption {
	return func(c *Consul) { c.maxConns = n }
}

// WithConsulKVMaxValueSize sets the agent's limits.kv_max_value_size (Consul's
// default 512 KiB), to make the server refuse values a client lets through.
func WithConsulKVMaxValueSize(n int) ConsulOption {
	return func(c *Consul) { c.kvMax = n }
}

// Consul is a real Consul agent: -dev mode (a single in-memory server) by default,
// or a single persistent server with WithConsulPersistent.
type Consul struct {
	httpPort, serfLAN, serfWAN, serverPort int
	dir                                    string
	token                                  string
	persistent                             bool
	maxConns                               int
	kvMax                                  int

	proc procSlot
}

// StartConsul starts `consul agent -dev` bound to 127.0.0.1 on free ports (DNS and
// gRPC disabled), and waits until it has elected itself leader. It is stopped by
// t.Cleanup.
func StartConsul(t testing.TB, opts ...ConsulOption) *Consul {
	t.Helper()
	Binary(t, "consul")
	c := &Consul{dir: t.TempDir()}
	c.pickPorts(t)
	for _, o := range opts {
		o(c)
	}
	hcl := "disable_update_check = true\n"
	if c.persistent {
		hcl += "performance {\n  raft_multiplier = 1\n}\n"
	}
	if c.maxConns > 0 || c.kvMax > 0 {
		hcl += "limits {\n"
		if c.maxConns > 0 {
			hcl += fmt.Sprintf("  http_max_conns_per_client = %d\n", c.maxConns)
		}
		if c.kvMax > 0 {
			hcl += fmt.Sprintf("  kv_max_value_size = %d\n", c.kvMax)
		}
		hcl += "}\n"
	}
	if c.token != "" {
		hcl += fmt.Sprintf(`acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = false
  tokens {
    initial_management = %q
  }
}
`, c.token)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "consul.hcl"), []byte(hcl), 0o644); err != nil {
		t.Fatalf("testenv: write consul config: %v", err)
	}
	t.Cleanup(c.Stop)
	for attempt := 1; ; attempt++ {
		err := c.tryStart(t)
		if err == nil {
			return c
		}
		if !errPortTaken(err) || attempt == 3 {
			t.Fatalf("testenv: %v", err)
		}
		c.pickPorts(t) // another process took a port between FreePort and the bind
	}
}

func (c *Consul) pickPorts(t testing.TB) {
	c.httpPort, c.serfLAN, c.serfWAN, c.serverPort = FreePort(t), freeTCPUDPPort(t), freeTCPUDPPort(t), FreePort(t)
}

// freeTCPUDPPort returns a loopback port free for both TCP and UDP (Serf uses both).
func freeTCPUDPPort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		port := FreePort(t)
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatalf("testenv: no port free for both TCP and UDP")
	return 0
}

// Addr is the HTTP API address, "127.0.0.1:port".
func (c *Consul) Addr() string { return fmt.Sprintf("127.0.0.1:%d", c.httpPort) }

// Token is the ACL management token ("" without WithConsulACL).
func (c *Consul) Token() string { return c.token }

func (c *Consul) start(t testing.TB) {
	t.Helper()
	if err := c.tryStart(t); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func (c *Consul) tryStart(t testing.TB) error {
	t.Helper()
	args := []string{
		"agent", "-dev",
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-log-level=error",
		"-http-port=" + strconv.Itoa(c.httpPort),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-https-port=-1",
		"-serf-lan-port=" + strconv.Itoa(c.serfLAN),
		"-serf-wan-port=" + strconv.Itoa(c.serfWAN),
		"-server-port=" + strconv.Itoa(c.serverPort),
		"-config-file=" + filepath.Join(c.dir, "consul.hcl"),
	}
	if c.persistent { // replace -dev
		args = append([]string{"agent", "-server", "-bootstrap-expect=1", "-node=testenv",
			"-data-dir=" + filepath.Join(c.dir, "data")}, args[2:]...)
	}
	return c.proc.tryLaunch("consul", Binary(t, "consul"), args, c.dir, filepath.Join(c.dir, "consul.log"),
		[]string{"CHECKPOINT_DISABLE=1"}, 60*time.Second, c.ready)
}

var consulHTTP = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (c *Consul) get(path string) (int, string, error) {
	req, err := http.NewRequest("GET", "http://"+c.Addr()+path, nil)
	if err != nil {
		return 0, "", err
	}
	if c.token != "" {
		req.Header.Set("X-Consul-Token", c.token)
	}
	resp, err := consulHTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// ready wants a leader, the agent's node in the catalog and, with ACLs, the
// management token to be usable.
func (c *Consul) ready() error {
	code, body, err := c.get("/v1/status/leader")
	if err != nil {
		return err
	}
	if code != http.StatusOK || body == "" || body == `""` {
		return fmt.Errorf("no leader yet: %d %s", code, body)
	}
	// The agent registers its own node in the catalog a moment after the
	// election; until then a session create fails with "Missing node
	// registration".
	if code, body, err := c.get("/v1/catalog/nodes"); err != nil {
		return err
	} else if code != http.StatusOK || body == "" || body == "[]" || body == "null" {
		return fmt.Errorf("the agent's node is not in the catalog yet: %d %s", code, body)
	}
	if c.token != "" {
		code, body, err := c.get("/v1/acl/token/self")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("management token not usable yet: %d %s", code, body)
		}
	}
	return nil
}

// Stop stops the agent (a no-op when it is already stopped).
func (c *Consul) Stop() { c.proc.stop(5 * time.Second) }

// Restart kills the agent and starts it again on the same ports. Dev mode keeps
// everything in memory, so the restarted agent has lost all state (with ACLs, the
// same management token is bootstrapped again); a persistent server keeps its KV
// store, sessions and catalog.
func (c *Consul) Restart(t testing.TB) {
	t.Helper()
	c.proc.kill()
	c.start(t)
}
