package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/metric"

	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/driver"
)

// Drivers returns the sorted schemes of the registered drivers (backends register
// theirs with driver.Register when imported).
func Drivers() []string { return driver.Schemes() }

// Option configures Open and the backends' New constructors: the WithX functions of
// this package, and the typed options of each backend package (consul.WithTags,
// zk.WithDialer, ...).
type Option func(*options)

type options struct {
	cfg        driver.Config
	resolver   AddressResolver
	backoffMin time.Duration
	backoffMax time.Duration
	reqTimeout time.Duration
	clock      clockwork.Clock
	meter      metric.MeterProvider // see WithMeterProvider in metrics.go
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

// DriverOption wraps a backend-specific option; it is for backend packages, whose
// typed WithX functions return it (users call those: consul.WithTags(...)). name is
// how users write the option ("consul.WithTags"), for error messages; value is the
// backend's own, of a type of its own, which the backend reads from
// driver.Config.Options with driver.ApplyOptions. An option given to another
// backend than its own fails Open (or New) with an error matching ErrInvalid naming
// it, before any I/O.
func DriverOption(name string, value any) Option {
	return func(o *options) {
		o.cfg.Options = append(o.cfg.Options, driver.Option{Name: name, Value: value})
	}
}

// WithAddressResolver sets how Register decides the host and port to advertise
// (default: address.Default(), whose environment variables override the
// Instance's Host and Port; see package registry/address). Tests that pin an
// address pass &address.Resolver{IgnoreEnvironment: true}.
func WithAddressResolver(r AddressResolver) Option { return func(o *options) { o.resolver = r } }

// WithRetryBackoff sets the bounds of the jittered exponential backoff used by every
// retry loop: re-registration, watch re-arming, re-listing (default 100ms to 10s).
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithLazyConnect makes Open return as soon as the URL and options are checked,
// without waiting for the backend: the connection is made in the background, and
// Client.Health reports whether it is up. Use it where a process must start during
// an outage and answer from what it saved (package registry/cache's snapshot
// files); calls made before the backend answers wait within their context, and
// watches publish nothing until the first read (the cache then serves its
// snapshot file, marked Stale). Without it Open waits for the backend and fails
// with ErrUnavailable when none answers. ZooKeeper and etcd connect lazily with
// it; Consul and Nacos never wait in Open (their clients are HTTP); mem opens
// while its server is Cut, and the calls fail until Heal.
func WithLazyConnect() Option { return func(o *options) { o.cfg.Lazy = true } }

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

// AddressResolver decides the host and port to advertise for an instance whose
// program configured host and port (either may be empty or 0). Package
// registry/address provides the standard one (*address.Resolver), which follows
// Dubbo's precedence: REGKIT_REGISTER_HOST/PORT, then DUBBO_IP_TO_REGISTRY and
// DUBBO_PORT_TO_REGISTRY override what the program configured, each on its own.
type AddressResolver interface {
	// Advertise returns the address others should dial and where each half came
	// from. Advertised.Port may be 0 when nothing sets it (Register then fails
	// with an error naming Port).
	Advertise(host string, port int) (address.Advertised, error)
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
	d, ok := driver.Lookup(u.Scheme)
	if !ok {
		return nil, invalid("url", RedactURL(u), fmt.Sprintf("unknown scheme %q (forgotten import? registered: %v)", u.Scheme, Drivers()))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: open %s: %w", RedactURL(u), err)
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

// NewClient makes a Client over a driver connection that connect builds from the
// resolved options, as sql.OpenDB does over a connector: it is for backend packages,
// whose New constructors (etcd.New(cli, opts...)) wrap a native client with it; users
// call those. connect gets the driver.Config of opts (logger defaulted, the backend's
// typed options in Options) and must reject options it does not know before any I/O;
// its error is returned as is. The Client owns the connection and closes it.
func NewClient(connect func(driver.Config) (driver.Conn, error), opts ...Option) (*Client, error) {
	o := buildOptions(opts)
	conn, err := connect(o.cfg)
	if err != nil {
		return nil, err
	}
	return newClient(conn, o), nil
}

// RedactURL returns u as a string fit for error messages and logs: the password of
// the user info and the values of query parameters that carry secrets (token,
// password, secret, access tokens and keys; matched case-insensitively) are
// replaced by "xxxxx".
func RedactURL(u *url.URL) string { return driver.RedactURL(u) }

// ParseURL parses a backend URL. Unlike url.Parse it accepts a comma-separated host
// list whose hosts may lack ports or be bracketed IPv6 addresses
// ("etcd://h1:2379,h2,[::1]:2379/prefix"); the list is left in URL.Host for
// driver.Hosts to split. Errors match ErrInvalid.
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
	// url.Error's message quotes the raw URL: keep only its cause, and quote the
	// URL redacted.
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	return nil, &FieldError{Field: "url", Value: driver.RedactRawURL(rawURL), Reason: "malformed: " + cause.Error()}
}
