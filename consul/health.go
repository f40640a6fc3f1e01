package consul

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// ProbeInterval is how often a Conn asks its agent for the cluster's leader (GET
// /v1/status/leader, which needs no ACL; the agent asks one of its servers) while
// a watch runs or while the last probes failed, and how long it waits for the
// answer. Two failed probes in a row (no answer, or no leader) make Health report
// ErrUnavailable and break every watch of the Conn.
const ProbeInterval = time.Second

// StaleBound is the longest a watcher's view goes unmarked after the agent stops
// answering or the server it asks stops knowing a leader: two probes ProbeInterval
// apart, each waiting at most ProbeInterval; an answer of a blocking query saying
// that its server knows no leader (X-Consul-KnownLeader: false) breaks the watch at
// once. A Consul server notices that its leader is gone after its raft heartbeat
// timeout (performance.raft_multiplier × 1s: 5s with Consul's default multiplier,
// 1s with raft_multiplier = 1), which comes before it.
const StaleBound = 3 * time.Second

// errNoLeader is the probes' verdict when the agent answers but its server knows
// no leader.
var errNoLeader = errors.New("the cluster has no leader (the agent's server knows none)")

// health is the Conn's verdict on whether its agent answers with a leader, kept by
// a probe goroutine that runs while a blocking loop runs or the verdict is bad.
type health struct {
	mu      sync.Mutex
	err     error // nil: the agent answered with a leader (or was never probed)
	bad     int   // failed probes in a row
	changed broadcast.Signal
	users   int  // blocking loops running
	running bool // the probe goroutine runs
	nextID  uint64
	queries map[uint64]context.CancelCauseFunc // blocking queries in flight
}

// setHealth records the outcome of a probe (or of Open's check): a failure turns
// the verdict bad only when it is the second in a row or force is set; a bad verdict
// cancels every blocking query in flight with it as the cause. It starts the probe
// goroutine when the verdict is bad, so that its return is noticed.
func (c *Conn) setHealth(err error, force bool) {
	h := &c.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.bad = 0
		if h.err != nil {
			h.err = nil
			h.signal()
		}
		return
	}
	h.bad++
	if h.bad < 2 && !force {
		return
	}
	cause := fmt.Errorf("%w: %w", driver.ErrUnavailable, err) // what a cancelled blocking query ends with
	wasGood := h.err == nil
	h.err = fmt.Errorf("consul: %w", cause)
	if wasGood {
		h.signal()
		for _, cancel := range h.queries {
			cancel(cause)
		}
	}
	c.ensureProbe()
}

// signal closes the HealthChanged channel. Under h.mu.
func (h *health) signal() { h.changed.Notify() }

// ensureProbe starts the probe goroutine when it is needed and not running. Under
// health.mu.
func (c *Conn) ensureProbe() {
	h := &c.health
	if h.running || (h.users == 0 && h.err == nil) {
		return
	}
	h.running = c.spawn(c.probeLoop)
}

// probeLoop probes every ProbeInterval while a blocking loop runs or the verdict
// is bad, and until the Conn is closed.
func (c *Conn) probeLoop() {
	tick := time.NewTicker(ProbeInterval)
	defer tick.Stop()
	c.health.mu.Lock()
	now := c.health.err != nil // a bad verdict (a lazy Open's) is checked at once
	c.health.mu.Unlock()
	for {
		if !now {
			select {
			case <-c.life.Done():
				c.health.mu.Lock()
				c.health.running = false
				c.health.mu.Unlock()
				return
			case <-tick.C:
			}
		}
		now = false
		c.health.mu.Lock()
		if c.health.users == 0 && c.health.err == nil {
			c.health.running = false
			c.health.mu.Unlock()
			return
		}
		c.health.mu.Unlock()
		pctx, cancel := context.WithTimeout(c.life, ProbeInterval)
		err := c.leaderProbe(pctx)
		cancel()
		if c.life.Err() != nil {
			continue
		}
		c.setHealth(err, false)
	}
}

// leaderProbe asks the agent for the leader: nil when it names one.
func (c *Conn) leaderProbe(ctx context.Context) error {
	l, err := c.cli.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	switch {
	case err != nil:
		return fmt.Errorf("leader probe: %w", err)
	case l == "":
		return errNoLeader
	}
	return nil
}

// watching counts a blocking loop (the probe runs while one does) until the
// returned func is called.
func (c *Conn) watching() func() {
	h := &c.health
	h.mu.Lock()
	h.users++
	c.ensureProbe()
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		h.users--
		h.mu.Unlock()
	}
}

// track registers a blocking query's cancel: a bad verdict reached while it runs
// cancels it with the verdict as the cause. untrack with the returned func.
func (c *Conn) track(cancel context.CancelCauseFunc) func() {
	h := &c.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.queries == nil {
		h.queries = map[uint64]context.CancelCauseFunc{}
	}
	h.nextID++
	id := h.nextID
	h.queries[id] = cancel
	return func() {
		h.mu.Lock()
		delete(h.queries, id)
		h.mu.Unlock()
	}
}

var _ driver.Health = (*Conn)(nil)

// Health reports whether the agent answers and its server knows a leader: nil, or
// an error matching registry.ErrUnavailable. The verdict is the last probes' (see
// ProbeInterval): Open's check, then a probe every ProbeInterval while a watch runs
// or while the verdict is bad. With registry.WithLazyConnect it is bad until the
// first probe succeeds.
func (c *Conn) Health() error {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	return c.health.err
}

// HealthChanged returns a channel closed when Health's verdict changes (agent or
// leader lost, or back).
func (c *Conn) HealthChanged() <-chan struct{} {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	return c.health.changed.C()
}
