package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// PersistentNode keeps one ephemeral key in the store for as long as it is open, as
// Curator's PersistentNode does: the key is bound to a session of its own, so it
// disappears when the process dies, but while the PersistentNode is open it is
// created again, with its current value, after the session is lost (expired,
// revoked, the server restarted with fresh data) and after anyone deletes it.
// Registrations do the same for instances by themselves; a PersistentNode is the
// store's equivalent, for membership and configuration nodes that other processes
// watch.
//
// It learns of changes through a TreeWatcher on the key and its session's state, and
// also reads the key every 5 seconds as a safety net.
//
// It is not for locks or leadership: those must stop, not come back, when their
// session is lost (see Session).
type PersistentNode struct {
	s    *Store
	key  string
	opts []SessionOption

	mu      sync.Mutex
	value   []byte
	node    Node // as last written by us; zero until the first create
	err     error
	created chan struct{} // closed after the first create
	nudge   chan struct{} // SetValue or a change seen by the watcher

	cancel   context.CancelFunc
	done     chan struct{} // closed when the keeper has ended
	closeErr error         // what closing the last session met, set before done
	closer   closeOnce
}

// persistentRecheck is how often a PersistentNode reads its key even when no watch
// event came.
const persistentRecheck = 5 * time.Second

// NewPersistentNode starts keeping key present with value. It returns at once; use
// WaitForCreate to wait for the first create. The key's parents are created as
// empty persistent keys. opts configure the node's sessions (WithTTL). A bad key
// or a negative TTL fails with an error matching ErrInvalid, a backend without
// ephemeral keys with ErrNotSupported, both before any I/O.
func (s *Store) NewPersistentNode(key string, value []byte, opts ...SessionOption) (*PersistentNode, error) {
	sc, err := s.conn(context.Background())
	if err != nil {
		return nil, err
	}
	if err := driver.ValidKey(key); err != nil {
		return nil, err
	}
	if !s.c.conn.Capabilities().Ephemeral || !s.c.conn.Capabilities().Sessions {
		return nil, fmt.Errorf("registry: persistent node %s: %w", key, ErrNotSupported)
	}
	var spec driver.SessionSpec
	for _, o := range opts {
		o(&spec)
	}
	if spec.TTL < 0 {
		return nil, invalid("TTL", spec.TTL, "must not be negative")
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &PersistentNode{s: s, key: key, opts: opts, value: bytes.Clone(value),
		created: make(chan struct{}), nudge: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	if !s.c.goOwned(func() {
		stop := context.AfterFunc(s.c.life, cancel)
		defer stop()
		p.run(ctx, sc)
	}, func() { close(p.done) }) {
		cancel()
		return nil, ErrClosed
	}
	return p, nil
}

// Key returns the node's key.
func (p *PersistentNode) Key() string { return p.key }

// Node returns the node as last created or written by p (zero before the first
// create). Its Session is the session the key is bound to now.
func (p *PersistentNode) Node() Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.node
}

// Err returns the latest error met while keeping the node (nil once it is back).
func (p *PersistentNode) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// WaitForCreate waits until the node has been created once, ctx ends, or p is
// closed.
func (p *PersistentNode) WaitForCreate(ctx context.Context) error {
	select {
	case <-p.created:
		return nil
	case <-ctx.Done():
		if err := p.Err(); err != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		return ctx.Err()
	case <-p.done:
		return ErrClosed
	}
}

// SetValue changes the node's value; it is written at once if the node exists and
// used for every later re-creation.
func (p *PersistentNode) SetValue(value []byte) {
	p.mu.Lock()
	p.value = bytes.Clone(value)
	p.mu.Unlock()
	p.poke()
}

func (p *PersistentNode) poke() {
	select {
	case p.nudge <- struct{}{}:
	default:
	}
}

// Close stops keeping the node and deletes it (by closing its session, at most 10
// seconds), waits for the node's goroutines and returns what failed: a session
// close that did not reach the backend leaves the key until the session's TTL
// ends it, and Close says so. Concurrent and later calls wait for the first and
// return the same. The Client's Close closes every PersistentNode still open.
func (p *PersistentNode) Close() error {
	return p.closer.do(func() error {
		p.cancel()
		<-p.done
		return p.closeErr
	})
}

func (p *PersistentNode) setErr(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
	if err != nil {
		p.s.c.log.warn("registry: persistent node", "key", p.key, "err", err)
	}
}

// run is the keeper: it owns the current session and a watcher on the key.
func (p *PersistentNode) run(ctx context.Context, sc driver.StoreConn) {
	var sess *Session
	defer func() {
		if sess != nil {
			if err := sess.Close(); err != nil {
				p.closeErr = fmt.Errorf("registry: persistent node %s: delete: %w", p.key, err)
			}
		}
	}()
	// A watcher on the key nudges the loop on every change (deleted by someone,
	// overwritten, expired with the session).
	w, err := p.s.Watch(ctx, p.key)
	if err != nil {
		p.setErr(err)
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer w.Close() // before wg.Wait: ends Next
	wg.Add(1)
	p.s.c.goTracked(func() {
		for {
			if _, err := w.Next(ctx); err != nil {
				return
			}
			p.poke()
		}
	}, wg.Done)

	recheck := p.s.c.clock.NewTicker(persistentRecheck)
	defer recheck.Stop()
	// The backoff starts again from its minimum only once the node stayed in place
	// for a while: a node whose session is lost right after every create is not
	// re-created at the minimum delay forever.
	b := p.s.c.newRetry()
	// retry records err and backs off; false when p is closing.
	retry := func(err error) bool {
		if ctx.Err() != nil {
			return false
		}
		p.setErr(err)
		delay, _ := b.Fail()
		return p.s.c.sleep(ctx, delay) == nil
	}
	for {
		if sess == nil || sess.Err() != nil {
			if sess != nil {
				p.setErr(fmt.Errorf("registry: persistent node %s: session %s ended, re-creating: %w", p.key, sess.ID(), sess.Err()))
				// Release the ended session (the Client keeps it until closed).
				_ = sess.Close()
				sess = nil
			}
			s, err := p.s.c.NewSession(ctx, p.opts...)
			if err != nil {
				if !retry(err) {
					return
				}
				continue
			}
			sess = s
		}
		if err := p.ensure(ctx, sc, sess); err != nil {
			if !retry(err) {
				return
			}
			continue
		}
		b.Up()
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
		case <-p.nudge:
		case <-recheck.Chan():
			// A safety net for a change no watch reported; normally a no-op Get.
		}
	}
}

// ensure makes the key exist, bound to sess, with the current value.
func (p *PersistentNode) ensure(ctx context.Context, sc driver.StoreConn, sess *Session) error {
	p.mu.Lock()
	value := p.value
	p.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, p.s.c.opt.reqTimeout)
	defer cancel()
	n, err := sc.Get(rctx, p.key)
	switch {
	case errors.Is(err, ErrNotFound):
		n, err = sc.Create(rctx, p.key, value, driver.CreateSpec{Session: sess.conn})
		if err != nil {
			return err
		}
	case err != nil:
		return err
	case n.Session != sess.ID():
		// Someone else's key (or ours from a session that is ending): wait for it to
		// go; the watcher nudges us when it does.
		return fmt.Errorf("registry: persistent node %s: held by session %q: %w", p.key, n.Session, ErrExists)
	case !bytes.Equal(n.Value, value):
		if n, err = sc.Set(rctx, p.key, value, n.Version); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.node, p.err = n, nil
	p.mu.Unlock()
	select {
	case <-p.created:
	default:
		close(p.created)
	}
	return nil
}
