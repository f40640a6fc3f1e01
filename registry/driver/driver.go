package driver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Driver opens connections to one kind of backend. A backend registers its Driver
// under a URL scheme with Register, usually from its package's init.
type Driver interface {
	// Open connects to the backend named by u (its scheme already matched). It
	// rejects unknown query parameters (see Params) and must not outlive ctx while
	// connecting. cfg carries what a URL cannot; it is already defaulted.
	Open(ctx context.Context, u *url.URL, cfg Config) (Conn, error)
}

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a driver available to registry.Open under a URL scheme ("etcd",
// "zk", ...). It is meant for a backend's init; it panics if the driver is nil or
// the scheme is taken, as database/sql.Register does.
func Register(scheme string, d Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if d == nil {
		panic("registry/driver: Register driver is nil")
	}
	if _, dup := drivers[scheme]; dup {
		panic("registry/driver: Register called twice for scheme " + scheme)
	}
	drivers[scheme] = d
}

// Lookup returns the driver registered under scheme.
func Lookup(scheme string) (Driver, bool) {
	driversMu.RLock()
	defer driversMu.RUnlock()
	d, ok := drivers[scheme]
	return d, ok
}

// Schemes returns the sorted schemes of the registered drivers.
func Schemes() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	out := make([]string, 0, len(drivers))
	for s := range drivers {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Config is what the functional options of registry.Open (and of the backends' New
// constructors) set, for drivers to read.
type Config struct {
	Logger   *slog.Logger // never nil; discards below Warn unless registry.WithLogger was given
	TLS      *tls.Config  // nil: plain connections
	Username string       // from registry.WithCredentials (or the URL's user info)
	Password string
	// Options are the backend-specific options, in the order given; a driver reads
	// its own with ApplyOptions, which rejects those of other backends.
	Options []Option
	// Lazy (registry.WithLazyConnect): Open checks its input and returns without
	// waiting for the backend, which the connection reaches in the background;
	// until it does, calls wait within their context or fail with ErrUnavailable.
	// A driver that cannot connect lazily ignores it (its package doc says so).
	Lazy bool
}

// Health is optionally implemented by a Conn that knows whether it currently
// reaches a backend able to serve reads (ZooKeeper: a session is connected; etcd:
// the connection is up and its member has a leader; Consul: the agent answers and
// its server knows a leader). Client.Health reports it.
//
// HealthChanged is the "connection is back" signal: package registry's watch
// loops select on it so that a reconnect wakes every re-list at once instead of
// waiting out a retry backoff.
type Health interface {
	// Health returns nil while the connection can read from the backend, else why
	// not (matching ErrUnavailable).
	Health() error
	// HealthChanged returns a channel closed at the next change of Health's
	// verdict (connected, lost, reconnected).
	HealthChanged() <-chan struct{}
}

// Option is one backend-specific option. A backend package's typed WithX function
// makes it through registry.DriverOption, so that users pass it to registry.Open or
// the backend's New like any other registry.Option.
type Option struct {
	// Name is how users wrote the option ("consul.WithTags"), for error messages.
	Name string
	// Value is the backend's own value; its type (unexported in the backend package)
	// tells the backends' options apart.
	Value any
}

// ApplyOptions calls apply with the Value of each option whose Value is a T, in
// order. Before applying any, it returns an error matching ErrInvalid naming the
// first option whose Value is not a T: an option of another backend (backend names
// the caller in that error, "consul"). A driver calls it before any I/O. The first
// error apply returns is returned as is.
func ApplyOptions[T any](backend string, opts []Option, apply func(T) error) error {
	for _, o := range opts {
		if _, ok := o.Value.(T); !ok {
			return &FieldError{Field: "option", Value: o.Name, Reason: "not an option of the " + backend + " backend"}
		}
	}
	for _, o := range opts {
		if err := apply(o.Value.(T)); err != nil {
			return err
		}
	}
	return nil
}

// Capabilities says what a backend can do, so that callers and the conformance
// suites can tell "cannot" from "failed".
type Capabilities struct {
	Store      bool // the coordination store (StoreConn) is offered
	Ephemeral  bool // store nodes can be bound to a session
	Sequential bool // store creates can append a sequence number
	Sessions   bool // NewSession works
	// GuardsRegistrations: the driver itself notices when a registration vanishes
	// from the backend while its keep-alive still runs (and reports Lost), so
	// package registry does not follow the service for it. Set it where a watch is
	// costly (polling backends) and the driver checks on its own schedule.
	GuardsRegistrations bool
	// Health: the leases this Conn's Put returns implement HealthSetter, so a
	// registration's local health check marks the instance unhealthy in place
	// (registry.MarkUnhealthy); without it the instance is withdrawn instead.
	Health bool
	// Limits are the backend's size limits, which package registry checks before
	// any I/O (see Limits).
	Limits Limits
}

// Limits are the sizes a backend refuses to store. Package registry checks them
// before sending anything, so that an oversized instance or value fails at once
// with a *FieldError naming the field (matching ErrInvalid) instead of being sent,
// refused and retried: a ZooKeeper server drops the whole connection on a packet
// over its jute.maxbuffer, which looks like an outage. Zero means no limit.
// Limits that depend on how the driver encodes an instance are checked by the
// driver's InstanceChecker.
type Limits struct {
	MetadataPairs      int // most Metadata entries
	MetadataKeyBytes   int // longest Metadata key, in bytes
	MetadataValueBytes int // longest Metadata value, in bytes
	// StoreBytes is the largest store key plus value, in bytes (Store.Create and
	// Store.Set).
	StoreBytes int
}

// CheckInstance returns a *FieldError naming Metadata and the offending key when
// inst breaks the metadata limits, or nil.
func (l Limits) CheckInstance(inst Instance) error {
	if l.MetadataPairs > 0 && len(inst.Metadata) > l.MetadataPairs {
		return invalid("Metadata", len(inst.Metadata), fmt.Sprintf("this backend stores at most %d metadata pairs", l.MetadataPairs))
	}
	for k, v := range inst.Metadata {
		if l.MetadataKeyBytes > 0 && len(k) > l.MetadataKeyBytes {
			return invalid("Metadata", k, fmt.Sprintf("metadata key of %d bytes; this backend stores at most %d", len(k), l.MetadataKeyBytes))
		}
		if l.MetadataValueBytes > 0 && len(v) > l.MetadataValueBytes {
			return invalid("Metadata", k, fmt.Sprintf("value of %d bytes; this backend stores at most %d", len(v), l.MetadataValueBytes))
		}
	}
	return nil
}

// CheckStore returns a *FieldError naming the value (or the key, when the key
// alone is too long) when key plus value exceed StoreBytes, or nil.
func (l Limits) CheckStore(key string, value []byte) error {
	if l.StoreBytes <= 0 || len(key)+len(value) <= l.StoreBytes {
		return nil
	}
	if len(key) > l.StoreBytes/2 {
		return invalid("key", key, fmt.Sprintf("key of %d bytes; this backend stores at most %d bytes of key and value", len(key), l.StoreBytes))
	}
	return invalid("value", fmt.Sprintf("(%d bytes)", len(value)),
		fmt.Sprintf("key and value of %d bytes; this backend stores at most %d", len(key)+len(value), l.StoreBytes))
}

// InstanceChecker is optionally implemented by a Conn whose limits depend on how
// it encodes an instance (a record's encoded size, a request's size). Package
// registry calls CheckInstance after Instance.Validate and Limits.CheckInstance and
// before the first Put, and fails Register with its error without any I/O.
type InstanceChecker interface {
	// CheckInstance reports, without I/O, why the backend would refuse inst as
	// this driver encodes it: a *FieldError naming the field (TooLarge helps), or
	// nil.
	CheckInstance(inst Instance) error
}

// IDDefaulter is optionally implemented by a Conn whose layout derives an
// instance's identity from more than its address. Package registry asks it for the
// ID of an instance registered without one (Instance.ID empty) before validating
// it; "" keeps the registry's default, Host:Port. zk's layout=dubbo answers
// "Host:Port;group=G;version=V" for an instance with Dubbo's group and version in
// its Metadata, the ID it reads back from the provider URL, so that one interface
// registered in several groups or versions on one host:port is several instances,
// as Dubbo's own providers are.
type IDDefaulter interface {
	DefaultID(inst Instance) string
}

// TooLarge is the *FieldError of an instance whose encoded record of size bytes
// exceeds limit bytes (what names the limit, "ZooKeeper's packet limit"). It names
// the field that weighs most: the Metadata key with the longest value, or the
// Metadata as a whole when many small pairs add up.
func TooLarge(inst Instance, size, limit int, what string) error {
	reason := fmt.Sprintf("the instance encodes to %d bytes, over %s of %d bytes", size, what, limit)
	var bigKey string
	big := -1
	for k, v := range inst.Metadata {
		if n := len(k) + len(v); n > big || n == big && k < bigKey {
			bigKey, big = k, n
		}
	}
	if big > size/2 {
		return invalid("Metadata", bigKey, reason+"; most of it is this key's value")
	}
	return invalid("Metadata", fmt.Sprintf("(%d pairs)", len(inst.Metadata)), reason)
}

// Conn is one open connection to a backend, safe for concurrent use.
type Conn interface {
	// Put registers inst (already validated and defaulted) and keeps it alive
	// (lease, session, TTL check, heartbeat) until the returned Lease is removed or
	// abandoned, or the backend drops it, which the Lease reports through Lost.
	// Put of an instance this Conn already keeps replaces it in place. An entry of
	// the same service and ID that another owner keeps alive (another client's
	// lease, session, agent registration or heartbeats) is never replaced: Put
	// fails with ErrExists (see package registry, One instance ID, one owner).
	Put(ctx context.Context, inst Instance) (Lease, error)
	// List returns every registered instance of service, healthy or not, each with
	// Healthy set as the backend sees it. An unknown service is an empty Listing,
	// not an error.
	List(ctx context.Context, service string) (Listing, error)
	// Watch blocks until ctx is done (returning ctx.Err()) or the watch breaks
	// (returning why). It calls notify once the watch is armed and again whenever
	// something under service may have changed, including after any internal
	// reconnect or gap. notify never blocks; it may be called from any goroutine.
	// Package registry re-lists after every notify and after Watch returns, so a
	// driver may over-notify but must never miss a change after the first notify.
	Watch(ctx context.Context, service string, notify func()) error
	// Capabilities reports what this connection offers.
	Capabilities() Capabilities
	// Close releases the connection. Leases still held are abandoned (their
	// ephemeral entries expire on the backend's own schedule).
	Close() error
}

// ContextCloser is optionally implemented by a Conn whose Close makes backend
// calls (etcd revokes its registration lease, ZooKeeper closes its sessions).
// Client.Shutdown calls CloseContext with its ctx instead of Close, so those
// calls end with the caller's deadline: once ctx is done, CloseContext skips or
// abandons them and only releases local resources (goroutines, sockets), still
// waiting for every goroutine of the connection. Close must equal CloseContext
// with the driver's own default bound.
type ContextCloser interface {
	CloseContext(ctx context.Context) error
}

// ServiceLister is optionally implemented by a Conn that can list the services it
// holds; package registry finds it by type assertion (Client.Services and
// Client.WatchServices fail with ErrNotSupported without it).
type ServiceLister interface {
	// Services returns the names of the services that have at least one
	// registered instance, healthy or not, in any order (package registry sorts).
	Services(ctx context.Context) ([]string, error)
	// WatchServices follows the contract of Conn.Watch for the set of services:
	// notify once armed and whenever a service may have appeared or gone.
	WatchServices(ctx context.Context, notify func()) error
}

// Lease is the keep-alive of one Put.
type Lease interface {
	// Lost is closed when the backend has dropped, or may have dropped, the
	// instance: session expired, lease revoked, agent forgot it, heartbeat answered
	// "unknown instance". Package registry then calls Abandon and Put again.
	Lost() <-chan struct{}
	// Err says why Lost was closed (wrapping ErrSessionLost where that is the cause).
	Err() error
	// Deregister deletes the instance from the backend and stops the keep-alive.
	// It may be called after Lost and after Abandon, and must still delete the
	// instance then (a retried put may have gone through).
	Deregister(ctx context.Context) error
	// Abandon stops the keep-alive without touching the backend. Idempotent.
	Abandon()
}

// HealthSetter is optionally implemented by a Lease whose backend can show the
// instance as unhealthy while it stays registered; package registry finds it by
// type assertion when a registration's local health check changes its verdict
// (and the driver declares Capabilities.Health). It is on the Lease, not the
// Conn, because the keep-alive must carry the verdict on (Consul passes its TTL
// check with the status, a record rewrite keeps the lease).
type HealthSetter interface {
	// SetHealthy makes List report the instance with Healthy equal to healthy,
	// in the backend's native way, until the next SetHealthy or until the lease
	// is lost (a new Put is healthy again). It returns an error matching
	// ErrNotSupported where this lease's layout cannot express health, and the
	// usual errors (ErrUnavailable, ctx's) otherwise.
	SetHealthy(ctx context.Context, healthy bool) error
}

// Listing is one read of a service.
type Listing struct {
	Instances []Instance // any order; package registry sorts by ID
	// Revision is the backend's own revision of this read (etcd header revision,
	// ZooKeeper pzxid, Consul index), or 0 where there is none.
	Revision uint64
	// ReplicaLag is how far behind the leader the answering server may be (Consul's
	// LastContact with AllowStale); 0 for a consistent read.
	ReplicaLag time.Duration
	// NoLeader: the answering server knows no leader (Consul KnownLeader=false).
	NoLeader bool
	// ProtectThreshold: the server returned unhealthy instances as healthy to
	// protect the service (Nacos reachProtectionThreshold).
	ProtectThreshold bool
}

// StoreConn is the optional coordination-store part of a Conn, found by type
// assertion. Keys are absolute slash-separated paths ("/locks/job"); see ValidKey.
type StoreConn interface {
	// Create writes a new key, creating missing parents as empty persistent keys.
	// It fails with ErrExists if the key exists. With spec.Sequential the backend
	// appends a 10-digit, zero-padded number, increasing per parent, to the last
	// segment, and returns the actual key in Node.Key. With spec.Session the key is
	// deleted when that session ends.
	Create(ctx context.Context, key string, value []byte, spec CreateSpec) (Node, error)
	// Get reads one key; ErrNotFound if absent.
	Get(ctx context.Context, key string) (Node, error)
	// Set replaces the value of an existing key. version AnyVersion writes
	// unconditionally; any other value must equal the key's Version or the call
	// fails with ErrVersionConflict. A missing key is ErrNotFound.
	Set(ctx context.Context, key string, value []byte, version int64) (Node, error)
	// Delete removes a key. version as for Set. Without recursive, a key with
	// children fails with ErrNotEmpty; with it, the key and all descendants go,
	// tolerating concurrent deletes. A missing key is ErrNotFound.
	Delete(ctx context.Context, key string, version int64, recursive bool) error
	// Children returns the sorted names (last segments) of the key's direct
	// children; ErrNotFound if the key itself does not exist (except the root "/").
	Children(ctx context.Context, key string) ([]string, error)
	// Tree returns the key (if present) and all its descendants, sorted by key.
	Tree(ctx context.Context, key string) ([]Node, error)
	// WatchTree follows the contract of Conn.Watch for the key and all its
	// descendants.
	WatchTree(ctx context.Context, key string, notify func()) error
	// NewSession starts a session that keeps itself alive with the given TTL
	// (0: the backend's default). The driver reports state changes through
	// spec.OnState, in order, from one goroutine at a time, without blocking.
	NewSession(ctx context.Context, spec SessionSpec) (SessionConn, error)
}

// CreateLister is optionally implemented by a StoreConn that can create a key
// and read its parent's children in one atomic step (etcd: one transaction;
// Consul: one transaction), found by type assertion. Queue recipes use it to learn
// their place in the line in the round trip that creates their node, as etcd's
// concurrency.Mutex does with its transaction (put, then get of the prefix).
type CreateLister interface {
	// CreateAndChildren is Create, returning also the sorted names of the new
	// key's parent's children as of the create (the new key among them), read
	// atomically with it: no create or delete falls between the two.
	CreateAndChildren(ctx context.Context, key string, value []byte, spec CreateSpec) (Node, []string, error)
}

// AnyVersion makes Set and Delete unconditional.
const AnyVersion int64 = -1

// CreateSpec are the options of StoreConn.Create.
type CreateSpec struct {
	Session    SessionConn // non-nil: ephemeral, bound to this session
	Sequential bool
}

// SessionSpec are the options of StoreConn.NewSession.
type SessionSpec struct {
	TTL     time.Duration
	OnState func(SessionState)
}

// SessionConn is a backend session: the liveness ephemeral keys are bound to.
type SessionConn interface {
	// ID identifies the session on the backend (lease id, ZooKeeper session id,
	// Consul session id).
	ID() string
	// Done is closed when the session has ended: lost or closed.
	Done() <-chan struct{}
	// Err is nil while Done is open, then wraps ErrSessionLost or ErrClosed.
	Err() error
	// Close ends the session; its ephemeral keys are deleted.
	Close(ctx context.Context) error
}

// Node is one key of the coordination store.
type Node struct {
	Key   string
	Value []byte
	// Version changes on every write of this key; pass it to Set and Delete for
	// compare-and-set (etcd mod revision, ZooKeeper data version, Consul
	// ModifyIndex).
	Version int64
	// CreateRevision orders creations across the whole store and never repeats
	// for the life of the store: the recipes' ordering and fencing token (etcd
	// create revision, ZooKeeper czxid, Consul CreateIndex).
	CreateRevision int64
	// Session is the ID of the session an ephemeral key is bound to, or "".
	Session string
}

// SessionState is a connection-state event of a session, as Curator names them.
type SessionState int

// Session states.
const (
	// StateConnected: the session was established.
	StateConnected SessionState = iota + 1
	// StateSuspended: the connection is interrupted; the session may still live,
	// but locks and leadership held through it must be treated as uncertain.
	StateSuspended
	// StateReconnected: the connection is back and the session survived.
	StateReconnected
	// StateLost: the session expired or was revoked; its ephemeral keys are gone.
	// Terminal.
	StateLost
	// StateClosed: the owner closed the session. Terminal.
	StateClosed
)

// String returns the state's name.
func (s SessionState) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateSuspended:
		return "suspended"
	case StateReconnected:
		return "reconnected"
	case StateLost:
		return "lost"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// SortNodes sorts nodes by key, the order Tree returns.
func SortNodes(nodes []Node) {
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Key, b.Key) })
}

