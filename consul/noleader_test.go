//go:build linux

package consul_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// consulProc is a Consul server process started by this test: testenv starts single
// servers that wait for a leader, and this test needs a two-server cluster that
// loses its leader.
type consulProc struct {
	http, serf string
	cmd        *exec.Cmd
}

func startProc(t *testing.T, name string, extra ...string) *consulProc {
	bin := testenv.Binary(t, "consul")
	dir := t.TempDir()
	port := func() string { return strconv.Itoa(testenv.FreePort(t)) }
	p := &consulProc{http: port(), serf: port()}
	logf, err := os.Create(filepath.Join(dir, "consul.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"agent", "-server", "-bootstrap-expect=2", "-node=" + name,
		"-data-dir=" + filepath.Join(dir, "data"), "-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-log-level=error", "-http-port=" + p.http, "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-https-port=-1", "-serf-lan-port=" + p.serf, "-serf-wan-port=" + port(), "-server-port=" + port(),
		"-hcl=performance { raft_multiplier = 1 }"}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "CHECKPOINT_DISABLE=1")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		logf.Close()
	})
	if err := testenv.WaitTCP("127.0.0.1:"+p.http, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *consulProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// TestNoLeader: a two-server cluster loses a server, so the other knows no leader.
// Discovery with stale reads (the default) still answers with what that server has,
// and says so through Listing.NoLeader; with stale=false the read fails with
// ErrUnavailable.
func TestNoLeader(t *testing.T) {
	a := startProc(t, "a")
	b := startProc(t, "b", "-retry-join=127.0.0.1:"+a.serf)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	open := func(q string) *registry.Client {
		c, err := registry.Open(ctx, "consul://127.0.0.1:"+a.http+"/nl?timeout=10s&"+q)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	stale := open("stale=true")
	defer stale.Close()
	testenv.Eventually(t, 60*time.Second, "registered while the cluster has a leader", func() error {
		if _, err := stale.Conn().Put(ctx, registry.Instance{Service: "svc", ID: "n1", Host: "127.0.0.1", Port: 80, Weight: 1}); err != nil {
			return err
		}
		l, err := stale.Conn().List(ctx, "svc")
		if err != nil {
			return err
		}
		if len(l.Instances) != 1 || l.NoLeader {
			return fmt.Errorf("listing %+v", l)
		}
		return nil
	})
	b.kill()
	testenv.Eventually(t, 60*time.Second, "stale read answered without a leader", func() error {
		l, err := stale.Conn().List(ctx, "svc")
		if err != nil {
			return err
		}
		if !l.NoLeader || len(l.Instances) != 1 {
			return fmt.Errorf("listing %+v, want n1 and NoLeader", l)
		}
		return nil
	})
	consistent := open("stale=false")
	defer consistent.Close()
	if _, err := consistent.Conn().List(ctx, "svc"); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("consistent read without a leader = %v, want ErrUnavailable", err)
	}
}

// TestWatchSnapshotsKnowTheLeader: snapshots built from blocking answers of a
// cluster with a leader are not flagged NoLeader. Consul's streaming backend,
// which serves blocking health queries, always sends X-Consul-KnownLeader: false;
// every snapshot after the first was flagged NoLeader, and the watch taken for
// leaderless, before the driver read that header only from the blocking-query
// backend.
func TestWatchSnapshotsKnowTheLeader(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.open(t, "kl", "")
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "a", Host: "127.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := nextWhere(ctx, w, func(s registry.Snapshot) bool { return len(s.Instances) == 1 }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "b", Host: "127.0.0.1", Port: 81}); err != nil {
		t.Fatal(err)
	}
	snap, err := nextWhere(ctx, w, func(s registry.Snapshot) bool { return len(s.Instances) == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if snap.NoLeader || snap.Stale {
		t.Errorf("snapshot after a change: NoLeader %v Stale %v (%v), want neither", snap.NoLeader, snap.Stale, snap.Err)
	}
}
