//go:build unix

package testenv

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	done    chan struct{}
	first   chan struct{} // closed at the first report

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
	p := &DubboJSPeer{t: t, logPath: filepath.Join(dir, "dubbojs-peer.log"),
		done: make(chan struct{}), first: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer logf.Close() // the child has its own descriptor
	p.cmd = exec.Command(node, script, connect, root, string(depsJSON))
	p.cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "FORCE_COLOR=0")
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = sysProcAttr()
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("testenv: start the Dubbo JS peer: %v", err)
	}
	go p.read(out)
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			t.Logf("--- Dubbo JS peer log %s ---\n%s", p.logPath, p.logTail())
		}
	})
	select {
	case <-p.first:
	case <-p.done:
		t.Fatalf("testenv: the Dubbo JS peer exited before its first report\n%s", p.logTail())
	case <-time.After(60 * time.Second):
		t.Fatalf("testenv: the Dubbo JS peer made no report within 60s\n%s", p.logTail())
	}
	return p
}

// read keeps the peer's reports and logs its other output lines (the package's
// own messages) until it ends, then reaps the process.
func (p *DubboJSPeer) read(out io.Reader) {
	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		log = nil
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if r, ok := strings.CutPrefix(line, "providers "); ok {
			var m map[string]json.RawMessage
			if json.Unmarshal([]byte(r), &m) == nil {
				p.mu.Lock()
				p.latest = m
				p.reports++
				if p.reports == 1 {
					close(p.first)
				}
				p.mu.Unlock()
				continue
			}
		}
		if log != nil {
			fmt.Fprintln(log, line)
		}
	}
	if log != nil {
		log.Close()
	}
	_, _ = io.Copy(io.Discard, out)
	_ = p.cmd.Wait()
	close(p.done)
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

// Kill kills the peer with SIGKILL (its ZooKeeper session stays until it expires).
func (p *DubboJSPeer) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Close closes the peer's ZooKeeper client (deleting its consumer nodes) and ends
// it, killing it after 15s; a no-op once it has exited.
func (p *DubboJSPeer) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Kill()
	}
}

func (p *DubboJSPeer) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}
