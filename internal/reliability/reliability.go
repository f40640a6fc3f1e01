// Package reliability runs the fault scenarios of issue 19 against a real 3-member
// cluster (package testenv's ZooKeeper ensemble, etcdtest's etcd cluster, the
// Consul cluster) and measures what a regkit user sees: registrations lost after
// recovery, watch views that differ from the servers', cached lookups answered and
// marked stale during the outage, a process started during the outage answering
// from its snapshot file, the time until lookups are fresh and registrations are
// back, the connections and bytes a client sends while the cluster has no leader,
// and the client goroutines and sockets left after every Client is closed.
//
// Check asserts the limits (never timings, which are recorded only); Report
// appends a result to the file named by $REGKIT_RELIABILITY_OUT, which
// scripts/reliability.sh turns into RELIABILITY.md.
package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/cache"
)

// Cluster is what a scenario does to a 3-member cluster.
type Cluster interface {
	Leader() int   // the leader's index, or -1
	Follower() int // a running follower's index, or -1
	Kill(i int)    // kill -9
	Start(t testing.TB, i int)
	WaitQuorum(t testing.TB, timeout time.Duration)
	KillMajority() []int
	Isolate(i int)
	Rejoin(i int)
	// ClientProxy is the proxy the clients' connections to member i go through
	// (the same one for every member when they go through one client agent).
	ClientProxy(i int) *testenv.Proxy
}

// Target is one backend on one cluster.
type Target struct {
	Backend string
	Cluster Cluster
	Members int
	// URL is the regkit URL of namespace ns naming every member's client address.
	URL func(ns string) string
	// TTL is the session or lease TTL the URL asks for.
	TTL time.Duration
	// StaleBound is the documented bound on how long after the backend stops
	// answering a watcher's view is marked stale.
	StaleBound time.Duration
	// ServerIDs reads the instance IDs of service in namespace ns with a fresh
	// consistent read that bypasses the client proxies.
	ServerIDs func(ctx context.Context, ns, service string) ([]string, error)
	// Options are given to every Open.
	Options []registry.Option
	// Settled, when set, reports whether every member serves every one of want
	// (the IDs registered) in namespace ns: checked before each fault, so that a
	// fault does not race the replication of the last registration (Consul's
	// followers answer stale reads from what they applied, and learn that an entry
	// is committed only from the leader's next message).
	Settled func(ctx context.Context, ns, service string, want []string) error
	// StartAfter is how long into an outage the process started during it
	// starts (default at once). Consul's servers answer as if all were well
	// until they notice the leader gone (their raft heartbeat timeout).
	StartAfter time.Duration
}

// Scenario is one fault.
type Scenario struct {
	Name string
	// Fault injects the fault; Restore ends it. Hold is how long the fault lasts
	// (a fault duration, not a wait for a condition).
	Fault func(t testing.TB, tg *Target) (restore func(t testing.TB))
	Hold  func(tg *Target) time.Duration
	// Unreachable: during the fault no member answers the client, so every lookup
	// later than StaleBound into it must be marked stale, and a process started
	// then must answer from its snapshot file.
	Unreachable bool
	// LeaderGone: the cluster has no leader for the whole hold; the client's
	// connections and bytes during it are counted.
	LeaderGone bool
	// Expires: the servers must expire the clients' sessions during the fault
	// (every registration gone from the servers at some point of it); the fault
	// lasts at least Hold, and on until they are gone (at most a minute more).
	Expires bool
}

// Result is one run of one scenario.
type Result struct {
	Backend, Scenario string
	Registrations     int
	Lost              int // registrations open but missing from the servers after recovery
	ViewsDiffer       int // watch views (raw watcher, cache) differing from the servers' after recovery
	Lookups           int // cached lookups made during the fault
	Answered          int // of which answered with the last good instances
	StaleRequired     int // of which were made when the view had to be marked stale
	StaleMarked       int // of those, marked Stale with an age > 0
	FirstStale        time.Duration
	SnapshotStart     string // "ok", an error, or "" when not tried
	FreshAfter        time.Duration
	RegsBackAfter     time.Duration
	OutageSeconds     float64
	OutageConns       int64 // connections the clients opened to the members while leaderless
	OutageBytes       int64 // bytes they sent meanwhile
	Expired           bool  // every registration was gone from the servers at some point of the fault
	GoroutinesLeft    int   // client goroutines above the baseline after Close
	SocketsLeft       int   // client sockets to the members left after Close
	Note              string
}

const (
	service   = "svc"
	regsPerCl = 2
	clients   = 2
	deadline  = 90 * time.Second
)

