// Package nacos is the Nacos backend, scheme "nacos://", speaking Nacos's HTTP API
// directly with net/http (no nacos-sdk-go: no log files, no cache directory, no
// background goroutines beyond the ones described here).
//
//	nacos://h1:8848,h2:8848/nacos?namespace=prod&group=DEFAULT_GROUP&cluster=DEFAULT
//
// # URL
//
// Hosts are a comma-separated list (default port 8848); requests go to one host at
// a time and move to the next on a connection error or a 5xx answer. The URL path
// is Nacos's context path (default "/nacos"). registry.WithTLS switches to https.
// Query parameters, all optional:
//
//   - namespace: the Nacos namespace id (namespaceId / tenant); default "" (public).
//   - group: the Nacos group of every service; default "DEFAULT_GROUP"; must not
//     contain '@'.
//   - cluster: the Nacos cluster an instance registers into when its Zone is empty;
//     default "DEFAULT".
//   - api: which client API to speak, "auto" (default), "v1" or "v3" (see Versions).
//   - ephemeral: register ephemeral instances (kept alive by heartbeats); default
//     true. With false, instances are persistent: the server health-checks them
//     itself, no heartbeat is sent, and they stay until deregistered.
//   - beat_interval: heartbeat period; default 0, meaning the server's
//     clientBeatInterval (5s when the server gives none).
//   - presence_check: how often a registration lists its service to check that the
//     server still has it (see Liveness); default 10s, 0 disables it.
//   - poll_interval: the floor of the watch polling period; default 1s (see Watch);
//     also the period of tree-watch re-lists and of Listen's polling fallback.
//   - timeout: the timeout of one HTTP request; default 5s.
//   - username, password: credentials, used when neither the URL's user info nor
//     registry.WithCredentials gave any.
//   - store: probe for and offer the coordination store; default true (see
//     Store). With registry.WithLazyConnect, Open sends no request: the API is
//     probed by the first naming call and the store by the first store call.
//
// # Constructors
//
// registry.Open(ctx, "nacos://...", opts...) reads everything from the URL;
// New(ctx, servers, opts...) takes the server list and typed options
// (WithNamespace, WithGroup, WithCluster, WithHTTPClient), which also replace the
// URL's values when given to Open. Nacos has no native Go client here to wrap (this
// package speaks the HTTP API itself); WithHTTPClient lends it a client's
// transport.
//
// # Versions
//
// Nacos 1.x to 3.1 serve the v1 client API (/v1/ns/instance, /instance/list,
// /instance/beat); Nacos 3.0 and later serve the v3 client API
// (/v3/client/ns/instance with heartBeat=true for renewals, /instance/list), and
// Nacos 3.2 removed v1 (404). With api=auto, Open probes the v3 list endpoint first
// and uses v3 when it answers, else v1; whenever a naming call later answers 404 or
// 410 (the server was upgraded or replaced behind the address), the next call
// probes again. Polaris's Nacos-compatible API (v1 only) is covered and tested, as
// is the in-repo test server in package nacostest in its 1.x, 3.0 and 3.2 modes.
// For the configuration API and the store on each version, see Configuration and
// Store.
//
// # Data layout
//
// Service S of a URL with group G is the Nacos service "G@@S" in the URL's
// namespace; '@' occurs in neither G nor S, so the mapping is injective. A listed
// host that does not make a valid Instance (no ip or port, a regkit.id the registry
// refuses, a cluster name that is not a valid Zone) is skipped and logged once per
// ip:port#cluster. Nacos identifies an instance by ip, port and cluster, not by an id of
// ours, so the instance's registry ID is kept in the metadata key "regkit.id"
// (instances without it, registered by other clients, read back with ID
// "host:port"); two IDs with the same host, port and cluster are one instance on
// the server, held by one of them (see Ownership). Zone is the Nacos cluster name; the cluster "DEFAULT" reads back as an
// empty Zone. Weight: Nacos weights are floats (0 to 10000, default 1) and ours are
// integers with default 100, so the Nacos weight is ours divided by 100 (100 -> 1.0,
// 250 -> 2.5, capped at 10000), which keeps traffic shares right next to Java
// clients; since servers may round (Polaris keeps integers only), the exact weight
// is also kept in the metadata key "regkit.weight" and read back from there when
// present, else as round(nacos weight * 100). The metadata keys "regkit.id",
// "regkit.weight" and Polaris's "internal-nacos-*" keys are not shown in
// Instance.Metadata. Metadata is sent as a JSON object string ("{}" when empty),
// bodies as application/x-www-form-urlencoded.
//
// # Liveness
//
// Each registration of an ephemeral instance has one heartbeat goroutine, owned by
// the Conn. v1 sends PUT /v1/ns/instance/beat with the beat JSON and follows the
// clientBeatInterval of the reply; code 20404 (instance unknown, e.g. after a server
// restart or expiry) reports the Lease Lost at once, and package registry registers
// it again. v3 renews with POST /v3/client/ns/instance?heartBeat=true; code 21003
// means the same; a beat answered 404 or 410 (the API is gone) is Lost too, and
// the next put probes the API again. Polaris does not reliably say 20404: probed by
// hand it answered success (code 10200) to beats for instances it did not have
// (while in the tests' flow it answered 20404), so a registration also lists its
// service every presence_check and reports Lost when its host:port has been
// missing from the list after it was seen once, or for longer than a grace period
// (2s or two cache periods) after the put; a spurious Lost only costs a harmless
// re-put. Heartbeat
// failures (server down, connection cut) are retried at the beat period and never
// reported as Lost by themselves: the server expires the instance on its own
// schedule and the next beat or presence check notices. Deregister deletes the
// instance (DELETE /instance), also after Abandon and after Lost. Close does not
// delete instances: package registry deregisters open registrations first.
//
// # Ownership
//
// registry's one-owner rule, over a server that identifies an instance by
// ip:port and cluster and lets the last register win: every registration carries
// its connection's random token in metadata "regkit.owner" (not shown in
// Metadata). Put first lists the service: a healthy host of another owner whose ID
// (regkit.id, else ip:port) is the instance's fails the put with ErrExists; an
// unhealthy one (its heartbeats stopped) does not hold the ID. Nacos has no
// compare-and-set, and servers answer lists from a cache (cacheMillis), so two
// clients registering one ID within that window can both pass. The listings then
// show one of them per ID (toListing: the healthy host, then the least
// ip:port#cluster), and the presence check of the other's keep-alive, finding the
// ID listed at another address, steps back: it deregisters its own entry and its
// Lease reports Lost with ErrExists, so its re-put meets the owner. A host at our
// ip:port#cluster carrying another owner's token is not ours (see below), and
// Deregister and Remove leave it alone; so do they an entry this Conn put there
// since under another ID it still holds (one Client moving an address to a new
// ID, as regkit sync does when a source instance's ID changes).
//
// One address, one owner: two registrations with different IDs at one
// ip:port#cluster (two processes given the same address, or regkit sync handing
// a copy from one process to another) are one Nacos instance, and a register
// there overwrites the entry. A new Register takes the address, as Nacos's last
// register wins (so a hand-over can register the new copy before deleting the
// old, with no gap). The registration it was taken from steps back: its
// keep-alive, finding another owner's token at its address, reports Lost with
// ErrExists and does not re-put; its put back (package registry's re-put after
// any lost lease, or an Update) fails with ErrExists while a healthy host of
// another regkit owner holds the address, so it stays Reregistering until that
// owner is gone and then takes the address back; the two never take turns. The
// window: a taker is noticed at the next presence check, or when package
// registry's guard sees the ID missing from its view; until then both
// Registrations report Registered while the server lists the taker's entry
// alone. An entry at the address without a token (a client other than regkit)
// is overwritten by a register and counted as ours. Polaris names an instance by
// ip:port alone: there, registrations at one ip:port in two clusters (Zones) are
// one instance that the driver takes for two, and they take turns; give them
// different ports.
//
// # Watch
//
// Watches poll the instance list (UDP push does not cross NAT and is being removed
// from Nacos) every max(cacheMillis of the last answer, poll_interval), with ±10%
// jitter; package registry shares one poller per service among all its watchers.
// The driver notifies once the first poll answered and then whenever a fingerprint
// over the sorted, converted instance set and the protect-threshold flag changes
// (Nacos 2.x+ answers an empty checksum and a lastRefTime of "now", so neither can
// be used). A failed poll ends Watch with the error: package registry then marks
// the view stale (keeping the last good one), backs off and polls again. Empty lists
// are delivered like any other. reachProtectionThreshold (the server returned
// unhealthy instances as healthy) is surfaced as Listing.ProtectThreshold and
// Snapshot.ProtectThreshold, never hidden; the v3 list does not report it.
//
// # Auth
//
// With a user name, Open logs in (POST <context>/v1/auth/login, then
// <context>/v3/auth/user/login, then Polaris's /v1/auth/login, the first that does
// not answer 404/410) and sends the accessToken parameter on every call; the token
// is refreshed when half its tokenTtl has passed, and once more on a 403 answer. An
// empty token (auth disabled on the server) is simply not sent. Refused credentials
// are registry.ErrPermission.
//
// # Configuration
//
// Config (from Conn.Config, ConfigOf or OpenConfig) is a client of Nacos's v1
// configuration API in the URL's group and tenant (= namespace), usable on its own:
// Get (GET <context>/v1/cs/configs; 404 is registry.ErrNotFound; the MD5 is the
// Content-MD5 header), Publish (POST, form body; compare-and-set through the casMd5
// header, which is where Nacos's ConfigController reads it, and the casMd5 form
// field), Delete (DELETE; a missing configuration is no error, as on Nacos), Search
// and Lookup (search=blur and search=accurate), and Listen (the long-poll listener
// POST <context>/v1/cs/configs/listener with Listening-Configs =
// dataId^2group^2md5[^2tenant]^1... and the Long-Pulling-Timeout header; the answer
// is the url-encoded list of changed dataId^2group[^2tenant]^1). A listener answering
// 404, 410 or 501 makes Listen poll Get every poll_interval instead. Listen cuts its
// own request after the wait it was given (Nacos holds a listener at least 10s),
// and a dead connection is an error, never a silent "no change"; under a partition
// that swallows bytes without closing, Listen returns "no change" after its wait.
//
// Compare-and-set: Nacos refuses a publish whose casMd5 differs from the stored
// MD5 (HTTP 500 "Cas publish fail, server md5 may have changed", 409 on some
// versions), and inserts a missing configuration whatever casMd5 says; both give
// registry.ErrVersionConflict here. Polaris v1.18 does not read casMd5 at all and
// overwrites. Config.CASEnforced finds out which by writing a probe configuration
// "regkit.casprobe.<random>" twice (the second time with a wrong casMd5) and
// deleting it, once per Config. Where casMd5 is not enforced, Publish with a casMd5
// reads the MD5 first and refuses a mismatch, publishes, then reads back until it
// sees its own content: a write by someone else between that read and the publish
// is overwritten without an error, and Polaris's read cache (about 1s behind
// writes) widens that window. Such servers get no store.
//
// Nacos 3.2 dropped the v1 configuration API; its v3 client HTTP API has one
// configuration call, GET <context>/v3/client/cs/config (namespaceId, groupName,
// dataId; answer code 20004 when absent), and no publish, delete, listing or
// listener (Nacos points clients at gRPC for listening). So on 3.2, Get switches
// to that call (when the v1 GET answers 404 without "config data not exist", or
// 410), Listen polls it, and Publish, Delete, Search and Lookup fail with
// registry.ErrNotSupported; the store is not offered. Writes, listing and the
// long-poll listener are covered on Nacos 1.x to 3.1 (v1) and Polaris.
//
// # Store
//
// The coordination store (driver.StoreConn) is built on the configuration API
// and offered (Capabilities.Store) only when Open finds that the server lists
// configurations (a search=blur answers a page) and enforces casMd5 (CASEnforced):
// Nacos 1.x to 3.1, and the test server. Polaris v1.18 answers the search
// "dataId required" and ignores casMd5, so on Polaris, as on Nacos 3.2, every store
// call fails with registry.ErrNotSupported. The URL parameter store=false skips the
// probe (which writes and deletes one configuration) and offers no store. A probe
// that fails for any other reason (server briefly down, no write permission) also
// leaves the store off for the life of the connection.
//
//   - Keys: key "/a/b" is the configuration with dataId "regkit.kv:a:b" in the
//     URL's group and tenant; each segment keeps [A-Za-z0-9.-] and writes every
//     other byte as '_' and two upper-case hex digits ("/a:b" is "regkit.kv:a_3Ab"),
//     so the mapping is reversible and uses only Nacos's dataId characters.
//     Configurations outside this scheme are ignored. Nacos limits a dataId to 256
//     characters, which bounds key length.
//   - Values: the content is "=" and the value when it is valid UTF-8, else "~"
//     and its standard base64 (Nacos refuses empty content and stores text).
//   - Version: the first 8 bytes of the content's MD5 as a positive int64. It is a
//     content hash, not a counter: writing the same value again keeps the version
//     (unlike etcd and ZooKeeper), so a compare-and-set cannot tell "unchanged"
//     from "changed and changed back" (ABA).
//   - CreateRevision: the configuration's database id from the search answer,
//     which grows with creations on Nacos (0 if a server gives none). Nacos offers
//     no fencing token: it is an order of creation, not a guarantee.
//   - Reads (Get, Children, Tree) go through search=accurate and search=blur,
//     which read Nacos's database rather than its cache. Listings read pages of
//     200 one after the other: a key created or deleted meanwhile may be missed.
//     Nacos's blur search hands '_' to SQL LIKE as a wildcard, so results are
//     filtered again by exact prefix.
//   - Create reads the key and fails with registry.ErrExists when present, then
//     publishes with a casMd5 no content has: Nacos then inserts a missing key but
//     refuses if the key appeared meanwhile (ErrExists). Two creates racing on a
//     missing key may both be inserted by Nacos (the last one wins) or one may
//     fail on the database's unique key with a server error: that race is not
//     closed. Missing parents are published as empty values with a casMd5 equal to
//     the empty value's own MD5, which inserts a missing parent and leaves an
//     existing one alone.
//   - Set reads the current MD5, checks the version against it, and publishes with
//     it as casMd5, so a concurrent write makes it fail with ErrVersionConflict
//     (an unconditional Set re-reads and retries, up to 16 times). A key deleted
//     between that read and the publish is re-created (Nacos inserts on CAS).
//   - Delete: Nacos's delete has no compare-and-set; the version is checked by a
//     read just before the delete (a write in between is deleted too). With
//     recursive, descendants are deleted deepest first, then the key; deleting a
//     key already gone is no error, so concurrent deletes are tolerated. Without
//     recursive a key with descendants is registry.ErrNotEmpty.
//   - WatchTree lists the tree (the key and its descendants) and notifies, then
//     repeats: a long poll on the listed dataIds and their MD5s (and the key's own
//     dataId with MD5 "" when absent), cut after poll_interval, then a re-list; it
//     notifies when the listing differs from the previous one (new keys are only
//     seen by the re-list, at most one poll_interval late; changes of listed keys
//     end the long poll at once). When the listener reports a change the listing
//     does not show (Nacos's listener reads its cache, the listing its database),
//     it waits a poll_interval instead of spinning. A failed listen or listing ends
//     WatchTree with the error, so that package registry marks the view stale and
//     re-lists. On servers without a listener the long poll is replaced by
//     polling Get.
//   - Ephemeral keys, sequential keys and sessions (and therefore the locks,
//     elections and other recipes that need them) are not supported: Capabilities
//     reports them false, and Create with them and NewSession fail with
//     registry.ErrNotSupported.
package nacos

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/internal/owned"
	"github.com/regkit/regkit/registry/driver"
)

