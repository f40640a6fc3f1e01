package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// RegistrationState is where a Registration stands.
type RegistrationState int

// Registration states.
const (
	// Registered: the instance is on the backend and kept alive.
	Registered RegistrationState = iota + 1
	// Reregistering: the backend dropped the instance (session lost, lease expired,
	// agent restarted); it is being put again with backoff, for as long as it takes.
	Reregistering
	// Deregistered: Close or Deregister was called. Terminal.
	Deregistered
	// Withdrawn: the registration's health check fails and its policy is
	// Withdraw (or the backend cannot mark it unhealthy): the instance is off
	// the backend until the check passes, then Registered again.
	Withdrawn
)

// String returns the state's name.
func (s RegistrationState) String() string {
	switch s {
	case Registered:
		return "registered"
	case Reregistering:
		return "re-registering"
	case Deregistered:
		return "deregistered"
	case Withdrawn:
		return "withdrawn"
	}
	return "unknown"
}

// Registration is one registered instance that keeps itself registered: it
// re-registers by itself, with jittered backoff and without end, whenever the backend
// drops it, until Deregister or Close.
type Registration interface {
	// Instance returns the instance as registered (ID, Host, Port, Weight filled).
	Instance() Instance
	// State returns the current state.
	State() RegistrationState
	// Changed returns a channel closed at the next state change after the call.
	// Take it before reading State, so that no change falls between the two.
	Changed() <-chan struct{}
	// Err returns the last error met while re-registering or applying a health
	// verdict, or nil.
	Err() error
	// Healthy reports the verdict of the registration's health check as applied
	// on the backend (see WithHealthCheck): false while the instance is marked
	// unhealthy or withdrawn. Always true without a check.
	Healthy() bool
	// Update changes the registered instance in place: weight, metadata, zone,
	// address. inst must have the registered Service and ID (an empty ID is
	// "Host:Port" as in Register), else a FieldError naming the field; the rest is
	// validated and defaulted as by Register (address resolver, size limits),
	// before any I/O. Watchers see the old data, then the new, never the instance
	// missing. While Reregistering, Update only records the data, which the re-put
	// carries; while Withdrawn (see WithHealthCheck), likewise the put when the
	// check passes; every later re-put carries the latest data too. An instance
	// marked unhealthy stays marked unhealthy through Update. Instance returns
	// the updated instance once Update returned nil. Update after Deregister
	// returns ErrClosed.
	Update(ctx context.Context, inst Instance) error
	// Deregister removes the instance from the backend and stops keeping it alive,
	// waiting for its goroutines. Calls after the first wait for it to finish and
	// return ErrClosed.
	Deregister(ctx context.Context) error
	// Close is Deregister with a 10-second timeout, in the shape every handle
	// closes in (see the package doc): concurrent and later calls wait for the
	// first and return its result.
	Close() error
}

type registration struct {
	c           *Client
	service, id string // of inst, which Update never changes

	// inst is the instance as last registered or updated (under mu).
	inst Instance
	spec registerSpec // read-only, but policy, which only the keeper uses

	mu      sync.Mutex
	healthy bool
	state   RegistrationState
	changed broadcast.Signal
	lease   driver.Lease
	lastErr error
	// abandoned: the keeper gave up a re-put when it was stopped; Deregister
	// removes what that put may still leave.
	abandoned bool

	// gen counts Updates; putGen is the gen of the data on the backend. Every
	// write of the instance is made by the keeper (Update sends it the write), so
	// the driver never puts one instance twice at once.
	gen, putGen int
	updates     chan update

	cancel context.CancelFunc // stops the keeper
	done   chan struct{}      // closed when the keeper goroutine has ended
	closer closeOnce          // the one deregistration

	// The guard (guard.go): sw is the service's shared loop (nil when the
	// driver guards registrations itself); suspect is signalled when a read
	// started after the last put did not show the instance.
	sw      *serviceWatch
	suspect chan struct{}
	gs      guardState // under sw.guard.mu
}

