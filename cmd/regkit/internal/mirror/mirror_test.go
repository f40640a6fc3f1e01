package mirror_test

// These tests run against real servers started by the tests: an embedded etcd,
// a ZooKeeper (internal/testenv) and the in-repo Nacos server (nacostest), shared
// by the subtests of TestSync, each on its own prefix, chroot or namespace.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/regkit/regkit/cmd/regkit/internal/mirror"
	"github.com/regkit/regkit/cmd/regkit/internal/mirror/mirrortest"
	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/recipes/group"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	_ "github.com/regkit/regkit/mem"
	_ "github.com/regkit/regkit/nacos"
	_ "github.com/regkit/regkit/zk"
)

var etcdSrv *embedded.Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var err error
	etcdSrv, err = embedded.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	etcdSrv.Close()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// env is the servers of one TestSync run.
type env struct {
	zk    *testenv.ZooKeeper
	nacos *nacostest.Server
}

func (e *env) etcdURL(t *testing.T) string {
	return etcdSrv.URL(strings.ReplaceAll(t.Name(), "/", "_"))
}

func (e *env) zkURL(t *testing.T) string {
	return "zk://" + e.zk.Addr() + "/" + strings.ReplaceAll(t.Name(), "/", "_") + "?session_timeout=4s"
}

func (e *env) nacosURL(t *testing.T) string {
	return "nacos://" + e.nacos.Addr() + "?namespace=" + strings.ReplaceAll(t.Name(), "/", "_") +
		"&poll_interval=200ms&beat_interval=500ms&presence_check=1s"
}

