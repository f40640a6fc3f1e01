package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/driver"
	"github.com/regkit/regkit/registry/internal/hooks"
	"github.com/regkit/regkit/registry/internal/retry"
)

// Registrar registers instances.
type Registrar interface {
	// Register puts inst on the backend and keeps it there; opts add a local
	// health check (WithHealthCheck). See Client.Register.
	Register(ctx context.Context, inst Instance, opts ...RegisterOption) (Registration, error)
}

// Discovery finds instances.
type Discovery interface {
	// Instances returns the current instances of service, sorted by ID.
	Instances(ctx context.Context, service string) ([]Instance, error)
	// Watch follows service until ctx is done or the Watcher is closed.
	Watch(ctx context.Context, service string) (Watcher, error)
}

// Client is a connection to one backend: registrar, discovery and coordination
// store. It is safe for concurrent use. Close releases everything it started.
type Client struct {
	conn  driver.Conn
	opt   options
	log   logger
	clock clockwork.Clock
	met   *metrics // see metrics.go

	life   context.Context // cancelled by Close
	cancel context.CancelFunc
	// giveUp is cancelled when a Shutdown's ctx ends: every backend call made
	// while closing (deregistrations, removals, session closes) is abandoned.
	giveUp     context.Context
	giveUpStop context.CancelFunc
	wg         sync.WaitGroup // goroutines the Client owns
	live       atomic.Int64   // of which not finished yet (see hooks.Live)
	ops        sync.WaitGroup // calls in flight that use conn (Register, NewSession)
	closer     closeOnce

	mu       sync.Mutex
	closed   bool
	watches  map[string]*serviceWatch // shared loops, one per service
	regs     map[*registration]struct{}
	claims   map[instKey]*claim // users and removals per instance; see cleanup.go
	sessions map[*Session]struct{}
	store    *Store

	intern interner // metadata maps shared between the instances of snapshots
}

var (
	_ Registrar = (*Client)(nil)
	_ Discovery = (*Client)(nil)
)

func newClient(conn driver.Conn, o options) *Client {
	life, cancel := context.WithCancel(context.Background())
	giveUp, giveUpStop := context.WithCancel(context.Background())
	c := &Client{
		conn: conn, opt: o, log: logger{o.cfg.Logger}, clock: o.clock,
		life: life, cancel: cancel, giveUp: giveUp, giveUpStop: giveUpStop,
		watches:  map[string]*serviceWatch{},
		regs:     map[*registration]struct{}{},
		sessions: map[*Session]struct{}{},
	}
	c.store = &Store{c: c}
	c.met = newMetrics(c, o.meter)
	return c
}

// Conn returns the driver connection, for backend-specific needs and tests (assert
// it to the backend's own type, such as *etcd.Conn).
func (c *Client) Conn() driver.Conn { return c.conn }

// Capabilities says what a backend can do (Store, Ephemeral, Sequential, Sessions),
// so that callers can tell "cannot" from "failed"; see driver.Capabilities.
type Capabilities = driver.Capabilities

// Capabilities reports what the backend offers.
func (c *Client) Capabilities() Capabilities { return c.conn.Capabilities() }

// Instances lists service from the backend, sorted by ID. While a Watch of the
// service is running in this Client, it answers from that watch's last snapshot
// without a backend call (for a cache that also serves during outages, see package
// registry/cache). The slice and its instances are the caller's own copy.
func (c *Client) Instances(ctx context.Context, service string) ([]Instance, error) {
	if err := ValidServiceName(service); err != nil {
		return nil, err
	}
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: instances of %s: %w", service, err)
	}
	c.mu.Lock()
	sw := c.watches[service]
	if sw != nil && sw.userRefs == 0 {
		sw = nil // only a registration guard follows it: read the backend
	}
	c.mu.Unlock()
	if sw != nil {
		if s := sw.current(); s != nil && !s.Stale && !sw.guard.lagging(s.Instances) && sw.current() == s {
			return cloneInstances(s.Instances), nil
		}
	}
	l, err := c.conn.List(ctx, service)
	if err != nil {
		c.requestError(ctx, "list", err)
		return nil, err
	}
	driver.SortInstances(l.Instances)
	return l.Instances, nil
}

// Health reports whether the Client currently reaches its backend: nil when it
// does, or an error matching ErrUnavailable saying why not (a connection opened
// with WithLazyConnect that has not connected yet, a lost connection, a member
// without a leader). Backends that cannot tell report nil. After Close it is
// ErrClosed.
func (c *Client) Health() error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	if h, ok := c.conn.(driver.Health); ok {
		return h.Health()
	}
	return nil
}

