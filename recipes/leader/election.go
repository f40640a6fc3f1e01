package leader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// Errors of the election recipes (etcd's ErrElectionNoLeader and
// ErrElectionNotLeader).
var (
	// ErrNoLeader: no candidate holds the election.
	ErrNoLeader = errors.New("leader: election has no leader")
	// ErrNotLeader: the call needs leadership this participant does not hold.
	ErrNotLeader = errors.New("leader: not leader")
)

// Candidates' node prefixes: Curator's LeaderLatch names its nodes "latch-",
// LeaderSelector (an InterProcessMutex) "lock-". Candidates of either kind queue
// together, in creation order, in one election: the one observers see.
const (
	latchPrefix    = "latch-"
	selectorPrefix = "lock-"
)

// otherPrefix returns the prefix of the other kind of candidate.
func otherPrefix(prefix string) string {
	if prefix == latchPrefix {
		return selectorPrefix
	}
	return latchPrefix
}

// Leader is the leader of an election as read from the store.
type Leader struct {
	// Key is the leader's candidate node ("" when there is no leader).
	Key string
	// Value is what the leader campaigned with (Campaign's value, WithValue).
	Value []byte
	// Token is the term's fencing token: the candidate node's CreateRevision.
	Token int64
	// Session is the ID of the session the leader's node is bound to.
	Session string
}

// Election is etcd's concurrency.Election over any backend with sessions: one
// candidate node per campaigning participant (an ephemeral sequential node under
// the election key, "_c_<uuid>-latch-<sequence>", bound to the session); the
// first node in creation order leads, each other candidate waits only for its
// predecessor to go. Each term's Hold carries a fencing token (the node's
// CreateRevision; tokens only grow from term to term) and a context cancelled as
// soon as the leader can no longer be sure it leads (see package recipes).
//
// An Election is one participant; its methods are safe for concurrent use.
// It reads Options.Policy, Options.Value (default campaign value), RequestTimeout
// and the retry backoff.
type Election struct {
	q    *queue.Queue
	s    *registry.Session
	opts recipes.Options

	sem chan struct{} // serialises Campaign and Resign

	mu      sync.Mutex
	entry   queue.Entry
	hold    *recipes.Hold
	release func(error)
}

// NewElection returns a participant in the election on key, campaigning through
// session s of client c. It fails with an error matching registry.ErrNotSupported
// on a backend without sessions (Nacos), and registry.ErrInvalid for a bad key or
// option.
func NewElection(c *registry.Client, s *registry.Session, key string, opts ...recipes.Option) (*Election, error) {
	return newElection(c, s, key, latchPrefix, recipes.Apply(opts))
}

func newElection(c *registry.Client, s *registry.Session, key, prefix string, o recipes.Options) (*Election, error) {
	if err := queue.Check(c, "election"); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, &registry.FieldError{Field: "session", Value: nil, Reason: "required"}
	}
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	if err := o.Err(); err != nil {
		return nil, err
	}
	return &Election{
		q:    &queue.Queue{St: c.Store(), Sess: s, Dir: key, Prefix: prefix, Others: []string{otherPrefix(prefix)}, Opts: o},
		s:    s,
		opts: o,
		sem:  make(chan struct{}, 1),
	}, nil
}

// Key returns the election's key.
func (e *Election) Key() string { return e.q.Dir }

func (e *Election) lockSem(ctx context.Context) error {
	select {
	case e.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Campaign puts this participant up with value (nil: Options.Value) and waits
// until it leads, ctx ends or the session ends. It returns the term: its fencing
// token and a context cancelled when leadership ends or becomes uncertain. If ctx
// ends first the candidate node is deleted and ctx's error returned; if the
// session ends first, the session's error (wrapping registry.ErrSessionLost or
// registry.ErrClosed). Campaign while leading returns the current term, or its
// cause if it has ended (Resign first).
func (e *Election) Campaign(ctx context.Context, value []byte) (*recipes.Hold, error) {
	if err := e.lockSem(ctx); err != nil {
		return nil, err
	}
	defer func() { <-e.sem }()
	e.mu.Lock()
	if h := e.hold; h != nil {
		e.mu.Unlock()
		if err := h.Err(); err != nil {
			return nil, fmt.Errorf("leader: %s: the term ended (Resign first): %w", e.q.Dir, err)
		}
		return h, nil
	}
	e.mu.Unlock()
	if value == nil {
		value = e.opts.Value
	}
	for {
		if err := e.s.Err(); err != nil {
			return nil, fmt.Errorf("leader: %s: %w", e.q.Dir, err)
		}
		ent, err := e.q.Enqueue(ctx, value)
		if err != nil {
			return nil, fmt.Errorf("leader: %s: %w", e.q.Dir, err)
		}
		h, release, err := e.await(ctx, ent)
		if errors.Is(err, queue.ErrVanished) {
			// Our node was missing from a listing: gone, or a read that missed it
			// (a server just restarted). Delete it if it is there, so that no one
			// queues behind it, and queue again.
			_ = e.q.Remove(ctx, ent)
			continue
		}
		if err != nil {
			_ = e.q.Remove(ctx, ent)
			return nil, fmt.Errorf("leader: %s: %w", e.q.Dir, err)
		}
		e.mu.Lock()
		e.entry, e.hold, e.release = ent, h, release
		e.mu.Unlock()
		return h, nil
	}
}

func (e *Election) await(ctx context.Context, ent queue.Entry) (*recipes.Hold, func(error), error) {
	for {
		if err := e.q.WaitFirst(ctx, ent); err != nil {
			return nil, nil, err
		}
		if err := recipes.Usable(ctx, e.s, e.opts.Policy); err != nil {
			return nil, nil, err
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		h, release := recipes.NewHold(e.s, e.q.Key(ent), ent.Node.CreateRevision, e.opts.Policy)
		if h.Err() == nil {
			return h, release, nil
		}
		release(nil)
	}
}

// Resign gives leadership up: the term's context is cancelled with
// recipes.ErrReleased, then the candidate node is deleted (retrying with jitter
// until ctx ends), so the next candidate leads. It is idempotent, and succeeds
// after the session ended (the node went with it).
func (e *Election) Resign(ctx context.Context) error {
	if err := e.lockSem(ctx); err != nil {
		return err
	}
	defer func() { <-e.sem }()
	e.mu.Lock()
	ent, release := e.entry, e.release
	e.entry, e.hold, e.release = queue.Entry{}, nil, nil
	e.mu.Unlock()
	if release == nil {
		return nil
	}
	release(recipes.ErrReleased)
	if err := e.q.Remove(ctx, ent); err != nil {
		return fmt.Errorf("leader: %s: resign: %w", e.q.Dir, err)
	}
	return nil
}

// Term returns the current term, or nil when not leading.
func (e *Election) Term() *recipes.Hold {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hold
}

// Proclaim changes the value of the current term's node without an election
// (etcd's Proclaim); ErrNotLeader when not leading.
func (e *Election) Proclaim(ctx context.Context, value []byte) error {
	e.mu.Lock()
	h, ent := e.hold, e.entry
	e.mu.Unlock()
	if h == nil || h.Err() != nil {
		return fmt.Errorf("leader: %s: proclaim: %w", e.q.Dir, ErrNotLeader)
	}
	rctx, cancel := context.WithTimeout(ctx, e.opts.RequestTimeout)
	defer cancel()
	if _, err := e.q.St.Set(rctx, e.q.Key(ent), value, registry.AnyVersion); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("leader: %s: proclaim: %w (%v)", e.q.Dir, ErrNotLeader, err)
		}
		return fmt.Errorf("leader: %s: proclaim: %w", e.q.Dir, err)
	}
	return nil
}

// Leader reads the current leader; ErrNoLeader when there is none.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	return leaderOf(ctx, e.q.St, e.q.Dir, e.opts)
}

