// Package testenv starts the real servers the tests run against (ZooKeeper, a Consul
// agent, Polaris) on free loopback ports, and injects faults for real with a TCP
// fault proxy. A missing server binary fails the test, never skips it: run
// scripts/install-servers.sh. The embedded etcd the etcd tests use is package
// etcd/embedded/internal/etcdtest, in the etcd/embedded module, so that the etcd
// server stays out of the root module's requirements.
package testenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and that
// no earlier call in this process returned: the kernel may hand the same free
// port to two listens in a row, and a server given it twice (a ZooKeeper member's
// client and election ports) refuses to start.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if claimPort(p) {
			return p
		}
	}
	t.Fatal("testenv: free port: 100 ports in a row were given out before")
	return 0
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{} // handed out by FreePort and freePortOn
)

// claimPort records p as handed out, reporting false when it was already.
func claimPort(p int) bool {
	portsMu.Lock()
	defer portsMu.Unlock()
	if ports[p] {
		return false
	}
	ports[p] = true
	return true
}

// ServersDir is where scripts/install-servers.sh caches server binaries
// ($REGKIT_SERVERS_DIR, default ~/.cache/regkit/servers).
func ServersDir() string {
	if d := os.Getenv("REGKIT_SERVERS_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "regkit", "servers")
}

// Binary returns the path of an installed server file under ServersDir, failing the
// test (never skipping) when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ServersDir(), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("testenv: %s is not installed (%v): run scripts/install-servers.sh", name, err)
	}
	return p
}

// WaitTCP polls addr until it accepts a connection or timeout passes.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: %s not accepting connections after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a wait for a condition
	}
}

// Eventually polls cond until it returns nil or timeout passes, then fails the test
// with cond's last error (see package poll).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

// ClosedAddr returns a loopback "127.0.0.1:port" on which nothing listens (a port
// that was free a moment ago), for connect-failure tests.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
