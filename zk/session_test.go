package zk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	rzk "github.com/regkit/regkit/zk"
)

// loseResponseDialer wraps every connection so that the first create request whose
// path contains marker reaches the server, and the connection is then broken before
// the client can read the answer, once the server shows the node: a create that was
// applied but whose answer was lost, deterministically.
type loseResponseDialer struct {
	t      testing.TB
	admin  *zk.Conn
	parent string // where to look for the created node
	marker []byte
	fired  atomic.Bool
}

func (d *loseResponseDialer) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	nc, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	return &breakingConn{Conn: nc, d: d, broken: make(chan struct{})}, nil
}

type breakingConn struct {
	net.Conn
	d        *loseResponseDialer
	dropping atomic.Bool
	broken   chan struct{}
	once     sync.Once
}

func (c *breakingConn) Write(p []byte) (int, error) {
	if !bytes.Contains(p, c.d.marker) || !c.d.fired.CompareAndSwap(false, true) {
		return c.Conn.Write(p)
	}
	c.dropping.Store(true) // no answer may reach the client from now on
	n, err := c.Conn.Write(p)
	// Wait until the server applied the create, then break the connection.
	_ = poll.Wait(10*time.Second, func() error {
		kids, _, err := c.d.admin.Children(c.d.parent)
		if err == nil && !slices.ContainsFunc(kids, func(k string) bool { return strings.HasPrefix(k, rzk.ProtectedPrefix) }) {
			err = errors.New("not created yet")
		}
		return err
	})
	c.once.Do(func() { close(c.broken) })
	c.Conn.Close()
	return n, err
}

func (c *breakingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.dropping.Load() {
		<-c.broken
		return 0, errors.New("connection broken by the test")
	}
	return n, err
}

// A protected ephemeral-sequential create whose answer is lost must find its node
// again by GUID after reconnecting, not create a second (orphan) one: for a plain
// name the driver protects, and for a name the caller already protected (the
// recipes' "_c_<uuid>-lock-"), whose UUID the driver must look for.
func TestProtectedCreateAfterLostAnswer(t *testing.T) {
	const uuid = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
	for _, name := range []string{"lock-", "_c_" + uuid + "-lock-"} {
		t.Run(name, func(t *testing.T) { testProtectedCreateAfterLostAnswer(t, name) })
	}
}

func testProtectedCreateAfterLostAnswer(t *testing.T, name string) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	createRaw(t, e.adm(t), "/protect/locks/job", nil, 0)
	d := &loseResponseDialer{t: t, admin: e.adm(t), parent: "/protect/locks/job", marker: []byte(rzk.ProtectedPrefix)}
	c := openURL(t, "zk://"+e.srv.Addr()+"/protect?session_timeout=4s", rzk.WithDialer(d.dial))
	sess, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var log stateLog
	stop := registrytest.Follow(sess, log.add)
	defer stop()
	n, err := c.Store().Create(ctx, "/locks/job/"+name, []byte("me"), registry.Ephemeral(sess), registry.Sequential())
	if err != nil {
		t.Fatalf("protected create: %v", err)
	}
	if !d.fired.Load() {
		t.Fatal("the test dialer never broke the create's connection")
	}
	kids, _, err := e.adm(t).Children("/protect/locks/job")
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) != 1 {
		t.Fatalf("children after a create with a lost answer: %v, want exactly one (no orphan)", kids)
	}
	if n.Key != "/locks/job/"+kids[0] || !strings.HasPrefix(kids[0], rzk.ProtectedPrefix) ||
		rzk.StripProtection(kids[0])[:len("lock-")] != "lock-" || rzk.SequenceOf(kids[0]) < 0 || n.Session != sess.ID() {
		t.Errorf("created %+v, server has %v", n, kids)
	}
	_, st, err := e.adm(t).Get("/protect/locks/job/" + kids[0])
	if err != nil || rzk.SessionIDString(st.EphemeralOwner) != sess.ID() {
		t.Errorf("node owner %v (%v), want session %s", st, err, sess.ID())
	}
	// The session survived the broken connection: suspended, then reconnected.
	log.wait(t, 10*time.Second, "session states", registry.StateSuspended, registry.StateReconnected)
}

