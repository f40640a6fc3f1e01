// Package etcd is the etcd backend, scheme "etcd://", over go.etcd.io/etcd/client/v3.
//
//	etcd://h1:2379,h2:2379/prefix?dial_timeout=3s&lease_ttl=10s
//	etcd://h1:2379/prefix?layout=naming&target_prefix=services
//
// URL: a comma-separated endpoint list (default port 2379), an optional key prefix
// (default "/regkit", also for "/"; checked by driver.CleanRoot: absolute, no
// empty, "." or ".." segments, so "/a//b/" is an error naming prefix),
// dial_timeout (default 5s), lease_ttl (default 10s, at least 2s), layout=regkit|naming (default regkit), target_prefix (layout=naming
// only) and service_watches (default DefaultServiceWatches, 64: see Watches
// below). User name and password come from the URL's user info or
// registry.WithCredentials; TLS from registry.WithTLS.
//
// Constructors: registry.Open(ctx, "etcd://...", opts...) opens a client of its
// own; New(cli, opts...) wraps a *clientv3.Client the caller holds and keeps
// owning (WithPrefix, WithLeaseTTL), doing no I/O.
//
// Limits: a put whose key and value exceed MaxRequestBytes (etcd's default
// --max-request-bytes) is refused before it is sent, as registry.ErrInvalid; a
// request the server refuses as too large or invalid is ErrInvalid too, never
// retried.
//
// # Layouts
//
// layout=regkit: an instance is the JSON of registry.Instance at
// <prefix>/services/<service>/<id>, put with the client's registration lease.
//
// layout=naming: etcd's own gRPC naming format, as go.etcd.io/etcd/client/v3/
// naming/endpoints writes it and its resolver (go.etcd.io/etcd/client/v3/naming/
// resolver) reads it, so that gRPC clients dialing "etcd:///<target>" and services
// registered with endpoints.Manager meet regkit's. The target of service S is
// <target_prefix>/S, or S when target_prefix is empty (the default); a gRPC client
// dials etcd:///<target_prefix>/S (the resolver drops the dial URL's leading '/').
// target_prefix is used as written (trailing '/' dropped), must have no empty
// segment or control character, and must not overlap the key prefix. Instance I is
// the key <target>/I (the ID is the key's last part: registry's default ID
// "Host:Port" gives etcd's usual <target>/<addr>), put with the registration
// lease, holding {"Op":0,"Addr":"Host:Port","Metadata":M}. M is null when the
// instance has the default weight (100), no zone and no metadata, which is byte
// for byte what endpoints.Manager writes for Endpoint{Addr}; otherwise M is a
// string holding the JSON {"weight":W,"zone":Z,"metadata":{...}}. It is a string
// and never an object because the resolver hands Metadata to gRPC as
// resolver.Address.Metadata, which gRPC compares with ==: a JSON object decodes
// to a map, and comparing two maps panics in the peer's gRPC client ("comparing
// uncomparable type map[string]interface {}", gRPC 1.71, on the second update
// from the resolver). So regkit never writes one; it reads them. On read:
// ID from the key (Addr when the key ends in '/'), Host and Port from Addr (a key
// whose Addr has no port is skipped with a warning), Weight 100, no Zone, no
// Metadata when M is null; M an object, or a string holding one, gives "weight"
// (a number or numeric string) -> Weight, "zone" -> Zone, "metadata" (an object of
// strings) -> Metadata, and any other member k -> Metadata[k] (strings as they
// are, other values as JSON); any other M is kept whole in Metadata
// "etcd.metadata" (MetaNaming). Every endpoint is Healthy, and the Op field is
// ignored, as the resolver ignores it. What is lost: gRPC's own balancers use
// the address alone (Metadata only rides along, and is deprecated in etcd's
// client, to be removed in 3.7), so gRPC clients through etcd's resolver balance
// without weight or zone; regkit readers keep everything. endpoints.Manager and the resolver read every key under
// "<target>/" as an endpoint, so nothing else may be stored there.
//
// In both layouts, store key K is <prefix>/kv<K> and the sequence counter of parent
// P is <prefix>/seq<P>. Create is one transaction: the missing parents, the
// counter's increment when sequential (compared with the value this Conn last
// saw: a stale guess fails the transaction, whose else branch reads the counter
// for the next try) and the key; CreateAndChildren reads the parent's children
// in it too, as concurrency.Mutex reads the lock's owner in its transaction.
//
// Liveness: all registrations of a connection share one lease kept alive by one
// keep-alive stream. When the lease is gone (expired during an outage, revoked, or
// the server restarted with fresh data) every registration's Lease reports Lost, and
// package registry puts them again under a newly granted lease. Store sessions each
// own a lease of their own; a session is Suspended while its keep-alives go
// unanswered for more than a third of its TTL, Reconnected when they resume, and Lost
// when the server says the lease is gone.
//
// Ownership (registry's one-owner rule): a put is a transaction that writes the
// key only if it is absent or bound to the connection's own registration lease;
// a key bound to another lease (another client's live registration) or written
// without a lease fails the put with ErrExists. The check and the write are one
// transaction: there is no race window. When the lease is lost the key goes with
// it and the ID is free; a key still bound to one of the last leases this
// connection gave up on (a keep-alive that timed out across a restart while the
// server kept the lease) is still ours, and the re-put moves it to the new lease.
// Deregister and Remove delete only a key bound to this connection's lease.
//
// Watches use etcd's watch with WithRequireLeader, which the client resumes from the
// last seen revision after a reconnect; a compacted or cancelled watch returns an
// error, and package registry re-lists, diffs and marks the view resynced. The
// events are applied to the views (driver.EventWatcher), never followed by a
// re-list. While a Client follows at most service_watches services (default
// 64) it holds one etcd watch per service (<prefix>/services/<service>/), all
// multiplexed by clientv3 on its one gRPC stream: the cluster sends each Client
// only the changes of the services it follows, which is what a large fleet of
// Clients that each follow a few services needs (5,000 Clients following 20 of
// 1,000 services: 100,000 server-side watchers, but one event per change and
// watching Client instead of one per change and Client). Past that number it
// switches to one watch of <prefix>/services/ (every subscription re-lists its
// service once on the new watch, without going stale), which holds one watcher
// and one goroutine however many services the Client follows, at the price of
// receiving every change of the fleet; service_watches=0 always uses it. It
// switches back only after it has had no subscription for 10s. Either way the
// Client runs at most service_watches+1 goroutines for its watches, plus one
// connection monitor.
//
// Staleness: a watcher's view is marked stale at most StaleBound (5s) after the
// cluster stops serving reads to this client (quorum lost, the member cut off, every
// member unreachable). Each watch probes every ProbeInterval with a serializable
// count-only read that requires a leader and breaks after two failed probes; List
// requires a leader too (a member without one refuses at once) and gives up after
// ListTimeout. Health reports the connection's state and the last probe.
//
// registry.WithLazyConnect: Open dials in the background and returns at once
// (calls wait for the connection within their ctx); with credentials the etcd
// client authenticates while it is built, so Open then still waits for a server.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/internal/owned"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func init() { driver.Register("etcd", drv{}) }

