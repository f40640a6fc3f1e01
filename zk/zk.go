// Package zk is the ZooKeeper backend, scheme "zk://", over github.com/go-zookeeper/zk.
//
//	zk://user:pass@h1:2181,h2:2181/chroot?layout=regkit&session_timeout=10s
//
// # URL
//
//   - Host list: comma-separated, default port 2181.
//   - Path: the chroot every path is placed under (checked by driver.CleanRoot:
//     absolute, no empty, "." or ".." segments; one trailing '/' ignored). An empty path means the layout's
//     default chroot: "/regkit" for layout=regkit, "/" (none) for layout=curator and
//     layout=dubbo, whose point is to meet Java services at their usual paths. "/"
//     explicitly means no chroot.
//   - layout=regkit|curator|dubbo (default regkit): how registrations are stored; see
//     "Layouts" below.
//   - base (layout=curator only; default "/services"): Curator's
//     ServiceDiscoveryBuilder basePath, relative to the chroot.
//   - payload=auto|null|spring (layout=curator only; default auto): the payload of
//     the ServiceInstance regkit writes; see "Curator payloads".
//   - group (layout=dubbo only; default "dubbo"): Dubbo's registry group, the root
//     node of the Dubbo tree, relative to the chroot.
//   - session_timeout (default 10s): the session timeout asked for the connection
//     that holds registrations; the server clamps it to [2, 20] tick times.
//   - connect_timeout (default 10s): how long Open waits for the first session;
//     with registry.WithLazyConnect Open does not wait (the session is made in the
//     background, digest credentials are sent before any other request, and
//     Health reports the connection state).
//   - acl=open|creator|creator-read: the ACL of every node this client creates.
//     open is world:anyone with all permissions; creator gives all permissions to the
//     authenticated digest identity only (ZooKeeper's CREATOR_ALL_ACL); creator-read
//     adds world read (READ_ACL_UNSAFE). Default: creator when credentials are given,
//     else open. creator and creator-read need credentials.
//   - protect (default true): protected creation for ephemeral sequential store
//     keys; see "Protected creation".
//
// Credentials (URL user info or registry.WithCredentials) are sent as digest auth
// ("user:pass") on every connection, and re-sent by the client on reconnect.
// registry.WithTLS dials TLS (the server needs a secure client port). The option
// WithDialer replaces the TCP dialer; an option of another backend is an error
// matching registry.ErrInvalid.
//
// # Constructors
//
// registry.Open(ctx, "zk://...", opts...) reads everything from the URL; New(ctx,
// servers, opts...) takes the server list and typed options (WithLayout,
// WithChroot, WithSessionTimeout, WithConnectTimeout, WithDialer), which also
// replace the URL's values when given to Open. There is no constructor over a
// *zk.Conn the caller holds: the driver must receive its connection's session
// events (go-zookeeper hands them only to the channel or callback given at
// zk.Connect), drive reconnection itself (its host provider, its dialer, no new
// session after a lost store session) and open one connection per store Session;
// a connection made elsewhere offers none of that.
//
// # Layouts
//
// layout=regkit: instance I of service S is the ephemeral znode
// <chroot>/services/S/I holding the JSON {"id","service","host","port","weight",
// "zone","metadata"} (the same record as the etcd backend), with "healthy": false
// while a local health check marks it unhealthy (registry.MarkUnhealthy; absent
// means healthy). The other layouts have no health field: MarkUnhealthy withdraws
// the instance there.
//
// layout=curator: Curator x-discovery's layout <chroot><base>/S/I, an ephemeral znode
// holding Curator's ServiceInstance JSON as its JsonInstanceSerializer writes it in
// its default (compatible) mode: {"name":S,"id":I,"address":Host,"port":Port,
// "sslPort":null,"payload":...,"registrationTimeUTC":ms,"serviceType":"DYNAMIC",
// "uriSpec":null}, without "enabled" (readers older than Curator 4 fail on it; absent
// means enabled). The payload follows the payload policy ("Curator payloads"). On
// read: Healthy <- enabled (absent means true); a null or zero port uses sslPort as
// Port; a payload with a metadata object (Spring's ZookeeperInstance) gives
// Metadata <- payload.metadata, except "weight" -> Weight and "zone" -> Zone (the
// keys Spring Cloud LoadBalancer reads); a payload without one has its string fields
// as Metadata "payload.<field>", and a string payload is Metadata "payload"; a null
// payload gives the default Weight, no Zone and no Metadata.
//
// # Curator payloads
//
// Curator reads a ServiceInstance's payload with Jackson's class-typed polymorphism
// ("@class") and then casts it to the reader's payload class: a reader built as
// ServiceDiscovery<Void> reads only null payloads, ServiceDiscovery<X> only null and
// X, ServiceDiscovery<Object> any class on its classpath. One unreadable instance
// fails the reader's whole queryForInstances (InvalidTypeIdException or
// ClassCastException), Java instances included, and its ServiceCache leaves it out
// (a Void reader's cache of a service where regkit wrote Spring's payload stayed
// empty). So the payload is chosen by policy, at every put (registration and
// re-registration after a session loss):
//
//   - payload=auto (default): Spring Cloud Zookeeper's ZookeeperInstance when the
//     service's other instances carry payloads and every one of them is a
//     ZookeeperInstance (a Spring fleet: whoever reads those reads ours, and whoever
//     does not was failing already), else null: on an empty service, among null
//     payloads, or beside any other payload class (its shape is unknown to regkit,
//     and a payload of the right class but the wrong shape would fail the reader's
//     whole query just the same). Instances written by other regkit processes
//     count as the service's instances.
//   - payload=null: always null, the one payload every Curator reader reads.
//   - payload=spring: always {"@class":"org.springframework.cloud.zookeeper.
//     discovery.ZookeeperInstance","id":S,"name":S,"metadata":{...}}, for fleets
//     whose readers all have Spring Cloud Zookeeper's class (a plain Curator reader
//     without it fails, see above).
//
// Where weight, zone and metadata go: with Spring's payload, into payload.metadata
// (Metadata, plus "weight" = Weight and "zone" = Zone), and they read back whole.
// With a null payload they are not written at all, and are lost to every reader,
// regkit included (read back: Weight 100, no Zone, no Metadata): Curator's
// ServiceInstance has no other field that could carry them (uriSpec is a URI
// template its readers build URIs from; unknown top-level fields fail readers
// older than Curator 4). ID, Host and Port are always kept.
//
// layout=dubbo: Dubbo 2.x's interface-level layout:
// <chroot>/<group>/S/providers/<url-encoded URL>, an ephemeral znode with no data,
// where S is the Java interface name and the URL is
// dubbo://Host:Port/S?anyhost=false&interface=S&side=provider&timestamp=ms&weight=W...
// with the Metadata as further query parameters. Mapping: Metadata <-> query
// parameters, except weight <-> Weight (Dubbo's default 100 is ours), zone <-> Zone,
// the URL scheme <-> Metadata "protocol" when it is not "dubbo", and "regkit.id" <->
// ID when the ID is not the URL's own identity. A provider URL's identity, its ID
// when it has no regkit.id, is "Host:Port" (registry's default ID) followed by
// ";group=G" and ";version=V" when the URL has them: one interface exported in
// several groups or versions on one host:port (as Dubbo 2.7 and 3.x register them)
// is several instances, each with its group and version in Metadata. An instance
// registered without an ID gets that identity too (Conn.DefaultID), so a Go
// provider of two versions on one port registers two providers, as Java does. Two URLs
// differing only in their protocol on one port are one instance. Parameters that
// only restate the layout (interface, side, timestamp, anyhost, category) are
// dropped on read. A provider with enabled=false or disabled=true is not Healthy.
// Put of an ID already there creates the new URL node, then deletes the old one
// (the URL changes with the metadata), so the instance never disappears
// meanwhile; Put and Deregister delete only URL nodes of their own session, never
// a provider URL another process wrote (a Java provider with the same identity, a
// previous process's node waiting for its session to expire). A list that sees
// several URLs of one ID keeps the one with the greater node name (the later
// timestamp).
//
// Injective, and the path is the truth, in every layout: neither service names nor
// IDs contain '/', and IDs are never "." or ".." (driver.ValidInstanceID), so each
// (chroot, service, ID) has its own znode. A child of a service directory is an
// instance only when its data names the path's service and ID (regkit: "service"
// and "id"; curator: "name" and "id"; dubbo: an "interface" parameter, when
// present, equal to the directory's) and makes a valid Instance; anything else
// (garbage, an empty record, another service's record, a URL without a port) is
// skipped and logged once per path. Nested znodes are never read. In the regkit and
// curator layouts the service directory is a container node (ZooKeeper 3.5+; as
// Curator's creatingParentContainersIfNeeded), which the server removes once its
// last instance is gone; Dubbo's directories stay persistent, as Dubbo makes them.
//
// # Liveness and re-registration
//
// One ZooKeeper connection (and so one session) per Conn holds every registration,
// List, Watch and store call. Registrations are ephemeral znodes of that session.
// The client reconnects by itself; while the session survives (a short outage, a
// server restart on the same data), nothing happens. When the server reports the
// session expired (after an outage longer than the session timeout, a kill of the
// session, or a restart that lost it), the client opens a new session and every
// Lease created in the old session reports Lost with ErrSessionLost; package
// registry then puts the instances again in the new session: the ephemeral
// registrations come back with the same data, as Curator's PersistentNode does. A
// Put whose node turns out to be owned by another session fails with ErrExists
// (see Ownership), and package registry retries the re-put until that owner is
// gone; a Put whose create was cut off finds its node as its own
// on the retry. Lost is reported once the client has learned of the expiry, which
// needs a connection to the server: during a partition nothing can be re-put anyway.
//
// Conn.Listen reports the registration connection's states as Curator's
// ConnectionStateListener does: Connected, Suspended when the connection drops,
// Reconnected when a session is back (the same, or after Lost the next one), Lost
// when the server reports the session expired or the connection stayed down for a
// whole session timeout.
//
// Reconnection: go-zookeeper's own host provider waits a second before every
// attempt to a single server; this driver's tries twice at once after a lost
// connection (learning of an expiry and opening the new session take two), then
// 50ms to 400ms apart, then once a second per round of servers.
//
// Store sessions themselves are terminal (the registry contract); ephemeral store
// keys that must come back after a session loss, as Curator's PersistentNode, are
// registry.Store.NewPersistentNode, which opens the next session over this driver
// (proved by the store suite's PersistentNode case against this backend).
//
// # Ownership
//
// registry's one-owner rule: an instance node is ephemeral, owned by the session
// that created it. Put creates it; when the node exists, Put sets its data only
// if its EphemeralOwner is the connection's current session (a re-put or update
// of our own), and otherwise fails with ErrExists: another session's live node
// (or a persistent node another program wrote) is never replaced, as Curator's
// registerService would. Create-or-compare is atomic on the server, except that a
// node of a session that just expired is removed by the server itself, after
// which the ID is free. In the dubbo layout node names are provider URLs, not
// IDs: Put first lists the directory and fails with ErrExists when a node of
// another session decodes to the instance's ID; two sessions putting one ID at
// the same moment can both pass that check, so after its create each Put lists
// again, and the one whose node was created later (the greater creation zxid)
// deletes it and fails with ErrExists: at most one keeps the ID.
// Deregister and Remove delete only nodes of the current session.
//
// # Watches
//
// go-zookeeper 1.0.4 does not offer ZooKeeper 3.6's persistent recursive watches
// (AddWatch), so watches are one-shot watches re-armed after every event: a child
// watch on every directory and a data watch on every node of the watched subtree
// (the service directory and its instances; for WatchTree, every descendant), an
// exists watch on the root while it does not exist. For WatchTree every re-arm is
// followed by a notify and a re-list, so no change between two watches is lost.
// A service is followed through driver.EventWatcher instead (SubscribeEvents):
// the replies that re-arm the watches carry what changed (ChildrenW the
// children, GetW a child's data), and the Conn keeps each child's data, so a
// registration elsewhere costs this Client one ChildrenW and one GetW, a data
// change one GetW, and nothing is listed again; the watch events reach the
// subscriptions through go-zookeeper's event callback, by path. The Client's
// own registrations fire its child watch too (its guard follows the service):
// while its own creates in the directory are under way, the ChildrenW waits
// until they settle (2 ms after the last, at most 20 ms), so registering n
// instances in a row costs one listing per burst, not n listings of up to n
// children; an own node deleted by someone else before that listing is
// reported deleted, and the guard puts it again. A
// disconnection, a new session or dropped watches end the subscription (package
// registry then lists the service afresh). When the connection drops or the
// session changes, Watch and SubscribeEvents end at once (so the view turns
// stale and is re-listed after the gap) instead of
// relying on the client's silent watch restoration. Known cost: go-zookeeper keeps
// the channels of watches a returned Watch abandoned until their node changes, so a
// long-lived, unchanging subtree accumulates one stale channel per node and outage.
//
// # Coordination store
//
// Store key K is the znode <chroot>K (key "/" is the chroot itself; with no chroot
// the server's own "/zookeeper" subtree is hidden and never deleted). The store and
// the registry share the chroot but never a znode: keys inside the connection's
// registry tree (<chroot>/services, <chroot><base> or <chroot>/<group>) are
// refused with a FieldError (ErrInvalid) naming the key, Children and Tree of an
// ancestor hide that tree, and a recursive Delete of an ancestor leaves it and
// the znodes above it (a curator base /a/b keeps <chroot>/a): of "/" it returns
// nil, of another ancestor ErrNotEmpty once its other descendants are gone.
// Version is the data version (Stat.Version), CreateRevision the czxid, Session
// the owner session id in hex. Missing parents are created as empty persistent znodes. Sequential keys
// use ZooKeeper's own sequence flag (the 10-digit suffix is the parent's cversion).
// Recursive delete removes children first and tolerates concurrent deletes; the
// version check applies to the key itself, before its descendants are removed. Tree
// is read node by node (ZooKeeper has no snapshot read), so it is not atomic.
//
// Sessions (NewSession) each own a connection of their own with session timeout =
// TTL (default 10s, clamped by the server). States, as Curator names them:
// Connected once the session is established; Suspended when the connection drops;
// Reconnected when it comes back with the same session; Lost when the server reports
// the session expired, or when the connection stays down for a whole session
// timeout (Curator's standard policy: the server has expired it or will soon). After
// Lost the connection is closed and never opens a new session: a lost session is
// terminal, open a new one. Close closes the session on the server, which deletes
// its ephemeral keys at once.
//
// # Protected creation
//
// An ephemeral sequential create that fails with a connection loss may still have
// been applied; a blind retry would leave an orphan that lives as long as the
// session. As Curator's protection mode does, such creates put a UUID in the name,
// _c_<uuid>-<name><sequence> (Curator's format, the UUID in its 36-character text
// form), and after a connection loss look for a child carrying the UUID before
// retrying. A name that is already protected (_c_<uuid>- or _c_<32 hex digits>-,
// as the recipes name their nodes on every backend) is used as it is, its UUID the
// one looked for, not wrapped a second time: so the recipes' nodes are named
// exactly as Curator's InterProcessMutex and LeaderLatch name theirs, and
// interoperate with them on the same path. The prefix is part of the key:
// Node.Key and Children show it, as Curator does; order such keys by their last
// 10 digits (SequenceOf), or by CreateRevision. protect=false turns it off.
//
// # Choices where the issue was silent
//
//   - Close of a Conn closes its session on the server: its ephemeral nodes go at
//     once, not after the session timeout.
//   - Listing.Revision is the service directory's pzxid.
//   - The go-zookeeper log goes to the registry logger at Debug level.
//   - Host names are resolved by the dialer at each connection attempt (not once,
//     as go-zookeeper's default provider does); a name with several addresses uses
//     the dialer's choice.
//   - Instance IDs are node names; registry's validation already excludes '/'. In
//     the curator layout with Spring's payload, user metadata keys "weight" and
//     "zone" are taken by the mapping.
//   - The registration connection's session timeout and a store session's TTL are
//     asked for; the server may grant another (zoo.cfg min/maxSessionTimeout), and
//     a session's Lost-on-timeout uses the TTL asked for.
package zk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/internal/owned"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