func init() { driver.Register("nacos", drv{}) }

// Defaults.
const (
	DefaultPort          = 8848
	DefaultContextPath   = "/nacos"
	DefaultGroup         = "DEFAULT_GROUP"
	DefaultCluster       = "DEFAULT"
	DefaultPollInterval  = time.Second
	DefaultPresenceCheck = 10 * time.Second
	DefaultTimeout       = 5 * time.Second
	// DefaultBeatInterval is used when the server does not say clientBeatInterval.
	DefaultBeatInterval = 5 * time.Second
)

// API versions, as the api URL parameter names them.
const (
	APIAuto = "auto"
	APIV1   = "v1"
	APIV3   = "v3"
)

// Metadata keys the driver keeps in Nacos instance metadata.
const (
	MetaID     = "regkit.id"
	MetaWeight = "regkit.weight"
	// MetaOwner tells one Conn's registrations apart from every other client's:
	// a random token fixed for the Conn's life (see the package doc, Ownership).
	MetaOwner = "regkit.owner"
)

// drv is this backend's driver.Driver.
type drv struct{}

// options are the parsed URL settings.
type options struct {
	hosts         []string
	scheme        string
	contextPath   string
	namespace     string
	group         string
	cluster       string
	api           string
	ephemeral     bool
	beatInterval  time.Duration
	presenceCheck time.Duration
	pollInterval  time.Duration
	timeout       time.Duration
	username      string
	password      string
	store         bool
	rt            http.RoundTripper // from WithHTTPClient; nil: a transport of the Conn's own
}

