// Package etcd is the etcd backend, scheme "etcd://", over go.etcd.io/etcd/client/v3.
//
//	etcd://h1:2379,h2:2379/prefix?dial_timeout=3s&lease_ttl=10s
//
// URL: a comma-separated endpoint list (default port 2379), an optional key prefix
// (default "/regkit", also for "/"; checked by driver.CleanRoot: absolute, no
// empty, "." or ".." segments, so "/a//b/" is an error naming prefix), dial_timeout (default 5s) and lease_ttl (default 10s, at least
// 2s). User name and password come from the URL's user info or
// registry.WithCredentials; TLS from registry.WithTLS.
//
// Layout: an instance is the JSON record {"id","service","host","port","weight",
// "zone","metadata"} at <prefix>/services/<service>/<id>, put with the client's
// registration lease; store key K is <prefix>/kv<K>; the sequence counter of parent
// P is <prefix>/seq<P>. Neither service names nor IDs contain '/', so the mapping is
// injective, and the registry (services/) and the store (kv/, seq/) never share a
// key. The key is the truth: List reads only keys of exactly that shape (nested
// keys are not instances) whose record names the key's service and ID and is a
// valid Instance; anything else under the service's prefix is skipped and logged
// once per key (earlier versions took service and ID from the value and listed any
// JSON, nested keys included).
//
// Liveness: all registrations of a connection share one lease kept alive by one
// keep-alive stream. When the lease is gone (expired during an outage, revoked, or
// the server restarted with fresh data) every registration's Lease reports Lost, and
// package registry puts them again under a newly granted lease. Store sessions each
// own a lease of their own; a session is Suspended while its keep-alives go
// unanswered for more than a third of its TTL, Reconnected when they resume, and Lost
// when the server says the lease is gone.
//
// Watches use etcd's watch with WithRequireLeader, which the client resumes from the
// last seen revision after a reconnect; a compacted or cancelled watch returns an
// error, and package registry re-lists, diffs and marks the view resynced.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
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
	if err := p.Done(); err != nil {
		return nil, err
	}
	st := settings{prefix: u.Path, ttl: ttl}
	if err := st.apply(cfg.Options); err != nil {
		return nil, err
	}
	prefix, ttl := st.prefix, st.ttl
	cc := clientv3.Config{
		Endpoints: hosts, DialTimeout: dial, Username: cfg.Username, Password: cfg.Password,
		Logger: zap.NewNop(), Context: context.Background(),
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
	}
	if cfg.TLS != nil {
		cc.TLS = cfg.TLS.Clone()
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, wrap("connect", strings.Join(hosts, ","), err)
	}
	// Check the endpoints answer (and the credentials work) before returning.
	sctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if _, err := cli.Get(sctx, prefix+"/", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, wrap("connect", strings.Join(hosts, ","), err)
	}
	return newConn(cli, prefix, ttl, cfg.Logger, true), nil
}

// New makes a Client over cli, a client the caller already holds and keeps owning:
// Close of the returned Client does not close cli. Of the options, WithLogger and
// this package's WithPrefix and WithLeaseTTL apply; TLS and credentials are cli's
// own. It does no I/O: a bad option is an error matching registry.ErrInvalid.
func New(cli *clientv3.Client, opts ...registry.Option) (*registry.Client, error) {
	return registry.NewClient(func(cfg driver.Config) (driver.Conn, error) {
		st := settings{ttl: DefaultLeaseTTL}
		if err := st.apply(cfg.Options); err != nil {
			return nil, err
		}
		return newConn(cli, st.prefix, st.ttl, cfg.Logger, false), nil
	}, opts...)
}

// settings are what the URL path and lease_ttl, or this package's options, set.
type settings struct {
	prefix string
	ttl    time.Duration
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
	return nil
}

// Conn is the etcd driver connection.
type Conn struct {
	cli       *clientv3.Client
	ownClient bool
	prefix    string
	ttl       time.Duration
	log       *slog.Logger
	skipped   *driver.SkipLog // entries under a service that are not instances, logged once

	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	grantMu sync.Mutex
	mu      sync.Mutex
	reg     *lease // the shared registration lease, nil until first Put or after loss
}

var (
	_ driver.Conn      = (*Conn)(nil)
	_ driver.StoreConn = (*Conn)(nil)
)

func newConn(cli *clientv3.Client, prefix string, ttl time.Duration, log *slog.Logger, own bool) *Conn {
	life, cancel := context.WithCancel(context.Background())
	return &Conn{cli: cli, ownClient: own, prefix: prefix, ttl: ttl, log: log, life: life, cancel: cancel,
		skipped: &driver.SkipLog{Logger: log}}
}

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

// Capabilities: everything.
func (c *Conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{Store: true, Ephemeral: true, Sequential: true, Sessions: true}
}

// Close stops every keep-alive, revokes the registration lease and closes the client
// (if the driver opened it).
func (c *Conn) Close() error {
	c.mu.Lock()
	reg := c.reg
	c.reg = nil
	c.mu.Unlock()
	if reg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, _ = c.cli.Revoke(ctx, reg.id)
		cancel()
	}
	c.cancel()
	c.wg.Wait()
	if c.ownClient {
		return c.cli.Close()
	}
	return nil
}

// wrap turns a client error into one matching the registry sentinels.
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
	return fmt.Errorf("etcd: %s %s: %w: %w", op, key, driver.ErrUnavailable, err)
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
