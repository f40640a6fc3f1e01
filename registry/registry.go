package registry

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/registry/address"
)

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a driver available under a URL scheme ("etcd", "zk", ...). It is
// meant for a backend's init; it panics if the driver is nil or the scheme is taken,
// as database/sql.Register does.
func Register(scheme string, d Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if d == nil {
		panic("registry: Register driver is nil")
	}
	if _, dup := drivers[scheme]; dup {
		panic("registry: Register called twice for scheme " + scheme)
	}
	drivers[scheme] = d
}

// Drivers returns the sorted schemes of the registered drivers.
func Drivers() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	var out []string
	for s := range drivers {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Option configures Open and NewClient.
type Option func(*options)

type options struct {
	cfg        Config
	resolver   AddressResolver
	backoffMin time.Duration
	backoffMax time.Duration
	reqTimeout time.Duration
	clock      clockwork.Clock
}

// WithLogger sets the logger (default: warnings and errors to standard error).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.cfg.Logger = l } }

// WithTLS makes the driver connect with TLS.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.cfg.TLS = c } }

// WithCredentials sets the user name and password (etcd auth, ZooKeeper digest,
// Nacos login). They override the URL's user info.
func WithCredentials(username, password string) Option {
	return func(o *options) { o.cfg.Username, o.cfg.Password = username, password }
}

// WithDriverOption passes a backend-specific setting; each backend documents its keys.
func WithDriverOption(key string, value any) Option {
	return func(o *options) {
		if o.cfg.DriverOptions == nil {
			o.cfg.DriverOptions = map[string]any{}
		}
		o.cfg.DriverOptions[key] = value
	}
}

// WithAddressResolver sets how Register fills an empty Host or a zero Port
// (default: address.Default(), which reads the environment; see package
// registry/address).
func WithAddressResolver(r AddressResolver) Option { return func(o *options) { o.resolver = r } }

// WithRetryBackoff sets the bounds of the jittered exponential backoff used by every
// retry loop: re-registration, watch re-arming, re-listing (default 100ms to 10s).
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithRequestTimeout bounds each backend call that the library makes by itself (the
// re-lists of watch loops, the puts of re-registration), so that a call hanging on a
// dead connection turns into a stale view and a retry (default 10s).
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.reqTimeout = d } }

// WithClock sets the clock the Client's timers run on (default: the real clock):
// backoff sleeps of every retry loop, the staleness of snapshots (Snapshot.LastGood
// and Age), the confirmation delay of a registration's guard and a PersistentNode's
// periodic recheck. It exists for tests, which pass a clockwork.FakeClock and
// advance it instead of waiting; production code has no reason to set it. Request
// timeouts (WithRequestTimeout) stay on the real clock, as contexts do.
func WithClock(c clockwork.Clock) Option { return func(o *options) { o.clock = c } }

// AddressResolver fills the host and port to advertise when an Instance has none.
// Package registry/address provides the standard one.
type AddressResolver interface {
	// Resolve returns the host and port others should dial. port may be 0 when
	// nothing configures it (the caller's Port is then required).
	Resolve() (host string, port int, err error)
}

func buildOptions(opts []Option) options {
	o := options{backoffMin: 100 * time.Millisecond, backoffMax: 10 * time.Second, reqTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.cfg.Logger == nil {
		o.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.resolver == nil {
		o.resolver = address.Default()
	}
	if o.clock == nil {
		o.clock = clockwork.NewRealClock()
	}
	if o.reqTimeout <= 0 {
		o.reqTimeout = 10 * time.Second
	}
	if o.backoffMin <= 0 {
		o.backoffMin = 100 * time.Millisecond
	}
	if o.backoffMax < o.backoffMin {
		o.backoffMax = o.backoffMin
	}
	return o
}

var stderr io.Writer = osStderr()

// Open parses rawURL, finds the driver registered for its scheme and connects.
//
//	c, err := registry.Open(ctx, "etcd://10.0.0.1:2379,10.0.0.2:2379/prefix?dial_timeout=3s")
//
// A malformed URL, an unknown scheme or an unknown query parameter is an error
// matching ErrInvalid.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Client, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "" {
		return nil, invalid("url", rawURL, "no scheme (want e.g. etcd://, zk://, consul://, nacos://, mem://)")
	}
	driversMu.RLock()
	d, ok := drivers[u.Scheme]
	driversMu.RUnlock()
	if !ok {
		return nil, invalid("url", RedactURL(u), fmt.Sprintf("unknown scheme %q (forgotten import? registered: %v)", u.Scheme, Drivers()))
	}
	o := buildOptions(opts)
	if u.User != nil && o.cfg.Username == "" {
		o.cfg.Username = u.User.Username()
		o.cfg.Password, _ = u.User.Password()
	}
	conn, err := d.Open(ctx, u, o.cfg)
	if err != nil {
		return nil, err
	}
	return newClient(conn, o), nil
}

// NewClient wraps an already open driver connection, as sql.OpenDB does; backends'
// direct constructors (etcd.New(client)) use it. The Client owns conn and closes it.
func NewClient(conn Conn, opts ...Option) *Client {
	return newClient(conn, buildOptions(opts))
}

// ParseURL parses a backend URL. Unlike url.Parse it accepts a comma-separated host
// list whose hosts may lack ports or be bracketed IPv6 addresses
// ("etcd://h1:2379,h2,[::1]:2379/prefix"); the list is left in URL.Host for Hosts to
// split. Errors match ErrInvalid.
func ParseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err == nil {
		return u, nil
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if ok && scheme != "" {
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		authority := rest[:end]
		var user *url.Userinfo
		if at := strings.LastIndexByte(authority, '@'); at >= 0 {
			if uu, uerr := url.Parse(scheme + "://" + authority[:at+1] + "placeholder"); uerr == nil {
				user = uu.User
			}
			authority = authority[at+1:]
		}
		if authority != "" && !strings.ContainsAny(authority, " \t") {
			if u2, err2 := url.Parse(scheme + "://placeholder" + rest[end:]); err2 == nil {
				u2.Host, u2.User = authority, user
				return u2, nil
			}
		}
	}
	return nil, &FieldError{Field: "url", Value: rawURL, Reason: "malformed: " + err.Error()}
}