// Defaults.
const (
	DefaultPrefix      = "/regkit"
	DefaultDialTimeout = 5 * time.Second
	DefaultLeaseTTL    = 10 * time.Second
)

// drv is this backend's driver.Driver.
type drv struct{}

func (drv) Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Conn, error) {
	hosts, err := driver.Hosts(u, 2379)
	if err != nil {
		return nil, err
	}
	p := driver.NewParams(u)
	dial := p.Duration("dial_timeout", DefaultDialTimeout)
	ttl := p.Duration("lease_ttl", DefaultLeaseTTL)
	layout := Layout(p.OneOf("layout", string(LayoutRegkit), string(LayoutRegkit), string(LayoutNaming)))
	tp := p.String("target_prefix", "")
	sw := p.Int("service_watches", DefaultServiceWatches)
	if err := p.Done(); err != nil {
		return nil, err
	}
	if u.Query().Has("target_prefix") && layout != LayoutNaming {
		return nil, &driver.FieldError{Field: "target_prefix", Value: tp, Reason: "only applies to layout=naming"}
	}
	if sw < 0 {
		return nil, &driver.FieldError{Field: "service_watches", Value: sw, Reason: "must be 0 (always one prefix watch) or more"}
	}
	st := settings{prefix: u.Path, ttl: ttl, layout: layout, targetPrefix: tp, serviceWatches: sw}
	if err := st.apply(cfg.Options); err != nil {
		return nil, err
	}
	prefix := st.prefix
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// clientv3.New dials, and with credentials authenticates, on a context of its
	// own bounded by DialTimeout: bound that by ctx's deadline too, so Open never
	// outlives its ctx by a whole dial_timeout.
	if d, ok := ctx.Deadline(); ok && time.Until(d) < dial {
		dial = max(time.Until(d), time.Millisecond)
	}
	cc := clientv3.Config{
		Endpoints: hosts, DialTimeout: dial, Username: cfg.Username, Password: cfg.Password,
		Logger: zap.NewNop(), Context: context.Background(),
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
	}
	if cfg.TLS != nil {
		cc.TLS = cfg.TLS.Clone()
	}
	// registry.WithLazyConnect: dial in the background (no DialTimeout: gRPC
	// connects on its own, and calls wait for it within their ctx) and skip the
	// check. With credentials the client authenticates inside clientv3.New, so
	// Open still waits for the server then.
	lazy := cfg.Lazy && cfg.Username == ""
	if lazy {
		cc.DialTimeout = 0
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, connectError(hosts, err)
	}
	if lazy {
		return newConn(cli, st, cfg.Logger, true), nil
	}
	// Check the endpoints answer (and the credentials work) before returning.
	sctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if _, err := cli.Get(sctx, prefix+"/", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, connectError(hosts, err)
	}
	return newConn(cli, st, cfg.Logger, true), nil
}

