package leader

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
)

// participant is the loop Latch and Selector share: it keeps a session of its own
// (opening a new one after a loss), campaigns, and hands each term to lead, which
// returns when the term is over; then it resigns and, if lead says so, campaigns
// again (after a backoff if lead failed).
type participant struct {
	c      *registry.Client
	key    string
	prefix string
	opts   recipes.Options

	mu      sync.Mutex
	term    *recipes.Hold
	changed broadcast.Signal // at every change of term
	err     error            // the latest error met while campaigning

	cancel context.CancelFunc
	done   chan struct{}
}

func newParticipant(c *registry.Client, key, prefix, what string, o recipes.Options) (*participant, error) {
	if err := queue.Check(c, what); err != nil {
		return nil, err
	}
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	if err := o.Err(); err != nil {
		return nil, err
	}
	return &participant{c: c, key: key, prefix: prefix, opts: o, done: make(chan struct{})}, nil
}

// leadFunc runs one term and returns whether to campaign again, and whether the
// term failed (then the next campaign waits a backoff, so that a callback that
// fails at once does not spin through terms).
type leadFunc func(ctx context.Context, term *recipes.Hold) (again, failed bool)

// start runs the loop on a goroutine of its own.
func (p *participant) start(lead leadFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	// The Client's Close ends our sessions, and NewSession then fails with
	// ErrClosed, which ends the loop.
	go func() {
		defer close(p.done)
		p.run(ctx, lead)
	}()
}

func (p *participant) setTerm(h *recipes.Hold) {
	p.mu.Lock()
	p.term = h
	p.changed.Notify()
	p.mu.Unlock()
}

func (p *participant) setErr(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

func (p *participant) run(ctx context.Context, lead leadFunc) {
	var sess *registry.Session
	var e *Election // one per session
	closeSess := func() {
		if sess != nil {
			_ = sess.Close() // deletes our node, if any
			sess = nil
		}
	}
	defer closeSess()
	b := queue.NewBackoff(p.opts)
	backoff := func(err error) bool {
		p.setErr(err)
		return queue.Sleep(ctx, b.NextBackOff()) == nil
	}
	for ctx.Err() == nil {
		if sess == nil || sess.Err() != nil {
			closeSess()
			s, err := p.c.NewSession(ctx, p.opts.SessionOptions...)
			if errors.Is(err, registry.ErrClosed) {
				p.setErr(err)
				return
			}
			if err != nil {
				if !backoff(err) {
					return
				}
				continue
			}
			sess = s
		}
		if e == nil || e.s != sess {
			var err error
			if e, err = newElection(p.c, sess, p.key, p.prefix, p.opts); err != nil {
				p.setErr(err)
				return
			}
		}
		term, err := e.Campaign(ctx, nil)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !backoff(err) {
				return
			}
			continue
		}
		p.setErr(nil)
		p.setTerm(term)
		again, failed := lead(ctx, term)
		p.setTerm(nil)
		// Curator's reset: give the node up, so a new term is a new node with a
		// larger token; after a suspension this moves us to the back of the line.
		rctx, cancel := context.WithTimeout(context.Background(), p.opts.RequestTimeout)
		_ = e.Resign(rctx)
		cancel()
		if !again {
			return
		}
		if !failed {
			b.Reset()
		} else if queue.Sleep(ctx, b.NextBackOff()) != nil {
			return
		}
	}
}

// wait waits until a term is current and returns it.
func (p *participant) wait(ctx context.Context) (*recipes.Hold, error) {
	lastErr := func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	}
	for {
		p.mu.Lock()
		h, ch := p.term, p.changed.C()
		p.mu.Unlock()
		if h != nil && h.Err() == nil {
			return h, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if last := lastErr(); last != nil {
				return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return nil, ctx.Err()
		case <-p.done:
			if last := lastErr(); last != nil {
				return nil, fmt.Errorf("leader: %s: %w (%v)", p.key, registry.ErrClosed, last)
			}
			return nil, fmt.Errorf("leader: %s: %w", p.key, registry.ErrClosed)
		}
	}
}

func (p *participant) current() *recipes.Hold {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.term != nil && p.term.Err() == nil {
		return p.term
	}
	return nil
}

