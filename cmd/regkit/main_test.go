package main

// These tests run the built binary, as users do, against real servers started
// by the tests: an embedded etcd (package etcd/embedded) and a ZooKeeper
// (internal/testenv; the internal rule is by import path, so this nested module
// may use the root's test helpers).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/internal/poll"
)

var (
	bin  string           // the built regkit binary
	etcd *embedded.Server // shared by the tests that do not stop it
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "regkit-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "regkit")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race") // the binary is checked too: a race exits 66
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "go build:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err = embedded.Start(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer etcd.Close()
	return m.Run()
}

// result is a finished run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// regkit runs the binary to completion with REGKIT_URL=url (url "" unsets it).
func regkit(t *testing.T, url string, args ...string) result {
	t.Helper()
	return regkitIn(t, url, nil, args...)
}

func regkitIn(t *testing.T, url string, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env(url)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("regkit %q: %v", args, err)
	}
	if r.code == 66 || strings.Contains(r.stderr, "WARNING: DATA RACE") {
		t.Fatalf("regkit %q: data race:\n%s", args, r.stderr)
	}
	return r
}

func env(url string) []string {
	var e []string
	// A -race binary sleeps 1s at exit by default (so that other goroutines can
	// finish a report): most of the time of these tests, which run it hundreds
	// of times. 50ms is left for that; a race still exits 66.
	gorace := "atexit_sleep_ms=50"
	for _, kv := range os.Environ() {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			gorace = v + " " + gorace
			continue
		}
		if !strings.HasPrefix(kv, "REGKIT_") && !strings.HasPrefix(kv, "DUBBO_") {
			e = append(e, kv)
		}
	}
	e = append(e, "GORACE="+gorace)
	if url != "" {
		e = append(e, "REGKIT_URL="+url)
	}
	return e
}

// want checks the exit code and that stdout/stderr contain the given strings.
func (r result) want(t *testing.T, code int, inStdout ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range inStdout {
		if !strings.Contains(r.stdout, s) {
			t.Fatalf("stdout lacks %q:\n%s\nstderr:\n%s", s, r.stdout, r.stderr)
		}
	}
}

// regkitUntil runs the binary again and again until it exits with code and its
// stdout contains each of inStdout, and returns that run: for backends whose
// reads lag their writes (Polaris answers from a cache refreshed every second).
func regkitUntil(t *testing.T, url string, code int, args []string, inStdout ...string) result {
	t.Helper()
	var r result
	poll.Until(t, 30*time.Second, fmt.Sprintf("regkit %q exits %d with %q", args, code, inStdout), func() error {
		r = regkit(t, url, args...)
		if r.code != code {
			return fmt.Errorf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		for _, s := range inStdout {
			if !strings.Contains(r.stdout, s) {
				return fmt.Errorf("stdout lacks %q:\n%s", s, r.stdout)
			}
		}
		return nil
	})
	return r
}

// proc is a long-running regkit (watch, register, dns).
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string // stdout so far
	stderr syncBuffer
	done   chan struct{}
	code   int
}

// start runs the binary in the background; the test's cleanup kills it if it is
// still running and waits for it.
func start(t *testing.T, url string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = env(url)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // owned: ends when the process's stdout closes; cleanup waits for it
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitLine waits for a stdout line containing all of subs (from line index from
// on) and returns its index.
func (p *proc) waitLine(t *testing.T, from int, what string, subs ...string) int {
	t.Helper()
	found := -1
	poll.Until(t, 30*time.Second, what, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
	lines:
		for i := from; i < len(p.lines); i++ {
			for _, s := range subs {
				if !strings.Contains(p.lines[i], s) {
					continue lines
				}
			}
			found = i
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited (%d) without such a line; stdout:\n%s\nstderr:\n%s", p.code, strings.Join(p.lines, "\n"), p.stderr.String())
		default:
		}
		return fmt.Errorf("no line with %q yet; stdout:\n%s\nstderr:\n%s", subs, strings.Join(p.lines, "\n"), p.stderr.String())
	})
	return found
}

func (p *proc) stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("did not exit within 30s of SIGTERM; stderr:\n%s", p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
		t.Fatalf("data race:\n%s", p.stderr.String())
	}
	return p.code
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// deadURL is a URL of a port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "etcd://" + addr + "/dead?dial_timeout=1s"
}

// etcdURL is a URL on the shared etcd with a prefix of the test's own.
func etcdURL(t *testing.T) string {
	return etcd.URL(strings.ReplaceAll(t.Name(), "/", "_"))
}

// TestWriteJSONKeepsArrows: -o json prints a route "a -> b" as it is, not as
// "a -\u003e b" (encoding/json escapes <, > and & for HTML by default).
func TestWriteJSONKeepsArrows(t *testing.T) {
	var b strings.Builder
	if err := writeJSON(&b, map[string]string{"route": "etcd -> zk", "q": "a&b<c"}); err != nil {
		t.Fatal(err)
	}
	if want := `{"q":"a&b<c","route":"etcd -> zk"}` + "\n"; b.String() != want {
		t.Fatalf("writeJSON = %q, want %q", b.String(), want)
	}
}
