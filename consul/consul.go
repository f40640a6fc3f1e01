// Package consul is the Consul backend, scheme "consul://", over
// github.com/hashicorp/consul/api.
//
//	consul://127.0.0.1:8500/prod?token=…&dc=dc2&check_ttl=10s&deregister_after=1m
//
// # URL
//
// The host is the HTTP address of one Consul agent (default port 8500); a list of
// hosts is rejected, since Consul clients talk to their local agent. The scheme of the
// HTTP connection is http, or https when registry.WithTLS is given. The optional path
// is a single segment of letters, digits, '.', '_' and '-' naming a namespace (not
// "regkit", the store root of clients without one): it prefixes every Consul
// service name ("/prod" turns service "orders" into the Consul service
// "prod/orders") and is the root of the store's keys ("prod/kv/…"). Without a
// path, service names are used as they are (so that other Consul clients and DNS see
// "orders") and the store lives under "regkit/". Query parameters, all optional:
//
//   - token: the ACL token. The password of registry.WithCredentials (or of the URL's
//     user info) is used as the token when token is absent; giving both with
//     different values is an error. The user name is ignored. Without either, the
//     api's CONSUL_HTTP_TOKEN environment variable applies.
//   - dc: the datacenter that discovery (List, Watch) reads from; default the agent's
//     own. Registrations always go to the agent, and the store and its sessions to the
//     agent's datacenter.
//   - check_ttl: the TTL of the check every registration carries (default 10s, at
//     least 1s); the registration passes it every check_ttl/3.
//   - deregister_after: DeregisterCriticalServiceAfter of every check (default 1m, at
//     least 1m): a process that died without deregistering disappears that long
//     after its check went critical. Consul (dev mode included) would raise a value
//     under one minute to one minute, so a shorter one is an error; it reaps every
//     30s, so that takes 1 to 1.5 minutes at the least.
//   - session_ttl: the default TTL of store sessions (default 10s). Consul accepts 10s
//     to 24h; shorter and longer TTLs, here and in registry.WithTTL, are
//     clamped into that range.
//   - lock_delay: the lock delay of store sessions (default 0, sent as 1ms since the
//     api omits zero): how long Consul refuses to hand a key released by an
//     invalidated session to another session. At most 60s.
//   - wait: the longest wait of one blocking query (default 30s, 1s to 10m). A watch
//     notices a silent network partition within StaleBound through its leader probe
//     (see Staleness and health); each query ends after wait + wait/16 + 5s anyway.
//   - stale: discovery reads may be answered by any server (AllowStale, default true),
//     so a cluster without a leader still answers List; Listing.ReplicaLag is then the
//     answering server's LastContact and Listing.NoLeader is !KnownLeader. With
//     stale=false reads go to the leader. Store reads always go to the leader. A
//     watch does not serve a leaderless server's answers as fresh (see Staleness and health).
//   - passing_only: discovery returns only instances whose checks all pass (default
//     true, Consul's ?passing), each with Healthy true. With passing_only=false it
//     returns every instance, Healthy being true when all its checks pass (warning and
//     critical are unhealthy).
//   - timeout: how long Open waits for the agent to answer (default 5s).
//
// Options of this package, given to registry.Open or New with the registry's own:
// WithChecks adds caller checks (HTTP, TCP, gRPC, …) to every registration; WithTags
// adds tags; WithNamespace sets the namespace (replacing the URL's path). An option
// of another backend is an error matching registry.ErrInvalid.
//
// # Constructors
//
// registry.Open(ctx, "consul://…", opts...) opens a connection of its own; New(cli,
// opts...) wraps an *api.Client you already hold, as every backend package's New
// wraps its native client.
//
// # Data layout
//
// An instance is an agent service registration: Consul service name
// "<namespace>/<service>" (or "<service>"), service ID "<consul name>@<instance id>".
// The mapping is injective: '/' occurs in neither a namespace nor a service name,
// so no two (namespace, service) pairs, and no namespaced and plain name, meet in
// one Consul service; '@' occurs in neither a name nor an ID. (Until this release
// the name was "<namespace>-<service>", where namespace "team" with service "a-b"
// and namespace "team-a" with service "b" were one Consul service; instances
// registered by an older regkit under a namespace are not seen by this one. Consul
// accepts '/' in service names; such names are not DNS-resolvable, which
// "<namespace>-<service>" names with ':' or '.' were not reliably either.) Address and Port,
// Weights{Passing: Weight, Warning: 1}, tag "regkit" plus WithTags' tags, and Meta:
// "regkit-id" (the instance ID), "zone" (the Zone, when set) and every Metadata pair
// Consul can store as meta (key of [A-Za-z0-9_-], at most 128 bytes, not "zone", not
// starting with "consul-" or "regkit-"; value at most 512 bytes; 60 pairs at most).
// The other pairs travel as JSON in one tag "regkit-meta=<json>". It carries a TTL
// check with ID "<service ID>:ttl:<owner token>", registered passing, plus the
// caller's checks; the tag "regkit-owner=<owner token>" names the connection that
// registered it (see Ownership).
// Discovery also returns instances registered by other Consul clients (no
// "regkit" tag): ID is their service ID, Weight their passing weight, Metadata
// their meta without "zone"; their tags are not mapped. The service ID is the
// truth: an entry tagged "regkit" is an instance only when its service ID is
// "<consul name>@<id>" with "regkit-id" meta equal to that id and its
// "regkit-meta=" tags decode; and any entry must make a valid Instance (a port, an
// address, an ID registry accepts). Other entries are skipped and logged once per
// service ID.
//
// Store key K is the Consul key "<root>/kv<K>" ("<root>/kv" for "/"); the sequence
// counter of parent P is "<root>/seq<P>" ("<root>/seq" for "/"). Version is the
// ModifyIndex, CreateRevision the CreateIndex, Node.Session the session holding the
// key.
//
// # Ownership
//
// registry's one-owner rule: service IDs are per agent, and an agent registration
// overwrites one of the same ID, so the driver marks each registration with its
// connection's owner tag "regkit-owner=<random token>" and names its TTL check
// "<service ID>:ttl:<token>". Before registering, Put reads the agent's
// registration of the service ID and, with a consistent read, the catalog's
// entries of it on other nodes: one of another owner whose checks are not critical
// fails the put with ErrExists. A critical one (its TTL passed) does not hold the
// ID. Consul has no compare-and-set for agent services, so two clients checking at
// the same moment can both pass; the window is one agent round trip (plus the
// catalog's sync delay for another node). Then two entries may carry one ID: on
// one agent the later overwrites the earlier, whose keep-alive then finds its own
// check unknown (it is named after its owner) and reports the loss, and its re-put
// finds the ID held (ErrExists); on two nodes both stay, and List keeps one per ID,
// the same for every reader: the passing one, then the oldest CreateIndex, then the
// least node name (the others are skipped and logged once). Deregister and Remove
// leave a registration that carries another owner's tag alone.
//
// # Liveness and re-registration
//
// Each Put has its own keep-alive goroutine passing the TTL check. When the agent
// answers that it does not know the check (it restarted with its state lost, or the
// service was deregistered behind our back), the Lease reports Lost and package
// registry registers the instance again. Connection errors alone do not lose a
// registration: the check goes critical on the agent after check_ttl (so discovery
// with passing_only hides the instance) and the agent removes the service after
// deregister_after; the keep-alive keeps trying and passes the check again once the
// agent answers, or reports Lost when the agent no longer knows it.
//
// Store sessions are Consul sessions with the session TTL, behavior "delete" (their
// keys are deleted when they end) and the agent's serfHealth check, renewed every
// TTL/3 by a goroutine of their own. A session is Suspended when a renewal fails, and
// Reconnected when one succeeds again; it is Lost when Consul answers that the session
// is gone (to a renewal; a create refused for an invalid session triggers one at
// once), or when no renewal succeeded for a whole TTL (Consul may have invalidated it
// by then: it does between TTL and 2×TTL).
//
// # Staleness and health
//
// A watcher's view is marked stale at most StaleBound (3s) after the agent stops
// answering or the server it asks stops knowing a leader. A server without a
// leader still answers stale reads, but its blocking query would wait
// out the whole wait (it sees no change, as nothing can change) and then answer as
// if all were well; so while a watch runs the Conn asks the agent for the leader
// every ProbeInterval (GET /v1/status/leader, one probe per Conn whatever the number
// of watches), and two failed probes in a row (no answer, or no leader) end every
// blocking query with ErrUnavailable. An answer of the blocking-query backend whose
// X-Consul-KnownLeader is false ends the watch at once (the streaming backend,
// which agents use for blocking health queries, always sends false, so its
// answers are not read for it; nor is it then Listing.NoLeader). While there is no
// leader, package registry serves the last good view marked stale and re-arms as
// soon as Health says the leader is back. A Consul server notices a dead leader
// after its raft heartbeat timeout (performance.raft_multiplier × 1s, 5s with
// Consul's default), before StaleBound starts. List still answers from a server
// without a leader (stale, NoLeader set).
//
// Health reports the probes' verdict: nil, or ErrUnavailable while the agent does
// not answer or knows no leader (Open checks it once; then it is probed while a
// watch runs or while the verdict is bad). With registry.WithLazyConnect, Open does
// no I/O (a wrong token shows on the first call) and Health is ErrUnavailable until
// a probe succeeds, which is tried at once and every ProbeInterval.
//
// # Watches
//
// Watches are blocking queries with WaitIndex on the service's health endpoint (the
// store: on the key prefix) following Consul's documented index rules: the first
// query (index 0) returns at once and arms the watch (first notify); later ones notify
// whenever X-Consul-Index differs from the last; an index that went backwards resets
// the next query to 0; an index of 0 is replaced by 1 so queries keep blocking; and a
// query that did not advance the index is followed by the next one no sooner than
// 50ms after it started, so a misbehaving index cannot make the loop spin (a query
// that advanced it re-arms at once, so changes are seen without delay: Consul's write
// rate bounds how often that happens, and package registry coalesces the re-lists).
// Each query waits at most the wait parameter and is bounded by a deadline a little
// longer, so a connection that went silent breaks the watch. Any error
// ends the Watch with that error (wrapping registry.ErrUnavailable or
// registry.ErrPermission), and package registry backs off, re-lists and re-arms:
// one blocking loop per service is shared by all watchers of a Client.
//
// Every armed watch holds one HTTP connection to the agent for up to wait. Consul
// limits the connections of one client IP (limits.http_max_conns_per_client, 200
// by default, counted across every process behind that IP, and a cancelled
// blocking query keeps its place until its wait ends); past it the agent answers
// 429 Too Many Requests, which a watch treats like any unavailability: its view
// stays, marked stale, while it backs off and retries. Processes that together
// watch more than about 150 services (or wait on many locks) through one agent
// should raise that limit on the agent, or use a shorter wait.
//
// # Store
//
// Create is one Consul transaction: the missing parents (create-only), the
// sequence counter's compare-and-set when sequential, check-not-exists and set (or
// lock with the session, for ephemeral keys) of the key. The suffix of a sequential
// key comes from the per-parent counter incremented in the same transaction, so
// suffix order, creation order and CreateIndex order agree. The parents and the
// counter are read by a transaction before, except when the Conn's last create
// under the same parent succeeded: then Create is one transaction that assumes
// what that one left (gets of the parents, which fail on a missing one, and the
// counter's compare-and-set on the index it had), and reads first only when that
// fails. CreateAndChildren adds a get-tree of the parent to the transaction, so
// the queue recipes learn their place in the round trip that enqueues them.
// Set and Delete with a version are transactions comparing the ModifyIndex; recursive Delete is one
// transaction deleting the key and the tree under "<key>/". Non-recursive Delete
// first lists the key's children (ErrNotEmpty); a child created between that check
// and the delete is left without its parent (ZooKeeper would refuse; Consul offers no
// "prefix is empty" transaction check). Tree and WatchTree read the key's prefix.
//
// # ACL and TLS
//
// A 403 answer (or one saying "Permission denied" or "ACL not found") is an error
// matching registry.ErrPermission that names the ACL. Open checks that the agent
// answers (GET /v1/status/leader, which needs no ACL) and, when a token is given,
// that Consul knows the token (GET /v1/acl/token/self; an "ACL support disabled"
// answer is accepted), so a wrong token fails Open. Without a token, Open succeeds
// and writes fail with ErrPermission. Consul filters what a token may not read out of
// discovery answers instead of refusing them; when it says it filtered (it does for
// real tokens, not for the anonymous one) and nothing is left, List fails with
// ErrPermission rather than reporting an empty service. Note that with ACLs the agent
// itself needs an agent token (acl.tokens.agent) allowed to write the services, or it
// cannot sync deregistrations to the catalog ("Service deregistration blocked by
// ACLs") and deregistered instances linger in discovery.
//
// With registry.WithTLS the client speaks https to the agent with that tls.Config
// (a clone); the api's CONSUL_* environment variables are not read for TLS.
//
// # Choices where the issue was silent
//
//   - Namespaces are a service-name prefix joined with '/', which no service name
//     contains, so namespaces never meet. Instances registered by other Consul
//     clients are discovered too.
//   - passing_only (default) narrows the registry contract's "every instance" to the
//     passing ones, as the issue asks; Snapshot.Healthy then filters nothing.
//   - Discovery reads are stale by default (the issue asks that a leaderless cluster
//     answer); store reads and transactions are never stale, for compare-and-set.
//   - dc applies to discovery only: the agent registers locally, and sessions can
//     only hold keys of their own datacenter.
//   - Registrations each pass their own TTL check (no shared keep-alive as etcd's
//     lease): Consul checks belong to services. A re-Put replaces the service and its
//     checks (replace-existing-checks), so a changed check set leaves nothing behind.
//   - Sessions carry the agent's serfHealth check besides their TTL, so a session
//     also ends when its agent is declared dead; their lock delay is 0 by default so
//     a lost session's ephemeral key can be created again at once.
//   - Conn.Close abandons what is still held (the registry deregisters its
//     registrations and closes its sessions before); abandoned registrations go
//     critical after check_ttl and are removed after deregister_after.
package consul

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/internal/owned"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