func init() { driver.Register("zk", drv{}) }

// Defaults.
const (
	DefaultSessionTimeout = 10 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultChroot         = "/regkit"
	DefaultCuratorBase    = "/services"
	DefaultDubboGroup     = "dubbo"
)

// option is the driver.Option value of this package's options.
type option func(*settings) error

// settings are what this package's options set; each replaces the URL's value.
type settings struct {
	dialer         Dialer
	layout         Layout
	chroot         *string
	sessionTimeout time.Duration
	connectTimeout time.Duration
}

// WithDialer replaces the TCP dialer of every connection the driver opens
// (registrations and sessions); registry.WithTLS, when given, takes precedence.
func WithDialer(d Dialer) registry.Option {
	return registry.DriverOption("zk.WithDialer", option(func(s *settings) error {
		if d == nil {
			return &driver.FieldError{Field: "zk.WithDialer", Value: nil, Reason: "dialer is nil"}
		}
		s.dialer = d
		return nil
	}))
}

// WithLayout sets the registration layout (default LayoutRegkit; with Open it
// replaces the URL's layout parameter).
func WithLayout(l Layout) registry.Option {
	return registry.DriverOption("zk.WithLayout", option(func(s *settings) error {
		switch l {
		case LayoutRegkit, LayoutCurator, LayoutDubbo:
			s.layout = l
			return nil
		}
		return &driver.FieldError{Field: "zk.WithLayout", Value: string(l), Reason: "want regkit, curator or dubbo"}
	}))
}