func (drv) Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Conn, error) {
	hosts, err := driver.Hosts(u, DefaultPort)
	if err != nil {
		return nil, err
	}
	p := driver.NewParams(u)
	o := options{
		hosts:         hosts,
		scheme:        "http",
		namespace:     p.String("namespace", ""),
		group:         p.String("group", DefaultGroup),
		cluster:       p.String("cluster", DefaultCluster),
		api:           p.OneOf("api", APIAuto, APIAuto, APIV1, APIV3),
		ephemeral:     p.Bool("ephemeral", true),
		presenceCheck: p.Duration("presence_check", DefaultPresenceCheck),
		pollInterval:  p.Duration("poll_interval", DefaultPollInterval),
		timeout:       p.Duration("timeout", DefaultTimeout),
		store:         p.Bool("store", true),
		username:      cfg.Username,
		password:      cfg.Password,
	}
	if o.ephemeral {
		o.beatInterval = p.Duration("beat_interval", 0)
	} else {
		p.NotWith("persistent instances (ephemeral=false) send no heartbeat", "beat_interval")
	}
	qu, qp := p.String("username", ""), p.String("password", "")
	if err := p.Done(); err != nil {
		return nil, err
	}
	if err := driver.ApplyOptions("nacos", cfg.Options, func(opt option) error { return opt(&o) }); err != nil {
		return nil, err
	}
	if o.username == "" && qu != "" {
		o.username, o.password = qu, qp
	}
	o.contextPath = strings.TrimSuffix(u.Path, "/")
	if o.contextPath == "" {
		o.contextPath = DefaultContextPath
	}
	if strings.Contains(o.group, "@") || o.group == "" {
		// '@' anywhere would make "<group>@@<service>" ambiguous ("a@" + "b" is "a@@@b").
		return nil, &driver.FieldError{Field: "group", Value: o.group, Reason: "group must be non-empty and must not contain '@'"}
	}
	if o.cluster == "" {
		return nil, &driver.FieldError{Field: "cluster", Value: o.cluster, Reason: "cluster must be non-empty"}
	}
	if driver.ValidServiceName(o.cluster) != nil {
		// It reads back as the instances' Zone: a name no Zone can have would
		// hide every instance registered into it from every reader.
		return nil, &driver.FieldError{Field: "cluster", Value: o.cluster, Reason: "cluster must be 1-255 of [A-Za-z0-9._:-], starting with a letter or digit (it is the instances' Zone)"}
	}
	if o.timeout <= 0 {
		return nil, &driver.FieldError{Field: "timeout", Value: o.timeout.String(), Reason: "must be positive"}
	}
	if o.pollInterval < 10*time.Millisecond {
		return nil, &driver.FieldError{Field: "poll_interval", Value: o.pollInterval.String(), Reason: "must be at least 10ms"}
	}
	if o.beatInterval != 0 && o.beatInterval < 10*time.Millisecond {
		return nil, &driver.FieldError{Field: "beat_interval", Value: o.beatInterval.String(), Reason: "must be 0 (server's) or at least 10ms"}
	}
	if cfg.TLS != nil {
		o.scheme = "https"
	}
	c := newConn(o, cfg.TLS, cfg.Logger)
	if !o.store {
		c.store.Store(storeNo)
	}
	if cfg.Lazy {
		// registry.WithLazyConnect: no request now. With api=auto the first
		// naming call picks the API (currentAPI), and the first store call
		// decides whether the store is offered (storeConfig).
		return c, nil
	}
	if err := c.probe(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	if o.store {
		c.store.Store(c.probeStore(ctx))
		if err := ctx.Err(); err != nil {
			_ = c.Close()
			return nil, wrap("connect", err)
		}
	}
	return c, nil
}

// Conn is the Nacos driver connection.
type Conn struct {
	o      options
	hc     *http.Client
	hcLong *http.Client // for long polls: no timeout of its own
	tr     *http.Transport
	log    *slog.Logger
	// skipped logs listed hosts that are not valid instances, once each.
	skipped *driver.SkipLog

	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	api       string // v1 or v3 once probed
	reprobe   bool   // a naming call answered 404/410: probe before the next call
	hostIdx   int
	loginPath string
	token     string
	tokenAt   time.Time
	tokenTTL  time.Duration
	cacheMs   map[string]time.Duration       // service -> last cacheMillis
	watchers  map[string]int                 // service -> running Watch calls
	listed    map[string]map[string]struct{} // service -> fingerprints List read since the last poll

	cfg     *Config      // the configuration client, made on first use
	store   atomic.Int32 // storeUnknown until probed (by Open, or the first store call when lazy)
	storeMu sync.Mutex   // one store probe at a time

	loginMu sync.Mutex // one login at a time

	puts  inflight.Set // registers still running, per instance (for Remove)
	owner string       // this Conn's MetaOwner token
	// held: the instances (putKey) put and not deregistered since; a put of one
	// of them is a put back, which never takes an address from another owner
	// (see the package doc, Ownership). Guarded by mu.
	held   map[string]bool
	writes owned.Group // their goroutines
}

var _ driver.Conn = (*Conn)(nil)

func newConn(o options, tlsCfg *tls.Config, log *slog.Logger) *Conn {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: o.timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     60 * time.Second,
	}
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
	}
	var rt http.RoundTripper = tr
	if o.rt != nil {
		rt, tr = o.rt, nil
	}
	life, cancel := context.WithCancel(context.Background())
	return &Conn{owner: rand.Text(), o: o, tr: tr, hc: &http.Client{Transport: rt, Timeout: o.timeout}, hcLong: &http.Client{Transport: rt}, log: log, skipped: &driver.SkipLog{Logger: log},
		life: life, cancel: cancel, api: o.api, cacheMs: map[string]time.Duration{},
		watchers: map[string]int{}, listed: map[string]map[string]struct{}{}, held: map[string]bool{}}
}

