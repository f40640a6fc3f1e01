package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
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
	conn Conn
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

func newClient(conn Conn, o options) *Client {
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

// Conn returns the driver connection, for backend-specific needs and tests.
func (c *Client) Conn() Conn { return c.conn }

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
	SortInstances(l.Instances)
	return l.Instances, nil
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
	if (inst.Host == "" || inst.Port == 0) && c.opt.resolver != nil {
		h, p, err := c.opt.resolver.Resolve()
		if err != nil && inst.Host == "" {
			return inst, fmt.Errorf("registry: resolve the address to register: %w", err)
		}
		if inst.Host == "" {
			inst.Host = h
		}
		if inst.Port == 0 && err == nil {
			inst.Port = p
		}
	}
	inst = inst.withDefaults()
	return inst, inst.Validate()
}
