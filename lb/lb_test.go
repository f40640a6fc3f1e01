package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))

// deterministic makes every picker built during the test start from fixed seeds.
func deterministic(t *testing.T) {
	var mu sync.Mutex
	n := uint64(42)
	old := seed
	seed = func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		n = mix(n)
		return n
	}
	t.Cleanup(func() { seed = old })
}

func inst(id string, weight int, zone string) registry.Instance {
	return registry.Instance{ID: id, Service: "svc", Host: "10.0.0.1", Port: 1000 + len(id)*10 + int(id[len(id)-1]), Weight: weight, Zone: zone, Healthy: true}
}

func counts(t *testing.T, p *Pool, n int, info PickInfo) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		r, err := p.Pick(info)
		if err != nil {
			t.Fatal(err)
		}
		got[r.Endpoint.Instance.ID]++
		r.Done(nil)
	}
	return got
}

func newPool(t *testing.T, pol Policy, insts []registry.Instance, opts ...Option) *Pool {
	t.Helper()
	p, err := NewPool(pol, append([]Option{quiet}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.Update(insts)
	return p
}

func TestRoundRobinEven(t *testing.T) {
	p := newPool(t, RoundRobin(), []registry.Instance{inst("a", 1, ""), inst("b", 9, ""), inst("c", 1, "")})
	got := counts(t, p, 3000, PickInfo{})
	for _, id := range []string{"a", "b", "c"} {
		if got[id] != 1000 {
			t.Errorf("%s picked %d times of 3000, want 1000: %v", id, got[id], got)
		}
	}
}

// Round-robin and smooth WRR start every picker at a random place, so that many
// clients (and every rebuilt picker) do not all begin with the same instance.
func TestRoundRobinRandomStart(t *testing.T) {
	insts := []registry.Instance{inst("a", 1, ""), inst("b", 1, ""), inst("c", 1, ""), inst("d", 1, "")}
	for _, pol := range []Policy{RoundRobin(), WeightedRoundRobin()} {
		p := newPool(t, pol, insts)
		first := map[string]int{}
		for range 64 {
			p.Update(insts) // a new picker
			r, err := p.Pick(PickInfo{})
			if err != nil {
				t.Fatal(err)
			}
			first[r.Endpoint.Instance.ID]++
		}
		// With a fixed start all 64 pickers begin with one instance; with a
		// random one that happens with probability 4^-63.
		if len(first) < 2 {
			t.Errorf("%s: 64 pickers all started with %v", pol.Name(), first)
		}
	}
}

// Smooth weighted round-robin: exact shares over whole cycles, interleaved as
// nginx's algorithm interleaves them.
func TestWeightedRoundRobinShares(t *testing.T) {
	deterministic(t)
	p := newPool(t, WeightedRoundRobin(), []registry.Instance{inst("a", 500, ""), inst("b", 100, ""), inst("c", 100, "")})
	got := counts(t, p, 7000, PickInfo{})
	if got["a"] != 5000 || got["b"] != 1000 || got["c"] != 1000 {
		t.Errorf("shares %v, want a 5000 b 1000 c 1000", got)
	}
	// nginx's sequence for 5,1,1 is a a b a c a a: never more than 2 a's...
	wp := p.cur.Load().picker.(*wrrPicker)
	var seq string
	for _, i := range wp.sched {
		seq += wp.eps[i].Instance.ID
	}
	if seq != "aabacaa" {
		t.Errorf("schedule %q, want nginx's aabacaa", seq)
	}
	// Weight 0 takes no traffic while others have weight.
	p.Update([]registry.Instance{inst("a", 3, ""), inst("b", 0, "")})
	if got := counts(t, p, 30, PickInfo{}); got["b"] != 0 || got["a"] != 30 {
		t.Errorf("weight 0 picked: %v", got)
	}
}

// Weighted shares stay within tolerance when the weights' cycle exceeds
// MaxSchedule and must be scaled.
func TestWeightedRoundRobinScaled(t *testing.T) {
	deterministic(t)
	var insts []registry.Instance
	weights := map[string]int{}
	total := 0
	for i := range 50 {
		id := fmt.Sprintf("i%02d", i)
		w := 1000 + i*37
		insts = append(insts, inst(id, w, ""))
		weights[id] = w
		total += w
	}
	p := newPool(t, WeightedRoundRobin(), insts)
	const n = 200000
	got := counts(t, p, n, PickInfo{})
	for id, w := range weights {
		want := float64(n) * float64(w) / float64(total)
		if d := float64(got[id]) - want; d > 0.02*want || d < -0.02*want {
			t.Errorf("%s: %d picks, want %.0f ±2%%", id, got[id], want)
		}
	}
}

func TestRandomShares(t *testing.T) {
	deterministic(t)
	p := newPool(t, Random(), []registry.Instance{inst("a", 1, ""), inst("b", 1, ""), inst("c", 1, ""), inst("d", 1, "")})
	const n = 40000
	got := counts(t, p, n, PickInfo{})
	for id, c := range got {
		if c < n/4*95/100 || c > n/4*105/100 {
			t.Errorf("%s: %d of %d, want %d ±5%%: %v", id, c, n, n/4, got)
		}
	}
}

// Power of two choices goes to the less loaded instance.
func TestLeastLoaded(t *testing.T) {
	deterministic(t)
	p := newPool(t, LeastLoaded(), []registry.Instance{inst("a", 1, ""), inst("b", 1, "")})
	var held []Result
	for range 10 { // keep 10 calls open: they spread 5/5
		r, err := p.Pick(PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	st := p.Stats()
	if st[0].InFlight != 5 || st[1].InFlight != 5 {
		t.Errorf("in flight %+v, want 5 and 5", st)
	}
	// a's calls end: every new call goes to a while b is busier.
	for _, r := range held {
		if r.Endpoint.Instance.ID == "a" {
			r.Done(nil)
		}
	}
	for range 4 {
		r, _ := p.Pick(PickInfo{})
		if r.Endpoint.Instance.ID != "a" {
			t.Errorf("picked %s with a idle and b at 5", r.Endpoint.Instance.ID)
		}
	}
}

// Consistent hashing: a key sticks to one instance; removing another instance
// does not move it; overload moves it, within the bound.
func TestConsistentHashBoundedLoads(t *testing.T) {
	deterministic(t)
	insts := []registry.Instance{inst("a", 1, ""), inst("b", 1, ""), inst("c", 1, ""), inst("d", 1, "")}
	p := newPool(t, ConsistentHash(ConsistentHashConfig{LoadFactor: 1.25}), insts)
	owner := map[string]string{}
	for i := range 200 {
		k := fmt.Sprintf("user-%d", i)
		r, _ := p.Pick(PickInfo{Key: k})
		owner[k] = r.Endpoint.Instance.ID
		r.Done(nil)
		for range 3 {
			r, _ := p.Pick(PickInfo{Key: k})
			if r.Endpoint.Instance.ID != owner[k] {
				t.Fatalf("key %s moved from %s to %s", k, owner[k], r.Endpoint.Instance.ID)
			}
			r.Done(nil)
		}
	}
	// Remove d: keys of a, b, c stay.
	p.Update(insts[:3])
	moved := 0
	for k, o := range owner {
		r, _ := p.Pick(PickInfo{Key: k})
		if o != "d" && r.Endpoint.Instance.ID != o {
			moved++
		}
		r.Done(nil)
	}
	if moved != 0 {
		t.Errorf("%d keys moved though their instance stayed", moved)
	}
	// Hold 40 calls of one key: loads stay within ceil(1.25*(m+1)/n).
	var held []Result
	for range 40 {
		r, _ := p.Pick(PickInfo{Key: "hot"})
		held = append(held, r)
	}
	for _, s := range p.Stats() {
		if s.InFlight > 17 { // ceil(1.25*40/3)
			t.Errorf("%s holds %d calls, above the bound", s.ID, s.InFlight)
		}
	}
	for _, r := range held {
		r.Done(nil)
	}
}

// fakeClock drives ejection timers by hand.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}
func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves time and runs the timers due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

func withClock(c clock) Option { return func(o *options) { o.clock = c } }

func fail(t *testing.T, p *Pool, id string, n int) {
	t.Helper()
	// Fail calls on id: pick until it comes up (round-robin reaches it). An id
	// ejected on the way never comes up: fail rather than loop.
	for done, picks := 0, 0; done < n; picks++ {
		if picks == 1000 {
			t.Fatalf("%s not picked in 1000 picks after %d failures: %+v", id, done, p.Stats())
		}
		r, err := p.Pick(PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Endpoint.Instance.ID == id {
			r.Done(errors.New("connection refused"))
			done++
			continue
		}
		r.Done(nil)
	}
}

func ejected(p *Pool) map[string]EndpointStats {
	out := map[string]EndpointStats{}
	for _, s := range p.Stats() {
		if s.Ejected {
			out[s.ID] = s
		}
	}
	return out
}

func TestEjectionBackoffAndPanicThreshold(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	insts := []registry.Instance{inst("a", 1, ""), inst("b", 1, ""), inst("c", 1, ""), inst("d", 1, "")}
	p := newPool(t, RoundRobin(), insts, withClock(clk),
		WithEjection(Ejection{ConsecutiveFailures: 3, BaseTime: time.Second, MaxTime: 8 * time.Second, MaxEjectedShare: 0.5}))

	// Two failures, then a success: the streak restarts; no ejection.
	fail(t, p, "a", 2)
	if len(ejected(p)) != 0 {
		t.Fatal("ejected before the threshold")
	}
	fail(t, p, "a", 1)
	if e := ejected(p); len(e) != 1 || !e["a"].EjectedUntil.Equal(clk.Now().Add(time.Second)) {
		t.Fatalf("after 3 failures: ejected %+v, want a for 1s", e)
	}
	if got := counts(t, p, 300, PickInfo{}); got["a"] != 0 || got["b"] != 100 {
		t.Errorf("picks while a is ejected: %v", got)
	}
	// b goes too (2 of 4 = the 0.5 threshold); c may not (3 of 4 > 0.5).
	fail(t, p, "b", 3)
	fail(t, p, "c", 5)
	if e := ejected(p); len(e) != 2 || !e["a"].Ejected || !e["b"].Ejected {
		t.Fatalf("ejected %v, want a and b only (panic threshold)", e)
	}
	if got := counts(t, p, 200, PickInfo{}); got["c"] != 100 || got["d"] != 100 {
		t.Errorf("picks with a, b ejected: %v", got)
	}

	// a returns after 1s and fails again at once: 2s this time, then 4s, 8s, 8s.
	for i, want := range []time.Duration{2, 4, 8, 8} {
		clk.Advance(time.Duration(1<<i) * time.Second)
		if _, out := ejected(p)["a"]; out {
			t.Fatalf("a still ejected after its backoff (round %d)", i)
		}
		fail(t, p, "a", 3)
		if e := ejected(p)["a"]; !e.Ejected || !e.EjectedUntil.Equal(clk.Now().Add(want*time.Second)) {
			t.Fatalf("round %d: a %+v, want ejected for %vs", i, e, want)
		}
	}
	// Back for MaxTime without ejection: the next one starts at BaseTime again.
	clk.Advance(8 * time.Second)
	clk.Advance(8 * time.Second)
	fail(t, p, "a", 3)
	if e := ejected(p)["a"]; !e.EjectedUntil.Equal(clk.Now().Add(time.Second)) {
		t.Errorf("after a quiet MaxTime: %+v, want 1s", e)
	}
}

// A fully ejected set still serves: with MaxEjectedShare 1 every instance can be
// ejected, and then all of them are picked again rather than none.
func TestFullyEjectedStillServes(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	p := newPool(t, RoundRobin(), []registry.Instance{inst("a", 1, ""), inst("b", 1, "")}, withClock(clk),
		WithEjection(Ejection{ConsecutiveFailures: 1, BaseTime: time.Minute, MaxEjectedShare: 1}))
	fail(t, p, "a", 1)
	fail(t, p, "b", 1)
	if len(ejected(p)) != 2 {
		t.Fatalf("want both ejected: %+v", p.Stats())
	}
	if got := counts(t, p, 10, PickInfo{}); got["a"] != 5 || got["b"] != 5 {
		t.Errorf("fully ejected set: %v, want both picked", got)
	}
	// No healthy instance at all: all serve (panic mode).
	a, b := inst("a", 1, ""), inst("b", 1, "")
	a.Healthy, b.Healthy = false, false
	p.Update([]registry.Instance{a, b})
	if got := counts(t, p, 10, PickInfo{}); len(got) != 2 {
		t.Errorf("all unhealthy: %v, want both picked", got)
	}
	// One healthy: only it.
	b.Healthy = true
	p.Update([]registry.Instance{a, b})
	if got := counts(t, p, 10, PickInfo{}); got["b"] != 10 {
		t.Errorf("one healthy (ejected): %v, want only b", got)
	}
}

// A single instance is never ejected with the default threshold: 1 of 1 > 0.5.
func TestSingleInstanceNeverEjected(t *testing.T) {
	p := newPool(t, RoundRobin(), []registry.Instance{inst("a", 1, "")}, WithEjection(Ejection{ConsecutiveFailures: 1}))
	fail(t, p, "a", 10)
	if len(ejected(p)) != 0 {
		t.Error("the only instance was ejected")
	}
}

func TestZoneSpillOver(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var insts []registry.Instance
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		insts = append(insts, inst(id, 1, "zone-a"))
	}
	for _, id := range []string{"b1", "b2"} {
		insts = append(insts, inst(id, 1, "zone-b"))
	}
	p := newPool(t, ZoneAware("zone-a", 0.5, RoundRobin()), insts, withClock(clk),
		WithEjection(Ejection{ConsecutiveFailures: 1, BaseTime: time.Minute, MaxEjectedShare: 1}))
	local := func() map[string]int { return counts(t, p, 120, PickInfo{}) }
	if got := local(); got["b1"]+got["b2"] != 0 || got["a1"] != 30 {
		t.Fatalf("healthy local zone: %v, want zone-a only", got)
	}
	// 2 of 4 local ready: still local (0.5 is the threshold).
	fail(t, p, "a1", 1)
	fail(t, p, "a2", 1)
	if got := local(); got["b1"]+got["b2"] != 0 || got["a3"] != 60 {
		t.Fatalf("half the local zone ejected: %v, want a3 and a4 only", got)
	}
	// 1 of 4: spill over to every ready instance, both zones.
	fail(t, p, "a3", 1)
	if got := local(); got["a4"] != 40 || got["b1"] != 40 || got["b2"] != 40 {
		t.Fatalf("local zone below its share: %v, want a4, b1, b2 in turn", got)
	}
	// Unhealthy counts like ejected; the caller's zone absent: spill over.
	p2 := newPool(t, ZoneAware("zone-c", 0.5, RoundRobin()), insts)
	if got := counts(t, p2, 60, PickInfo{}); len(got) != 6 {
		t.Errorf("no local instance: %v, want all six", got)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	var insts []registry.Instance
	for i := range 16 {
		insts = append(insts, inst(fmt.Sprintf("i%02d", i), 10+i, fmt.Sprintf("z%d", i%2)))
	}
	for _, pol := range []Policy{RoundRobin(), WeightedRoundRobin(), Random(), LeastLoaded(),
		ConsistentHash(ConsistentHashConfig{}), ZoneAware("z1", 0.5, WeightedRoundRobin())} {
		p := newPool(t, pol, insts)
		info := PickInfo{Key: "user-42"}
		if n := testing.AllocsPerRun(1000, func() {
			r, _ := p.Pick(info)
			r.Done(nil)
		}); n != 0 {
			t.Errorf("%s: %v allocs per Pick+Done", pol.Name(), n)
		}
	}
}

func TestEmptyPool(t *testing.T) {
	p := newPool(t, RoundRobin(), nil)
	if _, err := p.Pick(PickInfo{}); !errors.Is(err, ErrNoInstances) {
		t.Errorf("empty pool: %v", err)
	}
	if _, err := NewPool(nil); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("nil policy: %v", err)
	}
	if _, err := NewPool(RoundRobin(), WithEjection(Ejection{MaxEjectedShare: 2})); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("share 2: %v", err)
	}
}

// TestInvalidPolicySettings: a share outside [0, 1], or NaN, is refused by NewPool with
// an error naming the setting, never clamped.
//
// So is a ConsistentHash Replicas beyond MaxReplicas (the ring was
// allocated at any size on the first update) or a LoadFactor below 1 or not finite.
func TestInvalidPolicySettings(t *testing.T) {
	for _, share := range []float64{-0.1, 1.5, math.NaN(), math.Inf(1)} {
		for _, pol := range []Policy{
			ZoneAware("z1", share, RoundRobin()),
			ZoneAware("", share, nil),
			ZoneAware("z1", 0.5, ZoneAware("z2", share, nil)), // nested
		} {
			_, err := NewPool(pol)
			if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "minHealthyShare") {
				t.Errorf("ZoneAware share %v: NewPool error %v, want ErrInvalid naming minHealthyShare", share, err)
			}
		}
		if _, err := NewPool(RoundRobin(), WithEjection(Ejection{MaxEjectedShare: share})); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("MaxEjectedShare %v: NewPool error %v, want ErrInvalid", share, err)
		}
	}
	for _, cfg := range []ConsistentHashConfig{
		{Replicas: MaxReplicas + 1}, {Replicas: 1 << 40}, {Replicas: -1},
		{LoadFactor: 0.5}, {LoadFactor: -1}, {LoadFactor: math.NaN()}, {LoadFactor: math.Inf(1)},
	} {
		field := "Replicas"
		if cfg.Replicas == 0 {
			field = "LoadFactor"
		}
		_, err := NewPool(ConsistentHash(cfg))
		if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(fmt.Sprint(err), field) {
			t.Errorf("ConsistentHash %+v: NewPool error %v, want ErrInvalid naming %s", cfg, err, field)
		}
	}
	if _, err := NewPool(ConsistentHash(ConsistentHashConfig{Replicas: MaxReplicas, LoadFactor: 1})); err != nil {
		t.Errorf("ConsistentHash at the limits: %v", err)
	}
	for _, share := range []float64{0, 0.5, 1} {
		if _, err := NewPool(ZoneAware("z1", share, nil)); err != nil {
			t.Errorf("ZoneAware share %v: %v", share, err)
		}
	}
}

// ---- a scripted Discovery, for the empty-push guard ----

// script hands its watchers every published snapshot in order (a real watcher
// may skip to the newest; this one never does, so that each step is exercised).
type script struct {
	mu      sync.Mutex
	snaps   []registry.Snapshot
	changed chan struct{}
	idle    uint64 // the Seq a watcher had read when it last waited for more
}

func newScript() *script { return &script{changed: make(chan struct{})} }

func (s *script) Publish(snap registry.Snapshot) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap.Seq = uint64(len(s.snaps) + 1)
	s.snaps = append(s.snaps, snap)
	close(s.changed)
	s.changed = make(chan struct{})
	return snap.Seq
}