func init() { driver.Register("consul", drv{}) }

// Defaults of the URL parameters.
const (
	DefaultCheckTTL        = 10 * time.Second
	DefaultDeregisterAfter = time.Minute
	DefaultSessionTTL      = 10 * time.Second
	DefaultWait            = 30 * time.Second
	DefaultTimeout         = 5 * time.Second
	// DefaultRoot is the store's root key without a namespace in the URL path.
	DefaultRoot = "regkit"
)

// Consul's bounds on session TTLs.
const (
	MinSessionTTL = 10 * time.Second
	MaxSessionTTL = 24 * time.Hour
)

// MinDeregisterAfter is Consul's least DeregisterCriticalServiceAfter: the agent
// raises shorter values to it without a word, so the deregister_after parameter
// refuses them.
const MinDeregisterAfter = time.Minute

// minQueryInterval is the shortest time between the starts of two blocking queries
// of one watch when the first did not advance the index (a wait that timed out, a
// spurious wake-up, an index that went backwards or was 0), so a misbehaving index
// cannot make a watch spin.
const minQueryInterval = 50 * time.Millisecond

var nsRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// checkNamespace checks a namespace (URL path or WithNamespace): one segment of
// [A-Za-z0-9._-], and not DefaultRoot, whose store would be the
// store of clients without a namespace.
func checkNamespace(field, ns string) error {
	switch {
	case ns == "":
		return nil
	case !nsRE.MatchString(ns):
		return &driver.FieldError{Field: field, Value: ns, Reason: "the namespace must be one segment of [A-Za-z0-9._-]"}
	case ns == DefaultRoot:
		return &driver.FieldError{Field: field, Value: ns, Reason: "the namespace " + DefaultRoot + " is the store root of clients without a namespace"}
	}
	return nil
}

