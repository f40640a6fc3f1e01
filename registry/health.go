package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// HealthPolicy is what a Registration does while its local health check fails.
type HealthPolicy int

const (
	// MarkUnhealthy (the default) keeps the instance registered and marks it
	// unhealthy on the backend in its native way: Consul fails the
	// registration's TTL check (the health endpoint reports it critical), etcd,
	// ZooKeeper's regkit layout and mem rewrite the record with Healthy false
	// (under the same lease or session).
	// Discovery then lists it with Healthy false and Snapshot.Healthy leaves it
	// out. A backend or layout that cannot express health
	// (driver.Capabilities.Health false, or its lease refuses with
	// ErrNotSupported: etcd's naming layout, ZooKeeper's curator and dubbo
	// layouts, and Nacos for now)
	// withdraws the instance instead, and logs that once.
	MarkUnhealthy HealthPolicy = iota
	// Withdraw deregisters the instance while the check fails and registers it
	// again once it passes; the Registration is Withdrawn meanwhile.
	Withdraw
)

// String returns the policy's name.
func (p HealthPolicy) String() string {
	switch p {
	case MarkUnhealthy:
		return "mark-unhealthy"
	case Withdraw:
		return "withdraw"
	}
	return "unknown"
}

// RegisterOption configures one Client.Register.
type RegisterOption func(*registerSpec)

type registerSpec struct {
	check     func(context.Context) error
	interval  time.Duration
	timeout   time.Duration
	failures  int
	policy    HealthPolicy
	checkSpec bool
}

// WithHealthCheck ties a local health check to the registration: check runs
// every interval (on the Client's clock, see WithClock), first right after
// Register returns, each run bounded by a timeout equal to interval (at most
// 10s; see WithHealthTimeout). A check that returns an error, or does not
// return within its timeout, fails. After one failure (see
// WithHealthFailures) the instance is marked unhealthy or withdrawn, as policy
// says; the first passing check restores it. Each run is on a goroutine of its
// own, which the Registration waits for until the run's timeout: a run that
// ignores its context and outlives its timeout fails at the timeout, no other
// run starts while it is still running (every tick meanwhile fails too), and
// Deregister and Close wait for it no longer than its timeout (the goroutine
// is then left to the check). interval must be positive and check non-nil, or
// Register fails with a *FieldError.
//
// Without a health check every live registration is healthy: on etcd and
// ZooKeeper Healthy is true for every listed instance, and Consul's and Nacos's
// own checks (TTL, heartbeats, consul.WithChecks) decide there.
func WithHealthCheck(check func(ctx context.Context) error, interval time.Duration, policy HealthPolicy) RegisterOption {
	return func(s *registerSpec) {
		s.check, s.interval, s.policy, s.checkSpec = check, interval, policy, true
	}
}

// WithHealthFailures sets how many consecutive failed checks make the instance
// unhealthy (default 1). It only matters with WithHealthCheck.
func WithHealthFailures(n int) RegisterOption { return func(s *registerSpec) { s.failures = n } }

// WithHealthTimeout bounds each run of the health check (default: the interval,
// at most 10s). It only matters with WithHealthCheck.
func WithHealthTimeout(d time.Duration) RegisterOption {
	return func(s *registerSpec) { s.timeout = d }
}

func buildRegisterSpec(opts []RegisterOption) (registerSpec, error) {
	var s registerSpec
	for _, o := range opts {
		o(&s)
	}
	if !s.checkSpec {
		return s, nil
	}
	switch {
	case s.check == nil:
		return s, invalid("WithHealthCheck", nil, "check is nil")
	case s.interval <= 0:
		return s, invalid("WithHealthCheck", s.interval.String(), "interval must be positive")
	case s.policy != MarkUnhealthy && s.policy != Withdraw:
		return s, invalid("WithHealthCheck", int(s.policy), "unknown policy")
	case s.failures < 0:
		return s, invalid("WithHealthFailures", s.failures, "must not be negative")
	case s.timeout < 0:
		return s, invalid("WithHealthTimeout", s.timeout.String(), "must not be negative")
	}
	if s.failures == 0 {
		s.failures = 1
	}
	if s.timeout == 0 {
		s.timeout = min(s.interval, 10*time.Second)
	}
	return s, nil
}

