package zk_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	rzk "github.com/regkit/regkit/zk"
	"go.uber.org/goleak"
)

// rawView reads a regkit-layout service directory straight from the server: the
// instance IDs and the owner session of each node.
func (e *env) rawView(dir string) (kids []string, owners map[string]int64, err error) {
	err = e.rawDo(func(c *zk.Conn) error {
		kids, _, err = c.Children(dir)
		if errors.Is(err, zk.ErrNoNode) {
			kids, err = nil, nil
		}
		if err != nil {
			return err
		}
		owners = map[string]int64{}
		for _, k := range kids {
			_, st, err := c.Get(dir + "/" + k)
			if err != nil {
				return err
			}
			owners[k] = st.EphemeralOwner
		}
		return nil
	})
	slices.Sort(kids)
	return kids, owners, err
}

// waitView waits until w shows exactly ids, fresh, and that equals the server's view.
func (e *env) waitView(t testing.TB, w registry.Watcher, dir string, ids ...string) registry.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch never showed %v: %v", ids, err)
		}
		got := make([]string, len(s.Instances))
		for i, in := range s.Instances {
			got[i] = in.ID
		}
		if s.Stale || !slices.Equal(got, ids) {
			continue
		}
		testenv.Eventually(t, 20*time.Second, "server view equals watch view", func() error {
			raw, _, err := e.rawView(dir)
			if err != nil {
				return err
			}
			if !slices.Equal(raw, got) {
				return fmt.Errorf("server %v, watch %v", raw, got)
			}
			return nil
		})
		return s
	}
}

func waitStale(t testing.TB, w registry.Watcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch never went stale: %v", err)
		}
		if s.Stale {
			return
		}
	}
}

func svc(id string, port int) registry.Instance {
	return registry.Instance{Service: "api", ID: id, Host: "127.0.0.1", Port: port, Metadata: map[string]string{"id": id}}
}

// leakCheck snapshots the goroutines now; the returned func fails the test if any
// other is still running (goleak retries for a while).
func leakCheck(t *testing.T) func() {
	ign := goleak.IgnoreCurrent()
	return func() { goleak.VerifyNone(t, append([]goleak.Option{ign}, leakOpts...)...) }
}

