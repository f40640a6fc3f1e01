package mirror

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/group"
	"github.com/regkit/regkit/registry"
)

// Metadata keys a copy carries (see the package doc).
const (
	MetaSourceCluster = "sourceClusterId"
	MetaDestCluster   = "destClusterId"
	MetaGroup         = "sync.instance.tag"
	MetaSourceID      = "regkit.sync.source-id"
	MetaOwner         = "regkit.sync.owner"
	MetaHeldSince     = "regkit.sync.held-since"
)

// Defaults.
const (
	DefaultGroup           = "regkit-sync"
	DefaultEmptyGrace      = 30 * time.Second
	DefaultHandoverTimeout = 30 * time.Second
	// DefaultMemberTTL is the membership session's TTL (WithMemberTTL): below
	// the 10s every backend gives sessions, leases and TTL checks by default, so
	// that the other members take a crashed member's services over before its
	// copies expire.
	DefaultMemberTTL = 5 * time.Second
	// registerTimeout bounds one Register, Update or Deregister of a copy; a
	// failed one is retried after retryDelay (jittered).
	registerTimeout = 10 * time.Second
)

// retryDelay is the pause before retrying a failed write of a copy or watch
// (jittered); a variable for tests.
var retryDelay = 2 * time.Second

// Endpoint is one registry a Route reads from or writes to.
type Endpoint struct {
	// Client is the open registry. A destination Client must register addresses
	// as given: open it with registry.WithAddressResolver(&address.Resolver{
	// IgnoreEnvironment: true, AllowLoopback: true}), else REGKIT_REGISTER_HOST
	// and the like would rewrite every copy (such a copy is refused and counted
	// as an error).
	Client *registry.Client
	// Name identifies the registry in copies' metadata (MetaSourceCluster,
	// MetaDestCluster); it must be non-empty and the same in every process of a
	// group. `regkit sync` uses the redacted URL without its query.
	Name string
}

// Route is one direction of a sync: every selected service's instances on From
// are copied to To. Both ways is two Routes.
type Route struct {
	From, To Endpoint
}

// String is "FROM -> TO" (the Endpoints' names): the route's name in events and
// the key, with a service, that rendezvous hashing assigns.
func (r Route) String() string { return r.From.Name + " -> " + r.To.Name }

// Option configures a Syncer.
type Option func(*options)

type options struct {
	group           string
	patterns        []string
	coord           *registry.Client
	member          string
	emptyGrace      time.Duration
	handoverTimeout time.Duration
	memberTTL       time.Duration
	logger          *slog.Logger
	meter           metric.MeterProvider
	events          func(Event)
}

// WithGroup names the sync group (default DefaultGroup): the MetaGroup of its
// copies and the membership key's segment. One [A-Za-z0-9._-] segment.
func WithGroup(name string) Option { return func(o *options) { o.group = name } }

// WithServices selects the services to sync by path.Match patterns ("greeter",
// "order-*"); none selects every service.
func WithServices(patterns ...string) Option {
	return func(o *options) { o.patterns = append(o.patterns, patterns...) }
}

// WithCoordinator makes the Syncer a member of its group's membership on c's
// coordination store (c's backend needs sessions: etcd, ZooKeeper, Consul, mem)
// and splits the work among the members; without it the Syncer owns everything.
func WithCoordinator(c *registry.Client) Option { return func(o *options) { o.coord = c } }

// WithMemberID sets this process's member ID (default: 8 random hex digits). It
// ends every copy's ID, so it must be unique in the group: one key segment of
// [A-Za-z0-9._-], at most 32 bytes. A process started with the ID of a crashed
// process (whose copies live until its sessions or leases end) or of one still
// running finds its copies' IDs held, and registers its copies at once under its
// incarnation ID (IncarnationCopyID) beside the old ones; with a fresh ID it
// registers them at once under their CopyID. Either way watchers see both copies
// until the old ones go, never none.
func WithMemberID(id string) Option { return func(o *options) { o.member = id } }

// WithEmptyGrace sets how long copies are kept after the source suddenly lists
// no healthy instance of their service (default DefaultEmptyGrace; at least 0).
func WithEmptyGrace(d time.Duration) Option { return func(o *options) { o.emptyGrace = d } }

// WithHandoverTimeout bounds how long a member that lost a service keeps its
// copies while waiting for the new owner's (default DefaultHandoverTimeout; more
// than 0). Run's graceful end waits at most this long too.
func WithHandoverTimeout(d time.Duration) Option {
	return func(o *options) { o.handoverTimeout = d }
}