// New makes a Client over cli, a client the caller already holds and keeps owning:
// Close of the returned Client does not close cli. Of the options, WithLogger and
// this package's WithPrefix, WithLeaseTTL and WithNaming apply; TLS and credentials are cli's
// own. It does no I/O: a bad option is an error matching registry.ErrInvalid.
func New(cli *clientv3.Client, opts ...registry.Option) (*registry.Client, error) {
	return registry.NewClient(func(cfg driver.Config) (driver.Conn, error) {
		st := settings{ttl: DefaultLeaseTTL, serviceWatches: DefaultServiceWatches}
		if err := st.apply(cfg.Options); err != nil {
			return nil, err
		}
		return newConn(cli, st, cfg.Logger, false), nil
	}, opts...)
}

// settings are what the URL path, lease_ttl, layout and target_prefix, or this
// package's options, set.
type settings struct {
	prefix       string
	ttl          time.Duration
	layout       Layout // "" is LayoutRegkit
	targetPrefix string // layout=naming: the targets' prefix, "" for none
	// serviceWatches: services followed with a watch each before one prefix
	// watch replaces them (hub.go)
	serviceWatches int
}

// option is the driver.Option value of this package's options.
type option func(*settings) error

// WithPrefix sets the key prefix everything lives under (default DefaultPrefix;
// with Open it replaces the URL's path).
func WithPrefix(prefix string) registry.Option {
	return registry.DriverOption("etcd.WithPrefix", option(func(s *settings) error {
		s.prefix = prefix
		return nil
	}))
}

// WithLeaseTTL sets the TTL of the registration lease and the default TTL of store
// sessions (default DefaultLeaseTTL, at least 2s; with Open it replaces the URL's
// lease_ttl).
func WithLeaseTTL(ttl time.Duration) registry.Option {
	return registry.DriverOption("etcd.WithLeaseTTL", option(func(s *settings) error {
		s.ttl = ttl
		return nil
	}))
}