// Run runs sc against tg once and returns its figures; it fails t only when the
// scenario itself cannot run (a cluster that does not come back).
func Run(t *testing.T, tg *Target, sc Scenario, run int) Result {
	t.Helper()
	r := Result{Backend: tg.Backend, Scenario: sc.Name}
	ns := fmt.Sprintf("rel%d%d", time.Now().UnixNano()%1e6, run)
	baseG := clientGoroutines()
	ports := proxyPorts(tg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*deadline)
	defer cancel()

	open := func() *registry.Client {
		oc, ocancel := context.WithTimeout(ctx, 30*time.Second)
		defer ocancel()
		opts := append([]registry.Option{registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true})}, tg.Options...)
		c, err := registry.Open(oc, tg.URL(ns), opts...)
		if err != nil {
			t.Fatalf("%s/%s: open: %v", tg.Backend, sc.Name, err)
		}
		return c
	}
	var all []*registry.Client
	var want []string
	for i := range clients {
		c := open()
		all = append(all, c)
		for j := range regsPerCl {
			id := fmt.Sprintf("i%d-%d", i, j)
			if _, err := c.Register(ctx, registry.Instance{Service: service, ID: id, Host: "127.0.0.1", Port: 9000 + 10*i + j}); err != nil {
				t.Fatalf("%s/%s: register %s: %v", tg.Backend, sc.Name, id, err)
			}
			want = append(want, id)
		}
	}
	slices.Sort(want)
	r.Registrations = len(want)
	wc := open()
	all = append(all, wc)
	w, err := wc.Watch(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ch, err := cache.New(wc, cache.WithSnapshotDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	watchView := newLatest(w)
	converged := func() error {
		s, err := ch.Lookup(ctx, service)
		if err != nil {
			return err
		}
		if s.Stale || !slices.Equal(ids(s.Instances), want) {
			return fmt.Errorf("cache view %v stale=%v", ids(s.Instances), s.Stale)
		}
		return nil
	}
	// The cache writes its snapshot file just after it publishes the view.
	saved := func() error {
		_, err := os.Stat(filepath.Join(dir, service+".json"))
		return err
	}
	testenv.Eventually(t, deadline, "the cache sees every registration", converged)
	testenv.Eventually(t, deadline, "the cache's snapshot file", saved)
	if tg.Settled != nil {
		testenv.Eventually(t, deadline, "every member serves every registration", func() error {
			return tg.Settled(ctx, ns, service, want)
		})
	}

	// Lookups during the fault, every 20ms.
	var lk lookupLog
	stopLookups := make(chan struct{})
	var lwg sync.WaitGroup
	faultAt := time.Now()
	lwg.Add(1)
	go func() {
		defer lwg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLookups:
				return
			case <-tick.C:
			}
			lctx, lcancel := context.WithTimeout(ctx, time.Second)
			s, err := ch.Lookup(lctx, service)
			lcancel()
			lk.add(time.Since(faultAt), s, err, want)
		}
	}()
	conns0, bytes0 := proxyTotals(tg)
	restore := sc.Fault(t, tg)
	const expiryGrace = time.Minute
	hold := time.Duration(0)
	if sc.Hold != nil {
		hold = sc.Hold(tg)
	}
	holdTimer := time.NewTimer(hold)
	var expired chan bool
	if sc.Expires {
		// Read the servers (bypassing the client proxies) during the hold: were the
		// registrations gone at some point?
		// On a loaded machine the election can take most of the hold, and the
		// new leader gives every session a fresh timeout: the fault then lasts
		// on until the registrations are gone, at most expiryGrace longer.
		expired = make(chan bool, 1)
		end := time.Now().Add(hold + expiryGrace)
		go func() {
			seen := false
			for !seen && time.Now().Before(end) {
				got, err := serverIDs(ctx, tg, ns)
				seen = err == nil && !slices.ContainsFunc(want, func(id string) bool { return slices.Contains(got, id) })
				time.Sleep(100 * time.Millisecond) // polling interval
			}
			expired <- seen
		}()
	}
	if sc.Unreachable && hold > tg.StaleBound+time.Second {
		// A process started now: its Open must succeed and its cache answer
		// from the snapshot file the first process wrote.
		if tg.StartAfter > 0 {
			t := time.NewTimer(tg.StartAfter) // a point in the fault, not a wait for a condition
			<-t.C
		}
		r.SnapshotStart = startDuringOutage(tg, ns, dir)
	}
	<-holdTimer.C
	if expired != nil {
		r.Expired = <-expired
	}
	if err := wc.Health(); err != nil {
		r.Note = "health at the end of the fault: " + err.Error()
	}
	if sc.LeaderGone {
		c1, b1 := proxyTotals(tg)
		r.OutageConns, r.OutageBytes = c1-conns0, b1-bytes0
		r.OutageSeconds = time.Since(faultAt).Seconds()
	}
	restoreAt := time.Since(faultAt) // lookups after this may be fresh again
	restore(t)
	restored := time.Now()
	close(stopLookups)
	lwg.Wait()
	r.Lookups, r.Answered, r.StaleRequired, r.StaleMarked, r.FirstStale = lk.figures(sc.Unreachable, tg.StaleBound, restoreAt)
	if lk.wrong != "" {
		r.Note = strings.TrimPrefix(r.Note+"; "+lk.wrong, "; ")
	}

	// Recovery.
	var freshAt, backAt time.Time
	testenv.Eventually(t, deadline, "registrations back and lookups fresh", func() error {
		if backAt.IsZero() {
			got, err := serverIDs(ctx, tg, ns)
			if err == nil && slices.Equal(got, want) {
				backAt = time.Now()
			}
		}
		if freshAt.IsZero() && converged() == nil {
			freshAt = time.Now()
		}
		if freshAt.IsZero() || backAt.IsZero() {
			return fmt.Errorf("fresh=%v back=%v", !freshAt.IsZero(), !backAt.IsZero())
		}
		return nil
	})
	r.FreshAfter, r.RegsBackAfter = freshAt.Sub(restored), backAt.Sub(restored)

	// After recovery: what the servers hold against what is open and seen.
	got, err := serverIDs(ctx, tg, ns)
	if err != nil {
		t.Fatalf("%s/%s: server read: %v", tg.Backend, sc.Name, err)
	}
	for _, id := range want {
		if !slices.Contains(got, id) {
			r.Lost++
		}
	}
	if s, err := ch.Lookup(ctx, service); err != nil || s.Stale || !slices.Equal(ids(s.Instances), got) {
		r.ViewsDiffer++
	}
	wctx, wcancel := context.WithTimeout(ctx, deadline)
	if s, err := watchView.await(wctx, got); err != nil || s.Stale {
		r.ViewsDiffer++
	}
	wcancel()

	w.Close()
	ch.Close()
	for _, c := range all {
		c.Close()
	}
	watchView.wait()
	// Goroutines and sockets back to the baseline (the clients' goroutines end
	// with Close; their sockets' peers notice the close a moment later).
	poll := time.Now().Add(30 * time.Second)
	for {
		r.GoroutinesLeft = max(clientGoroutines()-baseG, 0)
		r.SocketsLeft = clientSockets(ports)
		if r.GoroutinesLeft == 0 && r.SocketsLeft == 0 || time.Now().After(poll) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	return r
}