// drv is this backend's driver.Driver.
type drv struct{}

// settings are what the URL and driver options configure.
type settings struct {
	namespace       string
	dc              string
	checkTTL        time.Duration
	deregisterAfter time.Duration
	sessionTTL      time.Duration
	lockDelay       time.Duration
	wait            time.Duration
	stale           bool
	passingOnly     bool
	checks          Checks
	tags            []string
}

func (drv) Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Conn, error) {
	hosts, err := driver.Hosts(u, 8500) // its errors redact the token

	if err != nil {
		return nil, err
	}
	if len(hosts) != 1 {
		return nil, &driver.FieldError{Field: "url", Value: driver.RedactURL(u), Reason: "consul takes the address of one agent"}
	}
	p := driver.NewParams(u)
	token := p.String("token", "")
	var s settings
	s.dc = p.String("dc", "")
	s.checkTTL = p.Duration("check_ttl", DefaultCheckTTL)
	s.deregisterAfter = p.Duration("deregister_after", DefaultDeregisterAfter)
	s.sessionTTL = p.Duration("session_ttl", DefaultSessionTTL)
	s.lockDelay = p.Duration("lock_delay", 0)
	s.wait = p.Duration("wait", DefaultWait)
	s.stale = p.Bool("stale", true)
	s.passingOnly = p.Bool("passing_only", true)
	timeout := p.Duration("timeout", DefaultTimeout)
	if err := p.Done(); err != nil {
		return nil, err
	}
	switch {
	case s.checkTTL < time.Second:
		return nil, &driver.FieldError{Field: "check_ttl", Value: s.checkTTL.String(), Reason: "must be at least 1s"}
	case s.deregisterAfter < MinDeregisterAfter:
		return nil, &driver.FieldError{Field: "deregister_after", Value: s.deregisterAfter.String(), Reason: "must be at least 1m (Consul's minimum, to which it raises shorter values)"}
	case s.lockDelay > time.Minute:
		return nil, &driver.FieldError{Field: "lock_delay", Value: s.lockDelay.String(), Reason: "must be at most 60s"}
	case s.wait < time.Second || s.wait > 10*time.Minute:
		return nil, &driver.FieldError{Field: "wait", Value: s.wait.String(), Reason: "must be between 1s and 10m"}
	case timeout <= 0:
		return nil, &driver.FieldError{Field: "timeout", Value: timeout.String(), Reason: "must be positive"}
	}
	s.sessionTTL = clampTTL(s.sessionTTL)
	if ns := strings.Trim(u.Path, "/"); ns != "" {
		if err := checkNamespace("url", ns); err != nil {
			return nil, err
		}
		s.namespace = ns
	}
	if cfg.Password != "" {
		if token != "" && token != cfg.Password {
			return nil, &driver.FieldError{Field: "token", Value: "(redacted)", Reason: "differs from the password given as credentials"}
		}
		token = cfg.Password
	}
	if err := driver.ApplyOptions("consul", cfg.Options, func(o option) error { return o(&s) }); err != nil {
		return nil, err
	}

	tr := newTransport()
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
		tr.TLSClientConfig = cfg.TLS.Clone()
	}
	cli, err := api.NewClient(&api.Config{
		Address:    hosts[0],
		Scheme:     scheme,
		Token:      token,
		Transport:  tr,
		HttpClient: &http.Client{Transport: tr},
	})
	if err != nil {
		tr.CloseIdleConnections()
		return nil, &driver.FieldError{Field: "url", Value: driver.RedactURL(u), Reason: err.Error()}
	}
	c := newConn(cli, tr, s, cfg.Logger)
	if cfg.Lazy {
		// Health is bad until a probe reaches the agent and hears of a leader.
		c.setHealth(errors.New("not connected yet: the agent has not answered a probe"), true)
		return c, nil
	}
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.probe(octx, token != ""); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func clampTTL(d time.Duration) time.Duration {
	return min(max(d, MinSessionTTL), MaxSessionTTL)
}

