// Package etcd is the etcd backend, scheme "etcd://", over go.etcd.io/etcd/client/v3.
//
//	etcd://h1:2379,h2:2379/prefix?dial_timeout=3s&lease_ttl=10s
//
// URL: a comma-separated endpoint list (default port 2379), an optional key prefix
// (default "/regkit"), dial_timeout (default 5s) and lease_ttl (default 10s, at least
// 2s). User name and password come from the URL's user info or
// registry.WithCredentials; TLS from registry.WithTLS.
//
// Layout: an instance is the JSON of registry.Instance at
// <prefix>/services/<service>/<id>, put with the client's registration lease; store
// key K is <prefix>/kv<K>; the sequence counter of parent P is <prefix>/seq<P>.
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

	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/internal/owned"
	"github.com/regkit/regkit/registry"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func init() { registry.Register("etcd", driver{}) }

// Defaults.
const (
	DefaultPrefix      = "/regkit"
	DefaultDialTimeout = 5 * time.Second
	DefaultLeaseTTL    = 10 * time.Second
)

type driver struct{}

func (driver) Open(ctx context.Context, u *url.URL, cfg registry.Config) (registry.Conn, error) {
	hosts, err := registry.Hosts(u, 2379)
	if err != nil {
		return nil, err
	}
	p := registry.NewParams(u)
	dial := p.Duration("dial_timeout", DefaultDialTimeout)
	ttl := p.Duration("lease_ttl", DefaultLeaseTTL)
	if err := p.Done(); err != nil {
		return nil, err
	}
	if ttl < 2*time.Second {
		return nil, &registry.FieldError{Field: "lease_ttl", Value: ttl.String(), Reason: "must be at least 2s"}
	}
	prefix := strings.TrimSuffix(u.Path, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
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

// New wraps an existing client; the returned registry.Client does not close cli.
// prefix "" means DefaultPrefix, ttl 0 DefaultLeaseTTL.
func New(cli *clientv3.Client, prefix string, ttl time.Duration, opts ...registry.Option) *registry.Client {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return registry.NewClient(newConn(cli, strings.TrimSuffix(prefix, "/"), ttl, slog.Default(), false), opts...)
}

// Conn is the etcd driver connection.
type Conn struct {
	cli       *clientv3.Client
	ownClient bool
	prefix    string
	ttl       time.Duration
	log       *slog.Logger

	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	grantMu sync.Mutex
	mu      sync.Mutex
	reg     *lease // the shared registration lease, nil until first Put or after loss

	puts   inflight.Set // puts still running, per key (for Remove)
	writes owned.Group  // their goroutines
}

var (
	_ registry.Conn      = (*Conn)(nil)
	_ registry.StoreConn = (*Conn)(nil)
)

func newConn(cli *clientv3.Client, prefix string, ttl time.Duration, log *slog.Logger, own bool) *Conn {
	life, cancel := context.WithCancel(context.Background())
	return &Conn{cli: cli, ownClient: own, prefix: prefix, ttl: ttl, log: log, life: life, cancel: cancel}
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
func (c *Conn) Capabilities() registry.Capabilities {
	return registry.Capabilities{Store: true, Ephemeral: true, Sequential: true, Sessions: true}
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
	c.writes.Wait()
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
		return fmt.Errorf("etcd: %s %s: %w: %w", op, key, registry.ErrPermission, err)
	}
	return fmt.Errorf("etcd: %s %s: %w: %w", op, key, registry.ErrUnavailable, err)
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
