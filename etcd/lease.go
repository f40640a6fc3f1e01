package etcd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/regkit/regkit/registry/driver"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxPastLeases bounds Conn.past.
const maxPastLeases = 8

// lease is one etcd lease with its keep-alive goroutine (owned by the Conn). It
// serves both as the shared registration lease and as a store session.
type lease struct {
	c       *Conn
	id      clientv3.LeaseID
	ttl     time.Duration
	onState func(driver.SessionState)
	cancel  context.CancelFunc
	stopped chan struct{} // keep-alive goroutine ended

	ended driver.LostSignal // closed when lost or closed
}

// grant creates a lease and starts keeping it alive on one stream.
func (c *Conn) grant(ctx context.Context, ttl time.Duration, onState func(driver.SessionState)) (*lease, error) {
	secs := int64((ttl + time.Second - 1) / time.Second)
	resp, err := c.cli.Grant(ctx, secs)
	if err != nil {
		return nil, wrap("grant lease", "", err)
	}
	kctx, cancel := context.WithCancel(c.life)
	ch, err := c.cli.KeepAlive(kctx, resp.ID)
	if err != nil {
		cancel()
		return nil, wrap("keep lease alive", "", err)
	}
	l := &lease{c: c, id: resp.ID, ttl: ttl, onState: onState, cancel: cancel,
		stopped: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(l.stopped)
		l.keep(kctx, ch)
	}()
	l.state(driver.StateConnected)
	return l, nil
}

func (l *lease) state(s driver.SessionState) {
	if l.onState != nil {
		l.onState(s)
	}
}

// keep drains keep-alive answers, reports suspension when they stop for a third of
// the TTL, and loss when the client gives the lease up (the server said it expired,
// or no answer came within the TTL).
func (l *lease) keep(ctx context.Context, ch <-chan *clientv3.LeaseKeepAliveResponse) {
	tick := time.NewTicker(l.ttl / 6)
	defer tick.Stop()
	last := time.Now()
	suspended := false
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				if ctx.Err() == nil {
					l.lose(fmt.Errorf("etcd: lease %x expired or revoked: %w", int64(l.id), driver.ErrSessionLost))
				}
				return
			}
			last = time.Now()
			if suspended {
				suspended = false
				l.state(driver.StateReconnected)
			}
		case <-tick.C:
			if !suspended && time.Since(last) > l.ttl/3 {
				suspended = true
				l.state(driver.StateSuspended)
			}
		case <-ctx.Done():
			return
		}
	}
}

// lose ends the lease as lost (once).
func (l *lease) lose(err error) {
	l.end(err, driver.StateLost)
}

// loseIfGone ends the lease as lost when err is the server saying it no longer has
// it (revoked, expired), so that its owner learns at once and not at the next
// keep-alive, and returns why; for any other error it returns nil.
func (l *lease) loseIfGone(err error) error {
	if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return nil
	}
	lost := fmt.Errorf("etcd: lease %s gone: %w", l.ID(), driver.ErrSessionLost)
	l.lose(lost)
	return lost
}

func (l *lease) end(err error, st driver.SessionState) bool {
	if !l.ended.Lose(err) {
		return false
	}
	l.c.mu.Lock()
	if l.c.reg == l {
		l.c.reg = nil
		l.c.past = append(l.c.past, l.id)
		if len(l.c.past) > maxPastLeases {
			l.c.past = l.c.past[1:]
		}
	}
	l.c.mu.Unlock()
	l.state(st)
	return true
}

// ID returns the lease id in hex (etcdctl's format).
func (l *lease) ID() string { return strconv.FormatInt(int64(l.id), 16) }

// Done is closed when the lease was lost or closed.
func (l *lease) Done() <-chan struct{} { return l.ended.Lost() }

// Err says why Done is closed.
func (l *lease) Err() error { return l.ended.Err() }

// Close revokes the lease: its keys are deleted.
func (l *lease) Close(ctx context.Context) error {
	l.cancel()
	<-l.stopped
	if !l.end(fmt.Errorf("etcd: session %s: %w", l.ID(), driver.ErrClosed), driver.StateClosed) {
		return nil
	}
	if _, err := l.c.cli.Revoke(ctx, l.id); err != nil {
		return wrap("revoke lease", l.ID(), err)
	}
	return nil
}

// NewSession grants a lease of its own for the session.
func (c *Conn) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	ttl := spec.TTL
	if ttl == 0 {
		ttl = c.ttl
	}
	if ttl < 2*time.Second {
		return nil, &driver.FieldError{Field: "TTL", Value: ttl.String(), Reason: "etcd sessions need at least 2s"}
	}
	return c.grant(ctx, ttl, spec.OnState)
}

// registrationLease returns the live shared registration lease, granting one if
// there is none.
func (c *Conn) registrationLease(ctx context.Context) (*lease, error) {
	c.grantMu.Lock() // one grant at a time, so concurrent Puts share one lease
	defer c.grantMu.Unlock()
	c.mu.Lock()
	l := c.reg
	c.mu.Unlock()
	if l != nil && l.Err() == nil {
		return l, nil
	}
	nl, err := c.grant(ctx, c.ttl, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.reg = nl
	c.mu.Unlock()
	return nl, nil
}