// newTransport is a pooled transport like the api's default, owned by the Conn so
// that Close can drop its idle connections.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// New makes a Client over cli, an api client the caller already holds and keeps
// owning (Close of the returned Client does not close its connections). Of the
// options, WithLogger and this package's WithNamespace, WithChecks and WithTags
// apply; every URL parameter has its default; the address, TLS and token are cli's
// own. It does no I/O: a bad option is an error matching registry.ErrInvalid.
func New(cli *api.Client, opts ...registry.Option) (*registry.Client, error) {
	return registry.NewClient(func(cfg driver.Config) (driver.Conn, error) {
		s := settings{checkTTL: DefaultCheckTTL, deregisterAfter: DefaultDeregisterAfter,
			sessionTTL: DefaultSessionTTL, wait: DefaultWait, stale: true, passingOnly: true}
		if err := driver.ApplyOptions("consul", cfg.Options, func(o option) error { return o(&s) }); err != nil {
			return nil, err
		}
		return newConn(cli, nil, s, cfg.Logger), nil
	}, opts...)
}

// Conn is the Consul driver connection.
type Conn struct {
	cli *api.Client
	tr  *http.Transport // nil when the client was given to New
	s   settings
	log *slog.Logger
	// skipped logs health entries that are not valid instances, once each.
	skipped *driver.SkipLog

	life   context.Context
	cancel context.CancelFunc
	owned  owned.Group
	health health // the leader probe's verdict (see Health)

	puts inflight.Set // registers still running, per service ID (for Remove)

	guessMu sync.Mutex
	guesses map[string]createGuess // per parent of a create that succeeded (store.go)

	// owner tells this Conn's registrations apart from every other client's (tag
	// "regkit-owner=<owner>"): random, fixed for the Conn's life.
	owner string
	// agentNode is the agent's node name once read (see nodeName).
	agentNode atomic.Pointer[string]
}