// curatorName matches a name as Curator's protected mode writes it:
// "_c_" + java.util.UUID.randomUUID() + "-" + name + 10-digit sequence.
var curatorName = regexp.MustCompile(`^_c_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}-lock-[0-9]{10}$`)

// A protected create names its node as Curator does, and a name the caller
// already protected (as the recipes do, with a UUID or, as regkit wrote before,
// 32 hex digits) is kept as it is, not wrapped a second time
// ("_c_<uuid>-_c_<uuid>-lock-...", which Curator's recipes do not write).
func TestProtectedNames(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := openURL(t, "zk://"+e.srv.Addr()+"/protectnames?session_timeout=4s")
	sess, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Store().Create(ctx, "/locks/a/lock-", nil, registry.Ephemeral(sess), registry.Sequential())
	if err != nil {
		t.Fatal(err)
	}
	if name := path.Base(n.Key); !curatorName.MatchString(name) {
		t.Errorf("driver-protected name %q, want Curator's _c_<uuid>-lock-<sequence>", name)
	}
	for _, pre := range []string{"_c_0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0-", "_c_00112233445566778899aabbccddeeff-"} {
		n, err := c.Store().Create(ctx, "/locks/b/"+pre+"lock-", nil, registry.Ephemeral(sess), registry.Sequential())
		if err != nil {
			t.Fatal(err)
		}
		name := path.Base(n.Key)
		if !strings.HasPrefix(name, pre+"lock-") || rzk.SequenceOf(name) < 0 || strings.Count(name, rzk.ProtectedPrefix) != 1 {
			t.Errorf("create of an already protected name %q: got %q, want it kept with the sequence appended", pre+"lock-", name)
		}
		if id, rest, ok := rzk.ProtectedID(name); !ok || !strings.Contains(pre, id) || !strings.HasPrefix(rest, "lock-") {
			t.Errorf("ProtectedID(%q) = %q, %q, %v", name, id, rest, ok)
		}
	}
	kids, _, err := e.adm(t).Children("/protectnames/locks/b")
	if err != nil || len(kids) != 2 {
		t.Fatalf("children %v, %v: want the two nodes", kids, err)
	}
	for _, bad := range []string{"lock-0000000001", "_c_-lock-0000000001", "_c_0f1e2d3c+4b5a-4968-8776-a5b4c3d2e1f0-lock-0000000001", "_c_00112233"} {
		if _, rest, ok := rzk.ProtectedID(bad); ok || rest != bad {
			t.Errorf("ProtectedID(%q) = _, %q, %v: not a protected name", bad, rest, ok)
		}
	}
}

// stateLog records the states a Listen reports, for tests to wait on.
type stateLog struct {
	mu     sync.Mutex
	states []registry.SessionState
}

func (l *stateLog) add(s registry.SessionState) {
	l.mu.Lock()
	l.states = append(l.states, s)
	l.mu.Unlock()
}

// wait polls until the recorded states are exactly want.
func (l *stateLog) wait(t testing.TB, timeout time.Duration, what string, want ...registry.SessionState) {
	t.Helper()
	testenv.Eventually(t, timeout, what+" "+stateNames(want), func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !slices.Equal(l.states, want) {
			return errors.New("states " + stateNames(l.states))
		}
		return nil
	})
}

func stateNames(ss []registry.SessionState) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	return "[" + strings.Join(out, " ") + "]"
}