// open opens url; its addresses are registered as given.
func open(t *testing.T, url string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, url, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true}))
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func register(t *testing.T, c *registry.Client, svc, id string, port int, meta ...string) registry.Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md := map[string]string{"version": "1"}
	for i := 0; i+1 < len(meta); i += 2 {
		md[meta[i]] = meta[i+1]
	}
	r, err := c.Register(ctx, registry.Instance{Service: svc, ID: id, Host: "127.0.0.1", Port: port, Metadata: md})
	if err != nil {
		t.Fatalf("register %s/%s: %v", svc, id, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// syncer runs a Syncer until the test ends or stop is called.
type syncer struct {
	s      *mirror.Syncer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func run(t *testing.T, routes []mirror.Route, opts ...mirror.Option) *syncer {
	t.Helper()
	s, err := mirror.New(routes, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sy := &syncer{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { sy.done <- s.Run(ctx) }()
	t.Cleanup(func() { sy.stop(t) })
	return sy
}

func (sy *syncer) stop(t *testing.T) {
	t.Helper()
	sy.once.Do(func() {
		sy.cancel()
		select {
		case err := <-sy.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("Run did not return within 60s of its context's end")
		}
	})
}

func both(a, b mirror.Endpoint) []mirror.Route {
	return []mirror.Route{{From: a, To: b}, {From: b, To: a}}
}

func TestNewValidates(t *testing.T) {
	c := open(t, "mem://validate")
	d := open(t, "mem://validate2")
	ok := []mirror.Route{{From: mirror.Endpoint{Client: c, Name: "a"}, To: mirror.Endpoint{Client: d, Name: "b"}}}
	for _, tc := range []struct {
		routes []mirror.Route
		opts   []mirror.Option
		field  string
	}{
		{nil, nil, "routes"},
		{[]mirror.Route{{From: mirror.Endpoint{Client: c, Name: "a"}, To: mirror.Endpoint{Name: "b"}}}, nil, "routes[0].To.Client"},
		{[]mirror.Route{{From: mirror.Endpoint{Client: c}, To: mirror.Endpoint{Client: d, Name: "b"}}}, nil, "routes[0].From.Name"},
		{[]mirror.Route{{From: mirror.Endpoint{Client: c, Name: "a"}, To: mirror.Endpoint{Client: d, Name: "a"}}}, nil, "routes[0].To.Name"},
		{ok, []mirror.Option{mirror.WithServices("[")}, "services"},
		{ok, []mirror.Option{mirror.WithGroup("a/b")}, "group"},
		{ok, []mirror.Option{mirror.WithMemberID("")}, ""},
		{ok, []mirror.Option{mirror.WithMemberID("x y")}, "member ID"},
		{ok, []mirror.Option{mirror.WithEmptyGrace(-1)}, "empty grace"},
		{ok, []mirror.Option{mirror.WithHandoverTimeout(0)}, "handover timeout"},
		{ok, []mirror.Option{mirror.WithMemberTTL(0)}, "member TTL"},
		{ok, []mirror.Option{mirror.WithMemberTTL(-time.Second)}, "member TTL"},
	} {
		_, err := mirror.New(tc.routes, tc.opts...)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.field, err)
			}
			continue
		}
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("want a FieldError naming %q, got %v", tc.field, err)
		}
	}
}

func TestRunTwice(t *testing.T) {
	c, d := open(t, "mem://twice"), open(t, "mem://twice2")
	s, err := mirror.New([]mirror.Route{{From: mirror.Endpoint{Client: c, Name: "a"}, To: mirror.Endpoint{Client: d, Name: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Run(ctx) // ends at once
	if err := s.Run(context.Background()); !errors.Is(err, mirror.ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
}

// TestAddressRewriteRefused: a destination Client whose address resolver
// rewrites addresses (here from REGKIT_REGISTER_HOST) gets no copy: the copy is
// deregistered at once, reported, and not tried again.
func TestAddressRewriteRefused(t *testing.T) {
	src := open(t, "mem://rewrite-src")
	t.Setenv(address.EnvHost, "10.9.9.9")
	dst, err := registry.Open(context.Background(), "mem://rewrite-dst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	register(t, src, "greeter", "g1", 7801)
	failed := make(chan error, 10)
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: src, Name: "a"}, To: mirror.Endpoint{Client: dst, Name: "b"}}},
		mirror.WithEventHandler(func(e mirror.Event) {
			if e.Kind == mirror.Failed {
				failed <- e.Err
			}
		}))
	select {
	case err := <-failed:
		if err == nil || !strings.Contains(err.Error(), "address resolver") {
			t.Errorf("Failed event with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no Failed event within 30s")
	}
	poll.Until(t, 30*time.Second, "no copy on the destination", func() error {
		if list, _ := dst.Instances(context.Background(), "greeter"); len(list) != 0 {
			return fmt.Errorf("destination lists %v", list)
		}
		return nil
	})
}

// TestRunFailsCleanly: a source that cannot list services fails Run with its
// error, and what other routes started is ended and deregistered.
func TestRunFailsCleanly(t *testing.T) {
	a, b := open(t, "mem://fails-a"), open(t, "mem://fails-b")
	closed := open(t, "mem://fails-c")
	closed.Close()
	register(t, a, "greeter", "g1", 7901)
	s, err := mirror.New([]mirror.Route{
		{From: mirror.Endpoint{Client: a, Name: "a"}, To: mirror.Endpoint{Client: b, Name: "b"}},
		{From: mirror.Endpoint{Client: closed, Name: "c"}, To: mirror.Endpoint{Client: b, Name: "b"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, registry.ErrClosed) || !strings.Contains(err.Error(), "c: list services") {
		t.Errorf("Run: %v, want an error naming c and matching ErrClosed", err)
	}
	if list, _ := b.Instances(context.Background(), "greeter"); len(list) != 0 {
		t.Errorf("copies left behind: %v", list)
	}
}

func TestCopyID(t *testing.T) {
	if got := mirror.CopyID("10.0.0.1:80", "ab12"); got != "10.0.0.1:80~ab12" {
		t.Errorf("CopyID = %q", got)
	}
	long := strings.Repeat("x", 255)
	if got := mirror.CopyID(long, "ab12"); len(got) > 255 || !strings.HasSuffix(got, "~ab12") {
		t.Errorf("CopyID of a long ID = %q", got)
	}
}

func TestSync(t *testing.T) {
	e := &env{zk: testenv.StartZooKeeper(t), nacos: nacostest.Start(t, nacostest.WithCacheMillis(200))}
	t.Run("EtcdZooKeeperBothWays", func(t *testing.T) { testBothWays(t, e.etcdURL(t), e.zkURL(t)) })
	t.Run("ZooKeeperNacosBothWays", func(t *testing.T) { testBothWays(t, e.zkURL(t), e.nacosURL(t)) })
	t.Run("ConsulEtcdBothWays", func(t *testing.T) {
		c := testenv.StartConsul(t)
		testBothWays(t, "consul://"+c.Addr()+"/mirror?check_ttl=4s&wait=2s", e.etcdURL(t))
	})
	t.Run("SourceDeath", func(t *testing.T) { testSourceDeath(t, e) })
	t.Run("SourceSessionExpired", func(t *testing.T) { testSourceSessionExpired(t, e) })
	t.Run("EmptyPushGuard", func(t *testing.T) { testEmptyPushGuard(t, e) })
	t.Run("Handover", func(t *testing.T) { testHandover(t, e, e.etcdURL(t), e.zkURL(t)) })
	t.Run("HandoverToNacos", func(t *testing.T) { testHandover(t, e, e.zkURL(t), e.nacosURL(t)) })
	t.Run("MembershipNodeLost", func(t *testing.T) { testMembershipNodeLost(t, e) })
	t.Run("PredecessorCopy", func(t *testing.T) { testPredecessorCopy(t, e) })
	t.Run("RestartOverlap", func(t *testing.T) { testRestartOverlap(t, e) })
	t.Run("SourceIDChangeNacosToZooKeeper", func(t *testing.T) { testSourceIDChange(t, e.nacosURL(t), e.zkURL(t)) })
	t.Run("SourceIDChangeNacosToEtcd", func(t *testing.T) { testSourceIDChange(t, e.nacosURL(t), e.etcdURL(t)) })
	t.Run("SourceIDChangeZooKeeperToNacos", func(t *testing.T) { testSourceIDChange(t, e.zkURL(t), e.nacosURL(t)) })
	t.Run("StopAll", func(t *testing.T) { testStopAll(t, e) })
	t.Run("AllUnhealthyGuard", func(t *testing.T) { testAllUnhealthyGuard(t, e) })
}

// testAllUnhealthyGuard: a source whose every instance turns unhealthy at once
// (Nacos when beats stop reaching it, a Consul agent failing every check) is
// held by the empty-push guard like one that lists nothing: the copy stays,
// marked, and a healthy instance again ends the hold. It used to be
// deregistered at once, emptying the destination.
func testAllUnhealthyGuard(t *testing.T, e *env) {
	src, dst := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	ss, sd := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	const svc = "search"
	var sick atomic.Bool
	check := func(context.Context) error {
		if sick.Load() {
			return errors.New("sick")
		}
		return nil
	}
	// One instance, so that all turn unhealthy in one view (several may turn
	// one by one: then only the last is held, as when they are deregistered).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	r, err := src.Register(ctx, registry.Instance{Service: svc, ID: "h1", Host: "127.0.0.1", Port: 7901},
		registry.WithHealthCheck(check, 50*time.Millisecond, registry.MarkUnhealthy))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "etcd"}, To: mirror.Endpoint{Client: sd, Name: "zk"}}},
		mirror.WithEmptyGrace(time.Hour))
	copies := []string{"127.0.0.1:7901 copy-of h1 from etcd"}
	mirrortest.WantView(t, dst, svc, copies...)
	rec := mirrortest.WatchGaps(t, dst, svc)
	held := func(want bool) func() error {
		return func() error {
			list, err := dst.Instances(context.Background(), svc)
			if err != nil {
				return err
			}
			for _, in := range list {
				if _, ok := in.Metadata[mirror.MetaHeldSince]; ok != want {
					return fmt.Errorf("copy %s marked held: %v, want %v", in.ID, ok, want)
				}
			}
			if len(list) != 1 {
				return fmt.Errorf("%d copies, want 1", len(list))
			}
			return nil
		}
	}
	sick.Store(true)
	poll.Until(t, 30*time.Second, "the source lists it unhealthy", func() error {
		list, err := src.Instances(context.Background(), svc)
		if err != nil {
			return err
		}
		for _, in := range list {
			if in.Healthy {
				return fmt.Errorf("%s healthy", in.ID)
			}
		}
		return nil
	})
	poll.Until(t, 30*time.Second, "the copy held", held(true))
	sick.Store(false)
	poll.Until(t, 30*time.Second, "the hold ended", held(false))
	mirrortest.WantView(t, dst, svc, copies...)
	rec.Check(t, "a watcher saw copies missing")
}

// testStopAll: every member of a group stopped at once (SIGTERM to all) has
// nobody to hand over to: each deregisters its copies and returns as soon as
// it sees the others leave. Each used to stop following the membership when
// it began to leave and waited for the others' copies until the hand-over
// timeout (here an hour).
func testStopAll(t *testing.T, e *env) {
	srcURL, dstURL := e.etcdURL(t), e.zkURL(t)
	src, dst := open(t, srcURL), open(t, dstURL)
	var svcs []string
	for i := range 6 {
		svc := fmt.Sprintf("svc-%d", i)
		svcs = append(svcs, svc)
		register(t, src, svc, "i1", 7800+i)
	}
	newSyncer := func(member string) *syncer {
		ss, sd, coord := open(t, srcURL), open(t, dstURL), open(t, e.zkURL(t))
		return run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "src"}, To: mirror.Endpoint{Client: sd, Name: "dst"}}},
			mirror.WithCoordinator(coord), mirror.WithMemberID(member), mirror.WithHandoverTimeout(time.Hour))
	}
	a, b := newSyncer("m-a"), newSyncer("m-b")
	poll.Until(t, 60*time.Second, "services split between m-a and m-b", func() error {
		n := map[string]int{}
		for _, svc := range svcs {
			list, _ := dst.Instances(context.Background(), svc)
			for _, in := range list {
				n[in.Metadata[mirror.MetaOwner]]++
			}
		}
		if n["m-a"] == 0 || n["m-b"] == 0 || n["m-a"]+n["m-b"] != len(svcs) || len(n) != 2 {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	a.cancel()
	b.cancel()
	var wg sync.WaitGroup
	for _, sy := range []*syncer{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sy.stop(t)
		}()
	}
	wg.Wait()
	for _, svc := range svcs {
		mirrortest.WantView(t, dst, svc)
	}
}

// testPredecessorCopy: a sync restarted after a crash with the crashed one's
// member ID finds the copy's ID held by the predecessor's copy (until its
// session ends). It registers its copy at once under its incarnation ID
// (IncarnationCopyID), beside the predecessor's: watchers see the address the
// whole time. It used to fail with ErrExists and register only after the
// predecessor's copy had expired, so watchers saw the address missing for a
// watch round trip.
func testPredecessorCopy(t *testing.T, e *env) {
	t.Cleanup(mirror.SetRetryDelay(time.Hour))
	src, dst := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	ss, sd := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	const svc = "billing"
	r := register(t, src, svc, "s1", 7701)
	// The crashed predecessor's copy, held by its session.
	pred := open(t, e.zkURL(t))
	register(t, pred, svc, mirror.CopyID("s1", "m"), 7701, mirror.MetaSourceCluster, "etcd", mirror.MetaSourceID, "s1",
		mirror.MetaOwner, "m", mirror.MetaGroup, mirror.DefaultGroup)
	const cp = "127.0.0.1:7701 copy-of s1 from etcd"
	mirrortest.WantView(t, dst, svc, cp)
	rec := mirrortest.WatchGaps(t, dst, svc)
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "etcd"}, To: mirror.Endpoint{Client: sd, Name: "zk"}}},
		mirror.WithMemberID("m"))
	mirrortest.WantView(t, dst, svc, cp, cp)
	pred.Close() // the predecessor's session ends, and its copy with it
	mirrortest.WantView(t, dst, svc, cp)
	// The copy under the incarnation ID follows its source like any other.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in := r.Instance()
	in.Metadata["version"] = "2"
	if err := r.Update(ctx, in); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the copy updated", func() error {
		list, err := dst.Instances(ctx, svc)
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].Metadata["version"] != "2" || !strings.HasPrefix(list[0].ID, mirror.CopyID("s1", "m")+"~") ||
			list[0].Metadata[mirror.MetaOwner] != "m" {
			return fmt.Errorf("copies %v, want one of version 2 under an incarnation ID of s1~m", list)
		}
		return nil
	})
	rec.Check(t, "a watcher saw the copy missing")
}

