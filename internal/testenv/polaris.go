//go:build unix

package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Polaris is a real polaris-server process (boltdb store, in a temp dir) whose
// Nacos-compatible API the tests use.
type Polaris struct {
	dir   string
	ports map[string]int // apiserver name -> listen port

	proc procSlot
}

var (
	reAPIServerName = regexp.MustCompile(`^  - name: (\S+)`)
	reListenPort    = regexp.MustCompile(`^(\s*listenPort:)\s*\d+`)
	reListenIP      = regexp.MustCompile(`^(\s*listenIP:)\s*.*$`)
	reStorePath     = regexp.MustCompile(`^(\s*path:)\s*\./polaris\.bolt\s*$`)
	reOutputLevel   = regexp.MustCompile(`^(\s*outputLevel:)\s*\S+`)
)

// StartPolaris starts polaris-server with the cached default configuration
// (scripts/install-servers.sh) rewritten so that every API server listens on a free
// 127.0.0.1 port and the store, logs and local data live under t.TempDir(). It
// waits until the Nacos-compatible API answers. It is stopped by t.Cleanup.
func StartPolaris(t testing.TB) *Polaris {
	t.Helper()
	Binary(t, "polaris-server")
	src := Binary(t, filepath.Join("polaris-conf", "polaris-server.yaml"))
	pl := &Polaris{dir: t.TempDir(), ports: map[string]int{}}
	t.Cleanup(pl.Stop)
	for attempt := 1; ; attempt++ {
		if err := pl.writeConfig(t, src); err != nil {
			t.Fatalf("testenv: polaris config: %v", err)
		}
		if pl.ports["service-nacos"] == 0 {
			t.Fatalf("testenv: %s has no service-nacos apiserver", src)
		}
		err := pl.tryStart(t)
		if err == nil {
			return pl
		}
		if !errPortTaken(err) || attempt == 3 {
			t.Fatalf("testenv: %v", err)
		}
		// Another process took a port between choosing it and the bind: new ports.
	}
}

// writeConfig rewrites the default config line by line: the file is plain YAML with
// one apiserver per "  - name:" entry under "apiservers:".
func (pl *Polaris) writeConfig(t testing.TB, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	var out strings.Builder
	section, server := "", ""
	// A port is free again once its probe closed it: a later pick could return it
	// a second time, and Polaris, two API servers on one port, would stop at once.
	used := map[int]bool{}
	pick := func(delta int) int {
		for {
			var p int
			if delta > 0 {
				p = freePortPair(t, delta)
			} else {
				p = FreePort(t)
			}
			if !used[p] && !used[p+delta] {
				used[p], used[p+delta] = true, true
				return p
			}
		}
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		if len(line) > 0 && line[0] != ' ' && line[0] != '#' {
			section, server = strings.TrimSuffix(strings.TrimSpace(line), ":"), ""
		}
		if section == "apiservers" {
			if m := reAPIServerName.FindStringSubmatch(line); m != nil {
				server = m[1]
			}
		}
		switch {
		case section == "apiservers" && reListenPort.MatchString(line):
			var port int
			if server == "service-nacos" {
				// The Nacos v2 gRPC API listens on the HTTP port + 1000.
				port = pick(1000)
			} else {
				port = pick(0)
			}
			pl.ports[server] = port
			line = reListenPort.ReplaceAllString(line, fmt.Sprintf("${1} %d", port))
		case section == "apiservers" && reListenIP.MatchString(line):
			line = reListenIP.ReplaceAllString(line, `${1} "127.0.0.1"`)
		case section == "store" && reStorePath.MatchString(line):
			line = reStorePath.ReplaceAllString(line, "${1} "+filepath.Join(pl.dir, "polaris.bolt"))
		case section == "bootstrap" && reOutputLevel.MatchString(line):
			line = reOutputLevel.ReplaceAllString(line, "${1} error")
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(pl.dir, "polaris-server.yaml"), []byte(out.String()), 0o644)
}

// freePortPair returns a free loopback port p such that p+delta is free too.
func freePortPair(t testing.TB, delta int) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+delta))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatalf("testenv: no free port pair %d apart", delta)
	return 0
}

// NacosAddr is the Nacos-compatible HTTP API address, "127.0.0.1:port"
// (e.g. POST /nacos/v1/ns/instance, GET /nacos/v1/ns/instance/list).
func (pl *Polaris) NacosAddr() string {
	return fmt.Sprintf("127.0.0.1:%d", pl.ports["service-nacos"])
}

// HTTPAddr is Polaris's own HTTP API address (api-http), "" if it is not configured.
func (pl *Polaris) HTTPAddr() string {
	if p := pl.ports["api-http"]; p != 0 {
		return fmt.Sprintf("127.0.0.1:%d", p)
	}
	return ""
}

func (pl *Polaris) start(t testing.TB) {
	t.Helper()
	if err := pl.tryStart(t); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func (pl *Polaris) tryStart(t testing.TB) error {
	t.Helper()
	args := []string{"start", "-c", filepath.Join(pl.dir, "polaris-server.yaml")}
	return pl.proc.tryLaunch("polaris", Binary(t, "polaris-server"), args, pl.dir, filepath.Join(pl.dir, "polaris.out"), nil,
		60*time.Second, pl.ready)
}

var polarisHTTP = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (pl *Polaris) ready() error {
	resp, err := polarisHTTP.Get("http://" + pl.NacosAddr() + "/nacos/v1/ns/operator/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "UP") {
		return fmt.Errorf("nacos api: %d %s", resp.StatusCode, b)
	}
	return nil
}

// Stop kills the server (a no-op when it is already stopped). It is not asked to
// shut down gracefully: polaris-server's graceful stop sleeps 5s unconditionally
// (bootstrap.SelfDeregister), and boltdb commits are already on disk.
func (pl *Polaris) Stop() { pl.proc.kill() }

// Restart kills the server and starts it again on the same ports with the same
// store, so registrations persist (until their heartbeats time out).
func (pl *Polaris) Restart(t testing.TB) {
	t.Helper()
	pl.proc.kill()
	pl.start(t)
}
