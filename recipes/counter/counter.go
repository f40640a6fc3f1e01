// Package counter holds the shared-value recipes, written once over
// registry.Store: Count (Curator's SharedCount and DistributedAtomicLong), an
// int64 in one store key changed by compare-and-set on the key's Version.
//
// They need only the store, not sessions, so they run on every backend with one:
// mem, etcd, ZooKeeper, Consul, and Nacos where its config store is offered (see
// package nacos); elsewhere NewCount fails with an error matching
// registry.ErrNotSupported.
package counter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
)

// Versioned is a value with the store version it was read at; pass it to TrySet.
type Versioned struct {
	Value   int64
	Version int64
}

// Count is a shared int64 in one store key (Curator's SharedCount; Add is
// DistributedAtomicLong's add). Every change is a compare-and-set on the key's
// Version, so no update is lost however many processes change it at once. A
// Count is safe for concurrent use. It reads Options.RequestTimeout and the retry
// backoff (Add's retries after a conflict have jitter).
type Count struct {
	st   *registry.Store
	key  string
	opts recipes.Options
}

// NewCount returns the count in key, creating the key with initial if it does not
// exist yet (an existing value is kept). A bad key or option fails with an error
// matching registry.ErrInvalid, before any I/O.
func NewCount(ctx context.Context, c *registry.Client, key string, initial int64, opts ...recipes.Option) (*Count, error) {
	if err := queue.ValidDir(key); err != nil {
		return nil, err
	}
	n := &Count{st: c.Store(), key: key, opts: recipes.Apply(opts)}
	if err := n.opts.Err(); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, n.opts.RequestTimeout)
	defer cancel()
	_, err := n.st.Create(rctx, key, encode(initial))
	if err != nil && !errors.Is(err, registry.ErrExists) {
		return nil, fmt.Errorf("counter: %s: %w", key, err)
	}
	return n, nil
}

func encode(v int64) []byte { return []byte(strconv.FormatInt(v, 10)) }

func decode(n registry.Node) (Versioned, error) {
	v, err := strconv.ParseInt(string(n.Value), 10, 64)
	if err != nil {
		return Versioned{}, fmt.Errorf("counter: %s holds %q, not an integer: %w", n.Key, n.Value, registry.ErrInvalid)
	}
	return Versioned{Value: v, Version: n.Version}, nil
}

// Key returns the count's key.
func (n *Count) Key() string { return n.key }

// Get reads the count.
func (n *Count) Get(ctx context.Context) (Versioned, error) {
	rctx, cancel := context.WithTimeout(ctx, n.opts.RequestTimeout)
	defer cancel()
	node, err := n.st.Get(rctx, n.key)
	if err != nil {
		return Versioned{}, fmt.Errorf("counter: %s: %w", n.key, err)
	}
	return decode(node)
}

// TrySet sets the count to v if it is still at prev's version; ok is false (and
// err nil) if someone changed it since.
func (n *Count) TrySet(ctx context.Context, prev Versioned, v int64) (now Versioned, ok bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, n.opts.RequestTimeout)
	defer cancel()
	node, err := n.st.Set(rctx, n.key, encode(v), prev.Version)
	if errors.Is(err, registry.ErrVersionConflict) {
		return Versioned{}, false, nil
	}
	if err != nil {
		return Versioned{}, false, fmt.Errorf("counter: %s: %w", n.key, err)
	}
	return Versioned{Value: v, Version: node.Version}, true, nil
}

// Set sets the count unconditionally.
func (n *Count) Set(ctx context.Context, v int64) error {
	rctx, cancel := context.WithTimeout(ctx, n.opts.RequestTimeout)
	defer cancel()
	if _, err := n.st.Set(rctx, n.key, encode(v), registry.AnyVersion); err != nil {
		return fmt.Errorf("counter: %s: %w", n.key, err)
	}
	return nil
}

// Add adds delta atomically and returns the new value: read, compare-and-set,
// and after a conflict back off with jitter and try again, until ctx ends.
func (n *Count) Add(ctx context.Context, delta int64) (int64, error) {
	b := queue.NewBackoff(n.opts)
	b.InitialInterval = min(b.InitialInterval, 5*time.Millisecond) // conflicts clear fast
	b.Reset()
	for {
		cur, err := n.Get(ctx)
		if err != nil {
			return 0, err
		}
		now, ok, err := n.TrySet(ctx, cur, cur.Value+delta)
		if err != nil {
			return 0, err
		}
		if ok {
			return now.Value, nil
		}
		if err := queue.Sleep(ctx, b.NextBackOff()); err != nil {
			return 0, fmt.Errorf("counter: %s: add: %w", n.key, err)
		}
	}
}

// Watch follows the count until ctx ends or the Watcher is closed.
func (n *Count) Watch(ctx context.Context) (*Watcher, error) {
	w, err := n.st.Watch(ctx, n.key)
	if err != nil {
		return nil, fmt.Errorf("counter: %s: watch: %w", n.key, err)
	}
	return &Watcher{w: w, key: n.key}, nil
}

// Watcher follows a Count (Curator's SharedCountListener, as a Next loop).
type Watcher struct {
	w    registry.TreeWatcher
	key  string
	last *Versioned
}

// Next returns the count's value on the first call, then waits until it changes
// and returns the new one (changes are coalesced: the latest value is returned,
// maybe not every step). It skips views the watch marks stale. It returns ctx's
// error, or registry.ErrClosed after Close; ErrNotFound if the key was deleted.
// Next is not safe for concurrent use.
func (w *Watcher) Next(ctx context.Context) (Versioned, error) {
	for {
		tc, err := w.w.Next(ctx)
		if err != nil {
			return Versioned{}, err
		}
		if tc.Stale {
			continue
		}
		var found *registry.Node
		for i := range tc.Nodes {
			if tc.Nodes[i].Key == w.key {
				found = &tc.Nodes[i]
			}
		}
		if found == nil {
			return Versioned{}, fmt.Errorf("counter: %s: %w", w.key, registry.ErrNotFound)
		}
		v, err := decode(*found)
		if err != nil {
			return Versioned{}, err
		}
		if w.last != nil && *w.last == v {
			continue
		}
		w.last = &v
		return v, nil
	}
}

// Close stops the watcher. Idempotent.
func (w *Watcher) Close() error { return w.w.Close() }