// testRestartOverlap: a sync restarted gracefully with the same member ID, the
// new process started before the old one is stopped, registers its copies
// beside the old process's (their IDs collide: it uses its incarnation ID), so
// stopping the old one leaves no gap. It used to fail with ErrExists until the
// old process had deregistered its copies, and registered them a watch round
// trip later.
func testRestartOverlap(t *testing.T, e *env) {
	t.Cleanup(mirror.SetRetryDelay(time.Hour))
	src, dst := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	const svc = "ledger"
	register(t, src, svc, "s1", 7711)
	newSyncer := func() *syncer {
		ss, sd := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
		return run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "etcd"}, To: mirror.Endpoint{Client: sd, Name: "zk"}}},
			mirror.WithMemberID("m"))
	}
	const cp = "127.0.0.1:7711 copy-of s1 from etcd"
	old := newSyncer()
	mirrortest.WantView(t, dst, svc, cp)
	rec := mirrortest.WatchGaps(t, dst, svc)
	newSyncer()
	mirrortest.WantView(t, dst, svc, cp, cp)
	old.stop(t)
	mirrortest.WantView(t, dst, svc, cp)
	rec.Check(t, "a watcher saw the copy missing")
}

// testSourceIDChange: a source instance that changes its ID at one address (a
// Nacos source, where an instance is its address, registered again under a new
// ID) has its new copy registered before the old one is deregistered. The old
// copy used to go first, so watchers saw the address missing for a moment. On
// a Nacos destination the two copies are one entry, which the old copy's
// Deregister used to delete (see the nacos package doc, Ownership).
func testSourceIDChange(t *testing.T, srcURL, dstURL string) {
	src, dst := open(t, srcURL), open(t, dstURL) // src reads the source
	ss, sd := open(t, srcURL), open(t, dstURL)
	const svc = "payments"
	prev := open(t, srcURL) // holds the source instance, under "a"
	register(t, prev, svc, "a", 7721)
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "src"}, To: mirror.Endpoint{Client: sd, Name: "dst"}}})
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7721 copy-of a from src")
	rec := mirrortest.WatchGaps(t, dst, svc)
	for _, id := range []string{"b", "c", "d"} {
		c := open(t, srcURL)
		register(t, c, svc, id, 7721)
		if strings.HasPrefix(srcURL, "nacos:") {
			// Nacos: the new ID takes the address, and the source's view goes
			// from the old ID to the new in one step.
			mirrortest.WantView(t, src, svc, "127.0.0.1:7721 native "+id)
		}
		prev.Close()
		prev = c
		mirrortest.WantView(t, dst, svc, "127.0.0.1:7721 copy-of "+id+" from src")
	}
	rec.Check(t, "a watcher saw the copy missing")
}