func (c *Client) checkOpen() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	return nil
}

// DefaultShutdownTimeout is the total time Close gives Shutdown (10s): well
// inside Kubernetes' default grace period of 30s, whatever the number of
// registrations, since they are deregistered concurrently.
const DefaultShutdownTimeout = 10 * time.Second

// Shutdown closes the Client gracefully within ctx's deadline. It deregisters
// every open Registration concurrently (each retrying with backoff while the
// backend does not answer), closes every Session, stops every watch, tree watch
// and persistent node, waits for the calls in flight that use the connection (a
// Register, a Registration's Deregister) and for every goroutine the Client
// started, then closes the backend connection.
//
// When ctx ends first, Shutdown abandons the backend calls that remain: it still
// stops every goroutine and closes the connection before it returns (within
// about one request timeout's worth of local work, not another round of backend
// calls), and returns an error wrapping ctx.Err() that names every instance not
// deregistered; those stay on the backend until its own expiry (etcd lease TTL,
// ZooKeeper session timeout, Consul check TTL plus deregister_after, Nacos
// heartbeat timeout) removes them. Other failures (a session close, the
// connection's close, a refused delete) are joined into the error.
//
// Shutdown and Close share one closing: concurrent and later calls of either
// wait for the first and return its result.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.closer.do(func() error { return c.shutdown(ctx) })
}

// Close is Shutdown with a total budget of DefaultShutdownTimeout (10s).
// Concurrent and later calls of Close or Shutdown wait for the first and return
// its result.
func (c *Client) Close() error {
	return c.closer.do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
		defer cancel()
		return c.shutdown(ctx)
	})
}

func (c *Client) shutdown(ctx context.Context) error {
	stop := context.AfterFunc(ctx, c.giveUpStop)
	defer stop()
	c.mu.Lock()
	c.closed = true
	for _, sw := range c.watches {
		if sw.linger != nil { // the loop ends with the Client below
			sw.linger.Stop()
			sw.linger = nil
		}
	}
	regs := make([]*registration, 0, len(c.regs))
	for r := range c.regs {
		regs = append(regs, r)
	}
	c.mu.Unlock()
	// Concurrently, under the one deadline. A registration already closing is
	// still in regs: its closeOnce waits for it, and its backend calls end with
	// ctx too (see closingCtx).
	errs := make([]error, len(regs))
	var wg sync.WaitGroup
	for i, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.closer.do(func() error { return r.deregister(ctx) })
		}()
	}
	wg.Wait()
	var left []string
	for i, err := range errs {
		if err != nil && !errors.Is(err, ErrClosed) {
			left = append(left, regs[i].Instance().String())
		} else {
			errs[i] = nil
		}
	}
	c.cancel()   // ends watch loops, persistent nodes, tree watches, Register retries
	c.ops.Wait() // a Register or NewSession in flight undoes its work and returns
	c.wg.Wait()  // persistent nodes have closed their own sessions
	c.mu.Lock()
	sessions := make([]*Session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	serrs := make([]error, len(sessions))
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serrs[i] = s.closer.do(func() error { return s.close(ctx) })
		}()
	}
	wg.Wait()
	for _, err := range serrs {
		if err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	closeConn := c.conn.Close
	if cc, ok := c.conn.(driver.ContextCloser); ok {
		closeConn = func() error { return cc.CloseContext(ctx) }
	}
	if err := closeConn(); err != nil {
		errs = append(errs, err)
	}
	c.met.close()
	if len(left) > 0 && ctx.Err() != nil {
		slices.Sort(left)
		errs = append([]error{fmt.Errorf("registry: shutdown: %w: not deregistered, left to the backend's expiry: %s",
			ctx.Err(), strings.Join(left, ", "))}, errs...)
	}
	return errors.Join(errs...)
}

// closingCtx returns ctx, also cancelled when a Shutdown gives up (its ctx
// ended), for the backend calls of closing: a deregistration, a removal, a
// session's close.
func (c *Client) closingCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.giveUp, cancel)
	return ctx, func() { stop(); cancel() }
}

// closingTimeout is closingCtx over a fresh context bounded by d.
func (c *Client) closingTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	ctx, cancel2 := c.closingCtx(ctx)
	return ctx, func() { cancel2(); cancel() }
}

// beginOp registers a call that uses the connection, so that Close waits for it
// before closing the connection; false once Close has begun.
func (c *Client) beginOp() (done func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false
	}
	c.ops.Add(1)
	return c.ops.Done, true
}