// WithChroot sets the chroot every path is placed under ("/" for none; default:
// the layout's, see the package doc; with Open it replaces the URL's path).
func WithChroot(path string) registry.Option {
	return registry.DriverOption("zk.WithChroot", option(func(s *settings) error {
		s.chroot = &path
		return nil
	}))
}

// WithSessionTimeout sets the session timeout asked for the registration
// connection (default DefaultSessionTimeout, at least 1s; with Open it replaces
// the URL's session_timeout).
func WithSessionTimeout(d time.Duration) registry.Option {
	return registry.DriverOption("zk.WithSessionTimeout", option(func(s *settings) error {
		s.sessionTimeout = d
		return nil
	}))
}

// WithConnectTimeout sets how long connecting waits for the first session
// (default DefaultConnectTimeout; with Open it replaces the URL's
// connect_timeout).
func WithConnectTimeout(d time.Duration) registry.Option {
	return registry.DriverOption("zk.WithConnectTimeout", option(func(s *settings) error {
		s.connectTimeout = d
		return nil
	}))
}

// New connects to the ZooKeeper servers ("host:port", default port 2181) and
// returns a Client over them, waiting for the first session (at most the connect
// timeout, or until ctx ends). It takes server addresses rather than a *zk.Conn
// the caller holds, because the driver must own its connections: it needs the
// session events of the registration connection (go-zookeeper delivers them only
// to the channel or callback given at zk.Connect), controls reconnection (its own
// host provider and dialer, refusing a new session after a store session was
// lost), and opens one more connection for each store Session, each with a
// session of its own. Options: registry.WithLogger, WithCredentials (digest
// auth) and WithTLS, and this package's WithLayout, WithChroot,
// WithSessionTimeout, WithConnectTimeout and WithDialer; the URL-only settings
// (acl, base, payload, group, protect) keep their defaults. A bad server address
// or option is an error matching registry.ErrInvalid, before any I/O.
func New(ctx context.Context, servers []string, opts ...registry.Option) (*registry.Client, error) {
	if len(servers) == 0 {
		return nil, &driver.FieldError{Field: "servers", Value: "", Reason: "no ZooKeeper server given"}
	}
	u := &url.URL{Scheme: "zk", Host: strings.Join(servers, ","), Path: "/"}
	return registry.NewClient(func(cfg driver.Config) (driver.Conn, error) {
		var s settings
		if err := driver.ApplyOptions("zk", cfg.Options, func(o option) error { return o(&s) }); err != nil {
			return nil, err
		}
		if s.chroot == nil {
			u.Path = "" // the layout's default chroot
		}
		return drv{}.Open(ctx, u, cfg)
	}, opts...)
}

