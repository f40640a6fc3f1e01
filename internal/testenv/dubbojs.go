//go:build unix

package testenv

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// DubboJSVersion is the node-zookeeper-dubbo release scripts/install-servers.sh
// installs (npm) under ServersDir()/dubbojs and the Dubbo JS peer runs.
const DubboJSVersion = "3.0.15"

//go:embed dubbojs/peer.js
var dubboJSPeerSrc []byte

// DubboJSDependency is one entry of node-zookeeper-dubbo's dependencies option: the
// interface a consumer calls, in a version and group ("" for none).
type DubboJSDependency struct {
	Interface string `json:"interface"`
	Version   string `json:"version,omitempty"`
	Group     string `json:"group,omitempty"`
}

// DubboJSProvider is a provider URL node-zookeeper-dubbo chose for a dependency,
// as it parsed it (Node's url.parse and querystring.parse): Protocol is "dubbo:",
// Query the URL's parameters (a repeated one is a JSON array).
type DubboJSProvider struct {
	Protocol string         `json:"protocol"`
	Hostname string         `json:"hostname"`
	Port     int            `json:"port"`
	Query    map[string]any `json:"query"`
}

// DubboJSPeer is a live node-zookeeper-dubbo consumer (its Yoke class) in a Node
// process of its own (see dubbojs/peer.js): it watches the providers of its
// dependencies in ZooKeeper, builds its Service on the ones it chose (dialing their
// host:port) and registers its consumer URLs, as an application using the package
// does. Its methods are safe for concurrent use.
type DubboJSPeer struct {
	*peerProc // Kill, Close (it closes its ZooKeeper client, deleting its consumer nodes)
	t         testing.TB
	first     chan struct{} // closed at the first report

	mu      sync.Mutex
	reports int
	latest  map[string]json.RawMessage
}

// StartDubboJSPeer starts the peer against ZooKeeper's connect string
// ("host:port[/chroot]") with Yoke's root (Dubbo's registry group, e.g. "dubbo")
// and dependencies (by key), and waits for its first report: every dependency has
// had its providers listed once. It is stopped by t.Cleanup. A missing node or
// node-zookeeper-dubbo fails the test: run scripts/install-servers.sh.
func StartDubboJSPeer(t testing.TB, connect, root string, deps map[string]DubboJSDependency) *DubboJSPeer {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("testenv: the Dubbo JS peer needs Node.js (%v): run scripts/install-servers.sh", err)
	}
	modules := filepath.Join(ServersDir(), "dubbojs", "node_modules")
	b, err := os.ReadFile(filepath.Join(modules, "node-zookeeper-dubbo", "package.json"))
	if err != nil {
		t.Fatalf("testenv: node-zookeeper-dubbo is not installed (%v): run scripts/install-servers.sh", err)
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(b, &pkg); err != nil || pkg.Version != DubboJSVersion {
		t.Fatalf("testenv: node-zookeeper-dubbo in %s is %q (%v), want %s: run scripts/install-servers.sh",
			modules, pkg.Version, err, DubboJSVersion)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "peer.js")
	if err := os.WriteFile(script, dubboJSPeerSrc, 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	depsJSON, err := json.Marshal(deps)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p := &DubboJSPeer{t: t, first: make(chan struct{})}
	cmd := exec.Command(node, script, connect, root, string(depsJSON))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "FORCE_COLOR=0")
	p.peerProc = startPeerProc(t, "Dubbo JS peer", cmd, filepath.Join(dir, "dubbojs-peer.log"), "", p.onLine)
	select {
	case <-p.first:
	case <-p.done:
		t.Fatalf("testenv: the Dubbo JS peer exited before its first report\n%s", p.logTail())
	case <-time.After(60 * time.Second):
		t.Fatalf("testenv: the Dubbo JS peer made no report within 60s\n%s", p.logTail())
	}
	return p
}

// onLine takes a report of the providers chosen; other lines go to the log.
func (p *DubboJSPeer) onLine(line string) bool {
	r, ok := strings.CutPrefix(line, "providers ")
	if !ok {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(r), &m) != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latest = m
	p.reports++
	if p.reports == 1 {
		close(p.first)
	}
	return true
}

// Chosen returns the providers the peer's latest report says it chose for the
// dependency called key (none: an empty slice), and how many reports it has made.
// An error is a failed listing the package reported, or a key it never reported.
func (p *DubboJSPeer) Chosen(key string) ([]DubboJSProvider, int, error) {
	p.mu.Lock()
	raw, ok := p.latest[key]
	n := p.reports
	p.mu.Unlock()
	if !ok {
		return nil, n, fmt.Errorf("dubbojs peer: no report of dependency %q", key)
	}
	var ps []DubboJSProvider
	if err := json.Unmarshal(raw, &ps); err != nil {
		return nil, n, fmt.Errorf("dubbojs peer: dependency %q: %s", key, raw)
	}
	return ps, n, nil
}
