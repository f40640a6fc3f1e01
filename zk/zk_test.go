package zk_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/reliability"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	rzk "github.com/regkit/regkit/zk"
	"go.uber.org/goleak"
)

var leakOpts = []goleak.Option{
	// The process waiter of a server started again by a restart belongs to the
	// test environment.
	goleak.IgnoreAnyFunction("github.com/regkit/regkit/internal/testenv.startProc.func1"),
}

func TestMain(m *testing.M) {
	reliability.ChildMain() // the registering child of TestEnsembleReliability's process kill
	goleak.VerifyTestMain(m, leakOpts...)
}

// env is a real ZooKeeper, a fault proxy in front of it, and (opened on first use
// by adm) an admin connection that talks to the server directly, never through the
// proxy.
type env struct {
	srv   *testenv.ZooKeeper
	proxy *testenv.Proxy
	admin *zk.Conn
	// query is appended to every URL opened by open (e.g. "&layout=curator").
	query string
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := testenv.StartZooKeeper(t)
	return &env{srv: srv, proxy: testenv.NewProxy(t, srv.Addr())}
}

// adm returns the admin connection, opening it on first use. (It is not opened
// for the suites: its reconnection after a server restart would show up in their
// goroutine-leak checks.)
func (e *env) adm(t testing.TB) *zk.Conn {
	t.Helper()
	if e.admin == nil {
		e.admin = rawConn(t, e.srv.Addr())
	}
	return e.admin
}

// rawDo runs fn on a raw connection of its own, directly to the server, and closes
// it: for reads in tests that check for leaked goroutines across server restarts.
func (e *env) rawDo(fn func(*zk.Conn) error) error {
	c, events, err := zk.Connect([]string{e.srv.Addr()}, 10*time.Second, zk.WithLogger(nopLogger{}))
	if err != nil {
		return err
	}
	defer func() {
		c.Close()
		for range events {
		}
	}()
	deadline := time.After(10 * time.Second)
	for c.State() != zk.StateHasSession {
		select {
		case <-events:
		case <-deadline:
			return fmt.Errorf("raw connection: no session (%v)", c.State())
		}
	}
	return fn(c)
}

// rawConn opens a plain go-zookeeper connection and waits for its session.
func rawConn(t testing.TB, addr string) *zk.Conn {
	t.Helper()
	c, events, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogger(nopLogger{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		for range events {
		}
	})
	testenv.Eventually(t, 20*time.Second, "raw zk session", func() error {
		if c.State() != zk.StateHasSession {
			return fmt.Errorf("state %v", c.State())
		}
		return nil
	})
	return c
}

func (e *env) url(ns string) string {
	return "zk://" + e.proxy.Addr() + "/" + ns + "?session_timeout=4s&connect_timeout=15s" + e.query
}

