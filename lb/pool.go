package lb

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/registry"
)

// Ejection configures outlier ejection, as Envoy's consecutive-failure outlier
// detection and Curator's DownInstancePolicy: an instance whose calls failed
// ConsecutiveFailures times in a row (Result.Done with an error, no success in
// between) is taken out of the ready set for BaseTime, then comes back on
// probation. Ejected again before it has stayed back for MaxTime, it stays out
// twice as long as the time before (BaseTime, 2×, 4×, ... capped at MaxTime);
// after MaxTime back without ejection, the next ejection starts at BaseTime again.
//
// MaxEjectedShare is the panic threshold: an ejection that would leave more than
// that share of the instances ejected is not made (with 2 instances and 0.5, one
// can be ejected; with 1, none). Whatever the settings, a set with nothing ready
// still serves: see Pool.
type Ejection struct {
	// ConsecutiveFailures ejects after this many failures in a row; 0 turns
	// ejection off. Default 5.
	ConsecutiveFailures int
	// BaseTime is the first ejection's length. Default 30s.
	BaseTime time.Duration
	// MaxTime caps the growing ejection time. Default 5m.
	MaxTime time.Duration
	// MaxEjectedShare is the largest share (0..1) of instances ejected at once.
	// Default 0.5.
	MaxEjectedShare float64
}

// DefaultEjection is the ejection every Pool has unless WithEjection says
// otherwise.
var DefaultEjection = Ejection{ConsecutiveFailures: 5, BaseTime: 30 * time.Second, MaxTime: 5 * time.Minute, MaxEjectedShare: 0.5}

// DefaultEmptyGrace is how long a Balancer holds back an empty snapshot that
// follows a non-empty one, unless WithEmptyGrace says otherwise.
const DefaultEmptyGrace = 10 * time.Second

// Option configures NewPool and New.
type Option func(*options)

type options struct {
	ej    Ejection
	grace time.Duration
	log   *slog.Logger
	clock clock
	gc    clockwork.Clock // the empty-push guard's; nil is the real clock
	errs  []error
}

// WithEjection sets outlier ejection (default DefaultEjection); zero fields take
// DefaultEjection's values, except ConsecutiveFailures < 0, which turns ejection
// off (as does WithoutEjection).
func WithEjection(e Ejection) Option {
	return func(o *options) {
		if !(e.MaxEjectedShare >= 0 && e.MaxEjectedShare <= 1) || e.BaseTime < 0 || e.MaxTime < 0 {
			o.errs = append(o.errs, fmt.Errorf("lb: WithEjection: %+v: %w", e, registry.ErrInvalid))
		}
		d := DefaultEjection
		if e.ConsecutiveFailures < 0 {
			e.ConsecutiveFailures = 0
		} else if e.ConsecutiveFailures == 0 {
			e.ConsecutiveFailures = d.ConsecutiveFailures
		}
		if e.BaseTime == 0 {
			e.BaseTime = d.BaseTime
		}
		if e.MaxTime == 0 {
			e.MaxTime = max(d.MaxTime, e.BaseTime)
		}
		if e.MaxEjectedShare == 0 {
			e.MaxEjectedShare = d.MaxEjectedShare
		}
		o.ej = e
	}
}

// WithoutEjection turns outlier ejection off: Result.Done only keeps counts.
func WithoutEjection() Option { return func(o *options) { o.ej.ConsecutiveFailures = 0 } }

// WithEmptyGrace sets how long a Balancer holds back an empty snapshot after a
// non-empty one (default DefaultEmptyGrace; 0 applies empty snapshots at once).
// Pools ignore it.
func WithEmptyGrace(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.errs = append(o.errs, fmt.Errorf("lb: WithEmptyGrace: negative %v: %w", d, registry.ErrInvalid))
		}
		o.grace = d
	}
}

// WithLogger sets the logger for ejections and held-back updates (default:
// warnings to standard error). A nil logger keeps the default.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithClock sets the clock that times ejections (Ejection's BaseTime and
// MaxTime) and the empty-push guard's grace period (WithEmptyGrace) (default: the
// real clock). It exists for tests, which pass a clockwork.FakeClock and advance
// it instead of waiting; production code has no reason to set it. A nil clock
// keeps the default.
func WithClock(c clockwork.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock, o.gc = cwClock{c}, c
		}
	}
}