// testMembershipNodeLost: a member whose own membership node is missing for a
// while (a crashed predecessor with the same member ID held it, then its session
// ended; or a session expiry during a coordinator outage) and that has no other
// member to hand over to keeps its copies: nobody else would hold them. It used
// to deregister every copy at once and register them again once its node was
// back, a gap on a healthy destination.
func testMembershipNodeLost(t *testing.T, e *env) {
	src, dst := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	ss, sd := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	// The coordinator retries slowly, as after a few failures: its member node
	// stays missing for seconds after the predecessor's goes.
	coord, err := registry.Open(context.Background(), e.zkURL(t), registry.WithRetryBackoff(3*time.Second, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	const svc = "shipping"
	register(t, src, svc, "s1", 7601)
	const grp = "lost"
	key := mirror.MembershipKey(grp)
	// The predecessor's node, held by another session.
	foreign := open(t, e.zkURL(t))
	fm, err := group.NewMember(foreign, key, "m", []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fm.WaitForJoin(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var removed []string
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "etcd"}, To: mirror.Endpoint{Client: sd, Name: "zk"}}},
		mirror.WithCoordinator(coord), mirror.WithGroup(grp), mirror.WithMemberID("m"),
		mirror.WithEventHandler(func(ev mirror.Event) {
			if ev.Kind == mirror.Removed {
				mu.Lock()
				removed = append(removed, ev.SourceID+": "+ev.Reason)
				mu.Unlock()
			}
		}))
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7601 copy-of s1 from etcd")
	rec := mirrortest.WatchGaps(t, dst, svc)
	// The predecessor's node goes; the Syncer's own comes back later.
	if err := fm.Close(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 60*time.Second, "the Syncer's member node", func() error {
		ms, err := group.Members(ctx, coord, key)
		if err != nil {
			return err
		}
		if _, ok := ms["m"]; !ok {
			return fmt.Errorf("members %v", slices.Sorted(maps.Keys(ms)))
		}
		return nil
	})
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7601 copy-of s1 from etcd")
	rec.Check(t, "a watcher saw copies missing")
	mu.Lock()
	defer mu.Unlock()
	if len(removed) > 0 {
		t.Errorf("copies removed while the member's node was missing: %v", removed)
	}
}