// kill -9 of the server and a restart on the same data: the session survives (its
// registrations and store session with it), watches resume and equal the server.
func TestFaultKill9AndRestart(t *testing.T) {
	e := newEnv(t)
	defer leakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// a's sessions must outlive a kill -9 and a restart, which on a loaded machine
	// takes the JVM longer than the suite's 4s session timeout, and (seen in CI
	// with two test runs and more on 2 cores) longer than 30s: the client then
	// declares the session lost itself, as Curator does. Give them the test
	// server's maximum, 60s (the test is about surviving a restart, not expiry).
	a := openURL(t, strings.Replace(e.url("kill9"), "session_timeout=4s", "session_timeout=60s", 1))
	b := e.open(t, "kill9")
	defer a.Close()
	defer b.Close()
	r1, err := a.Register(ctx, svc("r1", 1001))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(ctx, svc("r2", 1002)); err != nil {
		t.Fatal(err)
	}
	sess, err := a.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var log stateLog
	stop := registrytest.Follow(sess, log.add)
	defer stop()
	if _, err := a.Store().Create(ctx, "/locks/x", nil, registry.Ephemeral(sess)); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const dir = "/kill9/services/api"
	e.waitView(t, w, dir, "r1", "r2")
	sid := a.Conn().(*rzk.Conn).SessionID()

	e.srv.Kill()
	waitStale(t, w)
	e.srv.Restart(t)
	testenv.Eventually(t, 30*time.Second, "register after restart", func() error {
		_, err := a.Register(ctx, svc("r3", 1003))
		return err
	})
	e.waitView(t, w, dir, "r1", "r2", "r3")
	if got := a.Conn().(*rzk.Conn).SessionID(); got != sid {
		t.Errorf("session %x after restart, want the same %x (it should survive a restart)", got, sid)
	}
	if r1.State() != registry.Registered {
		t.Errorf("r1 %v", r1.State())
	}
	log.wait(t, 20*time.Second, "store session reconnected", registry.StateSuspended, registry.StateReconnected)
	if err := e.rawDo(func(c *zk.Conn) error {
		if ok, _, err := c.Exists("/kill9/locks/x"); err != nil || !ok {
			return fmt.Errorf("exists %v, %v", ok, err)
		}
		return nil
	}); err != nil {
		t.Errorf("ephemeral store key after restart: %v", err)
	}
	stop()
	w.Close()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// A forced expiry (Curator's KillSession): the client gets a new session and its
// registrations come back in it, without the caller doing anything.
func TestFaultKillSession(t *testing.T) {
	e := newEnv(t)
	defer leakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := e.open(t, "killsess"), e.open(t, "killsess")
	defer a.Close()
	defer b.Close()
	regs := []registry.Registration{}
	for i, id := range []string{"k1", "k2", "k3"} {
		r, err := a.Register(ctx, svc(id, 2001+i))
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	w, err := b.Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const dir = "/killsess/services/api"
	e.waitView(t, w, dir, "k1", "k2", "k3")
	old := a.Conn().(*rzk.Conn).SessionID()
	e.expire(t, a)
	testenv.Eventually(t, 30*time.Second, "re-registered in a new session", func() error {
		sid := a.Conn().(*rzk.Conn).SessionID()
		if sid == 0 || sid == old {
			return fmt.Errorf("session %x (old %x)", sid, old)
		}
		ids, owners, err := e.rawView(dir)
		if err != nil {
			return err
		}
		if !slices.Equal(ids, []string{"k1", "k2", "k3"}) {
			return fmt.Errorf("server has %v", ids)
		}
		for id, o := range owners {
			if o != sid {
				return fmt.Errorf("%s owned by %x, want the new session %x", id, o, sid)
			}
		}
		for _, r := range regs {
			if r.State() != registry.Registered {
				return fmt.Errorf("%s %v", r.Instance().ID, r.State())
			}
		}
		return nil
	})
	// Read the current view through a new watcher of b's shared loop.
	w2, err := b.Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	e.waitView(t, w2, dir, "k1", "k2", "k3")
	w.Close()
	w2.Close()
	a.Close()
	b.Close()
}

// A cut longer than the session timeout: the server expires the session and deletes
// the registrations; after the heal the client learns it, opens a new session and
// registers again; watches on both sides end equal to the server.
func TestFaultCutLongerThanSessionTimeout(t *testing.T) {
	e := newEnv(t)
	testLongOutage(t, e, "longcut", e.proxy.Cut, "c1", "c2")
}

// A partition (the proxy holds connections open and carries nothing) longer than
// the session timeout: as for a cut, the client's view goes stale, the server
// expires the session, and after the heal the registrations come back.
func TestFaultPartitionLongerThanSessionTimeout(t *testing.T) {
	e := newEnv(t)
	testLongOutage(t, e, "partition", e.proxy.Blackhole, "p1")
}

// testLongOutage registers ids through the proxy under chroot /ns, watches them from
// a client through the proxy and one beside it, applies fault for longer than the
// 2s session timeout (until the server has expired the session), heals, and checks
// that both views end with every registration back in a new session.
func testLongOutage(t *testing.T, e *env, ns string, fault func(), ids ...string) {
	defer leakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a := openURL(t, "zk://"+e.proxy.Addr()+"/"+ns+"?session_timeout=4s")
	b := openURL(t, "zk://"+e.srv.Addr()+"/"+ns) // not through the proxy
	defer a.Close()
	defer b.Close()
	for i, id := range ids {
		if _, err := a.Register(ctx, svc(id, 3001+i)); err != nil {
			t.Fatal(err)
		}
	}
	wa, err := a.Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	wb, err := b.Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()
	dir := "/" + ns + "/services/api"
	e.waitView(t, wa, dir, ids...)
	e.waitView(t, wb, dir, ids...)
	old := a.Conn().(*rzk.Conn).SessionID()

	fault()
	waitStale(t, wa)
	// The server expires the cut-off session and deletes its nodes; b sees it.
	e.waitView(t, wb, dir)
	e.proxy.Heal()
	e.waitView(t, wb, dir, ids...)
	e.waitView(t, wa, dir, ids...)
	if sid := a.Conn().(*rzk.Conn).SessionID(); sid == old {
		t.Errorf("still session %x after an outage longer than its timeout", sid)
	}
	wa.Close()
	wb.Close()
	a.Close()
	b.Close()
}