// waitDone waits until a watcher has read snapshot seq and asked for the next
// one: its reader (the Balancer's follow loop) is done with seq.
func (s *script) waitDone(t *testing.T, seq uint64) {
	t.Helper()
	poll.Until(t, 5*time.Second, fmt.Sprintf("snapshot %d read", seq), func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.idle < seq {
			return fmt.Errorf("at %d", s.idle)
		}
		return nil
	})
}

func (s *script) Instances(ctx context.Context, service string) ([]registry.Instance, error) {
	return nil, registry.ErrNotSupported
}

func (s *script) Watch(ctx context.Context, service string) (registry.Watcher, error) {
	wctx, cancel := context.WithCancel(ctx)
	return &scriptWatcher{s: s, ctx: wctx, cancel: cancel}, nil
}

type scriptWatcher struct {
	s      *script
	ctx    context.Context
	cancel context.CancelFunc
	last   uint64
}

func (w *scriptWatcher) Next(ctx context.Context) (registry.Snapshot, error) {
	for {
		w.s.mu.Lock()
		ch := w.s.changed
		if int(w.last) < len(w.s.snaps) {
			snap := w.s.snaps[w.last]
			w.last = snap.Seq
			w.s.mu.Unlock()
			return snap, nil
		}
		w.s.idle = max(w.s.idle, w.last)
		w.s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return registry.Snapshot{}, ctx.Err()
		case <-w.ctx.Done():
			return registry.Snapshot{}, registry.ErrClosed
		}
	}
}