// testBothWays: natives on each side are copied to the other, an instance native
// on both sides is left alone, and many register/deregister cycles on both sides
// end with each side holding exactly its natives and copies of the other's.
func testBothWays(t *testing.T, urlA, urlB string) {
	a, b := open(t, urlA), open(t, urlB)
	// The sync's own clients, as a sync process has.
	sa, sb := open(t, urlA), open(t, urlB)
	const svc = "greeter"
	register(t, a, svc, "a1", 7001)
	register(t, b, svc, "b1", 7002)
	register(t, a, svc, "both", 7003)
	register(t, b, svc, "both", 7003)
	// A copy another sync wrote into A: never copied again.
	register(t, a, svc, "foreign", 7004, mirror.MetaSourceCluster, "C")
	sy := run(t, both(mirror.Endpoint{Client: sa, Name: "A"}, mirror.Endpoint{Client: sb, Name: "B"}),
		mirror.WithEmptyGrace(time.Second))
	_ = sy
	mirrortest.WantView(t, a, svc, "127.0.0.1:7001 native a1", "127.0.0.1:7003 native both", "127.0.0.1:7002 copy-of b1 from B",
		"127.0.0.1:7004 copy-of  from C")
	mirrortest.WantView(t, b, svc, "127.0.0.1:7002 native b1", "127.0.0.1:7003 native both", "127.0.0.1:7001 copy-of a1 from A")

	// Cycles on both sides, concurrently with the sync.
	var wg sync.WaitGroup
	for side, c := range map[string]*registry.Client{"a": a, "b": b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := 7100
			if side == "b" {
				base = 7200
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for i := range 20 {
				r, err := c.Register(ctx, registry.Instance{Service: svc, ID: fmt.Sprintf("%s-cycle-%d", side, i), Host: "127.0.0.1", Port: base + i})
				if err != nil {
					t.Errorf("register: %v", err)
					return
				}
				if i%2 == 0 { // every other one stays
					t.Cleanup(func() { r.Close() })
					continue
				}
				if err := r.Deregister(ctx); err != nil {
					t.Errorf("deregister: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	wa := []string{"127.0.0.1:7001 native a1", "127.0.0.1:7003 native both", "127.0.0.1:7002 copy-of b1 from B",
		"127.0.0.1:7004 copy-of  from C"}
	wb := []string{"127.0.0.1:7002 native b1", "127.0.0.1:7003 native both", "127.0.0.1:7001 copy-of a1 from A"}
	for i := 0; i < 20; i += 2 {
		wa = append(wa, fmt.Sprintf("127.0.0.1:%d native a-cycle-%d", 7100+i, i), fmt.Sprintf("127.0.0.1:%d copy-of b-cycle-%d from B", 7200+i, i))
		wb = append(wb, fmt.Sprintf("127.0.0.1:%d native b-cycle-%d", 7200+i, i), fmt.Sprintf("127.0.0.1:%d copy-of a-cycle-%d from A", 7100+i, i))
	}
	mirrortest.WantView(t, a, svc, wa...)
	mirrortest.WantView(t, b, svc, wb...)

	// Stopping the sync removes every copy and nothing else.
	sy.stop(t)
	mirrortest.WantView(t, a, svc, slices.DeleteFunc(slices.Clone(wa), func(s string) bool { return strings.Contains(s, "from B") })...)
	mirrortest.WantView(t, b, svc, slices.DeleteFunc(slices.Clone(wb), func(s string) bool { return strings.Contains(s, "copy-of") })...)
}

// testSourceDeath: a source whose Client closes (its session ends) takes its copy
// with it, while the service keeps another instance.
func testSourceDeath(t *testing.T, e *env) {
	src, dst := open(t, e.zkURL(t)), open(t, e.nacosURL(t))
	ss, sd := open(t, e.zkURL(t)), open(t, e.nacosURL(t))
	const svc = "orders"
	register(t, src, svc, "stays", 7301)
	dying := open(t, e.zkURL(t))
	register(t, dying, svc, "dies", 7302)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "zk"}, To: mirror.Endpoint{Client: sd, Name: "nacos"}}},
		mirror.WithMeterProvider(mp))
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7301 copy-of stays from zk", "127.0.0.1:7302 copy-of dies from zk")
	poll.Until(t, 10*time.Second, mirror.MetricCopies+" at 2", func() error {
		if n := copiesMetric(t, reader); n != 2 {
			return fmt.Errorf("%s = %d", mirror.MetricCopies, n)
		}
		return nil
	})
	dying.Close()
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7301 copy-of stays from zk")
	poll.Until(t, 10*time.Second, mirror.MetricCopies+" down to 1", func() error {
		if n := copiesMetric(t, reader); n != 1 {
			return fmt.Errorf("%s = %d", mirror.MetricCopies, n)
		}
		return nil
	})
}