// startDuringOutage opens a new Client and Cache over the snapshot dir, as a
// process started during the outage would, and looks the service up.
func startDuringOutage(tg *Target, ns, dir string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := append([]registry.Option{registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}),
		registry.WithLazyConnect()}, tg.Options...)
	c, err := registry.Open(ctx, tg.URL(ns), opts...)
	if err != nil {
		return "Open failed: " + err.Error()
	}
	defer c.Close()
	if err := c.Health(); err == nil {
		return "Health reported nil during the outage"
	}
	copyDir, err := os.MkdirTemp(filepath.Dir(dir), "fresh-process-")
	if err != nil {
		return err.Error()
	}
	b, err := os.ReadFile(filepath.Join(dir, service+".json"))
	if err == nil {
		err = os.WriteFile(filepath.Join(copyDir, service+".json"), b, 0o644)
	}
	if err != nil {
		return "copy the snapshot file: " + err.Error()
	}
	ch, err := cache.New(c, cache.WithSnapshotDir(copyDir), cache.WithStartupWait(time.Second))
	if err != nil {
		return err.Error()
	}
	defer ch.Close()
	lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
	defer lcancel()
	s, err := ch.Lookup(lctx, service)
	switch {
	case err != nil:
		return "Lookup failed: " + err.Error()
	case len(s.Instances) == 0:
		return "Lookup answered no instances"
	case !s.Stale || s.Age() <= 0:
		return fmt.Sprintf("Lookup answered stale=%v age=%v", s.Stale, s.Age())
	}
	return "ok"
}

func serverIDs(ctx context.Context, tg *Target, ns string) ([]string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, err := tg.ServerIDs(rctx, ns, service)
	slices.Sort(got)
	return got, err
}

func ids(in []registry.Instance) []string {
	out := make([]string, len(in))
	for i, x := range in {
		out[i] = x.ID
	}
	return out
}

// lookupLog records the cached lookups made during a fault.
type lookupLog struct {
	mu    sync.Mutex
	ls    []lookup
	wrong string // what the first lookup not answered with the instances returned
}

type lookup struct {
	at       time.Duration
	answered bool
	stale    bool
	age      time.Duration
}