// Namespace returns the Nacos namespace id of this connection ("" is public).
func (c *Conn) Namespace() string { return c.o.namespace }

// Group returns the Nacos group of this connection's services.
func (c *Conn) Group() string { return c.o.group }

// API returns the client API in use: "v1" or "v3".
func (c *Conn) API() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.api
}

// Capabilities: registration and discovery, and the store where the server can
// list configurations and enforces casMd5 (see the package doc, Store); never
// ephemeral or sequential keys or sessions.
// Registrations notice by themselves that the server dropped them (a beat answered
// 20404/21003, and the presence check), so package registry does not poll their
// services for the same purpose (GuardsRegistrations).
func (c *Conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{Store: c.store.Load() != storeNo, GuardsRegistrations: true, Limits: driver.Limits{StoreBytes: MaxValueBytes}}
}

// Close stops every heartbeat and closes idle connections. It does not delete
// instances (package registry deregisters open registrations before closing).
func (c *Conn) Close() error {
	c.cancel()
	c.wg.Wait()
	c.writes.Wait()
	if c.tr != nil {
		c.tr.CloseIdleConnections()
	}
	return nil
}

// serviceName is the "group@@service" form every v1 call needs.
func (c *Conn) serviceName(service string) string { return c.o.group + "@@" + service }