// testSourceSessionExpired: a source whose ZooKeeper session expires (its
// connection cut longer than the session timeout; its Client stays open) takes
// its copy with it, and the copy comes back when the Client registers again after
// the partition heals.
func testSourceSessionExpired(t *testing.T, e *env) {
	src, dst := open(t, e.zkURL(t)), open(t, e.etcdURL(t))
	ss, sd := open(t, e.zkURL(t)), open(t, e.etcdURL(t))
	const svc = "inventory"
	register(t, src, svc, "stays", 7311)
	proxy := testenv.NewProxy(t, e.zk.Addr())
	cutoff := open(t, "zk://"+proxy.Addr()+"/"+strings.ReplaceAll(t.Name(), "/", "_")+"?session_timeout=2s")
	register(t, cutoff, svc, "expires", 7312)
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "zk"}, To: mirror.Endpoint{Client: sd, Name: "etcd"}}})
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7311 copy-of stays from zk", "127.0.0.1:7312 copy-of expires from zk")
	proxy.Blackhole()
	mirrortest.WantView(t, src, svc, "127.0.0.1:7311 native stays")
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7311 copy-of stays from zk")
	proxy.Heal()
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7311 copy-of stays from zk", "127.0.0.1:7312 copy-of expires from zk")
}

// copiesMetric reads regkit.sync.copies, summed over its services.
func copiesMetric(t *testing.T, r *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != mirror.MetricCopies {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				n += dp.Value
			}
		}
	}
	return n
}

