package registry

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// Store is the backend-neutral coordination store (Curator's framework layer): a tree
// of keys with versions, ephemeral keys bound to a Session, sequential keys, and
// persistent tree watches. Recipes (locks, elections, barriers) are written once over
// it. Every method returns an error matching ErrNotSupported when the backend cannot
// offer it (see Capabilities); nothing is silently skipped.
type Store struct{ c *Client }

// Node is one key of the coordination store: Key, Value, Version (for
// compare-and-set), CreateRevision (the store-wide creation order, the recipes'
// fencing token) and the Session an ephemeral key is bound to; see driver.Node.
type Node = driver.Node

// AnyVersion makes Set and Delete unconditional.
const AnyVersion = driver.AnyVersion

// SessionState is a connection-state event of a Session, as Curator names them.
type SessionState = driver.SessionState

// Session states; see driver.StateConnected and the others for their meaning.
const (
	StateConnected   = driver.StateConnected   // the session was established
	StateSuspended   = driver.StateSuspended   // connection interrupted; the session may live, treat locks as uncertain
	StateReconnected = driver.StateReconnected // the connection is back and the session survived
	StateLost        = driver.StateLost        // the session expired or was revoked; terminal
	StateClosed      = driver.StateClosed      // the owner closed the session; terminal
)

// Store returns the client's coordination store.
func (c *Client) Store() *Store { return c.store }

// conn returns the store connection, after the checks every Store call makes
// before any I/O: the Client is open, ctx is not done, the backend has a store.
func (s *Store) conn(ctx context.Context) (driver.StoreConn, error) {
	if err := s.c.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: store: %w", err)
	}
	sc, ok := s.c.conn.(driver.StoreConn)
	if !ok || !s.c.conn.Capabilities().Store {
		return nil, fmt.Errorf("registry: store: %w", ErrNotSupported)
	}
	return sc, nil
}

// CreateOption configures Store.Create.
type CreateOption func(*createSpec)

// createSpec and sessionSpec keep the driver's spec types out of the user API.
type (
	createSpec  = driver.CreateSpec
	sessionSpec = driver.SessionSpec
)

// Ephemeral binds the new key to sess: it is deleted when the session ends.
func Ephemeral(sess *Session) CreateOption {
	return func(cs *createSpec) {
		if sess != nil {
			cs.Session = sess.conn
		}
	}
}

// Sequential appends a 10-digit sequence number, increasing per parent, to the key's
// last segment; the created key is returned in Node.Key.
func Sequential() CreateOption { return func(cs *createSpec) { cs.Sequential = true } }

// Create writes a new key, creating missing parents as empty persistent keys. An
// existing key is ErrExists.
func (s *Store) Create(ctx context.Context, key string, value []byte, opts ...CreateOption) (Node, error) {
	sc, spec, err := s.createSpec(ctx, key, value, opts)
	if err != nil {
		return Node{}, err
	}
	return sc.Create(ctx, key, value, spec)
}

// CreateAndChildren creates key as Create does and also returns the sorted names
// of the new key's parent's children as of the create, the new key's name among
// them: what a queue recipe needs to know whether its node is first. Where the
// backend offers it (etcd and Consul: driver.CreateLister) the listing is read in
// the same transaction as the create, in one round trip, so no create or delete
// falls between the two; elsewhere it is Create followed by Children, and the
// listing may also show changes made after the create. If that second read fails
// the node is still returned, with nil names and a nil error (the key was
// created; read the children again). Errors are Create's. The listing reads every
// key under the parent, not only the direct children (keys only on etcd, keys and
// values on Consul): meant for flat directories such as a recipe's queue, not for
// the parent of a large tree.
func (s *Store) CreateAndChildren(ctx context.Context, key string, value []byte, opts ...CreateOption) (Node, []string, error) {
	sc, spec, err := s.createSpec(ctx, key, value, opts)
	if err != nil {
		return Node{}, nil, err
	}
	if cl, ok := sc.(driver.CreateLister); ok {
		return cl.CreateAndChildren(ctx, key, value, spec)
	}
	n, err := sc.Create(ctx, key, value, spec)
	if err != nil {
		return Node{}, nil, err
	}
	names, err := sc.Children(ctx, driver.ParentKey(n.Key))
	if err != nil {
		return n, nil, nil
	}
	return n, names, nil
}