// Dialer dials one ZooKeeper server; it has the shape of go-zookeeper's zk.Dialer.
type Dialer = func(network, address string, timeout time.Duration) (net.Conn, error)

// Layout names a registration layout (the URL's layout parameter).
type Layout string

// Layouts.
const (
	LayoutRegkit  Layout = "regkit"
	LayoutCurator Layout = "curator"
	LayoutDubbo   Layout = "dubbo"
)

// CuratorPayload names the payload policy of layout=curator (the URL's payload
// parameter): what regkit puts in the payload of the Curator ServiceInstance it
// writes. See "Curator payloads" in the package doc.
type CuratorPayload string

// Payload policies.
const (
	// PayloadAuto writes Spring Cloud Zookeeper's ZookeeperInstance when the
	// service's other instances carry payloads and every one of them is a
	// ZookeeperInstance, else null. The default.
	PayloadAuto CuratorPayload = "auto"
	// PayloadNull always writes a null payload, the one every Curator reader can
	// read.
	PayloadNull CuratorPayload = "null"
	// PayloadSpring always writes Spring Cloud Zookeeper's ZookeeperInstance, for
	// fleets whose Java services all read it.
	PayloadSpring CuratorPayload = "spring"
)

// drv is this backend's driver.Driver.
type drv struct{}