// withLife returns ctx, also cancelled when the Client closes.
func (c *Client) withLife(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.life, cancel)
	return ctx, func() { stop(); cancel() }
}

// closeOnce gives every handle the same Close: the first call closes, concurrent
// and later calls wait for it and return its result.
type closeOnce struct {
	once sync.Once
	err  error
}

func (o *closeOnce) do(f func() error) error {
	o.once.Do(func() { o.err = f() })
	return o.err
}

// closeTimeout bounds the backend calls of the Close methods that take no context
// (Registration.Close, Session.Close, PersistentNode.Close).
const closeTimeout = 10 * time.Second

// goOwned starts f on a goroutine that Close waits for; joins (closing the
// handle's done channel) run after f, before the Client's own join.
func (c *Client) goOwned(f func(), joins ...func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	c.goTracked(f, append(joins, c.wg.Done)...)
	return true
}

// goTracked runs f on a new goroutine counted in c.live until f has returned,
// then calls joins in order (a WaitGroup's Done, closing a done channel): whoever
// waits on a join sees the goroutine uncounted already.
func (c *Client) goTracked(f func(), joins ...func()) {
	c.live.Add(1)
	go func() {
		defer func() {
			for _, j := range joins {
				j()
			}
		}()
		defer c.live.Add(-1)
		f()
		hooks.Delay()
	}()
}

func init() { hooks.Live = func(c any) int64 { return c.(*Client).live.Load() } }

// newBackoff returns the jittered exponential backoff that never gives up.
func (c *Client) newBackoff() *backoff.ExponentialBackOff {
	return retry.New(c.opt.backoffMin, c.opt.backoffMax)
}

// newRetry returns the backoff of a long-lived operation (see retry.Backoff).
func (c *Client) newRetry() *retry.Backoff {
	return retry.NewBackoff(c.clock, c.opt.backoffMin, c.opt.backoffMax)
}

// sleep waits d on the Client's clock, or until ctx is done.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	return retry.Sleep(ctx, c.clock, d)
}

// logger is the Client's log: warn for what needs an operator's eye (a loss, an
// outage), info for what only tells that it has passed (a reconnection, a
// re-registration); the default logger (WithLogger) shows warnings only.
type logger struct {
	l interface {
		Warn(string, ...any)
		Info(string, ...any)
	}
}

func (l logger) warn(msg string, args ...any) { l.l.Warn(msg, args...) }
func (l logger) info(msg string, args ...any) { l.l.Info(msg, args...) }

// cloneInstances returns a deep copy of list (nil stays nil).
func cloneInstances(list []Instance) []Instance {
	if list == nil {
		return nil
	}
	out := make([]Instance, len(list))
	for i, in := range list {
		out[i] = in.Clone()
	}
	return out
}

func (c *Client) prepare(inst Instance) (Instance, error) {
	if c.opt.resolver != nil {
		a, err := c.opt.resolver.Advertise(inst.Host, inst.Port)
		if err != nil {
			return inst, fmt.Errorf("registry: resolve the address to register: %w", err)
		}
		if a.Host != inst.Host || a.Port != inst.Port {
			// Once per Register: what is advertised differs from what the program
			// gave, so say why (a NodePort, a node IP, a NAT mapping).
			c.opt.cfg.Logger.Info("registry: advertising an address other than the configured one",
				"service", inst.Service, "configured", net.JoinHostPort(inst.Host, strconv.Itoa(inst.Port)),
				"host", a.Host, "host_from", a.HostFrom, "port", a.Port, "port_from", a.PortFrom)
		}
		inst.Host, inst.Port = a.Host, a.Port
	}
	if inst.Port == 0 {
		return inst, invalid("Port", 0, "port is not set: give Instance.Port, or set "+
			address.EnvPort+" or "+address.EnvDubboPort+" in the environment")
	}
	if d, ok := c.conn.(driver.IDDefaulter); ok && inst.ID == "" && inst.Host != "" {
		inst.ID = d.DefaultID(inst)
	}
	inst = withDefaults(inst)
	if err := inst.Validate(); err != nil {
		return inst, err
	}
	return inst, c.checkLimits(inst)
}

// checkLimits checks inst against the backend's declared limits and its
// InstanceChecker, without I/O.
func (c *Client) checkLimits(inst Instance) error {
	if err := c.conn.Capabilities().Limits.CheckInstance(inst); err != nil {
		return err
	}
	if ck, ok := c.conn.(driver.InstanceChecker); ok {
		return ck.CheckInstance(inst)
	}
	return nil
}