// testEmptyPushGuard: a source that suddenly lists nothing does not empty the
// destination: the copy stays, marked, until the grace period ends, and the
// source listing instances again ends the hold.
func testEmptyPushGuard(t *testing.T, e *env) {
	src, dst := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	ss, sd := open(t, e.etcdURL(t)), open(t, e.zkURL(t))
	const svc = "payments"
	r := register(t, src, svc, "p1", 7401)
	var mu sync.Mutex
	var kinds []mirror.EventKind
	run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "etcd"}, To: mirror.Endpoint{Client: sd, Name: "zk"}}},
		mirror.WithEmptyGrace(time.Hour), mirror.WithEventHandler(func(ev mirror.Event) {
			mu.Lock()
			kinds = append(kinds, ev.Kind)
			mu.Unlock()
		}))
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7401 copy-of p1 from etcd")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the copy held", func() error {
		list, err := dst.Instances(context.Background(), svc)
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].Metadata[mirror.MetaHeldSince] == "" {
			return fmt.Errorf("want one copy marked %s, got %v", mirror.MetaHeldSince, list)
		}
		return nil
	})
	register(t, src, svc, "p2", 7402)
	mirrortest.WantView(t, dst, svc, "127.0.0.1:7402 copy-of p2 from etcd")
	list, err := dst.Instances(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		if _, ok := in.Metadata[mirror.MetaHeldSince]; ok {
			t.Errorf("copy %s still marked held", in.ID)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(kinds, mirror.Held) {
		t.Errorf("no Held event in %v", kinds)
	}
}

// testHandover: two sync processes split the services; one joining and one
// leaving move services between them without a watcher on the destination ever
// seeing a copy missing.
func testHandover(t *testing.T, e *env, srcURL, dstURL string) {
	src, dst := open(t, srcURL), open(t, dstURL)
	var svcs []string
	for i := range 6 {
		svc := fmt.Sprintf("svc-%d", i)
		svcs = append(svcs, svc)
		register(t, src, svc, "i1", 7500+i)
	}
	newSyncer := func(member string) *syncer {
		ss, sd, coord := open(t, srcURL), open(t, dstURL), open(t, e.zkURL(t))
		return run(t, []mirror.Route{{From: mirror.Endpoint{Client: ss, Name: "src"}, To: mirror.Endpoint{Client: sd, Name: "dst"}}},
			mirror.WithCoordinator(coord), mirror.WithMemberID(member), mirror.WithHandoverTimeout(30*time.Second))
	}
	owners := func() map[string]int {
		n := map[string]int{}
		for _, svc := range svcs {
			list, _ := dst.Instances(context.Background(), svc)
			for _, in := range list {
				n[in.Metadata[mirror.MetaOwner]]++
			}
		}
		return n
	}
	a := newSyncer("m-a")
	for i, svc := range svcs {
		mirrortest.WantView(t, dst, svc, fmt.Sprintf("127.0.0.1:%d copy-of i1 from src", 7500+i))
	}
	var recs []*mirrortest.GapWatch
	for _, svc := range svcs {
		recs = append(recs, mirrortest.WatchGaps(t, dst, svc))
	}
	b := newSyncer("m-b")
	// Both members end up owning some of the six services, each copy once.
	poll.Until(t, 60*time.Second, "services split between m-a and m-b", func() error {
		n := owners()
		if n["m-a"] == 0 || n["m-b"] == 0 || n["m-a"]+n["m-b"] != len(svcs) || len(n) != 2 {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	a.stop(t)
	poll.Until(t, 60*time.Second, "every service on m-b", func() error {
		if n := owners(); n["m-b"] != len(svcs) || len(n) != 1 {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	for _, rec := range recs {
		rec.Check(t, "a watcher saw copies missing")
	}
	_ = b
}
