// Package group is Curator's GroupMember, written once over registry.Store: each
// member keeps one node under the group's key with a PersistentNode (bound to a
// session of its own, created again after a session loss or a delete), and
// anyone can list or follow the live members.
//
// It needs ephemeral keys and sessions: on Nacos NewMember fails with an error
// matching registry.ErrNotSupported (Members and Watch work wherever the store
// does).
package group

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// Member is one process's membership of a group (Curator's GroupMember): the
// node key/id with the member's value, present while the Member is open. A
// member whose process dies disappears when its session expires; while open, it
// comes back by itself after a session loss or someone deleting it. It reads
// Options.SessionOptions (WithSessionTTL).
type Member struct {
	c   *registry.Client
	key string
	id  string
	p   *registry.PersistentNode
}

// NewMember joins the group on key as id with value. It returns at once; use
// WaitForJoin to wait for the first create. id must be a single key segment; a
// bad key, id or option fails with an error matching registry.ErrInvalid.
func NewMember(c *registry.Client, key, id string, value []byte, opts ...recipes.Option) (*Member, error) {
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	if id == "" || strings.Contains(id, "/") {
		return nil, &registry.FieldError{Field: "id", Value: id, Reason: "must be one non-empty key segment"}
	}
	o := recipes.Apply(opts)
	if err := o.Err(); err != nil {
		return nil, err
	}
	p, err := c.Store().NewPersistentNode(driver.JoinKey(key, id), value, o.SessionOptions...)
	if err != nil {
		return nil, fmt.Errorf("group: %s: %w", key, err)
	}
	return &Member{c: c, key: key, id: id, p: p}, nil
}

// ID returns the member's id.
func (m *Member) ID() string { return m.id }

// WaitForJoin waits until the member's node has been created once.
func (m *Member) WaitForJoin(ctx context.Context) error { return m.p.WaitForCreate(ctx) }

// SetValue changes the member's value.
func (m *Member) SetValue(value []byte) { m.p.SetValue(value) }

// Members reads the group's current members: id to value.
func (m *Member) Members(ctx context.Context) (map[string][]byte, error) {
	return Members(ctx, m.c, m.key)
}

// Close leaves the group: the node is deleted. Idempotent.
func (m *Member) Close() error { return m.p.Close() }

// Members reads the members of the group on key through c: id to value.
func Members(ctx context.Context, c *registry.Client, key string) (map[string][]byte, error) {
	nodes, err := c.Store().Tree(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("group: %s: %w", key, err)
	}
	return membersOf(key, nodes), nil
}

func membersOf(key string, nodes []registry.Node) map[string][]byte {
	out := map[string][]byte{}
	for _, n := range nodes {
		if driver.ParentKey(n.Key) == key {
			out[n.Key[len(key)+1:]] = n.Value
		}
	}
	return out
}

// Watcher follows a group's members.
type Watcher struct {
	w    registry.TreeWatcher
	key  string
	last map[string][]byte
}

// Watch follows the members of the group on key through c until ctx ends or
// Close.
func Watch(ctx context.Context, c *registry.Client, key string) (*Watcher, error) {
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	w, err := c.Store().Watch(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("group: %s: watch: %w", key, err)
	}
	return &Watcher{w: w, key: key}, nil
}

// Next returns the members on the first call, then waits until they change (who
// or their values) and returns the new set. It skips stale views. It returns
// ctx's error, or registry.ErrClosed after Close. Not safe for concurrent use.
func (w *Watcher) Next(ctx context.Context) (map[string][]byte, error) {
	for {
		tc, err := w.w.Next(ctx)
		if err != nil {
			return nil, err
		}
		if tc.Stale {
			continue
		}
		cur := membersOf(w.key, tc.Nodes)
		if w.last != nil && maps.EqualFunc(cur, w.last, bytes.Equal) {
			continue
		}
		w.last = cur
		return maps.Clone(cur), nil
	}
}

// Close stops the watcher. Idempotent.
func (w *Watcher) Close() error { return w.w.Close() }
