package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
	// Err returns the last error met while re-registering, or nil.
	Err() error
	// Update changes the registered instance in place: weight, metadata, zone,
	// address. inst must have the registered Service and ID (an empty ID is
	// "Host:Port" as in Register), else a FieldError naming the field; the rest is
	// validated and defaulted as by Register (address resolver, size limits),
	// before any I/O. Watchers see the old data, then the new, never the instance
	// missing. While Reregistering, Update only records the data, which the re-put
	// carries; every later re-put carries the latest data too. Instance returns
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

	mu      sync.Mutex
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
func (c *Client) Register(ctx context.Context, inst Instance) (Registration, error) {
	inst, err := c.prepare(inst)
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
		dctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		c.release(dctx, inst, !refused)
		if c.life.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("registry: register %s: %w", inst, ErrClosed)
		}
		return nil, err
	}
	kctx, kcancel := context.WithCancel(c.life)
	r := &registration{c: c, service: inst.Service, id: inst.ID, inst: inst, state: Registered, lease: lease, cancel: kcancel, done: make(chan struct{}),
		updates: make(chan update), suspect: make(chan struct{}, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		kcancel()
		c.unguard(sw)
		// The Client's Close waits for this call (an op) before closing the
		// connection, so the delete still reaches the backend.
		dctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
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
// backend while the lease lives (the guard, guard.go), and puts the instance
// again, forever.
func (r *registration) keep(ctx context.Context) {
	defer r.stopGuard()
	for {
		r.mu.Lock()
		lease, inst, gen, stale := r.lease, r.inst, r.gen, r.gen != r.putGen
		r.mu.Unlock()
		if stale { // an Update came while re-registering, after the re-put read the data
			if err := r.apply(ctx, lease, inst, gen); err != nil {
				r.set(Reregistering, err)
				if r.c.sleep(ctx, r.c.opt.backoffMin) != nil {
					return
				}
			} else {
				r.set(Registered, nil)
			}
			continue
		}
		var err error
		select {
		case <-ctx.Done():
			return
		case u := <-r.updates:
			u.reply <- r.apply(ctx, lease, u.inst, u.gen)
			continue
		case <-lease.Lost():
			err = lease.Err()
		case <-r.suspect:
			if !r.goneForSure(ctx) {
				continue
			}
			err = fmt.Errorf("registry: %s was deleted from the backend by someone else while its lease lived: %w", r.Instance(), ErrNotFound)
		}
		r.c.log.warn("registry: registration lost, registering again", "instance", r.Instance().String(), "err", err)
		lease.Abandon()
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
			r.mu.Lock()
			r.abandoned = true
			r.mu.Unlock()
			return
		}
		r.mu.Lock()
		r.lease, r.putGen = nl, put
		r.mu.Unlock()
		if r.sw != nil {
			r.sw.guard.arm(r, putAt)
		}
		r.set(Registered, nil)
	}
}

// update is one Update's write, made by the keeper.
type update struct {
	inst  Instance
	gen   int
	reply chan error
}

// apply writes inst (of gen) in place over lease and records the lease that keeps
// it.
func (r *registration) apply(ctx context.Context, lease driver.Lease, inst Instance, gen int) error {
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
	if u, ok := c.conn.(driver.Updater); ok {
		return u.Update(wctx, lease, inst)
	}
	nl, err := c.conn.Put(wctx, inst)
	if err != nil {
		return nil, err
	}
	if nl != lease {
		lease.Abandon()
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
	return nil // re-registering: the re-put, or the keeper right after it, carries it
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

// deregister stops the keeper and deletes the instance. r stays in the Client's
// set until the delete is done, so that a concurrent Client.Close waits for it
// instead of closing the connection under it.
func (r *registration) deregister(ctx context.Context) error {
	r.mu.Lock()
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
	err := lease.Deregister(ctx)
	r.c.release(ctx, inst, abandoned)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("registry: deregister %s: %w", inst, err)
	}
	return nil
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
