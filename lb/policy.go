package lb

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/regkit/regkit/registry"
)

// seed gives each picker the starting point of its counter and random stream;
// tests replace it for deterministic runs.
var seed = rand.Uint64

// splitmix is a lock-free, allocation-free random stream shared by a picker's
// callers: each draw is one atomic add and splitmix64's finaliser.
type splitmix struct{ x atomic.Uint64 }

func (s *splitmix) next() uint64 { return mix(s.x.Add(0x9e3779b97f4a7c15)) }

// intn returns a number in [0, n) (Lemire's multiply-shift; bias < n/2^64).
func (s *splitmix) intn(n int) int {
	hi, _ := bits.Mul64(s.next(), uint64(n))
	return int(hi)
}

// ErrNoInstances is returned by Pick when there is no instance to pick from.
var ErrNoInstances = errors.New("lb: no instances")

// PickInfo is what a picker may use to choose. The zero value is valid.
type PickInfo struct {
	// Key is the affinity key for ConsistentHash (a user, session or shard ID):
	// equal keys go to the same instance while it is not overloaded. Other
	// policies ignore it; ConsistentHash picks round-robin for an empty Key.
	Key string
}

// Picker chooses an endpoint. Pickers are immutable once built, safe for
// concurrent use, never block and do not allocate; the Pool builds a new one on
// every update.
type Picker interface {
	// Pick returns one of the endpoints the picker was built from, or
	// ErrNoInstances when it was built from none.
	Pick(info PickInfo) (*Endpoint, error)
}

// BuildInfo is what a Policy builds a Picker from.
type BuildInfo struct {
	// Ready are the endpoints to pick from: healthy and not ejected (see Pool for
	// the panic rules that widen it). Sorted by instance ID.
	Ready []*Endpoint
	// All are every endpoint of the update, sorted by instance ID.
	All []*Endpoint
}

// Policy builds pickers; it is the balancing algorithm. Policies are values,
// safe to share between Pools.
type Policy interface {
	// Name is the policy's name, e.g. "round_robin".
	Name() string
	// Build returns a picker over info.Ready. It may allocate.
	Build(info BuildInfo) Picker
}

// LoadAware is implemented by policies whose pickers read Endpoint.InFlight; for
// them Pool.Pick counts a call in flight until Result.Done.
type LoadAware interface {
	// LoadAware reports whether the policy's pickers read calls in flight.
	LoadAware() bool
}

// errPicker returns ErrNoInstances.
type errPicker struct{}

func (errPicker) Pick(PickInfo) (*Endpoint, error) { return nil, ErrNoInstances }

// ---- round-robin ----

// RoundRobin picks the ready endpoints in turn, starting at a random one so that
// many clients do not all begin with the same instance (as grpc-go's round_robin).
func RoundRobin() Policy { return roundRobin{} }

type roundRobin struct{}

func (roundRobin) Name() string { return "round_robin" }
func (roundRobin) Build(info BuildInfo) Picker {
	if len(info.Ready) == 0 {
		return errPicker{}
	}
	p := &rrPicker{eps: info.Ready, n: uint32(len(info.Ready))}
	p.next.Store(uint32(seed()))
	return p
}

type rrPicker struct {
	eps  []*Endpoint
	n    uint32
	next atomic.Uint32 // 32 bits: a 32-bit modulo is cheaper, and wrapping only shifts the turn
}

func (p *rrPicker) Pick(PickInfo) (*Endpoint, error) {
	return p.eps[p.next.Add(1)%p.n], nil
}

// ---- smooth weighted round-robin ----

// MaxSchedule bounds the length of WeightedRoundRobin's precomputed cycle; weights
// whose reduced sum exceeds it are scaled down proportionally (each ready
// endpoint keeps at least one slot).
const MaxSchedule = 8192

// WeightedRoundRobin is nginx's smooth weighted round-robin over Instance.Weight:
// over a cycle each endpoint is picked in proportion to its weight, interleaved
// rather than in bursts (weights 5,1,1 give a a b a c a a). The cycle is computed
// when the picker is built, so Pick is one atomic add and an index; each picker
// starts at a random place in the cycle. Weight 0 means no traffic while another
// ready endpoint has a positive weight; when all are 0 they share equally.
func WeightedRoundRobin() Policy { return weightedRoundRobin{} }

type weightedRoundRobin struct{}