// httpError is a non-2xx answer.
type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string {
	b := e.body
	if len(b) > 200 {
		b = b[:200] + "..."
	}
	return fmt.Sprintf("HTTP %d: %s", e.status, strings.TrimSpace(b))
}

// wrap turns an error of op into one matching the registry sentinels.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if he := (*httpError)(nil); !errors.As(err, &he) {
			return fmt.Errorf("nacos: %s: %w: %w", op, driver.ErrUnavailable, err)
		}
	}
	var he *httpError
	if errors.As(err, &he) {
		switch {
		case he.status == http.StatusForbidden || he.status == http.StatusUnauthorized:
			return fmt.Errorf("nacos: %s: %w: %w", op, driver.ErrPermission, err)
		case he.status == http.StatusBadRequest || he.status == http.StatusRequestEntityTooLarge:
			return fmt.Errorf("nacos: %s: %w", op, &driver.FieldError{Field: "instance", Value: op, Reason: "server rejected the request: " + he.Error()})
		}
	}
	if errors.Is(err, driver.ErrPermission) || errors.Is(err, driver.ErrInvalid) || errors.Is(err, driver.ErrClosed) {
		return fmt.Errorf("nacos: %s: %w", op, err)
	}
	return fmt.Errorf("nacos: %s: %w: %w", op, driver.ErrUnavailable, err)
}