// Register validates inst, fills an empty Host/Port through the address resolver,
// an empty ID with "Host:Port" and a zero Weight with DefaultWeight, and puts it on
// the backend, retrying with backoff until the first put succeeds or ctx is done.
// From then on the Registration keeps it there (see Registration). When ctx ends
// before the first put succeeded, nothing is left behind. A Register in flight
// when the Client closes returns ErrClosed, and the Client's Close waits for it.
//
// opts add a local health check (WithHealthCheck); a bad option fails Register
// with a *FieldError before any I/O.
func (c *Client) Register(ctx context.Context, inst Instance, opts ...RegisterOption) (Registration, error) {
	spec, err := buildRegisterSpec(opts)
	if err != nil {
		return nil, err
	}
	inst, err = c.prepare(inst)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: register %s: %w", inst, err)
	}
	opDone, ok := c.beginOp()
	if !ok {
		return nil, ErrClosed
	}
	defer opDone()
	if err := c.acquire(ctx, inst); err != nil {
		return nil, err
	}
	// The guard's loop is started before the put, so that every read stamped
	// after gen (taken as soon as the put returns) reflects it.
	sw, err := c.guardWatch(inst.Service)
	if err != nil {
		c.release(ctx, inst, false)
		return nil, err
	}
	pctx, pcancel := c.withLife(ctx)
	lease, err := c.putRetry(pctx, inst, nil)
	gen := stamp()
	pcancel()
	if err != nil {
		c.unguard(sw)
		// A put may have been applied after its ctx ended: remove what no
		// Registration will own (not after a refusal: nothing was written).
		refused := permanent(err) || errors.Is(err, ErrPermission) || errors.Is(err, ErrExists)
		dctx, cancel := c.closingTimeout(cleanupTimeout)
		defer cancel()
		c.release(dctx, inst, !refused)
		if c.life.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("registry: register %s: %w", inst, ErrClosed)
		}
		return nil, err
	}
	kctx, kcancel := context.WithCancel(c.life)
	r := &registration{c: c, service: inst.Service, id: inst.ID, inst: inst, spec: spec, healthy: true, state: Registered, lease: lease,
		cancel: kcancel, done: make(chan struct{}), updates: make(chan update), suspect: make(chan struct{}, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		kcancel()
		c.unguard(sw)
		// The Client's Close waits for this call (an op) before closing the
		// connection, so the delete still reaches the backend.
		dctx, cancel := c.closingTimeout(closeTimeout)
		defer cancel()
		_ = lease.Deregister(dctx)
		c.release(dctx, inst, false)
		return nil, ErrClosed
	}
	if sw != nil {
		r.sw = sw
		sw.guard.add(r, gen)
	}
	c.regs[r] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	c.goTracked(func() { r.keep(kctx) }, func() { close(r.done) }, c.wg.Done)
	c.registrationState(inst, 0, Registered)
	return r, nil
}

// putRetry puts inst until it succeeds, ctx is done or stop is closed. Bad input
// and unsupported calls fail at once; so does a refused permission on the first put
// (onErr nil), where the caller is there to fix it. A re-put after a lost lease
// retries permission errors too, reporting them: credentials may be rotated back.
func (c *Client) putRetry(ctx context.Context, inst Instance, onErr func(error)) (driver.Lease, error) {
	return c.putRetryLatest(ctx, func() Instance { return inst }, onErr)
}

// putRetryLatest is putRetry putting latest() on every attempt, so that a re-put
// carries the data of the last Update.
func (c *Client) putRetryLatest(ctx context.Context, latest func() Instance, onErr func(error)) (driver.Lease, error) {
	b := c.newBackoff()
	for {
		inst := latest()
		pctx, cancel := context.WithTimeout(ctx, c.opt.reqTimeout)
		lease, err := c.conn.Put(pctx, inst)
		cancel()
		if err == nil {
			return lease, nil
		}
		c.requestError(ctx, "put", err)
		if permanent(err) || (onErr == nil && (errors.Is(err, ErrPermission) || errors.Is(err, ErrExists))) {
			return nil, err
		}
		if onErr != nil {
			onErr(err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("registry: register %s: %w (last error: %w)", inst, ctx.Err(), err)
		}
		if serr := c.sleep(ctx, b.NextBackOff()); serr != nil {
			return nil, fmt.Errorf("registry: register %s: %w (last error: %w)", inst, serr, err)
		}
	}
}

// permanent reports whether err is an answer no retry of the same put can change:
// bad input (including a server refusing it as too large or malformed, which
// drivers report as ErrInvalid), an unsupported call, a closed connection.
// ErrPermission is permanent for the first put only (see putRetry).
func permanent(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotSupported) || errors.Is(err, ErrClosed)
}