var (
	_ driver.Conn      = (*Conn)(nil)
	_ driver.StoreConn = (*Conn)(nil)
)

func newConn(cli *api.Client, tr *http.Transport, s settings, log *slog.Logger) *Conn {
	life, cancel := context.WithCancel(context.Background())
	return &Conn{cli: cli, tr: tr, s: s, log: log, life: life, cancel: cancel, skipped: &driver.SkipLog{Logger: log},
		owner: rand.Text()}
}

// Client returns the native client.
func (c *Conn) Client() *api.Client { return c.cli }

// ServiceName returns the Consul service name of a registry service: the namespace
// prefix and the name.
func (c *Conn) ServiceName(service string) string {
	if c.s.namespace == "" {
		return service
	}
	return c.s.namespace + "/" + service
}

// ServiceID returns the Consul service ID under which the instance id of service is
// registered.
func (c *Conn) ServiceID(service, id string) string { return c.ServiceName(service) + "@" + id }

// Capabilities: everything; the store limit is MaxValueBytes.
func (c *Conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{Store: true, Ephemeral: true, Sequential: true, Sessions: true, Health: true,
		Limits: driver.Limits{StoreBytes: MaxValueBytes}}
}

// Close stops every keep-alive and session renewal and waits for them. Registrations
// still held are left to their TTL check and deregister_after; sessions still open to
// their TTL.
func (c *Conn) Close() error {
	c.cancel()
	c.owned.Wait()
	if c.tr != nil {
		c.tr.CloseIdleConnections()
	}
	return nil
}