// close stops the loop (resigning) and waits for it, or for ctx.
func (p *participant) close(ctx context.Context) error {
	p.cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Latch is Curator's LeaderLatch: from NewLatch until Close it takes part in the
// election on its key and, once elected, holds leadership until Close, its
// session's loss or (default policy) suspension. It then campaigns again by
// itself, with a new session if the old one was lost, so every term is a new
// candidate node with a larger fencing token. It owns its sessions
// (WithSessionTTL configures them), the way PersistentNode does.
//
// Guarantees: at most one Latch's term is current at a time as the store sees it;
// a term's context is cancelled as soon as the leader can no longer be sure it
// leads (see package recipes for the window per backend, which a fenced resource
// checking Term().Token() closes). A Latch reads Options.Policy, Options.Value
// (its candidate node's value, shown by Leader and Observe), SessionOptions,
// RequestTimeout and the retry backoff.
type Latch struct{ p *participant }

// NewLatch starts taking part in the election on key through c. It fails with an
// error matching registry.ErrNotSupported on a backend without sessions, and
// registry.ErrInvalid for a bad key or option.
func NewLatch(c *registry.Client, key string, opts ...recipes.Option) (*Latch, error) {
	p, err := newParticipant(c, key, latchPrefix, "leader latch", recipes.Apply(opts))
	if err != nil {
		return nil, err
	}
	p.start(func(ctx context.Context, term *recipes.Hold) (bool, bool) {
		select {
		case <-term.Done():
		case <-ctx.Done():
		}
		return true, false
	})
	return &Latch{p: p}, nil
}

// IsLeader reports whether the latch holds a current term.
func (l *Latch) IsLeader() bool { return l.p.current() != nil }

// Term returns the current term, or nil when not leading.
func (l *Latch) Term() *recipes.Hold { return l.p.current() }

// Await waits until the latch leads and returns the term. It returns ctx's error
// (with the latest campaign error, if any), or an error matching
// registry.ErrClosed once the latch or its Client is closed.
func (l *Latch) Await(ctx context.Context) (*recipes.Hold, error) { return l.p.wait(ctx) }

// Err returns the latest error met while campaigning (nil once elected or
// queued).
func (l *Latch) Err() error {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return l.p.err
}

// Close leaves the election: a current term ends (recipes.ErrReleased), the
// candidate node is deleted and the latch's session closed. It waits for the
// latch's goroutine, or ctx. Idempotent.
func (l *Latch) Close(ctx context.Context) error { return l.p.close(ctx) }

// Selector is Curator's LeaderSelector: it campaigns on its key and, when elected,
// calls lead with the term's context and Hold; leadership lasts until lead
// returns. lead must return soon after its context is cancelled (leadership lost
// or uncertain, or Close): until it does, it is the one place that may still act
// as leader, which is why everything it writes should carry term.Token() to a
// fenced resource. After lead returns the selector resigns and, with
// recipes.WithAutoRequeue or after Requeue, campaigns again; otherwise it stops.
// After a callback that returned an error it waits the retry backoff first
// (recipes.WithRetryBackoff; jittered, from 50ms doubling up to 2s by default,
// reset by a callback that returns nil), so that a callback failing at once
// does not spin through terms.
// It owns its sessions (opening a new one after a loss), as Latch does, and its
// candidate nodes are named as Curator's LeaderSelector names them ("lock-").
type Selector struct {
	p       *participant
	lead    func(ctx context.Context, term *recipes.Hold) error
	requeue chan struct{} // 1-buffered: campaign once more
	mu      sync.Mutex
	errs    []error
}

// NewSelector starts campaigning on key through c with lead as the leadership
// callback. It fails with an error matching registry.ErrNotSupported on a
// backend without sessions, and registry.ErrInvalid for a bad key or option. It
// reads the Options Latch reads and AutoRequeue.
func NewSelector(c *registry.Client, key string, lead func(ctx context.Context, term *recipes.Hold) error, opts ...recipes.Option) (*Selector, error) {
	if lead == nil {
		return nil, &registry.FieldError{Field: "lead", Value: nil, Reason: "required"}
	}
	o := recipes.Apply(opts)
	p, err := newParticipant(c, key, selectorPrefix, "leader selector", o)
	if err != nil {
		return nil, err
	}
	s := &Selector{p: p, lead: lead, requeue: make(chan struct{}, 1)}
	p.start(func(ctx context.Context, term *recipes.Hold) (bool, bool) {
		lctx, cancel := context.WithCancelCause(term.Context())
		stop := context.AfterFunc(ctx, func() { cancel(recipes.ErrReleased) })
		err := lead(lctx, term)
		stop()
		cancel(nil)
		if err != nil {
			s.mu.Lock()
			if len(s.errs) == maxSelectorErrs {
				s.errs = append(s.errs[:0], s.errs[1:]...)
			}
			s.errs = append(s.errs, err)
			s.mu.Unlock()
		}
		failed := err != nil
		if o.AutoRequeue {
			return true, failed
		}
		select {
		case <-s.requeue:
			return true, failed
		default:
			return false, failed
		}
	})
	return s, nil
}

// Requeue makes the selector campaign once more after the current (or next)
// term's callback returns (Curator's requeue()). A selector that already stopped
// does not restart.
func (s *Selector) Requeue() {
	select {
	case s.requeue <- struct{}{}:
	default:
	}
}

// HasLeadership reports whether the selector's callback is running for a current
// term.
func (s *Selector) HasLeadership() bool { return s.p.current() != nil }

// Done is closed when the selector stopped: after Close, after a callback
// returned without requeue, or once its Client closed.
func (s *Selector) Done() <-chan struct{} { return s.p.done }

// maxSelectorErrs is how many of lead's errors a Selector keeps.
const maxSelectorErrs = 32

// Errs returns the latest errors lead returned, oldest first (at most 32: older
// ones are dropped).
func (s *Selector) Errs() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// Close stops campaigning: a running callback's context is cancelled
// (recipes.ErrReleased) and Close waits for it to return, then resigns and closes
// the selector's session. It returns early with ctx's error. Idempotent.
func (s *Selector) Close(ctx context.Context) error { return s.p.close(ctx) }