func buildOptions(opts []Option) (options, error) {
	o := options{ej: DefaultEjection, grace: DefaultEmptyGrace, clock: realClock{}}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return o, errors.Join(o.errs...)
}

// Pool balances calls over one set of instances with one Policy: Update gives it
// the instances, Pick chooses one, Result.Done reports how the call went. It keeps
// per-instance state (calls in flight, consecutive failures, ejection) by instance
// ID across updates, and holds the current Picker in an atomic pointer: Pick takes
// no lock and does not allocate. Every Update and every ejection or return builds
// a new Picker.
//
// The ready set a Picker is built from is the healthy instances that are not
// ejected; when that is empty, the healthy ones (a fully ejected set still
// serves); when none is healthy, all of them (panic mode, as Envoy: better an
// instance the backend doubts than none).
//
// A Pool is safe for concurrent use. Close stops its ejection timers. Use a Pool
// directly when the instances come from elsewhere (a gRPC balancer's ready
// SubConns); Balancer feeds one from a registry watch.
type Pool struct {
	policy   Policy
	counted  count
	ej       Ejection
	log      *slog.Logger
	clock    clock
	inflight atomic.Int64 // total over endpoints, for ConsistentHash's bound

	cur atomic.Pointer[built]

	timers sync.WaitGroup // ejection timers scheduled and not yet run or stopped

	mu     sync.Mutex
	states map[string]*epState
	insts  []registry.Instance
	closed bool
}

// built is one published picker with what it was built from.
type built struct {
	picker Picker
	rr     *rrPicker // picker when it is RoundRobin's: Pick calls it directly (no interface call)
	info   BuildInfo
}