// runCheck runs the health check every interval and sends each change of the
// verdict to verdicts (1-buffered; only the newest verdict is kept). Each run is
// on a goroutine of its own, so that a check that does not return within its
// timeout (one that ignores its context) fails when the timeout ends; while it
// is still running no other run starts and every tick fails too. Once ctx is
// done runCheck waits for a run in progress until that run's timeout at most.
func (r *registration) runCheck(ctx context.Context, verdicts chan bool) {
	fails, healthy := 0, true
	var stuck chan error // a run past its timeout that has not returned yet
	for {
		var err error
		if stuck != nil {
			select {
			case <-stuck:
				stuck = nil
			default:
				err = fmt.Errorf("registry: health check still running after its timeout %v", r.spec.timeout)
			}
		}
		if stuck == nil {
			deadline := time.Now().Add(r.spec.timeout)
			cctx, cancel := context.WithDeadline(ctx, deadline)
			res := make(chan error, 1)
			go func() { res <- r.spec.check(cctx) }()
			select {
			case err = <-res:
			case <-cctx.Done():
				select {
				case err = <-res:
				default:
					if ctx.Err() != nil { // stopping: give the run until its deadline
						t := time.NewTimer(time.Until(deadline))
						select {
						case <-res:
						case <-t.C:
						}
						t.Stop()
						cancel()
						return
					}
					stuck = res
					err = fmt.Errorf("registry: health check did not return within its timeout %v: %w", r.spec.timeout, cctx.Err())
				}
			}
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
		} else {
			fails = 0
		}
		if v := fails < r.spec.failures; v != healthy {
			healthy = v
			if !v {
				r.c.log.warn("registry: health check failing", "instance", r.Instance().String(), "err", err)
			}
			select {
			case <-verdicts:
			default:
			}
			verdicts <- v
		}
		if r.c.sleep(ctx, r.spec.interval) != nil {
			return
		}
	}
}

// applyHealth brings the backend to the verdict healthy with lease (nil while
// withdrawn) and returns the lease to keep: the same one, a new one after a
// withdrawal ended, or nil after a withdrawal.
func (r *registration) applyHealth(ctx context.Context, lease driver.Lease, healthy bool) (driver.Lease, error) {
	if r.spec.policy == MarkUnhealthy && lease != nil {
		hs, ok := lease.(driver.HealthSetter)
		var err error
		if ok && r.c.conn.Capabilities().Health {
			hctx, cancel := context.WithTimeout(ctx, r.c.opt.reqTimeout)
			err = hs.SetHealthy(hctx, healthy)
			cancel()
			if err == nil || !errors.Is(err, ErrNotSupported) {
				if err == nil {
					r.setHealthy(healthy, Registered)
				}
				return lease, err
			}
		}
		r.c.log.warn("registry: this backend cannot mark an instance unhealthy; withdrawing it while its health check fails instead",
			"instance", r.Instance().String(), "err", err)
		r.spec.policy = Withdraw
	}
	if !healthy {
		if lease == nil {
			return nil, nil
		}
		dctx, cancel := context.WithTimeout(ctx, r.c.opt.reqTimeout)
		err := lease.Deregister(dctx)
		cancel()
		r.c.requestError(ctx, "deregister", err)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return lease, fmt.Errorf("registry: withdraw %s: %w", r.Instance(), err)
		}
		r.setHealthy(false, Withdrawn)
		return nil, nil
	}
	if lease != nil {
		r.setHealthy(true, Registered)
		return lease, nil
	}
	// Put back with the data of the last Update (recorded while withdrawn).
	r.mu.Lock()
	inst, gen := r.inst, r.gen
	r.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, r.c.opt.reqTimeout)
	nl, err := r.c.conn.Put(pctx, inst)
	cancel()
	if err != nil {
		r.c.requestError(ctx, "put", err)
		return nil, fmt.Errorf("registry: put %s back after its health check passed: %w", inst, err)
	}
	r.mu.Lock()
	r.putGen = gen
	r.mu.Unlock()
	r.setHealthy(true, Registered)
	return nl, nil
}

// setHealthy records the verdict applied and the state it leaves.
func (r *registration) setHealthy(healthy bool, st RegistrationState) {
	r.mu.Lock()
	r.healthy = healthy
	r.mu.Unlock()
	r.set(st, nil)
}