// keep waits for the lease to be lost, or for the instance to vanish from the
// backend while the lease lives (the guard, guard.go), and puts the instance again, forever, with the
// data of the last Update. It makes every write of the instance: Updates (sent
// through r.updates), re-puts, and, with a health check, the check's verdicts
// (marking the instance unhealthy, or withdrawing it), retrying with backoff
// while the backend does not answer. The verdict outlives the writes: a re-put
// after a loss, or an Update, of an instance marked unhealthy marks it unhealthy
// again; an Update while withdrawn only records the data, which the put that
// ends the withdrawal carries.
func (r *registration) keep(ctx context.Context) {
	defer r.stopGuard()
	var verdicts chan bool
	if r.spec.check != nil {
		verdicts = make(chan bool, 1)
		checked := make(chan struct{})
		r.c.goTracked(func() { r.runCheck(ctx, verdicts) }, func() { close(checked) })
		defer func() { <-checked }() // keep only returns once ctx is done
	}
	// want is the check's verdict, applied what the backend shows (false: marked
	// unhealthy, or withdrawn with r.lease nil); resync: a write since may have
	// reset the backend's health, so the verdict is applied again.
	want, applied, resync := true, true, false
	var retry <-chan time.Time // a failed write is tried again
	hb := r.c.newBackoff()
	for {
		r.mu.Lock()
		lease, inst, gen, stale := r.lease, r.inst, r.gen, r.gen != r.putGen
		r.mu.Unlock()
		// An Update came while re-registering, after the re-put read the data (not
		// while withdrawn: the put back carries it).
		if stale && lease != nil && retry == nil {
			if err := r.apply(ctx, lease, inst, gen, applied); err != nil {
				if ctx.Err() != nil {
					r.markAbandoned()
					return
				}
				r.set(Reregistering, err)
				retry = r.c.clock.After(hb.NextBackOff())
			} else {
				r.set(Registered, nil)
				resync = resync || !applied
			}
			continue
		}
		if retry == nil && (want != applied || resync) {
			if !r.applyVerdict(ctx, lease, want) {
				if ctx.Err() != nil {
					// A write cut off mid-flight may still land: Deregister
					// removes what it may leave (see release).
					r.markAbandoned()
					return
				}
				retry = r.c.clock.After(hb.NextBackOff())
				continue
			}
			applied, resync = want, false
			continue
		}
		var lost <-chan struct{}
		if lease != nil { // nil while withdrawn
			lost = lease.Lost()
		}
		var err error
		select {
		case <-ctx.Done():
			return
		case want = <-verdicts:
			hb.Reset()
			retry = nil
		case <-retry:
			retry = nil
		case u := <-r.updates:
			if lease == nil { // withdrawn since Update looked: recorded, the put back carries it
				u.reply <- nil
				continue
			}
			err := r.apply(ctx, lease, u.inst, u.gen, applied)
			u.reply <- err
			if err == nil && !applied {
				resync = true // keep it marked unhealthy
			}
			continue
		case <-lost:
			err = lease.Err()
		case <-r.suspect:
			if lease == nil || !r.goneForSure(ctx) {
				continue
			}
			err = fmt.Errorf("registry: %s was deleted from the backend by someone else while its lease lived: %w", r.Instance(), ErrNotFound)
		}
		if err == nil {
			continue
		}
		r.c.log.warn("registry: registration lost, registering again", "instance", r.Instance().String(), "err", err)
		lease.Abandon()
		retry = nil
		if !want && r.spec.policy == Withdraw {
			// The check fails and the policy withdraws: stay off the backend; the
			// put when the check passes carries the latest data.
			r.mu.Lock()
			r.lease = nil
			r.mu.Unlock()
			r.setHealthy(false, Withdrawn)
			applied, resync = false, false
			continue
		}
		r.set(Reregistering, err)
		if r.sw != nil {
			r.sw.guard.disarm(r) // the view lags behind the put
		}
		var put int // the gen of the data the successful put carried
		nl, err := r.c.putRetryLatest(ctx, func() Instance {
			r.mu.Lock()
			defer r.mu.Unlock()
			put = r.gen
			return r.inst
		}, func(err error) { r.set(Reregistering, err) })
		putAt := stamp()
		if err != nil { // stopped; the abandoned put may still be applied
			r.markAbandoned()
			return
		}
		r.mu.Lock()
		r.lease, r.putGen = nl, put
		r.mu.Unlock()
		if r.sw != nil {
			r.sw.guard.arm(r, putAt)
		}
		r.set(Registered, nil)
		// A fresh put is healthy: an instance marked unhealthy is marked again
		// (the loop applies want).
		applied, resync = true, false
	}
}