// WithMemberTTL sets the TTL of the session that holds this member's node in
// the group's membership on the coordinator (default DefaultMemberTTL; more
// than 0). When the process dies, the other members take its services over
// (register their copies) once that session expires: keep the TTL below the
// liveness of the copies on every destination (ZooKeeper session timeout, etcd
// lease TTL, Consul check TTL: 10s by default; Nacos's heartbeat timeout, 15s),
// and a crash shows watchers both copies for a moment, never none.
// The coordinator's backend bounds it: ZooKeeper needs at least 1s (and the
// server's minSessionTimeout, 2 ticks), etcd at least 2s; Consul raises it to
// 10s and invalidates a session only after twice its TTL, so with Consul as
// coordinator a crash can still show a gap.
func WithMemberTTL(d time.Duration) Option { return func(o *options) { o.memberTTL = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMeterProvider sets the OpenTelemetry MeterProvider (default no-op).
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.meter = mp } }

// WithEventHandler calls f for every copy registered, updated, held, removed or
// failed, on the goroutine of the copy's service; f must not block.
func WithEventHandler(f func(Event)) Option { return func(o *options) { o.events = f } }

// EventKind says what happened to a copy.
type EventKind string

// Event kinds.
const (
	Registered EventKind = "registered" // a copy was registered on the destination
	Updated    EventKind = "updated"    // a copy was changed in place to follow its source
	Held       EventKind = "held"       // the source lists nothing: the copy is kept (empty-push guard)
	Removed    EventKind = "removed"    // a copy was deregistered
	Failed     EventKind = "failed"     // a register, update or deregister failed; it is retried
)

// Event is one change to a copy, for WithEventHandler.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Route    string // Route.String()
	Service  string
	SourceID string // the source instance's ID
	Copy     registry.Instance
	Reason   string // why (removed, held, failed)
	Err      error  // Failed only
}

// Syncer mirrors the services of its Routes. Create it with New and run it with
// Run.
type Syncer struct {
	routes []Route
	o      options
	m      *metrics
	// incarnation tells this Syncer's copies from a predecessor's with the same
	// member ID (IncarnationCopyID): 6 random hex digits.
	incarnation string

	mu      sync.Mutex
	members []string // live members, nil before the first view (with a coordinator)
	sets    []map[string]bool
	tasks   map[taskKey]*task
	leaving bool
	wg      sync.WaitGroup // tasks
	tctx    context.Context
	started atomic.Bool
}

// ErrRunning is returned by a second call of Run.
var ErrRunning = errors.New("mirror: Run was called already")

// New validates routes and options, without I/O. Errors are *registry.FieldError
// values naming the field, matching registry.ErrInvalid.
func New(routes []Route, opts ...Option) (*Syncer, error) {
	if len(routes) == 0 {
		return nil, &registry.FieldError{Field: "routes", Value: 0, Reason: "at least one route is needed"}
	}
	for i, r := range routes {
		for _, e := range []struct {
			f  string
			ep Endpoint
		}{{"From", r.From}, {"To", r.To}} {
			if e.ep.Client == nil {
				return nil, &registry.FieldError{Field: fmt.Sprintf("routes[%d].%s.Client", i, e.f), Value: nil, Reason: "is nil"}
			}
			if e.ep.Name == "" {
				return nil, &registry.FieldError{Field: fmt.Sprintf("routes[%d].%s.Name", i, e.f), Value: "", Reason: "is empty"}
			}
		}
		if r.From.Name == r.To.Name {
			return nil, &registry.FieldError{Field: fmt.Sprintf("routes[%d].To.Name", i), Value: r.To.Name, Reason: "equals From.Name: a route needs two registries"}
		}
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.meter)
	if err != nil {
		return nil, err
	}
	var inc [3]byte
	_, _ = rand.Read(inc[:])
	return &Syncer{routes: routes, o: o, m: m, tasks: map[taskKey]*task{}, incarnation: hex.EncodeToString(inc[:])}, nil
}

// CheckOptions validates opts as New does, without routes or I/O.
func CheckOptions(opts ...Option) error {
	_, err := buildOptions(opts)
	return err
}

