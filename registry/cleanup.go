package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// cleanupTimeout bounds the removal of an instance no Registration owns; Client.Close
// waits for removals in progress, so it also bounds how long they delay Close.
const cleanupTimeout = 10 * time.Second

// instKey names one instance of a Client: service and ID.
type instKey struct{ service, id string }

func keyOf(inst Instance) instKey { return instKey{inst.Service, inst.ID} }

// claim is what a Client knows of one instance key: how many Registers in progress
// and open Registrations use it, and whether a removal of it is running.
type claim struct {
	users    int
	removing chan struct{} // non-nil while a removal runs; closed when it ends
}

// acquire makes the caller the one user of inst's key, after waiting for a removal
// of it in progress (so that the removal cannot delete what the new user puts). A
// key another Register or open Registration of this Client uses fails with
// ErrExists, before any I/O.
func (c *Client) acquire(ctx context.Context, inst Instance) error {
	k := keyOf(inst)
	for {
		c.mu.Lock()
		if c.claims == nil {
			c.claims = map[instKey]*claim{}
		}
		cl := c.claims[k]
		if cl == nil {
			cl = &claim{}
			c.claims[k] = cl
		}
		if cl.removing == nil {
			if cl.users > 0 {
				// One instance ID, one owner: another Register or open
				// Registration of this Client holds it.
				c.mu.Unlock()
				return fmt.Errorf("registry: register %s: the instance ID is already registered by this Client: %w", inst, ErrExists)
			}
			cl.users++
			c.mu.Unlock()
			return nil
		}
		wait := cl.removing
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("registry: register %s: waiting for the removal of an earlier failed registration: %w", inst, ctx.Err())
		}
	}
}

// release drops one user of inst's key. With orphan (the user's put may have been
// applied without anyone owning it), the last user out removes the instance from
// the backend: on a goroutine the Client owns, or, once the Client is closing, in
// this call with ctx.
func (c *Client) release(ctx context.Context, inst Instance, orphan bool) {
	k := keyOf(inst)
	c.mu.Lock()
	cl := c.claims[k]
	cl.users--
	rm, canRemove := c.conn.(driver.Remover)
	if cl.users > 0 || !orphan || !canRemove {
		if cl.users == 0 && cl.removing == nil {
			delete(c.claims, k)
		}
		c.mu.Unlock()
		return
	}
	cl.removing = make(chan struct{})
	c.mu.Unlock()
	run := func(ctx context.Context) {
		err := c.remove(ctx, rm, inst)
		if err != nil {
			c.log.warn("registry: could not remove an instance no registration owns; it stays until the backend expires it",
				"instance", inst.String(), "err", err)
		}
		c.mu.Lock()
		close(cl.removing)
		cl.removing = nil
		if cl.users == 0 {
			delete(c.claims, k)
		}
		c.mu.Unlock()
	}
	if c.goOwned(func() {
		ctx, cancel := c.closingTimeout(cleanupTimeout)
		defer cancel()
		run(ctx)
	}) {
		return
	}
	run(ctx)
}

// remove calls rm.Remove until it succeeds or ctx ends, with backoff.
func (c *Client) remove(ctx context.Context, rm driver.Remover, inst Instance) error {
	b := c.newBackoff()
	for {
		rctx, cancel := context.WithTimeout(ctx, c.opt.reqTimeout)
		err := rm.Remove(rctx, inst)
		cancel()
		if err == nil || errors.Is(err, ErrNotFound) {
			return nil
		}
		if permanent(err) {
			return err
		}
		if serr := c.sleep(ctx, b.NextBackOff()); serr != nil {
			return fmt.Errorf("registry: remove %s: %w (last error: %w)", inst, serr, err)
		}
	}
}