// applyVerdict applies the check's verdict healthy to the backend with lease
// (nil while withdrawn) and records the lease to keep. It reports whether that
// worked; the error is kept for Err.
func (r *registration) applyVerdict(ctx context.Context, lease driver.Lease, healthy bool) bool {
	nl, err := r.applyHealth(ctx, lease, healthy)
	at := stamp()
	if err == nil && r.sw != nil {
		if nl == nil {
			r.sw.guard.disarm(r) // withdrawn: absent on purpose
		} else {
			r.sw.guard.arm(r, at) // (back) on the backend
		}
	}
	r.mu.Lock()
	r.lease = nl
	if err != nil {
		r.lastErr = err
	}
	r.mu.Unlock()
	return err == nil
}

// markAbandoned records that the keeper stopped with a write in flight, which
// may still land: Deregister removes what it may leave (see release).
func (r *registration) markAbandoned() {
	r.mu.Lock()
	r.abandoned = true
	r.mu.Unlock()
}

// update is one Update's write, made by the keeper.
type update struct {
	inst  Instance
	gen   int
	reply chan error
}

// apply writes inst (of gen) in place over lease and records the lease that keeps
// it. healthy is what the backend shows of the instance: an instance marked
// unhealthy is written with Healthy false, which a backend that stores the flag
// keeps (the keeper marks it unhealthy again through the lease anyway, since a
// write may reset the backend's own health state).
func (r *registration) apply(ctx context.Context, lease driver.Lease, inst Instance, gen int, healthy bool) error {
	if !healthy {
		inst = inst.Clone()
		inst.Healthy = false
	}
	nl, err := r.c.write(ctx, lease, inst)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.lease, r.putGen = nl, gen
	r.mu.Unlock()
	return nil
}

// write changes the instance lease keeps in place (driver.Updater, else Put on
// the same Conn, abandoning lease for the one Put returns).
func (c *Client) write(ctx context.Context, lease driver.Lease, inst Instance) (driver.Lease, error) {
	wctx, cancel := context.WithTimeout(ctx, c.opt.reqTimeout)
	defer cancel()
	var nl driver.Lease
	var err error
	if u, ok := c.conn.(driver.Updater); ok {
		nl, err = u.Update(wctx, lease, inst)
	} else if nl, err = c.conn.Put(wctx, inst); err == nil && nl != lease {
		lease.Abandon()
	}
	if err != nil {
		c.requestError(ctx, "put", err)
		return nil, err
	}
	return nl, nil
}