func buildOptions(opts []Option) (options, error) {
	o := options{group: DefaultGroup, emptyGrace: DefaultEmptyGrace, handoverTimeout: DefaultHandoverTimeout,
		memberTTL: DefaultMemberTTL}
	for _, f := range opts {
		f(&o)
	}
	if err := validSegment("group", o.group, 64); err != nil {
		return o, err
	}
	if o.member == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.member = hex.EncodeToString(b[:])
	}
	if err := validSegment("member ID", o.member, 32); err != nil {
		return o, err
	}
	for _, p := range o.patterns {
		if _, err := path.Match(p, ""); err != nil {
			return o, &registry.FieldError{Field: "services", Value: p, Reason: "bad pattern: " + err.Error()}
		}
	}
	if o.emptyGrace < 0 {
		return o, &registry.FieldError{Field: "empty grace", Value: o.emptyGrace, Reason: "must not be negative"}
	}
	if o.handoverTimeout <= 0 {
		return o, &registry.FieldError{Field: "handover timeout", Value: o.handoverTimeout, Reason: "must be positive"}
	}
	if o.memberTTL <= 0 {
		return o, &registry.FieldError{Field: "member TTL", Value: o.memberTTL, Reason: "must be positive"}
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	return o, nil
}

func validSegment(field, s string, max int) error {
	if s == "" || len(s) > max || strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) >= 0 || s == "." || s == ".." {
		return &registry.FieldError{Field: field, Value: s, Reason: fmt.Sprintf("must be 1-%d characters of [A-Za-z0-9._-]", max)}
	}
	return nil
}

// MemberID returns this Syncer's member ID.
func (s *Syncer) MemberID() string { return s.o.member }

// MembershipKey is the store key under which a group's members are listed.
func MembershipKey(group string) string { return "/regkit-sync/" + group + "/members" }

// CopyID is the ID of member's copy of the source instance sourceID: sourceID,
// "~", member; a sourceID too long for that is replaced by its FNV-64a hash.
func CopyID(sourceID, member string) string {
	if len(sourceID)+1+len(member) > 255 {
		h := fnv.New64a()
		h.Write([]byte(sourceID))
		sourceID = fmt.Sprintf("%016x", h.Sum64())
	}
	return sourceID + "~" + member
}

// IncarnationCopyID is the ID a Syncer whose incarnation (a random token per
// Syncer) is incarnation gives its copy of sourceID when CopyID(sourceID, member)
// is held by another owner, a crashed predecessor with the same member ID:
// sourceID, "~", member, "~", incarnation (sourceID hashed as in CopyID when too
// long).
func IncarnationCopyID(sourceID, member, incarnation string) string {
	return CopyID(sourceID, member+"~"+incarnation)
}

// selected reports whether service matches the patterns.
func (s *Syncer) selected(service string) bool {
	if len(s.o.patterns) == 0 {
		return true
	}
	for _, p := range s.o.patterns {
		if ok, _ := path.Match(p, service); ok {
			return true
		}
	}
	return false
}