// do sends one request to the first host that answers. path is below the context
// path unless raw; form goes in the body for POST/PUT and in the query otherwise.
// It returns the body of a 2xx answer, or an *httpError. A 403 is retried once with
// a fresh token.
func (c *Conn) do(ctx context.Context, method, path string, form url.Values, raw bool) ([]byte, error) {
	return c.doOpts(ctx, method, path, form, raw, nil)
}

// reqOpts are the extras of one request.
type reqOpts struct {
	header     http.Header  // request headers to add
	long       bool         // no client-side timeout (a long poll, bounded by ctx)
	respHeader *http.Header // receives the answer's headers when non-nil
}

// doOpts is do with extras (o may be nil).
func (c *Conn) doOpts(ctx context.Context, method, path string, form url.Values, raw bool, o *reqOpts) ([]byte, error) {
	if err := c.life.Err(); err != nil {
		return nil, driver.ErrClosed
	}
	for attempt := 0; ; attempt++ {
		tok, err := c.accessToken(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		if tok != "" {
			f.Set("accessToken", tok)
		}
		body, err := c.sendOpts(ctx, method, path, f, raw, o)
		var he *httpError
		if attempt == 0 && c.o.username != "" && errors.As(err, &he) && he.status == http.StatusForbidden {
			continue
		}
		return body, err
	}
}

// send tries each host once, starting at the last one that worked.
func (c *Conn) send(ctx context.Context, method, path string, form url.Values, raw bool) ([]byte, error) {
	return c.sendOpts(ctx, method, path, form, raw, nil)
}

func (c *Conn) sendOpts(ctx context.Context, method, path string, form url.Values, raw bool, o *reqOpts) ([]byte, error) {
	c.mu.Lock()
	start := c.hostIdx
	c.mu.Unlock()
	var lastErr error
	n := len(c.o.hosts)
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		body, err := c.sendTo(ctx, c.o.hosts[idx], method, path, form, raw, o)
		var he *httpError
		if err == nil || (errors.As(err, &he) && he.status < 500) {
			if i > 0 {
				c.mu.Lock()
				c.hostIdx = idx
				c.mu.Unlock()
			}
			return body, err
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func (c *Conn) sendTo(ctx context.Context, host, method, path string, form url.Values, raw bool, o *reqOpts) ([]byte, error) {
	full := path
	if !raw {
		full = c.o.contextPath + path
	}
	u := c.o.scheme + "://" + host + full
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPut {
		body = strings.NewReader(form.Encode())
	} else if len(form) > 0 {
		u += "?" + form.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("User-Agent", "regkit-nacos")
	hc := c.hc
	if o != nil {
		for k, v := range o.header {
			req.Header[k] = v
		}
		if o.long {
			hc = c.hcLong
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The client's error shows the request URL, whose query carries the
		// access token: mask it (errors end up in logs).
		var ue *url.Error
		if errors.As(err, &ue) {
			if pu, perr := url.Parse(ue.URL); perr == nil {
				ue.URL = driver.RedactURL(pu)
			} else {
				ue.URL = "(redacted)"
			}
		}
		return nil, err
	}
	defer resp.Body.Close()
	if o != nil && o.respHeader != nil {
		*o.respHeader = resp.Header
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, &httpError{status: resp.StatusCode, body: string(b)}
	}
	return b, nil
}

// isGone reports a 404 or 410 answer: the API is not served.
func isGone(err error) bool {
	var he *httpError
	return errors.As(err, &he) && (he.status == http.StatusNotFound || he.status == http.StatusGone)
}

// probe picks the API version (api=auto) and checks that the server answers and the
// credentials work.
func (c *Conn) probe(ctx context.Context) error {
	if _, err := c.accessToken(ctx, false); err != nil {
		return err
	}
	if c.o.api != APIAuto {
		_, err := c.listRaw(ctx, c.o.api, "regkit-probe")
		if err != nil {
			return wrap("connect "+strings.Join(c.o.hosts, ","), err)
		}
		return nil
	}
	_, err3 := c.listRaw(ctx, APIV3, "regkit-probe")
	if err3 == nil {
		c.setAPI(APIV3)
		return nil
	}
	if !isGone(err3) {
		return wrap("connect "+strings.Join(c.o.hosts, ","), err3)
	}
	if _, err1 := c.listRaw(ctx, APIV1, "regkit-probe"); err1 != nil {
		return wrap("connect "+strings.Join(c.o.hosts, ","), err1)
	}
	c.setAPI(APIV1)
	return nil
}

func (c *Conn) setAPI(api string) {
	c.mu.Lock()
	if c.api != api && c.api != APIAuto {
		c.log.Warn("nacos: client API changed", "from", c.api, "to", api)
	}
	c.api = api
	c.reprobe = false
	c.mu.Unlock()
}

// currentAPI returns the API to use, probing again first when a call answered
// 404/410 since.
func (c *Conn) currentAPI(ctx context.Context) (string, error) {
	c.mu.Lock()
	api, again := c.api, c.reprobe
	c.mu.Unlock()
	if c.o.api != APIAuto {
		return c.o.api, nil
	}
	if again || api == APIAuto {
		if err := c.probe(ctx); err != nil {
			return "", err
		}
		c.mu.Lock()
		api = c.api
		c.mu.Unlock()
	}
	return api, nil
}

// gone records a 404/410 answer of a naming call, so that the next call probes.
func (c *Conn) gone(err error) {
	if c.o.api == APIAuto && isGone(err) {
		c.mu.Lock()
		c.reprobe = true
		c.mu.Unlock()
	}
}

// loginAnswer is the reply of every login endpoint.
type loginAnswer struct {
	AccessToken string `json:"accessToken"`
	TokenTTL    int64  `json:"tokenTtl"` // seconds
}

// accessToken returns a valid token ("" without credentials), logging in when
// there is none, when half its TTL has passed, or when force is set.
func (c *Conn) accessToken(ctx context.Context, force bool) (string, error) {
	if c.o.username == "" {
		return "", nil
	}
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	c.mu.Lock()
	tok, at, ttl, path := c.token, c.tokenAt, c.tokenTTL, c.loginPath
	c.mu.Unlock()
	if !force && !at.IsZero() && time.Since(at) < ttl/2 {
		return tok, nil
	}
	form := url.Values{"username": {c.o.username}, "password": {c.o.password}}
	paths := []struct {
		p   string
		raw bool
	}{{c.o.contextPath + "/v1/auth/login", true}, {c.o.contextPath + "/v3/auth/user/login", true}, {"/v1/auth/login", true}}
	if path != "" {
		paths = []struct {
			p   string
			raw bool
		}{{path, true}}
	}
	var lastErr error
	for _, p := range paths {
		b, err := c.send(ctx, http.MethodPost, p.p, form, p.raw)
		if isGone(err) {
			lastErr = err
			continue
		}
		if err != nil {
			return "", wrap("login", err)
		}
		var a loginAnswer
		if err := json.Unmarshal(b, &a); err != nil {
			return "", wrap("login", fmt.Errorf("bad answer %q: %w", b, err))
		}
		if a.TokenTTL <= 0 {
			a.TokenTTL = 18000
		}
		c.mu.Lock()
		c.loginPath, c.token, c.tokenAt, c.tokenTTL = p.p, a.AccessToken, time.Now(), time.Duration(a.TokenTTL)*time.Second
		c.mu.Unlock()
		return a.AccessToken, nil
	}
	return "", wrap("login", lastErr)
}

// nacosCode reads the "code" of a JSON answer (0 when absent or not JSON).
func nacosCode(b []byte) int {
	var a struct {
		Code json.Number `json:"code"`
	}
	if json.Unmarshal(b, &a) != nil {
		return 0
	}
	n, _ := strconv.Atoi(a.Code.String())
	return n
}