type config struct {
	hosts          []string
	chroot         string // "" for none, else "/a/b"
	layout         Layout
	base           string // curator base path, absolute (with chroot)
	payload        CuratorPayload
	group          string // dubbo root path, absolute (with chroot)
	sessionTimeout time.Duration
	connectTimeout time.Duration
	acl            []zk.ACL
	auth           []byte // digest "user:pass" or nil
	protect        bool
	lazy           bool // registry.WithLazyConnect: open does not wait for a session
	dialer         Dialer
	log            *slog.Logger
}

func (drv) Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Conn, error) {
	hosts, err := driver.Hosts(u, 2181)
	if err != nil {
		return nil, err
	}
	var so settings
	if err := driver.ApplyOptions("zk", cfg.Options, func(o option) error { return o(&so) }); err != nil {
		return nil, err
	}
	p := driver.NewParams(u)
	layout := Layout(p.OneOf("layout", string(LayoutRegkit), string(LayoutRegkit), string(LayoutCurator), string(LayoutDubbo)))
	if so.layout != "" {
		layout = so.layout
	}
	path := u.Path
	if so.chroot != nil {
		path = *so.chroot
		if path == "" {
			path = "/"
		}
	}
	base, group := DefaultCuratorBase, DefaultDubboGroup
	payload := PayloadAuto
	if layout == LayoutCurator {
		base = p.String("base", DefaultCuratorBase)
		payload = CuratorPayload(p.OneOf("payload", string(PayloadAuto), string(PayloadAuto), string(PayloadNull), string(PayloadSpring)))
	} else {
		p.NotWith("base and payload apply to layout=curator only", "base", "payload")
	}
	if layout == LayoutDubbo {
		group = p.String("group", DefaultDubboGroup)
	} else {
		p.NotWith("group applies to layout=dubbo only", "group")
	}
	st := p.Duration("session_timeout", DefaultSessionTimeout)
	ct := p.Duration("connect_timeout", DefaultConnectTimeout)
	defACL := "open"
	if cfg.Username != "" {
		defACL = "creator"
	}
	aclName := p.OneOf("acl", defACL, "open", "creator", "creator-read")
	protect := p.Bool("protect", true)
	if err := p.Done(); err != nil {
		return nil, err
	}
	if so.sessionTimeout != 0 {
		st = so.sessionTimeout
	}
	if so.connectTimeout != 0 {
		ct = so.connectTimeout
	}
	if st < time.Second {
		return nil, &driver.FieldError{Field: "session_timeout", Value: st.String(), Reason: "must be at least 1s"}
	}
	if ct <= 0 {
		ct = DefaultConnectTimeout
	}
	c := config{hosts: hosts, layout: layout, payload: payload, sessionTimeout: st, connectTimeout: ct, protect: protect, log: cfg.Logger, lazy: cfg.Lazy}
	defChroot := ""
	if layout == LayoutRegkit {
		defChroot = DefaultChroot
	}
	if c.chroot, err = driver.CleanRoot("url", path, defChroot); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(base, "/") {
		base = "/" + base // documented as relative to the chroot; a leading '/' is optional
	}
	if base, err = driver.CleanRoot("base", base, ""); err != nil {
		return nil, err
	}
	if base == "" {
		return nil, &driver.FieldError{Field: "base", Value: base, Reason: "must not be empty"}
	}
	if group = strings.Trim(group, "/"); group == "" || strings.Contains(group, "/") {
		return nil, &driver.FieldError{Field: "group", Value: group, Reason: "must be one path segment"}
	}
	if _, err := driver.CleanRoot("group", "/"+group, ""); err != nil {
		return nil, err // "." or "..", which ZooKeeper refuses in a path; control characters
	}
	c.base = c.chroot + base
	c.group = c.chroot + "/" + group
	if cfg.Username != "" {
		c.auth = []byte(cfg.Username + ":" + cfg.Password)
	}
	switch aclName {
	case "open":
		c.acl = zk.WorldACL(zk.PermAll)
	case "creator", "creator-read":
		if c.auth == nil {
			return nil, &driver.FieldError{Field: "acl", Value: aclName, Reason: "needs credentials (URL user info or WithCredentials)"}
		}
		c.acl = zk.AuthACL(zk.PermAll)
		if aclName == "creator-read" {
			c.acl = append(c.acl, zk.WorldACL(zk.PermRead)...)
		}
	}
	c.dialer = net.DialTimeout
	if so.dialer != nil {
		c.dialer = so.dialer
	}
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		c.dialer = func(network, addr string, timeout time.Duration) (net.Conn, error) {
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: tc}
			return d.Dial(network, addr)
		}
	}
	return open(ctx, c)
}