// Observe follows the leader of the election; see Observe.
func (e *Election) Observe(ctx context.Context) (*Observer, error) {
	return observe(ctx, e.q.St, e.q.Dir)
}

// LeaderOf reads the current leader of the election on key through c (no
// session needed); ErrNoLeader when there is none.
func LeaderOf(ctx context.Context, c *registry.Client, key string) (Leader, error) {
	if err := queue.ValidDir(key); err != nil {
		return Leader{}, err
	}
	return leaderOf(ctx, c.Store(), key, recipes.Apply(nil))
}

func leaderOf(ctx context.Context, st *registry.Store, key string, o recipes.Options) (Leader, error) {
	q := &queue.Queue{St: st, Dir: key, Prefix: latchPrefix, Others: []string{selectorPrefix}, Opts: o}
	n, ok, err := q.First(ctx)
	if err != nil {
		return Leader{}, fmt.Errorf("leader: %s: %w", key, err)
	}
	if !ok {
		return Leader{}, fmt.Errorf("leader: %s: %w", key, ErrNoLeader)
	}
	return leaderFrom(n), nil
}

func leaderFrom(n registry.Node) Leader {
	return Leader{Key: n.Key, Value: n.Value, Token: n.CreateRevision, Session: n.Session}
}

// Observer follows an election's leader (etcd's Election.Observe, as a Next loop
// that says why it stopped instead of a channel that just closes).
type Observer struct {
	w    registry.TreeWatcher
	key  string
	mu   sync.Mutex
	last *Leader
}

// Observe starts following the leader of the election on key through c; no
// session is needed. Close it, or end ctx, to stop.
func Observe(ctx context.Context, c *registry.Client, key string) (*Observer, error) {
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	return observe(ctx, c.Store(), key)
}

func observe(ctx context.Context, st *registry.Store, key string) (*Observer, error) {
	w, err := st.Watch(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("leader: observe %s: %w", key, err)
	}
	return &Observer{w: w, key: key}, nil
}

// Next returns the current leader on the first call, then waits until the leader
// (its node or its value) changes and returns the new one; a Leader with an empty
// Key means the election has none. Changes are coalesced, unlike etcd's Observe,
// which reports each leader's key in revision order: Next returns the leader of
// the latest view, so a leader that led only between two views (a quick
// handover, a burst of Campaign and Resign) may never be returned; a leader that
// stays always is. It skips views the watch marks stale (the backend
// unreachable), so what it returns was read fresh. It returns ctx's error, or
// registry.ErrClosed after Close.
func (o *Observer) Next(ctx context.Context) (Leader, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		tc, err := o.w.Next(ctx)
		if err != nil {
			return Leader{}, err
		}
		if tc.Stale {
			continue
		}
		cur := firstOf(o.key, tc.Nodes)
		if o.last != nil && o.last.Key == cur.Key && bytes.Equal(o.last.Value, cur.Value) {
			continue
		}
		o.last = &cur
		return cur, nil
	}
}

// Close stops following. Idempotent.
func (o *Observer) Close() error { return o.w.Close() }

// firstOf returns the first candidate among the election's nodes.
func firstOf(key string, nodes []registry.Node) Leader {
	byName := map[string]registry.Node{}
	var names []string
	for _, n := range nodes {
		if driver.ParentKey(n.Key) != key {
			continue
		}
		name := n.Key[strings.LastIndexByte(n.Key, '/')+1:]
		byName[name] = n
		names = append(names, name)
	}
	p := queue.Participants(names, latchPrefix, selectorPrefix)
	if len(p) == 0 {
		return Leader{}
	}
	return leaderFrom(byName[p[0]])
}