// createSpec makes the checks of Create and CreateAndChildren, before any I/O.
func (s *Store) createSpec(ctx context.Context, key string, value []byte, opts []CreateOption) (driver.StoreConn, driver.CreateSpec, error) {
	var spec driver.CreateSpec
	sc, err := s.conn(ctx)
	if err != nil {
		return nil, spec, err
	}
	if err := driver.ValidKey(key); err != nil {
		return nil, spec, err
	}
	if key == "/" {
		return nil, spec, invalid("key", key, "cannot create the root")
	}
	if err := s.c.conn.Capabilities().Limits.CheckStore(key, value); err != nil {
		return nil, spec, err
	}
	for _, o := range opts {
		o(&spec)
	}
	caps := s.c.conn.Capabilities()
	if spec.Session != nil && !caps.Ephemeral {
		return nil, spec, fmt.Errorf("registry: create %s: ephemeral keys: %w", key, ErrNotSupported)
	}
	if spec.Sequential && !caps.Sequential {
		return nil, spec, fmt.Errorf("registry: create %s: sequential keys: %w", key, ErrNotSupported)
	}
	if spec.Session != nil {
		select {
		case <-spec.Session.Done():
			return nil, spec, fmt.Errorf("registry: create %s: %w", key, spec.Session.Err())
		default:
		}
	}
	return sc, spec, nil
}

// Get reads a key; ErrNotFound if absent.
func (s *Store) Get(ctx context.Context, key string) (Node, error) {
	sc, err := s.conn(ctx)
	if err != nil {
		return Node{}, err
	}
	if err := driver.ValidKey(key); err != nil {
		return Node{}, err
	}
	return sc.Get(ctx, key)
}

// Set replaces the value of an existing key if its Version equals version (pass
// AnyVersion to write unconditionally); otherwise ErrVersionConflict. A missing key
// is ErrNotFound.
func (s *Store) Set(ctx context.Context, key string, value []byte, version int64) (Node, error) {
	sc, err := s.conn(ctx)
	if err != nil {
		return Node{}, err
	}
	if err := driver.ValidKey(key); err != nil {
		return Node{}, err
	}
	if err := s.c.conn.Capabilities().Limits.CheckStore(key, value); err != nil {
		return Node{}, err
	}
	return sc.Set(ctx, key, value, version)
}

// DeleteOption configures Store.Delete.
type DeleteOption func(*deleteSpec)

type deleteSpec struct {
	version   int64
	recursive bool
}

// Recursive deletes the key's descendants too.
func Recursive() DeleteOption { return func(d *deleteSpec) { d.recursive = true } }

// IfVersion deletes only if the key's Version equals v (else ErrVersionConflict).
func IfVersion(v int64) DeleteOption { return func(d *deleteSpec) { d.version = v } }

// Delete removes a key. Without Recursive a key with children is ErrNotEmpty; a
// missing key is ErrNotFound.
func (s *Store) Delete(ctx context.Context, key string, opts ...DeleteOption) error {
	sc, err := s.conn(ctx)
	if err != nil {
		return err
	}
	if err := driver.ValidKey(key); err != nil {
		return err
	}
	d := deleteSpec{version: AnyVersion}
	for _, o := range opts {
		o(&d)
	}
	if key == "/" && !d.recursive {
		return invalid("key", key, "deleting the root needs Recursive")
	}
	return sc.Delete(ctx, key, d.version, d.recursive)
}

// Children returns the sorted names of the key's direct children.
func (s *Store) Children(ctx context.Context, key string) ([]string, error) {
	sc, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := driver.ValidKey(key); err != nil {
		return nil, err
	}
	return sc.Children(ctx, key)
}

// Tree returns the key (if present) and all its descendants, sorted by key.
func (s *Store) Tree(ctx context.Context, key string) ([]Node, error) {
	sc, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := driver.ValidKey(key); err != nil {
		return nil, err
	}
	return sc.Tree(ctx, key)
}

// EventType says what happened to a key.
type EventType int

// Event types.
const (
	EventCreated EventType = iota + 1
	EventUpdated
	EventDeleted
)

// String returns the event type's name.
func (t EventType) String() string {
	switch t {
	case EventCreated:
		return "created"
	case EventUpdated:
		return "updated"
	case EventDeleted:
		return "deleted"
	}
	return "unknown"
}

// Event is one change of a key. For EventDeleted, Node is the last version seen.
type Event struct {
	Type EventType
	Node Node
}

// TreeChange is what TreeWatcher.Next returns.
type TreeChange struct {
	// Events turn the previously returned state into Nodes, sorted by key. The
	// first TreeChange has an EventCreated for every existing node.
	Events []Event
	// Nodes is the complete current state of the watched tree, sorted by key.
	Nodes []Node
	// Resynced: this change follows a gap; it was computed by re-listing.
	Resynced bool
	// Stale: the backend cannot be read now; Nodes is the last good state.
	Stale bool
	// Err says why Stale.
	Err error
}