// open opens a client through the proxy with chroot /ns.
func (e *env) open(t testing.TB, ns string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, e.url(ns),
		registry.WithRetryBackoff(50*time.Millisecond, time.Second), registry.WithRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openLazy opens a client as open does, with registry.WithLazyConnect (for the
// conformance case that opens during an outage).
func (e *env) openLazy(t testing.TB, ns string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "zk://"+e.proxy.Addr()+"/"+ns+"?session_timeout=4s&connect_timeout=2s"+e.query,
		registry.WithLazyConnect(), registry.WithRetryBackoff(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatalf("lazy Open during an outage: %v", err)
	}
	return c
}

// expire expires every session of c as Curator's KillSession does.
func (e *env) expire(t testing.TB, c *registry.Client) {
	t.Helper()
	creds := rzk.SessionCreds(c.Conn().(*rzk.Conn))
	if len(creds) == 0 {
		t.Fatal("client has no session to expire")
	}
	for _, s := range creds {
		killSession(t, e.srv.Addr(), s.ID, s.Passwd)
	}
}

func (e *env) harness() registrytest.Harness {
	return registrytest.Harness{
		Name:          "zk",
		NewClient:     e.open,
		NewLazyClient: e.openLazy,
		UnreachableURL: func(t testing.TB) string {
			return "zk://" + testenv.ClosedAddr(t) + "/x?connect_timeout=2s"
		},
		ExpireSession: e.expire,
		Restart:       func(t testing.TB) { e.srv.Restart(t) },
		Cut: func(t testing.TB) func() {
			e.proxy.Cut()
			return e.proxy.Heal
		},
		Blackhole: func(t testing.TB) func() {
			e.proxy.Blackhole()
			return e.proxy.Heal
		},
		Timeout:        30 * time.Second,
		LeakOptions:    leakOpts,
		WriteForeign:   e.writeForeign,
		DeleteInstance: e.deleteInstance,
	}
}

// deleteInstance deletes the node(s) of instance id of service on a raw
// connection, as an operator would; in the dubbo layout, the provider URLs whose
// regkit.id (or host:port) is id.
func (e *env) deleteInstance(t testing.TB, c *registry.Client, service, id string) {
	t.Helper()
	conn := c.Conn().(*rzk.Conn)
	dir := conn.ServicePath(service)
	err := e.rawDo(func(zc *zk.Conn) error {
		if conn.Layout() != rzk.LayoutDubbo {
			return zc.Delete(dir+"/"+id, -1)
		}
		kids, _, err := zc.Children(dir)
		if err != nil {
			return err
		}
		n := 0
		for _, k := range kids {
			raw, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			u, err := url.Parse(raw)
			if err != nil || (u.Query().Get("regkit.id") != id && u.Host != id) {
				continue
			}
			if err := zc.Delete(dir+"/"+k, -1); err != nil {
				return err
			}
			n++
		}
		if n == 0 {
			return fmt.Errorf("no provider URL of %s in %v", id, kids)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("DeleteInstance %s/%s: %v", service, id, err)
	}
}

// writeForeign writes znodes under service's directory that are not instances of
// the client's layout (see registrytest.Harness.WriteForeign), on a raw connection.
func (e *env) writeForeign(t testing.TB, c *registry.Client, service, id string) {
	t.Helper()
	conn := c.Conn().(*rzk.Conn)
	dir := conn.ServicePath(service)
	nodes := map[string]string{}
	switch conn.Layout() {
	case rzk.LayoutCurator:
		rec := func(id, svc string) string {
			return `{"name":"` + svc + `","id":"` + id + `","address":"10.9.9.9","port":9999,"sslPort":null,"payload":null}`
		}
		nodes = map[string]string{"garbage": "not json", "empty": "{}", "null": "null",
			"other": rec("other", "elsewhere"), "shadow-of-" + id: rec(id, service),
			"no-port": `{"name":"` + service + `","id":"no-port","address":"10.9.9.9"}`,
			"nested":  "", "nested/deeper": rec("deeper", service)}
	case rzk.LayoutDubbo:
		enc := func(u string) string { return strings.ReplaceAll(url.QueryEscape(u), "/", "%2F") }
		nodes = map[string]string{"garbage": "", "%zz": "",
			enc("dubbo://10.9.9.9:9999/elsewhere?interface=elsewhere"):     "",
			enc("dubbo://10.9.9.9/" + service + "?interface=" + service):   "",
			enc("dubbo://10.9.9.9:0/" + service + "?interface=" + service): "",
			enc("dubbo://10.9.9.9:9999/" + service + "?regkit.id=a%2Fb"):   ""}
	default:
		rec := func(id, svc string) string {
			return `{"id":"` + id + `","service":"` + svc + `","host":"10.9.9.9","port":9999,"weight":100}`
		}
		nodes = map[string]string{"garbage": "not json", "empty": "{}", "null": "null",
			"other": rec("other", "elsewhere"), "shadow-of-" + id: rec(id, service),
			"no-port": `{"id":"no-port","service":"` + service + `","host":"10.9.9.9"}`,
			"nested":  "", "nested/deeper": rec("deeper", service)}
	}
	keys := slices.Sorted(maps.Keys(nodes)) // parents first
	err := e.rawDo(func(zc *zk.Conn) error {
		for _, k := range keys {
			if _, err := zc.Create(dir+"/"+k, []byte(nodes[k]), 0, zk.WorldACL(zk.PermAll)); err != nil {
				return fmt.Errorf("create %s/%s: %w", dir, k, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRegistryConformance(t *testing.T) { registrytest.RunRegistry(t, newEnv(t).harness()) }

func TestStoreConformance(t *testing.T) { registrytest.RunStore(t, newEnv(t).harness()) }

// killSession connects to the server with another client's session id and password
// and closes the session, as Curator's KillSession does: the server expires it, its
// ephemeral nodes go, and the owner learns "session expired" when it reconnects.
// The owner may win the session back by reconnecting first (the server then drops
// our connection), so it tries until the server reports the session gone.
func killSession(t testing.TB, addr string, id int64, passwd []byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		done, err := tryKillSession(addr, id, passwd)
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kill session %x: %v", id, err)
		}
	}
}

// tryKillSession makes one attempt; done is true once the session is closed or
// already expired.
func tryKillSession(addr string, id int64, passwd []byte) (done bool, err error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false, err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	// ConnectRequest: protocolVersion int32, lastZxidSeen int64, timeOut int32,
	// sessionId int64, passwd buffer, readOnly bool.
	body := binary.BigEndian.AppendUint32(nil, 0)
	body = binary.BigEndian.AppendUint64(body, 0)
	body = binary.BigEndian.AppendUint32(body, 10000)
	body = binary.BigEndian.AppendUint64(body, uint64(id))
	body = binary.BigEndian.AppendUint32(body, uint32(len(passwd)))
	body = append(body, passwd...)
	body = append(body, 0)
	// closeSession, sent in the same write: RequestHeader{xid int32, type int32 = -11}.
	req := binary.BigEndian.AppendUint32(nil, 1)
	req = binary.BigEndian.AppendUint32(req, uint32(0xFFFFFFF5)) // -11
	if _, err := nc.Write(append(frame(body), frame(req)...)); err != nil {
		return false, err
	}
	resp, err := readFrame(nc)
	if err != nil {
		return false, fmt.Errorf("connect response: %w", err)
	}
	if len(resp) < 16 {
		return false, fmt.Errorf("short connect response %x", resp)
	}
	if got := int64(binary.BigEndian.Uint64(resp[8:16])); got == 0 {
		return true, nil // already expired
	} else if got != id {
		return false, fmt.Errorf("server gave session %x", got)
	}
	// The close answer: ReplyHeader{xid, zxid, err}.
	r, err := readFrame(nc)
	if err != nil {
		return false, fmt.Errorf("close response: %w", err)
	}
	if len(r) < 16 || binary.BigEndian.Uint32(r[12:16]) != 0 {
		return false, fmt.Errorf("close answered %x", r)
	}
	return true, nil
}

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func readFrame(r io.Reader) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(l[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

// The registry suite again over the Java ecosystems' layouts: registrations written
// in Curator's and Dubbo's formats must behave exactly like the native ones. (The
// curator layout keeps weight, zone and metadata only in Spring's payload; with the
// null payload they are lost, see TestCuratorReadsRegkit.)
func TestRegistryConformanceCuratorLayout(t *testing.T) {
	e := newEnv(t)
	e.query = "&layout=curator&payload=spring"
	registrytest.RunRegistry(t, e.harness())
}

func TestRegistryConformanceDubboLayout(t *testing.T) {
	e := newEnv(t)
	e.query = "&layout=dubbo"
	registrytest.RunRegistry(t, e.harness())
}

// The store suite over the Java layouts: their registry trees (<chroot><base>,
// <chroot>/<group>) are kept apart from the store as the regkit layout's is
// (StoreApartFromRegistry writes at each layout's instance paths; the curator
// base is not the default /services, which is the regkit layout's tree too).
func TestStoreConformanceCuratorLayout(t *testing.T) {
	e := newEnv(t)
	e.query = "&layout=curator&payload=spring&base=/regkit/services"
	registrytest.RunStore(t, e.harness())
}

func TestStoreConformanceDubboLayout(t *testing.T) {
	e := newEnv(t)
	e.query = "&layout=dubbo"
	registrytest.RunStore(t, e.harness())
}