// Session states over real faults: a short cut is Suspended then Reconnected; a cut
// longer than the session timeout is Lost, the session's ephemeral keys are gone and
// the connection never opens a new session by itself.
func TestSessionStatesThroughCuts(t *testing.T) {
	e := newEnv(t)
	defer leakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := e.open(t, "states")
	defer c.Close()
	sess, err := c.NewSession(ctx, registry.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var log stateLog
	stop := registrytest.Follow(sess, log.add)
	defer stop()
	waitStates := func(want ...registry.SessionState) {
		t.Helper()
		log.wait(t, 20*time.Second, "session states", want...)
	}
	if _, err := c.Store().Create(ctx, "/members/me", nil, registry.Ephemeral(sess)); err != nil {
		t.Fatal(err)
	}
	id := sess.ID()

	e.proxy.Cut()
	waitStates(registry.StateSuspended)
	e.proxy.Heal()
	waitStates(registry.StateSuspended, registry.StateReconnected)
	if sess.ID() != id || sess.Err() != nil {
		t.Fatalf("session after a short cut: %s %v", sess.ID(), sess.Err())
	}

	e.proxy.Cut()
	waitStates(registry.StateSuspended, registry.StateReconnected, registry.StateSuspended, registry.StateLost)
	if !errors.Is(sess.Err(), registry.ErrSessionLost) {
		t.Errorf("Err = %v, want ErrSessionLost", sess.Err())
	}
	testenv.Eventually(t, 20*time.Second, "the server expired the session's ephemeral key", func() error {
		return e.rawDo(func(c *zk.Conn) error {
			if ok, _, err := c.Exists("/states/members/me"); err != nil || ok {
				return fmt.Errorf("exists %v, %v", ok, err)
			}
			return nil
		})
	})
	e.proxy.Heal()
	// A lost session stays lost; creates through it fail; a new session works.
	if _, err := c.Store().Create(ctx, "/members/late", nil, registry.Ephemeral(sess)); !errors.Is(err, registry.ErrSessionLost) {
		t.Errorf("create through a lost session = %v, want ErrSessionLost", err)
	}
	s2, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s2.ID() == id {
		t.Error("new session has the lost one's id")
	}
	if _, err := c.Store().Create(ctx, "/members/me", nil, registry.Ephemeral(s2)); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// The registration connection reports Curator's connection states: a short cut is
// Suspended then Reconnected; a cut longer than the session timeout is Lost, and the
// next session Reconnected, with the registration back in it.
func TestConnectionStates(t *testing.T) {
	e := newEnv(t)
	defer leakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := openURL(t, "zk://"+e.proxy.Addr()+"/connstates?session_timeout=4s")
	defer c.Close()
	conn := c.Conn().(*rzk.Conn)
	if st := conn.ConnectionState(); st != registry.StateConnected {
		t.Fatalf("initial state %v", st)
	}
	r, err := c.Register(ctx, svc("s1", 6001))
	if err != nil {
		t.Fatal(err)
	}
	var log stateLog
	stop := conn.Listen(log.add)
	defer stop()
	waitStates := func(want ...registry.SessionState) {
		t.Helper()
		log.wait(t, 20*time.Second, "connection states", want...)
	}
	sid := conn.SessionID()
	e.proxy.Cut()
	waitStates(registry.StateSuspended)
	e.proxy.Heal()
	waitStates(registry.StateSuspended, registry.StateReconnected)
	if conn.SessionID() != sid {
		t.Errorf("session changed over a short cut")
	}
	e.proxy.Cut()
	waitStates(registry.StateSuspended, registry.StateReconnected, registry.StateSuspended, registry.StateLost)
	e.proxy.Heal()
	waitStates(registry.StateSuspended, registry.StateReconnected, registry.StateSuspended, registry.StateLost, registry.StateReconnected)
	testenv.Eventually(t, 20*time.Second, "registration back in the new session", func() error {
		if conn.SessionID() == sid {
			return errors.New("same session")
		}
		ids, owners, err := e.rawView("/connstates/services/api")
		if err != nil {
			return err
		}
		if !slices.Equal(ids, []string{"s1"}) || owners["s1"] != conn.SessionID() || r.State() != registry.Registered {
			return fmt.Errorf("server %v owners %v, state %v", ids, owners, r.State())
		}
		return nil
	})
	stop()
	c.Close()
}