// WithNaming selects layout=naming, etcd's own gRPC naming format, with the given
// target prefix: the target of service S is targetPrefix+"/"+S, or S when
// targetPrefix is empty (see the package doc; with Open it replaces the URL's
// layout and target_prefix).
func WithNaming(targetPrefix string) registry.Option {
	return registry.DriverOption("etcd.WithNaming", option(func(s *settings) error {
		s.layout, s.targetPrefix = LayoutNaming, targetPrefix
		return nil
	}))
}

// apply applies the etcd options among opts (rejecting any other backend's), then
// defaults and checks the result.
func (s *settings) apply(opts []driver.Option) error {
	if err := driver.ApplyOptions("etcd", opts, func(o option) error { return o(s) }); err != nil {
		return err
	}
	if s.prefix == "/" {
		s.prefix = "" // "/" has always meant the default prefix here
	}
	prefix, err := driver.CleanRoot("prefix", s.prefix, DefaultPrefix)
	if err != nil {
		return err
	}
	s.prefix = prefix
	if s.ttl < 2*time.Second {
		return &driver.FieldError{Field: "lease_ttl", Value: s.ttl.String(), Reason: "must be at least 2s"}
	}
	if s.layout == "" {
		s.layout = LayoutRegkit
	}
	if s.layout == LayoutNaming {
		s.targetPrefix = strings.TrimSuffix(s.targetPrefix, "/")
		return checkTargetPrefix(s.targetPrefix, s.prefix)
	}
	return nil
}

// Conn is the etcd driver connection.
type Conn struct {
	cli       *clientv3.Client
	ownClient bool
	prefix    string
	ttl       time.Duration
	log       *slog.Logger
	// layout says how instances are stored; targetPrefix is layout=naming's.
	layout       Layout
	targetPrefix string
	skipped      *driver.SkipLog             // entries under a service that are not instances, logged once
	health       atomic.Pointer[healthState] // the last probe's outcome (see Health)
	healthMu     sync.Mutex
	healthCh     chan struct{} // closed at the next change of the probes' verdict; nil until asked for

	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	grantMu sync.Mutex
	mu      sync.Mutex
	reg     *lease // the shared registration lease, nil until first Put or after loss
	// past are the last registration leases this Conn gave up on (lost from the
	// client's side); etcd may still hold one (a keep-alive that timed out across
	// a restart), and a key bound to it is ours to put again under the new lease.
	past []clientv3.LeaseID

	seqMu sync.Mutex
	seqs  map[string]seqGuess // the last counter seen per parent of sequential creates (store.go)

	puts   inflight.Set // puts still running, per key (for Remove)
	writes owned.Group  // their goroutines

	hub            hub         // the watches of event subscriptions (hub.go)
	serviceWatches int         // see DefaultServiceWatches
	watchers       owned.Group // its goroutines
}

var (
	_ driver.Conn      = (*Conn)(nil)
	_ driver.StoreConn = (*Conn)(nil)
)

func newConn(cli *clientv3.Client, st settings, log *slog.Logger, own bool) *Conn {
	life, cancel := context.WithCancel(context.Background())
	return &Conn{cli: cli, ownClient: own, prefix: st.prefix, ttl: st.ttl, layout: st.layout, targetPrefix: st.targetPrefix,
		serviceWatches: st.serviceWatches, log: log, life: life, cancel: cancel, skipped: &driver.SkipLog{Logger: log}}
}

// Layout returns the registration layout of the connection.
func (c *Conn) Layout() Layout { return c.layout }

// Client returns the native client.
func (c *Conn) Client() *clientv3.Client { return c.cli }

// RegistrationLease returns the ID of the current shared registration lease, or 0.
func (c *Conn) RegistrationLease() clientv3.LeaseID {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg == nil {
		return 0
	}
	return c.reg.id
}