// Conn is the ZooKeeper driver connection: one go-zookeeper connection (one session)
// for registrations, discovery and the store, plus one connection per store Session.
type Conn struct {
	cfg config
	zc  *zkConn

	life   context.Context
	cancel context.CancelFunc
	owned  owned.Group // calls and goroutines owned by the Conn

	puts inflight.Set // Put requests still running, per instance (for Remove)

	states *stateLog // connection states of the registration connection

	skipped *driver.SkipLog // children of service directories that are not instances

	hub eventHub // event subscriptions (SubscribeEvents), fed by the watch events

	// authed is closed once a lazily opened connection has sent its digest
	// credentials (nil otherwise); authErr is set before if they were refused.
	authed  chan struct{}
	authErr error

	mu       sync.Mutex
	sessions map[*session]struct{}
	closed   bool // Close was called
}

var (
	_ driver.Conn      = (*Conn)(nil)
	_ driver.StoreConn = (*Conn)(nil)
	_ driver.Health    = (*Conn)(nil)
)

// Health reports whether the registration connection has a session and is
// connected: nil, or an error matching registry.ErrUnavailable naming the state.
func (c *Conn) Health() error {
	if st, _, _ := c.zc.status(); st != zk.StateHasSession {
		return fmt.Errorf("zk: %s: connection state %v: %w", strings.Join(c.cfg.hosts, ","), st, driver.ErrUnavailable)
	}
	return nil
}