// Updater is an optional part of a Conn, found by type assertion, with which
// package registry changes a registered instance in place (Registration.Update).
// Without it, registry puts the new data with Put on the same Conn and abandons
// the old Lease, which is an in-place overwrite where Put replaces an entry this
// Conn owns (etcd, ZooKeeper, Consul, mem).
type Updater interface {
	// Update replaces the data of the instance lease keeps (inst has its Service
	// and ID, already validated and defaulted) so that readers see the old data or
	// the new, never no instance. It returns the Lease that keeps inst from now on
	// (lease itself, or a new one; the old one is then stopped). It fails with
	// ErrExists when another owner holds the ID, and like Put otherwise; lease
	// stays in force after a failure.
	Update(ctx context.Context, lease Lease, inst Instance) (Lease, error)
}

// Remover is an optional part of a Conn, found by type assertion, with which package
// registry undoes puts that no Registration owns: the first put of a Register that
// failed or whose ctx ended while the put was in flight, and a re-put a Registration
// abandoned when it was closed. Remove deletes inst from the backend if this Conn
// put it there, and returns nil if it is not there. It must not return before every
// request of an earlier Put of inst that this Conn may still send or have answered
// is done, so that no such request is applied after the delete; where the protocol
// cannot promise that (a request the server received but had not yet executed), the
// driver's documentation says how long such an entry can last. Package registry
// never calls Put and Remove of the same instance concurrently.
type Remover interface {
	Remove(ctx context.Context, inst Instance) error
}