// spawn runs f on a goroutine owned by the Conn (Close cancels c.life and waits for
// it), or reports false when the Conn is closed.
func (c *Conn) spawn(f func()) bool { return c.owned.Go(f) }

// probe checks that the agent answers and, with a token, that Consul knows it.
func (c *Conn) probe(ctx context.Context, token bool) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	leader, err := c.cli.Status().LeaderWithQueryOptions(q)
	if err != nil {
		return wrap("connect to the agent", "", err)
	}
	if leader == "" {
		c.setHealth(errNoLeader, true) // Open succeeds: stale reads answer; Health says why not fresh
	}
	if !token {
		return nil
	}
	if _, _, err := c.cli.ACL().TokenReadSelf(q); err != nil {
		var se api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusUnauthorized { // 401 "ACL support disabled"
			return nil
		}
		return wrap("check token", "", err)
	}
	return nil
}

// wrap turns a client error into one matching the registry sentinels.
func wrap(op, what string, err error) error {
	if err == nil {
		return nil
	}
	if what != "" {
		op += " " + what
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("consul: %s: %w", op, err)
	}
	if isPermission(err) {
		return fmt.Errorf("consul: %s: ACL denied the request (check the token): %w: %w", op, driver.ErrPermission, err)
	}
	var se api.StatusError
	if errors.As(err, &se) {
		switch se.Code {
		case http.StatusNotFound:
			return fmt.Errorf("consul: %s: %w: %w", op, driver.ErrNotFound, err)
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			return fmt.Errorf("consul: %s: the agent refused the request: %w: %w", op, driver.ErrInvalid, err)
		}
	}
	return fmt.Errorf("consul: %s: %w: %w", op, driver.ErrUnavailable, err)
}