// HealthChanged returns a channel closed at the registration connection's next
// state change.
func (c *Conn) HealthChanged() <-chan struct{} {
	_, _, ch := c.zc.status()
	return ch
}

func open(ctx context.Context, cfg config) (*Conn, error) {
	life, cancel := context.WithCancel(context.Background())
	c := &Conn{cfg: cfg, life: life, cancel: cancel, sessions: map[*session]struct{}{},
		skipped: &driver.SkipLog{Logger: cfg.log}}
	c.states = newStateLog()
	zc, err := c.dial(ctx, cfg.sessionTimeout, c.states.hook, c.hub.dispatch, !cfg.lazy)
	if err != nil {
		cancel()
		return nil, err
	}
	c.zc = zc
	c.spawn(func() { c.states.monitor(life, cfg.sessionTimeout) })
	return c, nil
}

// ServicePath returns the znode whose children are the instances of service in
// the connection's layout (<chroot>/services/S, <chroot><base>/S or
// <chroot>/<group>/S/providers).
func (c *Conn) ServicePath(service string) string { return c.codec().dir(service) }

// Layout returns the registration layout of the connection.
func (c *Conn) Layout() Layout { return c.cfg.layout }

// Client returns the native client of the registration connection.
func (c *Conn) Client() *zk.Conn { return c.zc.zk }

// SessionID returns the id of the registration connection's current session, or 0
// while there is none.
func (c *Conn) SessionID() int64 {
	id, _ := c.zc.session()
	return id
}

// Capabilities: everything; the store limit follows MaxPacketBytes; Health in the
// regkit layout only (see regLease.SetHealthy).
func (c *Conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{Store: true, Ephemeral: true, Sequential: true, Sessions: true,
		Health: c.cfg.layout == LayoutRegkit, Limits: c.limits()}
}

// Close closes every session still open, then the registration connection (its
// session ends on the server, deleting its ephemeral nodes), and waits for every
// goroutine of the connection.
func (c *Conn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.CloseContext(ctx)
}