// NewPool returns an empty Pool (Pick fails with ErrNoInstances until Update).
// WithEmptyGrace is ignored. It returns an error matching registry.ErrInvalid for
// bad options or a policy built from bad settings (see ZoneAware, ConsistentHash).
func NewPool(policy Policy, opts ...Option) (*Pool, error) {
	if policy == nil {
		return nil, fmt.Errorf("lb: NewPool: nil Policy: %w", registry.ErrInvalid)
	}
	if err := checkPolicy(policy); err != nil {
		return nil, err
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	p := &Pool{policy: policy, counted: counting(policy), ej: o.ej, log: o.log, clock: o.clock, states: map[string]*epState{}}
	p.cur.Store(&built{picker: errPicker{}})
	return p, nil
}

// Policy returns the Pool's policy.
func (p *Pool) Policy() Policy { return p.policy }

// Pick chooses an endpoint with the current Picker. Call Done on the Result once
// the call is over. It returns ErrNoInstances when the Pool has no instances.
func (p *Pool) Pick(info PickInfo) (Result, error) {
	b := p.cur.Load()
	var e *Endpoint
	if b.rr != nil { // the common case, devirtualised
		e = b.rr.eps[b.rr.next.Add(1)%b.rr.n]
	} else {
		var err error
		if e, err = b.picker.Pick(info); err != nil {
			return Result{}, err
		}
	}
	switch p.counted {
	case countEndpoint:
		e.st.inflight.Add(1)
	case countTotal:
		e.st.inflight.Add(1)
		p.inflight.Add(1)
	}
	return Result{Endpoint: e, counted: p.counted}, nil
}

// Endpoints returns the endpoints of the current Picker: Ready (what it picks
// from) and All. The slices are shared: do not modify them.
func (p *Pool) Endpoints() BuildInfo { return p.cur.Load().info }

// Update replaces the instances (any order; IDs must be unique, a later duplicate
// is dropped) and builds a new Picker. State is kept for IDs present before and
// after; an instance that left and came back starts afresh.
func (p *Pool) Update(instances []registry.Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	insts := slices.Clone(instances)
	slices.SortStableFunc(insts, func(a, b registry.Instance) int { return strings.Compare(a.ID, b.ID) })
	insts = slices.CompactFunc(insts, func(a, b registry.Instance) bool { return a.ID == b.ID })
	seen := make(map[string]*epState, len(insts))
	for _, in := range insts {
		st := p.states[in.ID]
		if st == nil {
			st = &epState{pool: p}
		}
		seen[in.ID] = st
	}
	for id, st := range p.states {
		if seen[id] == nil {
			st.removed = true
			p.stopTimerLocked(st)
		}
	}
	p.states, p.insts = seen, insts
	p.rebuildLocked()
}

// rebuildLocked builds and publishes a picker from p.insts and the states.
func (p *Pool) rebuildLocked() {
	all := make([]*Endpoint, len(p.insts))
	for i, in := range p.insts {
		all[i] = &Endpoint{Instance: in, Addr: in.Addr(), st: p.states[in.ID]}
	}
	ready := filter(all, func(e *Endpoint) bool { return e.Instance.Healthy && !e.st.ejected.Load() })
	if len(ready) == 0 {
		ready = filter(all, func(e *Endpoint) bool { return e.Instance.Healthy })
	}
	if len(ready) == 0 {
		ready = all
	}
	info := BuildInfo{Ready: ready, All: all}
	pk := p.policy.Build(info)
	rr, _ := pk.(*rrPicker)
	p.cur.Store(&built{picker: pk, rr: rr, info: info})
}

func filter(eps []*Endpoint, keep func(*Endpoint) bool) []*Endpoint {
	out := make([]*Endpoint, 0, len(eps))
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// eject takes st out of the ready set if the panic threshold allows.
func (p *Pool) eject(st *epState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || st.removed || st.ejected.Load() || int(st.fails.Load()) < p.ej.ConsecutiveFailures {
		return
	}
	ejected := 0
	for _, s := range p.states {
		if s.ejected.Load() {
			ejected++
		}
	}
	if limit := int(math.Floor(p.ej.MaxEjectedShare * float64(len(p.states)))); ejected+1 > limit {
		return // panic threshold: keep it in
	}
	now := p.clock.Now()
	if !st.lastReturn.IsZero() && now.Sub(st.lastReturn) >= p.ej.MaxTime {
		st.ejections = 0
	}
	st.ejections++
	d := p.ej.BaseTime
	for i := 1; i < st.ejections && d < p.ej.MaxTime; i++ {
		d *= 2
	}
	d = min(d, p.ej.MaxTime)
	st.until = now.Add(d)
	st.ejected.Store(true)
	p.timers.Add(1)
	st.timer = p.clock.AfterFunc(d, func() {
		defer p.timers.Done()
		p.unEject(st)
	})
	id := ""
	for k, s := range p.states {
		if s == st {
			id = k
		}
	}
	p.log.Warn("lb: instance ejected", "policy", p.policy.Name(), "id", id, "failures", st.fails.Load(), "for", d, "times", st.ejections)
	p.rebuildLocked()
}

func (p *Pool) unEject(st *epState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || st.removed || !st.ejected.Load() {
		return
	}
	st.ejected.Store(false)
	st.fails.Store(0)
	st.timer = nil
	st.lastReturn = p.clock.Now()
	p.rebuildLocked()
}

// EndpointStats is one instance's state in a Pool.
type EndpointStats struct {
	// ID is the instance ID.
	ID string
	// InFlight is the number of calls counted in flight (load-aware policies).
	InFlight int64
	// ConsecutiveFailures since the last success or return from ejection.
	ConsecutiveFailures int
	// Ejected is true while the instance is out of the ready set.
	Ejected bool
	// EjectedUntil is when the current or last ejection ends.
	EjectedUntil time.Time
	// Ejections is the count the next ejection's length grows from.
	Ejections int
}

// Stats returns the state of every instance, sorted by ID.
func (p *Pool) Stats() []EndpointStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]EndpointStats, 0, len(p.insts))
	for _, in := range p.insts {
		st := p.states[in.ID]
		out = append(out, EndpointStats{ID: in.ID, InFlight: st.inflight.Load(), ConsecutiveFailures: int(st.fails.Load()),
			Ejected: st.ejected.Load(), EjectedUntil: st.until, Ejections: st.ejections})
	}
	return out
}

// Close stops the Pool's ejection timers; Pick keeps answering from the last
// Picker. Idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	for _, st := range p.states {
		p.stopTimerLocked(st)
	}
	p.mu.Unlock()
	p.timers.Wait() // a timer that had fired finishes at once: closed is set
	return nil
}

func (p *Pool) stopTimerLocked(st *epState) {
	if st.timer != nil {
		if st.timer.Stop() {
			p.timers.Done()
		}
		st.timer = nil
	}
}

// clock is time, injectable for tests.
type clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) stopper
}

type stopper interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                              { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

// cwClock is a clockwork.Clock as a clock.
type cwClock struct{ c clockwork.Clock }

func (c cwClock) Now() time.Time                              { return c.c.Now() }
func (c cwClock) AfterFunc(d time.Duration, f func()) stopper { return c.c.AfterFunc(d, f) }
