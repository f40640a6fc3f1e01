package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/driver"
)

// Registrar registers instances.
type Registrar interface {
	Register(ctx context.Context, inst Instance) (Registration, error)
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
	conn driver.Conn
	opt  options
	log  logger

	life   context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	watches map[string]*serviceWatch // shared loops, one per service
	regs    map[*registration]struct{}
	claims  map[instKey]*claim // users and removals per instance; see cleanup.go
	store   *Store
}

var (
	_ Registrar = (*Client)(nil)
	_ Discovery = (*Client)(nil)
)

func newClient(conn driver.Conn, o options) *Client {
	life, cancel := context.WithCancel(context.Background())
	c := &Client{
		conn: conn, opt: o, log: logger{o.cfg.Logger},
		life: life, cancel: cancel,
		watches: map[string]*serviceWatch{},
		regs:    map[*registration]struct{}{},
	}
	c.store = &Store{c: c}
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
// registry/cache).
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
		if s := sw.current(); s != nil && !s.Stale {
			return s.Instances, nil
		}
	}
	l, err := c.conn.List(ctx, service)
	if err != nil {
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

// Close deregisters every Registration, stops every watch and session loop it
// started, waits for their goroutines and closes the backend connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	regs := make([]*registration, 0, len(c.regs))
	for r := range c.regs {
		regs = append(regs, r)
	}
	c.mu.Unlock()
	var errs []error
	for _, r := range regs {
		if err := r.Close(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	c.cancel()
	c.wg.Wait()
	if err := c.conn.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// goOwned starts f on a goroutine that Close waits for.
func (c *Client) goOwned(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// newBackoff returns the jittered exponential backoff that never gives up.
func (c *Client) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = c.opt.backoffMin
	b.MaxInterval = c.opt.backoffMax
	b.MaxElapsedTime = 0
	b.RandomizationFactor = 0.5
	b.Reset()
	return b
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type logger struct {
	l interface{ Warn(string, ...any) }
}

func (l logger) warn(msg string, args ...any) { l.l.Warn(msg, args...) }

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