func (w *scriptWatcher) Close() error { w.cancel(); return nil }

func snap(stale bool, ids ...string) registry.Snapshot {
	s := registry.Snapshot{Service: "svc", Stale: stale, LastGood: time.Now()}
	for _, id := range ids {
		s.Instances = append(s.Instances, inst(id, 1, ""))
	}
	return s
}

func picks(b *Balancer) error {
	_, err := b.Pick(PickInfo{})
	return err
}

// The guard on a fake clock: each step publishes a snapshot and waits until the
// Balancer's follow loop has read it and is waiting for the next, so what the
// loop decided is settled before the test looks. A fresh empty snapshot that
// changes nothing (the newest view is still empty and fresh) is the probe.
func TestEmptyPushGuard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := newScript()
	s.Publish(snap(false, "a", "b"))
	const grace = 10 * time.Second
	clk := clockwork.NewFakeClock()
	b, err := New(ctx, s, "svc", RoundRobin(), quiet, WithEmptyGrace(grace), WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	step := func(sn registry.Snapshot) { t.Helper(); s.waitDone(t, s.Publish(sn)) }
	serving := func(when string) {
		t.Helper()
		if err := picks(b); err != nil {
			t.Fatalf("%s: empty snapshot applied (%v)", when, err)
		}
	}

	// A stale snapshot keeps serving.
	step(snap(true, "a", "b"))
	if b.Snapshot().Stale != true || picks(b) != nil {
		t.Fatalf("stale snapshot: %+v, %v", b.Snapshot(), picks(b))
	}
	// A fresh empty snapshot is held back: the old instances keep serving, up to
	// the last nanosecond of the grace period...
	step(snap(false))
	serving("at once")
	clk.Advance(grace - 1)
	step(snap(false))
	serving("1ns before the grace period ends")
	// ...a stale empty one is not applied (the backend is unreachable: nothing is
	// confirmed) and restarts the clock at the next fresh one...
	step(snap(true))
	serving("stale")
	step(snap(false)) // the new grace period starts here
	clk.Advance(1)
	step(snap(false))
	serving("at the end of the first grace period (the stale snapshot did not restart the clock)")
	clk.Advance(grace - 2)
	step(snap(false))
	serving("1ns before the restarted grace period ends")
	// ...and is applied when it has stayed fresh and empty for the grace period:
	// the guard's timer fires, no further snapshot needed.
	clk.Advance(1)
	poll.Until(t, 5*time.Second, "confirmed empty snapshot applied", func() error {
		if err := picks(b); !errors.Is(err, ErrNoInstances) {
			return fmt.Errorf("picking: %v", err)
		}
		return nil
	})

	// Instances come back: served at once; a new empty is held again...
	step(snap(false, "c"))
	waitPick(t, b, "c")
	step(snap(false))
	serving("after the instances came back")
	step(snap(false, "d")) // came back within the grace period: never empty
	waitPick(t, b, "d")
	// ...and a later empty one starts a hold of its own, though the clock is past
	// the ended hold's deadline.
	clk.Advance(2 * grace)
	step(snap(false))
	serving("an empty snapshot after the hold ended, past the old hold's deadline")
}