// TreeWatcher follows a key and all its descendants (a persistent recursive watch,
// re-armed by itself after any gap; changes are coalesced, so every final state is
// seen but maybe not each step). It is to Store.Watch what Watcher is to
// Client.Watch, and closes the same way.
type TreeWatcher interface {
	// Next returns the changes since the last call (all nodes as created on the
	// first), waiting until there are some, or the watch's staleness changed. It
	// returns ctx's error, or ErrClosed after Close, once the Watch context is
	// done or the Client is closed. A change after a gap is Resynced, also when
	// the re-listed state was superseded before Next read it.
	Next(ctx context.Context) (TreeChange, error)
	// Close stops the watch and waits for its goroutine; a Next in progress
	// returns ErrClosed. Idempotent; it always returns nil.
	Close() error
}

type treeWatcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	latest    *TreeChange // full state as last published (Events unused)
	seq       uint64
	resyncSeq uint64 // seq of the last Resynced publish
	changed   broadcast.Signal

	nmu     sync.Mutex // serialises Next
	seen    []Node
	seenSeq uint64
	stale   bool
}

// Watch starts following key and all its descendants until ctx is done, Close is
// called or the Client is closed.
func (s *Store) Watch(ctx context.Context, key string) (TreeWatcher, error) {
	sc, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := driver.ValidKey(key); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &treeWatcher{cancel: cancel, done: make(chan struct{})}
	ok := s.c.goOwned(func() {
		stop := context.AfterFunc(s.c.life, cancel)
		defer stop()
		var prev []Node
		var have bool
		s.c.relistLoop(wctx, "tree "+key,
			func(ctx context.Context, notify func()) error { return sc.WatchTree(ctx, key, notify) },
			func(ctx context.Context, gap bool) error {
				nodes, err := sc.Tree(ctx, key)
				if err != nil {
					return err
				}
				if have && !gap && slices.EqualFunc(prev, nodes, sameNode) && !w.isStale() {
					return nil
				}
				resynced := gap && have
				prev, have = nodes, true
				w.publish(&TreeChange{Nodes: nodes, Resynced: resynced})
				return nil
			},
			func(err error) {
				if have {
					w.publish(&TreeChange{Nodes: prev, Stale: true, Err: err})
				}
			})
	}, func() { close(w.done) })
	if !ok {
		cancel()
		return nil, ErrClosed
	}
	return w, nil
}

func (w *treeWatcher) isStale() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest != nil && w.latest.Stale
}

func (w *treeWatcher) publish(tc *TreeChange) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if tc.Stale && w.latest != nil && w.latest.Stale {
		return
	}
	w.latest = tc
	w.seq++
	if tc.Resynced {
		w.resyncSeq = w.seq
	}
	w.changed.Notify()
}

func sameNode(a, b Node) bool {
	return a.Key == b.Key && a.Version == b.Version && a.CreateRevision == b.CreateRevision &&
		a.Session == b.Session && string(a.Value) == string(b.Value)
}

func (w *treeWatcher) Next(ctx context.Context) (TreeChange, error) {
	w.nmu.Lock()
	defer w.nmu.Unlock()
	for {
		w.mu.Lock()
		latest, seq, resyncSeq, ch := w.latest, w.seq, w.resyncSeq, w.changed.C()
		w.mu.Unlock()
		if latest != nil && seq > w.seenSeq {
			first := w.seenSeq == 0
			resynced := latest.Resynced || (!first && !latest.Stale && resyncSeq > w.seenSeq)
			w.seenSeq = seq
			ev := diffNodes(w.seen, latest.Nodes)
			if first || len(ev) > 0 || latest.Stale != w.stale || resynced {
				w.seen, w.stale = latest.Nodes, latest.Stale
				tc := *latest
				tc.Events = ev
				tc.Resynced = resynced && !first
				tc.Nodes = slices.Clone(tc.Nodes)
				return tc, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return TreeChange{}, ctx.Err()
		case <-w.done:
			w.mu.Lock()
			more := w.seq > w.seenSeq
			w.mu.Unlock()
			if !more {
				return TreeChange{}, ErrClosed
			}
		}
	}
}

func (w *treeWatcher) Close() error {
	w.cancel()
	<-w.done
	return nil
}

// diffNodes returns the events that turn a into b (both sorted by key).
func diffNodes(a, b []Node) []Event {
	var ev []Event
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j >= len(b) || (i < len(a) && a[i].Key < b[j].Key):
			ev = append(ev, Event{Type: EventDeleted, Node: a[i]})
			i++
		case i >= len(a) || b[j].Key < a[i].Key:
			ev = append(ev, Event{Type: EventCreated, Node: b[j]})
			j++
		default:
			if a[i].CreateRevision != b[j].CreateRevision {
				ev = append(ev, Event{Type: EventDeleted, Node: a[i]}, Event{Type: EventCreated, Node: b[j]})
			} else if !sameNode(a[i], b[j]) {
				ev = append(ev, Event{Type: EventUpdated, Node: b[j]})
			}
			i++
			j++
		}
	}
	return ev
}