// MaxRequestBytes is etcd's default limit on one request (the server's
// --max-request-bytes, 1.5 MiB). A put whose key, value and request overhead exceed
// it is refused before it is sent: instances with CheckInstance (through
// Register), store values with Capabilities.Limits.
const MaxRequestBytes = 3 << 19

// requestOverhead is what a put request adds to its key and value (lease, header,
// protobuf framing), with room to spare.
const requestOverhead = 1 << 10

// Capabilities: everything; the store limit is MaxRequestBytes.
func (c *Conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{Store: true, Ephemeral: true, Sequential: true, Sessions: true,
		Health: c.layout != LayoutNaming, // gRPC's naming endpoints have no health
		Limits: driver.Limits{StoreBytes: MaxRequestBytes - requestOverhead - len(c.prefix) - len("/kv")}}
}

// Close stops every keep-alive, revokes the registration lease and closes the client
// (if the driver opened it).
func (c *Conn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeRevokeTimeout)
	defer cancel()
	return c.CloseContext(ctx)
}

// closeRevokeTimeout bounds Close's revoke of the registration lease.
const closeRevokeTimeout = 3 * time.Second

var _ driver.ContextCloser = (*Conn)(nil)

// CloseContext is Close with the revoke of the registration lease bounded by
// ctx (and by 3s); with ctx done it skips the revoke, leaving what the lease
// still holds to its TTL.
func (c *Conn) CloseContext(ctx context.Context) error {
	c.mu.Lock()
	reg := c.reg
	c.reg = nil
	c.mu.Unlock()
	if reg != nil && ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, closeRevokeTimeout)
		_, _ = c.cli.Revoke(rctx, reg.id)
		cancel()
	}
	c.cancel()
	c.wg.Wait()
	c.watchers.Wait()
	c.writes.Wait()
	if c.ownClient {
		return c.cli.Close()
	}
	return nil
}

// connectError is the error of a failed Open: ErrUnavailable unless the server
// refused the credentials, also matching the context's error when the dial timeout
// or the caller's context ended the wait (a server that does not answer).
func connectError(hosts []string, err error) error {
	where := strings.Join(hosts, ",")
	switch {
	case isAuthError(err):
		return fmt.Errorf("etcd: connect %s: %w: %w", where, driver.ErrPermission, err)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("etcd: connect %s: no answer: %w: %w", where, driver.ErrUnavailable, err)
	}
	return wrap("connect", where, err)
}

// wrap turns a client error into one matching the registry sentinels: a refusal
// no retry can change (request too large, invalid argument) matches ErrInvalid, an
// auth refusal ErrPermission, the context's own error stays itself, anything else
// is ErrUnavailable.
func wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("etcd: %s %s: %w", op, key, err)
	}
	if isAuthError(err) {
		return fmt.Errorf("etcd: %s %s: %w: %w", op, key, driver.ErrPermission, err)
	}
	if isRefusal(err) {
		return fmt.Errorf("etcd: %s %s: the server refused the request: %w: %w", op, key, driver.ErrInvalid, err)
	}
	return fmt.Errorf("etcd: %s %s: %w: %w", op, key, driver.ErrUnavailable, err)
}

// isRefusal reports whether err is etcd (or gRPC on the client side) refusing the
// request itself: too large, or an invalid argument.
func isRefusal(err error) bool {
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) {
		return true
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return true
	case codes.ResourceExhausted: // also "too many requests", which is retryable
		return strings.Contains(st.Message(), "larger than max") || strings.Contains(st.Message(), "too large")
	}
	return false
}

// isAuthError reports whether err is etcd refusing the credentials or the user's
// roles (wrong password, no user name while auth is on, permission denied).
func isAuthError(err error) bool {
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrUserEmpty),
		errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrInvalidAuthToken),
		errors.Is(err, rpctypes.ErrAuthNotEnabled), errors.Is(err, rpctypes.ErrAuthOldRevision):
		return true
	}
	return false
}