func (l *lookupLog) add(at time.Duration, s registry.Snapshot, err error, want []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	x := lookup{at: at, answered: err == nil && slices.Equal(ids(s.Instances), want), stale: s.Stale, age: s.Age()}
	if !x.answered && l.wrong == "" {
		l.wrong = fmt.Sprintf("first unanswered lookup at %v: %v stale=%v (%v)", at.Round(time.Millisecond), ids(s.Instances), s.Stale, err)
	}
	l.ls = append(l.ls, x)
}

// figures counts the lookups; those made between bound into the fault and the
// start of its restoration must have been marked stale.
func (l *lookupLog) figures(unreachable bool, bound, restoreAt time.Duration) (n, answered, required, marked int, first time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	first = -1
	for _, x := range l.ls {
		n++
		if x.answered {
			answered++
		}
		if x.stale && first < 0 {
			first = x.at
		}
		if unreachable && x.at > bound && x.at < restoreAt {
			required++
			if x.stale && x.age > 0 {
				marked++
			}
		}
	}
	return
}

// latest follows a Watcher on a goroutine of its own, keeping its newest snapshot.
type latest struct {
	w    registry.Watcher
	mu   sync.Mutex
	s    registry.Snapshot
	ch   chan struct{}
	done chan struct{}
}

func newLatest(w registry.Watcher) *latest {
	l := &latest{w: w, ch: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			s, err := w.Next(context.Background())
			if err != nil {
				return
			}
			l.mu.Lock()
			l.s = s
			close(l.ch)
			l.ch = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

// await waits until the newest snapshot is fresh and holds want.
func (l *latest) await(ctx context.Context, want []string) (registry.Snapshot, error) {
	for {
		l.mu.Lock()
		s, ch := l.s, l.ch
		l.mu.Unlock()
		if !s.Stale && s.Seq > 0 && slices.Equal(ids(s.Instances), want) {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, fmt.Errorf("watch view %v stale=%v: %w", ids(s.Instances), s.Stale, ctx.Err())
		}
	}
}

func (l *latest) wait() { <-l.done }

// clientProxies are the members' client proxies, each once (a cluster whose
// clients go through one client agent has one for every member).
func clientProxies(tg *Target) []*testenv.Proxy {
	var out []*testenv.Proxy
	for i := range tg.Members {
		if p := tg.Cluster.ClientProxy(i); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func proxyTotals(tg *Target) (conns, bytes int64) {
	for _, p := range clientProxies(tg) {
		conns += p.Accepted()
		bytes += p.BytesUp()
	}
	return
}

// Report appends r to $REGKIT_RELIABILITY_OUT (JSON lines), when set.
func Report(t testing.TB, r Result) {
	t.Logf("%+v", r)
	out := os.Getenv("REGKIT_RELIABILITY_OUT")
	if out == "" {
		return
	}
	b, _ := json.Marshal(r)
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("reliability: %v", err)
		return
	}
	defer f.Close()
	f.Write(append(b, '\n'))
}

// Check asserts the limits every scenario must meet (figures, never timings).
func Check(t testing.TB, r Result) {
	t.Helper()
	where := r.Backend + "/" + r.Scenario
	if r.Lost != 0 {
		t.Errorf("%s: %d of %d registrations lost after recovery", where, r.Lost, r.Registrations)
	}
	if r.ViewsDiffer != 0 {
		t.Errorf("%s: %d watch views differ from the servers' after recovery", where, r.ViewsDiffer)
	}
	if r.Answered != r.Lookups {
		t.Errorf("%s: %d of %d cached lookups answered during the fault", where, r.Answered, r.Lookups)
	}
	if r.StaleMarked != r.StaleRequired {
		t.Errorf("%s: %d of %d lookups made past the staleness bound marked stale with their age (first stale at %v)",
			where, r.StaleMarked, r.StaleRequired, r.FirstStale)
	}
	if r.SnapshotStart != "" && r.SnapshotStart != "ok" {
		t.Errorf("%s: a process started during the outage: %s", where, r.SnapshotStart)
	}
	if r.OutageSeconds > 0 && float64(r.OutageConns)/r.OutageSeconds > 20 {
		t.Errorf("%s: %d connections in %.1fs without a leader: a tight retry loop", where, r.OutageConns, r.OutageSeconds)
	}
	if r.Scenario == SessionExpiryDuringElection.Name && !r.Expired {
		t.Errorf("%s: the registrations never left the servers during the fault: no session expired", where)
	}
	if r.GoroutinesLeft != 0 || r.SocketsLeft != 0 {
		t.Errorf("%s: after Close: %d client goroutines above the baseline, %d client sockets", where, r.GoroutinesLeft, r.SocketsLeft)
	}
}