func (r *registration) Update(ctx context.Context, inst Instance) error {
	cur := r.Instance()
	if inst.Service != cur.Service {
		return invalid("Service", inst.Service, "Update keeps the registered service "+cur.Service)
	}
	inst, err := r.c.prepare(inst)
	if err != nil {
		return err
	}
	if inst.ID != cur.ID {
		return invalid("ID", inst.ID, "Update keeps the registered ID "+cur.ID)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("registry: update %s: %w", inst, err)
	}
	r.mu.Lock()
	if r.state == Deregistered {
		r.mu.Unlock()
		return ErrClosed
	}
	old, oldGen := r.inst, r.gen
	r.gen++
	r.inst = inst
	st, changed, gen := r.state, r.changed.C(), r.gen
	r.mu.Unlock()
	revert := func() {
		r.mu.Lock()
		if r.gen == gen { // no later Update
			r.inst, r.gen = old, oldGen
		}
		r.mu.Unlock()
	}
	for st == Registered {
		reply := make(chan error, 1)
		select {
		case r.updates <- update{inst: inst, gen: gen, reply: reply}:
			if err := <-reply; err != nil {
				revert()
				return fmt.Errorf("registry: update %s: %w", inst, err)
			}
			return nil
		case <-changed:
			r.mu.Lock()
			st, changed = r.state, r.changed.C()
			r.mu.Unlock()
		case <-r.done:
			return ErrClosed
		case <-ctx.Done():
			revert()
			return fmt.Errorf("registry: update %s: %w", inst, ctx.Err())
		}
	}
	if st == Deregistered {
		return ErrClosed
	}
	// Re-registering: the re-put, or the keeper right after it, carries it.
	// Withdrawn: the put when the health check passes carries it.
	return nil
}

func (r *registration) set(s RegistrationState, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == Deregistered {
		return
	}
	if err != nil {
		r.lastErr = err
	}
	if r.state != s {
		r.c.registrationState(r.inst, r.state, s)
		r.state = s
		r.changed.Notify()
	}
}

func (r *registration) Instance() Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inst.Clone()
}

func (r *registration) State() RegistrationState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

func (r *registration) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed.C()
}

func (r *registration) Healthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.healthy
}

func (r *registration) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

func (r *registration) Deregister(ctx context.Context) error {
	first := false
	err := r.closer.do(func() error {
		first = true
		return r.deregister(ctx)
	})
	if !first {
		return ErrClosed // after the first call has finished
	}
	return err
}

// deregister stops the keeper and deletes the instance, retrying with backoff
// while the backend does not answer, until ctx ends or the Client's Shutdown
// gives up. r stays in the Client's set until the delete is done, so that a
// concurrent Client.Close waits for it instead of closing the connection under
// it.
func (r *registration) deregister(ctx context.Context) error {
	ctx, cancel := r.c.closingCtx(ctx)
	defer cancel()
	r.mu.Lock()
	r.c.registrationState(r.inst, r.state, Deregistered)
	r.state = Deregistered
	r.changed.Notify()
	r.mu.Unlock()
	r.cancel()
	<-r.done // the keeper no longer touches the lease
	defer func() {
		r.c.mu.Lock()
		delete(r.c.regs, r)
		r.c.mu.Unlock()
	}()
	r.mu.Lock()
	lease, abandoned := r.lease, r.abandoned
	r.mu.Unlock()
	inst := r.Instance()
	var err error
	if lease != nil { // nil: withdrawn by its health check, nothing left to delete
		err = r.c.deleteRetry(ctx, lease)
	}
	r.c.release(ctx, inst, abandoned)
	if err != nil {
		return fmt.Errorf("registry: deregister %s: %w", inst, err)
	}
	return nil
}

// deleteRetry calls lease.Deregister until it succeeds (or finds nothing to
// delete), fails for good, or ctx ends, with backoff on the Client's clock.
func (c *Client) deleteRetry(ctx context.Context, lease driver.Lease) error {
	b := c.newBackoff()
	for {
		dctx, cancel := context.WithTimeout(ctx, c.opt.reqTimeout)
		err := lease.Deregister(dctx)
		cancel()
		c.requestError(ctx, "deregister", err)
		if err == nil || errors.Is(err, ErrNotFound) {
			return nil
		}
		if permanent(err) || errors.Is(err, ErrPermission) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		if serr := c.sleep(ctx, b.NextBackOff()); serr != nil {
			return fmt.Errorf("%w (last error: %w)", serr, err)
		}
	}
}

// Close is Deregister with a 10-second timeout. Concurrent and later calls wait
// for the first deregistration and return its result.
func (r *registration) Close() error {
	return r.closer.do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		return r.deregister(ctx)
	})
}