var _ driver.ContextCloser = (*Conn)(nil)

// CloseContext is Close with the session closes bounded by ctx (and by 3s
// each); with ctx done they are skipped and the sessions' ephemeral nodes are
// left to their session timeout. With ctx done and a server that does not
// answer, closing the connection can still take up to a second:
// go-zookeeper's Close waits that long for its close request, which the
// socket's close (abort) may strand before it is sent.
func (c *Conn) CloseContext(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var ss []*session
	for s := range c.sessions {
		ss = append(ss, s)
	}
	c.mu.Unlock()
	for _, s := range ss {
		if ctx.Err() != nil {
			break
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_ = s.Close(sctx)
		cancel()
	}
	c.cancel()
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { // ctx done: stop waiting for the server
		c.zc.abort()
		close(aborted)
	})
	c.zc.close()
	if !stop() {
		<-aborted
	}
	c.owned.Wait()
	return nil
}

// spawn runs f on a goroutine owned by the Conn; false (f not run) once Close is
// waiting for its goroutines.
func (c *Conn) spawn(f func()) bool { return c.owned.Go(f) }

// path maps a path relative to the chroot ("/a/b", or "/" for the chroot) to the
// absolute znode path.
func (c *Conn) path(rel string) string {
	if rel == "/" {
		if c.cfg.chroot == "" {
			return "/"
		}
		return c.cfg.chroot
	}
	return c.cfg.chroot + rel
}

// rel maps an absolute znode path back to a store key.
func (c *Conn) rel(abs string) string {
	s := strings.TrimPrefix(abs, c.cfg.chroot)
	if s == "" {
		return "/"
	}
	return s
}

// call runs f, a blocking go-zookeeper call, until it returns or ctx is done. The
// call goroutine is owned by the Conn (go-zookeeper fails pending calls when its
// connection drops or closes, so it always ends).
func call[T any](ctx context.Context, c *Conn, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	if c.authed != nil { // lazy connection with credentials: send them first
		select {
		case <-c.authed:
			if c.authErr != nil {
				var zero T
				return zero, c.authErr
			}
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
	ch := make(chan result, 1)
	if !c.spawn(func() {
		v, err := f()
		ch <- result{v, err}
	}) {
		var zero T
		return zero, fmt.Errorf("connection closed: %w", driver.ErrClosed)
	}
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// isConnLoss reports whether err means the request may or may not have been
// applied (the connection dropped while it was in flight).
func isConnLoss(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrClosing) || isNetErr(err)
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// wrap turns a client error into one matching the registry sentinels.
func wrap(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("zk: %s %s: %w", op, path, err)
	case errors.Is(err, zk.ErrNoNode):
		sentinel = driver.ErrNotFound
	case errors.Is(err, zk.ErrNodeExists):
		sentinel = driver.ErrExists
	case errors.Is(err, zk.ErrBadVersion):
		sentinel = driver.ErrVersionConflict
	case errors.Is(err, zk.ErrNotEmpty):
		sentinel = driver.ErrNotEmpty
	case errors.Is(err, zk.ErrNoAuth), errors.Is(err, zk.ErrAuthFailed), errors.Is(err, zk.ErrInvalidACL):
		sentinel = driver.ErrPermission
	case errors.Is(err, zk.ErrSessionExpired), errors.Is(err, zk.ErrSessionMoved):
		sentinel = driver.ErrSessionLost
	case errors.Is(err, zk.ErrBadArguments), errors.Is(err, zk.ErrInvalidPath),
		errors.Is(err, zk.ErrShortBuffer): // a request over the client's buffer: never sent, never will be
		sentinel = driver.ErrInvalid
	case errors.Is(err, driver.ErrSessionLost), errors.Is(err, driver.ErrClosed), errors.Is(err, driver.ErrUnavailable):
		return fmt.Errorf("zk: %s %s: %w", op, path, err)
	default:
		sentinel = driver.ErrUnavailable
	}
	return fmt.Errorf("zk: %s %s: %w: %w", op, path, sentinel, err)
}

func hexID(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(id), 16)
}

// slogPrinter forwards go-zookeeper's log to a slog.Logger at Debug.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, args ...any) {
	p.l.Debug("zk: " + fmt.Sprintf(format, args...))
}