// Run syncs until ctx ends, then hands its services over (leaves the group and
// waits, at most WithHandoverTimeout, until other members hold copies of its
// own), deregisters what it still holds and returns nil. It fails at once when
// a source cannot list services or the membership cannot be joined, and stops
// (handing over as above) with an error when a services or membership watch
// ends by itself (a Client closed under it). Run may be called once; later calls
// return ErrRunning.
func (s *Syncer) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	tctx, tcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer tcancel()
	s.mu.Lock()
	s.tctx = tctx
	s.sets = make([]map[string]bool, len(s.routes))
	if s.o.coord == nil {
		s.members = []string{s.o.member}
	}
	s.mu.Unlock()

	var wg sync.WaitGroup // the watch loops
	defer wg.Wait()
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	// The membership is followed until the hand-over ends too: members that
	// leave meanwhile (all of a group stopped at once) leave this one alone, and
	// its copies go at once instead of at the hand-over timeout.
	mctx, mcancel := context.WithCancel(tctx)
	defer mcancel()
	errc := make(chan error, len(s.routes)+1)

	var member *group.Member
	if s.o.coord != nil {
		key := MembershipKey(s.o.group)
		gw, err := group.Watch(mctx, s.o.coord, key)
		if err != nil {
			return fmt.Errorf("mirror: membership: %w", err)
		}
		member, err = group.NewMember(s.o.coord, key, s.o.member, []byte(s.o.member),
			recipes.WithSessionTTL(s.o.memberTTL))
		if err != nil {
			gw.Close()
			return fmt.Errorf("mirror: membership: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer gw.Close()
			for {
				ms, err := gw.Next(mctx)
				if err != nil {
					if lctx.Err() == nil {
						errc <- fmt.Errorf("mirror: membership: %w", err)
					}
					return
				}
				ids := make([]string, 0, len(ms))
				for id := range ms {
					ids = append(ids, id)
				}
				s.setMembers(ids)
			}
		}()
	}
	var runErr error
	for i, r := range s.routes {
		sw, err := r.From.Client.WatchServices(lctx)
		if err != nil {
			// An earlier route may have started tasks: end as gracefully.
			runErr = fmt.Errorf("mirror: %s: list services: %w", r.From.Name, err)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sw.Close()
			for {
				set, err := sw.Next(lctx)
				if err != nil {
					if lctx.Err() == nil {
						errc <- fmt.Errorf("mirror: %s: watch services: %w", r.From.Name, err)
					}
					return
				}
				if set.Stale {
					continue // never act on a stale view
				}
				s.setServices(i, set.Services)
			}
		}()
	}
	if runErr == nil {
		select {
		case <-ctx.Done():
		case runErr = <-errc:
			s.m.errors(tctx, "watch")
		}
	}
	lcancel()

	// Graceful end: leave the group so that others take over, own nothing, and
	// wait for every task to hand over (bounded by the handover timeout).
	if member != nil {
		if err := member.Close(); err != nil {
			s.o.logger.Warn("mirror: leave the group", "err", err)
		}
	}
	s.mu.Lock()
	s.leaving = true
	s.recomputeLocked()
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(s.o.handoverTimeout + time.Second)
	select {
	case <-done:
	case <-t.C:
		tcancel() // tasks deregister what they hold and end
		<-done
	}
	t.Stop()
	mcancel()
	wg.Wait()
	return runErr
}

func (s *Syncer) setMembers(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members = ids
	s.recomputeLocked()
}

func (s *Syncer) setServices(route int, names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := map[string]bool{}
	for _, n := range names {
		if s.selected(n) {
			set[n] = true
		}
	}
	s.sets[route] = set
	s.recomputeLocked()
}

// owner is the member rendezvous hashing gives key, or "": the member with the
// highest score mix(fnv(key) ^ mix(fnv(member))).
func owner(members []string, key string) string {
	kh := fnv64(key)
	var best string
	var bestScore uint64
	for _, m := range members {
		if sc := mix(kh ^ mix(fnv64(m))); best == "" || sc > bestScore || sc == bestScore && m < best {
			best, bestScore = m, sc
		}
	}
	return best
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// mix is splitmix64's finaliser: FNV alone gives correlated scores to member
// IDs that differ in one byte.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// recomputeLocked starts the tasks this member owns and tells every task
// whether it still owns its pair.
//
// A view of the membership that lacks this member (its node is briefly gone: a
// session expired in a coordinator outage, or a crashed predecessor with the
// same member ID held the node until its session ended) still counts it while it
// runs: dropping itself would hand every pair over to the others, or, with no
// other member, deregister every copy until the node is back. The other members
// may take its pairs meanwhile; both then hold copies, never none.
func (s *Syncer) recomputeLocked() {
	members := s.members
	if members != nil && !slices.Contains(members, s.o.member) {
		members = append(slices.Clip(members), s.o.member)
	}
	alone := !slices.ContainsFunc(members, func(m string) bool { return m != s.o.member })
	for i, r := range s.routes {
		for svc := range s.sets[i] {
			k := taskKey{route: i, service: svc}
			if s.tasks[k] == nil && !s.leaving && owner(members, r.String()+"\x00"+svc) == s.o.member {
				s.startLocked(k)
			}
		}
	}
	for k, t := range s.tasks {
		wanted := s.sets[k.route][k.service]
		own := !s.leaving && owner(members, s.routes[k.route].String()+"\x00"+k.service) == s.o.member
		t.set(own, wanted, alone)
	}
}

func (s *Syncer) startLocked(k taskKey) {
	t := newTask(s, k)
	s.tasks[k] = t
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t.run(s.tctx)
	}()
}

// finish removes t when it may end: it owns nothing and holds no copy. It
// reports whether t must end.
func (s *Syncer) finish(t *task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	own, wanted := t.flags()
	if own && wanted && s.tctx.Err() == nil {
		return false
	}
	if s.tasks[t.key] == t {
		delete(s.tasks, t.key)
	}
	return true
}

// errorsIsClosed reports a handle closed under us.
func errorsIsClosed(err error) bool { return errors.Is(err, registry.ErrClosed) }