// isPermission reports whether err is an ACL refusal: consul/api returns every
// non-2xx answer as a StatusError, and Consul answers 403 for "Permission denied"
// and "ACL not found" alike.
func isPermission(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusForbidden
}

// queryOpts returns the options of one read; index > 0 makes it a blocking query.
func (c *Conn) queryOpts(ctx context.Context, index uint64, discovery bool) *api.QueryOptions {
	q := &api.QueryOptions{WaitIndex: index}
	if discovery {
		q.AllowStale, q.Datacenter = c.s.stale, c.s.dc
	}
	if index > 0 {
		q.WaitTime = c.s.wait
	}
	return q.WithContext(ctx)
}

// nextIndex applies Consul's blocking-query index rules to the index got that a query
// made with index prev returned. It returns the index of the next query (0 after the
// index went backwards, 1 instead of 0 so that queries keep blocking), whether
// something may have changed (the index differs), and whether the next query must
// wait for minQueryInterval (the index did not advance, so an immediate query could
// spin).
func nextIndex(prev, got uint64) (next uint64, changed, throttle bool) {
	changed = got != prev
	throttle = got <= prev || got == 0
	switch {
	case got < prev: // the index went backwards (snapshot restore, new cluster): start over
		next = 0
	case got == 0:
		next = 1
	default:
		next = got
	}
	return next, changed, throttle
}

// noLeader reports whether an answer says that its server knows no leader. Only
// answers of Consul's blocking-query backend say: the streaming backend, which
// agents use for blocking health queries (use_streaming_backend, on by default),
// always sends X-Consul-KnownLeader: false.
func noLeader(meta *api.QueryMeta) bool {
	return !meta.KnownLeader && meta.QueryBackend != api.QueryBackendStreaming
}

// block runs a blocking-query loop until ctx is done or a query fails; query runs one
// query with the given options and returns its QueryMeta. discovery selects the
// stale and dc settings of discovery reads; a discovery answer from a server that
// knows no leader (see noLeader) ends the loop with ErrUnavailable, as does a
// bad verdict of the Conn's leader probe while a query waits (see StaleBound).
func (c *Conn) block(ctx context.Context, what string, discovery bool, notify func(), query func(q *api.QueryOptions) (*api.QueryMeta, error)) error {
	defer c.watching()()
	var index uint64
	armed := false
	for {
		start := time.Now()
		// Bound each query, so a connection that went silent breaks the watch; the
		// probe cancels it sooner, with its verdict as the cause.
		pctx, pcancel := context.WithCancelCause(ctx)
		untrack := c.track(pcancel)
		qctx, cancel := context.WithTimeout(pctx, c.s.wait+c.s.wait/16+5*time.Second)
		meta, err := query(c.queryOpts(qctx, index, discovery))
		cancel()
		untrack()
		cause := context.Cause(pctx)
		pcancel(nil)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if cause != nil && !errors.Is(cause, context.Canceled) {
				return fmt.Errorf("consul: watch %s: %w", what, cause)
			}
			return wrap("watch", what, err)
		}
		if discovery && noLeader(meta) {
			return fmt.Errorf("consul: watch %s: %w: %w", what, driver.ErrUnavailable, errNoLeader)
		}
		next, changed, throttle := nextIndex(index, meta.LastIndex)
		if !armed || changed {
			// While the verdict is bad (no leader, or a lazy Conn not probed yet),
			// an answer is handed over only once a probe finds a leader: the
			// streaming backend's answers do not say whether their server knows one.
			if c.Health() != nil {
				pctx, pcancel := context.WithTimeout(ctx, ProbeInterval)
				err := c.leaderProbe(pctx)
				pcancel()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					return fmt.Errorf("consul: watch %s: %w: %w", what, driver.ErrUnavailable, err)
				}
				c.setHealth(nil, false)
			}
			armed = true
			notify()
		}
		index = next
		if !throttle {
			continue // a real change: re-arm at once
		}
		if d := minQueryInterval - time.Since(start); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}