func (weightedRoundRobin) Name() string { return "weighted_round_robin" }
func (weightedRoundRobin) Build(info BuildInfo) Picker {
	eps := info.Ready
	if len(eps) == 0 {
		return errPicker{}
	}
	w := make([]int64, len(eps))
	var g int64
	for i, e := range eps {
		w[i] = int64(max(e.Instance.Weight, 0))
		g = gcd(g, w[i])
	}
	if g == 0 { // all zero: equal shares
		for i := range w {
			w[i] = 1
		}
		g = 1
	}
	var total int64
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	if total > MaxSchedule {
		scaled := int64(0)
		for i := range w {
			if w[i] > 0 {
				w[i] = max(1, w[i]*MaxSchedule/total)
			}
			scaled += w[i]
		}
		total = scaled
	}
	sched := make([]int32, 0, total)
	cur := make([]int64, len(w))
	for range total {
		best := -1
		for i := range w {
			if w[i] == 0 {
				continue
			}
			cur[i] += w[i]
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		sched = append(sched, int32(best))
	}
	p := &wrrPicker{eps: eps, sched: sched, n: uint32(len(sched))}
	p.next.Store(uint32(seed()))
	return p
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

type wrrPicker struct {
	eps   []*Endpoint
	sched []int32
	n     uint32
	next  atomic.Uint32
}

func (p *wrrPicker) Pick(PickInfo) (*Endpoint, error) {
	return p.eps[p.sched[p.next.Add(1)%p.n]], nil
}

// ---- random ----

// Random picks a ready endpoint uniformly at random.
func Random() Policy { return random{} }

type random struct{}

func (random) Name() string { return "random" }
func (random) Build(info BuildInfo) Picker {
	if len(info.Ready) == 0 {
		return errPicker{}
	}
	p := &randPicker{eps: info.Ready}
	p.r.x.Store(seed())
	return p
}

type randPicker struct {
	eps []*Endpoint
	r   splitmix
}

func (p *randPicker) Pick(PickInfo) (*Endpoint, error) {
	return p.eps[p.r.intn(len(p.eps))], nil
}

// ---- power of two choices ----

// LeastLoaded is the power-of-two-choices policy: it draws two distinct ready
// endpoints at random and picks the one with fewer calls in flight (ties: the
// first drawn). It is load-aware: Pool.Pick counts calls until Result.Done.
func LeastLoaded() Policy { return p2c{} }

type p2c struct{}

func (p2c) Name() string    { return "least_loaded" }
func (p2c) LoadAware() bool { return true }
func (p2c) Build(info BuildInfo) Picker {
	if len(info.Ready) == 0 {
		return errPicker{}
	}
	p := &p2cPicker{eps: info.Ready}
	p.r.x.Store(seed())
	return p
}

type p2cPicker struct {
	eps []*Endpoint
	r   splitmix
}

func (p *p2cPicker) Pick(PickInfo) (*Endpoint, error) {
	n := len(p.eps)
	if n == 1 {
		return p.eps[0], nil
	}
	i := p.r.intn(n)
	j := p.r.intn(n - 1)
	if j >= i {
		j++
	}
	a, b := p.eps[i], p.eps[j]
	if b.st.inflight.Load() < a.st.inflight.Load() {
		return b, nil
	}
	return a, nil
}

// ---- consistent hashing with bounded loads ----

// MaxReplicas is the largest ConsistentHashConfig.Replicas. The ring has
// Replicas points per ready endpoint, rebuilt and sorted on every update, and a
// Pick whose endpoints are all at their bound walks all of it: 1000 endpoints of
// MaxReplicas points make a ring of a million points, 16 MB while it is built.
const MaxReplicas = 1000

// ConsistentHashConfig configures ConsistentHash. The zero value takes the
// defaults.
type ConsistentHashConfig struct {
	// Replicas is the number of points each endpoint has on the ring: 1 to
	// MaxReplicas; 0 means the default, 100.
	Replicas int
	// LoadFactor is c in "Consistent Hashing with Bounded Loads" (Mirrokni,
	// Thorup, Zadimoghaddam, 2016): an endpoint takes a new call only while its
	// calls in flight stay within ceil(c * (total+1) / n). It must be finite and
	// at least 1; 0 means the default, 1.25.
	LoadFactor float64
}

// ConsistentHash is consistent hashing with bounded loads: PickInfo.Key is hashed
// onto a ring of Replicas points per ready endpoint and goes to the first endpoint
// clockwise whose load is within the bound, so equal keys stick to one instance
// and move only when it leaves or is overloaded. It is load-aware. An empty Key
// is picked round-robin.
//
// A Replicas or LoadFactor out of its range (see ConsistentHashConfig) makes
// NewPool and New return an error matching registry.ErrInvalid that names the
// field.
func ConsistentHash(cfg ConsistentHashConfig) Policy {
	c := consistentHash{cfg: cfg}
	switch {
	case cfg.Replicas == 0:
		c.cfg.Replicas = 100
	case cfg.Replicas < 0 || cfg.Replicas > MaxReplicas:
		c.err = fmt.Errorf("lb: ConsistentHash: Replicas %d not in [1, %d]: %w", cfg.Replicas, MaxReplicas, registry.ErrInvalid)
	}
	switch {
	case cfg.LoadFactor == 0:
		c.cfg.LoadFactor = 1.25
	case !(cfg.LoadFactor >= 1) || math.IsInf(cfg.LoadFactor, 0): // NaN fails >=
		c.err = errors.Join(c.err, fmt.Errorf("lb: ConsistentHash: LoadFactor %v not finite and at least 1: %w", cfg.LoadFactor, registry.ErrInvalid))
	}
	return c
}

type consistentHash struct {
	cfg ConsistentHashConfig
	err error // bad settings, reported by NewPool
}

func (c consistentHash) check() error { return c.err }

func (consistentHash) Name() string    { return "consistent_hash" }
func (consistentHash) LoadAware() bool { return true }
func (c consistentHash) Build(info BuildInfo) Picker {
	eps := info.Ready
	if len(eps) == 0 || c.err != nil { // NewPool refuses c.err; this is Build called directly
		return errPicker{}
	}
	type point struct {
		h uint64
		i int32
	}
	pts := make([]point, 0, len(eps)*c.cfg.Replicas)
	for i, e := range eps {
		base := hashString(e.Instance.ID)
		for r := 0; r < c.cfg.Replicas; r++ {
			pts = append(pts, point{mix(base + uint64(r)*0x9e3779b97f4a7c15), int32(i)})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return int(a.i - b.i)
	})
	p := &chPicker{eps: eps, hashes: make([]uint64, len(pts)), owner: make([]int32, len(pts)), c: c.cfg.LoadFactor}
	for i, pt := range pts {
		p.hashes[i], p.owner[i] = pt.h, pt.i
	}
	p.next.Store(uint32(seed()))
	return p
}

type chPicker struct {
	eps    []*Endpoint
	hashes []uint64
	owner  []int32
	c      float64
	next   atomic.Uint32
}

func (p *chPicker) Pick(info PickInfo) (*Endpoint, error) {
	n := len(p.eps)
	if info.Key == "" {
		return p.eps[p.next.Add(1)%uint32(n)], nil
	}
	h := mix(hashString(info.Key))
	i, _ := slices.BinarySearch(p.hashes, h)
	total := p.eps[0].st.pool.inflight.Load()
	bound := int64(math.Ceil(p.c * float64(total+1) / float64(n)))
	m := len(p.hashes)
	for k := 0; k < m; k++ {
		e := p.eps[p.owner[(i+k)%m]]
		if e.st.inflight.Load()+1 <= bound {
			return e, nil
		}
	}
	return p.eps[p.owner[i%m]], nil
}

// hashString is FNV-1a, 64 bits.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finaliser, spreading FNV's output over the ring.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ---- zone-aware ----

// ZoneAware prefers the caller's zone: it builds inner over the ready endpoints
// whose Instance.Zone is zone, as long as they are at least minHealthyShare of
// that zone's endpoints (healthy, not ejected, out of all it has) and at least
// one; otherwise it spills over and builds inner over every ready endpoint, all
// zones. An empty zone, or no endpoint in it, always spills over. A nil inner
// means RoundRobin.
//
// minHealthyShare must be in [0, 1] (0: stay local while one local endpoint is
// ready; 1: only while all are). A share outside it, or NaN, makes NewPool and
// New return an error matching registry.ErrInvalid that names minHealthyShare.
func ZoneAware(zone string, minHealthyShare float64, inner Policy) Policy {
	if inner == nil {
		inner = RoundRobin()
	}
	z := zoneAware{zone: zone, share: minHealthyShare, inner: inner}
	if !(minHealthyShare >= 0 && minHealthyShare <= 1) { // NaN fails both
		z.err = fmt.Errorf("lb: ZoneAware: minHealthyShare %v not in [0, 1]: %w", minHealthyShare, registry.ErrInvalid)
	}
	return z
}

type zoneAware struct {
	zone  string
	share float64
	inner Policy
	err   error // bad settings, reported by NewPool
}

func (z zoneAware) check() error {
	if z.err != nil {
		return z.err
	}
	return checkPolicy(z.inner)
}

func (z zoneAware) Name() string { return fmt.Sprintf("zone_aware(%s)", z.inner.Name()) }
func (z zoneAware) LoadAware() bool {
	la, ok := z.inner.(LoadAware)
	return ok && la.LoadAware()
}
func (z zoneAware) Build(info BuildInfo) Picker {
	if z.zone == "" {
		return z.inner.Build(info)
	}
	var local, localReady []*Endpoint
	for _, e := range info.All {
		if e.Instance.Zone == z.zone {
			local = append(local, e)
		}
	}
	for _, e := range info.Ready {
		if e.Instance.Zone == z.zone {
			localReady = append(localReady, e)
		}
	}
	if len(localReady) == 0 || float64(len(localReady)) < z.share*float64(len(local)) {
		return z.inner.Build(info)
	}
	return z.inner.Build(BuildInfo{Ready: localReady, All: local})
}

// checker is implemented by policies whose constructor can be given bad
// settings; NewPool refuses a policy whose check fails.
type checker interface{ check() error }

// checkPolicy returns why p's settings are invalid, or nil.
func checkPolicy(p Policy) error {
	if c, ok := p.(checker); ok {
		return c.check()
	}
	return nil
}

// counting says what Pool.Pick counts for p's pickers.
func counting(p Policy) count {
	if la, ok := p.(LoadAware); !ok || !la.LoadAware() {
		return countNone
	}
	if needsTotal(p) {
		return countTotal
	}
	return countEndpoint
}

// needsTotal: the policy's pickers read the Pool's total in flight.
func needsTotal(p Policy) bool {
	switch p := p.(type) {
	case consistentHash:
		return true
	case zoneAware:
		return needsTotal(p.inner)
	}
	return false
}