// An empty first snapshot is applied at once; so is an empty one with grace 0.
func TestEmptyPushGuardOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := newScript()
	s.Publish(snap(false))
	b, err := New(ctx, s, "svc", RoundRobin(), quiet, WithEmptyGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := picks(b); !errors.Is(err, ErrNoInstances) {
		t.Fatalf("empty first snapshot: %v", err)
	}
	s.Publish(snap(false, "a"))
	waitPick(t, b, "a")
	s.Publish(snap(false))
	poll.Until(t, 5*time.Second, "grace 0: empty snapshot applied", func() error {
		if picks(b) == nil {
			return errors.New("still picking")
		}
		return nil
	})
}

func waitSeq(t *testing.T, b *Balancer, seq uint64) {
	t.Helper()
	poll.Until(t, 5*time.Second, fmt.Sprintf("snapshot %d applied", seq), func() error {
		if got := b.Snapshot().Seq; got < seq {
			return fmt.Errorf("at %d", got)
		}
		return nil
	})
}

func waitPick(t *testing.T, b *Balancer, id string) {
	t.Helper()
	poll.Until(t, 5*time.Second, "picking "+id, func() error {
		r, err := b.Pick(PickInfo{})
		if err != nil {
			return err
		}
		r.Done(nil)
		if r.Endpoint.Instance.ID != id {
			return fmt.Errorf("picked %s", r.Endpoint.Instance.ID)
		}
		return nil
	})
}
