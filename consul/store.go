package consul

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/registry/driver"
)

// root is the Consul key every store key lives under.
func (c *Conn) root() string {
	if c.s.namespace != "" {
		return c.s.namespace
	}
	return DefaultRoot
}

// kvKey maps a store key to its Consul key.
func (c *Conn) kvKey(key string) string {
	if key == "/" {
		return c.root() + "/kv"
	}
	return c.root() + "/kv" + key
}

// seqKey is the Consul key of the sequence counter of parent.
func (c *Conn) seqKey(parent string) string {
	if parent == "/" {
		return c.root() + "/seq"
	}
	return c.root() + "/seq" + parent
}

func (c *Conn) storeKey(k string) string {
	s := strings.TrimPrefix(k, c.root()+"/kv")
	if s == "" {
		return "/"
	}
	return s
}

func (c *Conn) node(p *api.KVPair) driver.Node {
	n := driver.Node{Key: c.storeKey(p.Key), Value: p.Value, Version: int64(p.ModifyIndex),
		CreateRevision: int64(p.CreateIndex), Session: p.Session}
	if n.Value == nil {
		n.Value = []byte{}
	}
	return n
}

// storeOpts are the options of store reads and transactions: consistent enough for
// compare-and-set (the default mode: the leader answers), never stale.
func storeOpts(ctx context.Context) *api.QueryOptions { return (&api.QueryOptions{}).WithContext(ctx) }

// txn runs a KV transaction. ok is false when an operation failed; errs maps the
// failed operations' indexes to Consul's reasons.
func (c *Conn) txn(ctx context.Context, op, key string, kvOps []*api.KVTxnOp) (ok bool, results []*api.KVPair, errs map[int]string, err error) {
	ops := make(api.TxnOps, len(kvOps))
	for i, o := range kvOps {
		ops[i] = &api.TxnOp{KV: o}
	}
	ok, resp, _, err := c.cli.Txn().Txn(ops, storeOpts(ctx))
	if err != nil {
		if txnRefused(err) {
			return false, nil, nil, fmt.Errorf("consul: %s %s: the agent refused the transaction: %w: %w", op, key, driver.ErrInvalid, err)
		}
		return false, nil, nil, wrap(op, key, err)
	}
	for _, r := range resp.Results {
		if r.KV != nil {
			results = append(results, r.KV)
		}
	}
	if !ok {
		errs = map[int]string{}
		for _, e := range resp.Errors {
			errs[e.OpIndex] = e.What
		}
	}
	return ok, results, errs, nil
}

// txnRefused reports whether err is the agent refusing a transaction itself, which
// no retry can change: consul/api returns a status other than 200 and 409 from
// /v1/txn as a bare "Failed request: <body>", without the status, so the bodies of
// Consul's 413 ("Value for key ... is too large", "Transaction contains too many
// operations") and 400 ("Failed to parse body") answers are recognised by their
// text. Anything else (a 500 "No cluster leader") stays ErrUnavailable.
func txnRefused(err error) bool {
	msg := err.Error()
	if !strings.HasPrefix(msg, "Failed request: ") {
		return false
	}
	return strings.Contains(msg, " is too large (") || strings.Contains(msg, "Transaction contains too many operations") ||
		strings.Contains(msg, "Failed to parse body")
}

// ancestors returns key's ancestors below "/", top-down.
func ancestors(key string) []string {
	var out []string
	for p := driver.ParentKey(key); p != "/"; p = driver.ParentKey(p) {
		out = append(out, p)
	}
	slices.Reverse(out)
	return out
}

// Create writes a new key in one transaction with its missing parents and, for a
// sequential key, the increment of the parent's counter.
func (c *Conn) Create(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (driver.Node, error) {
	n, _, err := c.create(ctx, key, value, spec, false)
	return n, err
}

// CreateAndChildren is Create with the parent's tree read in the same
// transaction (driver.CreateLister).
func (c *Conn) CreateAndChildren(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (driver.Node, []string, error) {
	return c.create(ctx, key, value, spec, true)
}

// createGuess is what the last create under a parent that succeeded left
// behind: the parent's ancestors existed, and its sequence counter had value seq
// at ModifyIndex index (0, 0: no counter).
type createGuess struct{ seq, index uint64 }

// maxGuesses bounds the Conn's memory of parents; past it an arbitrary one is
// forgotten, which costs its parent one more round trip at its next create.
const maxGuesses = 4096

func (c *Conn) guess(parent string) (createGuess, bool) {
	c.guessMu.Lock()
	defer c.guessMu.Unlock()
	g, ok := c.guesses[parent]
	return g, ok
}

func (c *Conn) setGuess(parent string, g createGuess, ok bool) {
	c.guessMu.Lock()
	defer c.guessMu.Unlock()
	if !ok {
		delete(c.guesses, parent)
		return
	}
	if c.guesses == nil {
		c.guesses = map[string]createGuess{}
	}
	if _, had := c.guesses[parent]; !had && len(c.guesses) >= maxGuesses {
		for k := range c.guesses {
			delete(c.guesses, k)
			break
		}
	}
	c.guesses[parent] = g
}

// childNames returns the sorted names of the direct children of Consul key k
// among pairs (a get-tree of k+"/").
func (c *Conn) childNames(k string, pairs []*api.KVPair) []string {
	out := []string{}
	for _, p := range pairs {
		if !strings.HasPrefix(p.Key, k+"/") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(p.Key, k+"/"), "/")
		if name != "" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// create writes a new key and, with list, reads the parent's tree in the same
// transaction. When an earlier create under the same parent succeeded, it first
// tries one transaction that assumes what that one left: the ancestors exist
// (each is read with a get, which fails the transaction if the key is missing)
// and the counter is unchanged (a check-and-set on its ModifyIndex). If anything
// differs the transaction fails as a whole and the create reads the parents and
// the counter first, as it always did: either way the counter moves in the
// transaction that creates the key, so sequence numbers follow creation order.
func (c *Conn) create(ctx context.Context, key string, value []byte, spec driver.CreateSpec, list bool) (driver.Node, []string, error) {
	var sess *session
	if spec.Session != nil {
		s, ok := spec.Session.(*session)
		if !ok || s.c != c {
			return driver.Node{}, nil, &driver.FieldError{Field: "Session", Value: spec.Session.ID(), Reason: "not a session of this consul connection"}
		}
		if err := s.Err(); err != nil {
			return driver.Node{}, nil, fmt.Errorf("consul: create %s: %w", key, err)
		}
		sess = s
	}
	if value == nil {
		value = []byte{}
	}
	parent := driver.ParentKey(key)
	parents := ancestors(key)
	seqKey := c.seqKey(parent)
	g, optimistic := c.guess(parent)
	// taken counts the names found taken (by plain creates) while the counter
	// stayed at takenAt: they are skipped.
	var taken, takenAt uint64
	for {
		if err := ctx.Err(); err != nil {
			return driver.Node{}, nil, fmt.Errorf("consul: create %s: %w", key, err)
		}
		var missing []string
		var seq int64
		var seqIndex uint64
		var ops []*api.KVTxnOp
		if optimistic {
			for _, p := range parents {
				ops = append(ops, &api.KVTxnOp{Verb: api.KVGet, Key: c.kvKey(p)})
			}
			seq, seqIndex = int64(g.seq), g.index
		} else if len(parents) > 0 || spec.Sequential {
			// Read which parents are missing and the counter.
			var reads []*api.KVTxnOp
			for _, p := range parents {
				reads = append(reads, &api.KVTxnOp{Verb: api.KVGetOrEmpty, Key: c.kvKey(p)})
			}
			if spec.Sequential {
				reads = append(reads, &api.KVTxnOp{Verb: api.KVGetOrEmpty, Key: seqKey})
			}
			ok, res, errs, err := c.txn(ctx, "create", key, reads)
			if err != nil {
				return driver.Node{}, nil, err
			}
			if !ok {
				return driver.Node{}, nil, fmt.Errorf("consul: create %s: reading parents: %w: %v", key, driver.ErrUnavailable, errs)
			}
			exists := map[string]*api.KVPair{}
			for _, r := range res {
				if r.CreateIndex > 0 {
					exists[r.Key] = r
				}
			}
			for _, p := range parents {
				if exists[c.kvKey(p)] == nil {
					missing = append(missing, p)
				}
			}
			if p := exists[seqKey]; spec.Sequential && p != nil {
				seq, _ = strconv.ParseInt(string(p.Value), 10, 64)
				seqIndex = p.ModifyIndex
			}
		}
		name := key
		for _, p := range missing {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVCAS, Key: c.kvKey(p), Value: []byte{}, Index: 0})
		}
		if spec.Sequential {
			if taken > 0 && seqIndex != takenAt {
				taken = 0 // the counter moved: its value is new
			}
			seq += int64(taken)
			name = key + driver.SequenceSuffix(seq)
			ops = append(ops, &api.KVTxnOp{Verb: api.KVCAS, Key: seqKey, Value: []byte(strconv.FormatInt(seq+1, 10)), Index: seqIndex})
		}
		k := c.kvKey(name)
		keyOp := len(ops)
		ops = append(ops, &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: k})
		if sess != nil {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVLock, Key: k, Value: value, Session: sess.id})
		} else {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: k, Value: value})
		}
		ops = append(ops, &api.KVTxnOp{Verb: api.KVGet, Key: k})
		if list {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVGetTree, Key: c.kvKey(parent) + "/"})
		}
		ok, res, errs, err := c.txn(ctx, "create", name, ops)
		if err != nil {
			return driver.Node{}, nil, err
		}
		if ok {
			var names []string
			if list {
				names = c.childNames(c.kvKey(parent), res)
			}
			next := createGuess{}
			for _, r := range res {
				if spec.Sequential && r.Key == seqKey {
					next = createGuess{seq: uint64(seq + 1), index: r.ModifyIndex}
				}
			}
			if !spec.Sequential {
				next, _ = c.guess(parent) // keep the counter's guess
			}
			c.setGuess(parent, next, true)
			for _, r := range slices.Backward(res) { // the get's, with the value
				if r.Key == k {
					return c.node(r), names, nil
				}
			}
			return driver.Node{}, nil, fmt.Errorf("consul: create %s: no result: %w", name, driver.ErrUnavailable)
		}
		if optimistic {
			// Something differs from the guess (a parent, the counter, the name, the
			// session): read, and try again as before.
			optimistic = false
			c.setGuess(parent, createGuess{}, false)
			continue
		}
		if why, ok := errs[keyOp]; ok && !spec.Sequential {
			return driver.Node{}, nil, fmt.Errorf("consul: create %s: %w (%s)", name, driver.ErrExists, why)
		}
		if _, ok := errs[keyOp]; ok && spec.Sequential && !slices.ContainsFunc(slices.Collect(maps.Keys(errs)), func(i int) bool { return i < keyOp }) {
			// The name was taken (a plain create of a numbered key) while the
			// parents and the counter were as read: skip the number.
			taken++
			takenAt = seqIndex
			continue
		}
		if why, ok := errs[keyOp+1]; ok && sess != nil {
			sess.check() // Consul says the session is invalid: let the renewals confirm it
			return driver.Node{}, nil, fmt.Errorf("consul: create %s: session %s: %w (%s)", name, sess.id, driver.ErrSessionLost, why)
		}
		// A parent or the counter changed under us, or another creator took the
		// sequence number: read again.
	}
}

// Get reads one key.
func (c *Conn) Get(ctx context.Context, key string) (driver.Node, error) {
	p, _, err := c.cli.KV().Get(c.kvKey(key), storeOpts(ctx))
	if err != nil {
		return driver.Node{}, wrap("get", key, err)
	}
	if p == nil {
		return driver.Node{}, fmt.Errorf("consul: get %s: %w", key, driver.ErrNotFound)
	}
	return c.node(p), nil
}

// conflictOrMissing answers a versioned call with an impossible version.
func (c *Conn) conflictOrMissing(ctx context.Context, op, key string, version int64) error {
	if _, err := c.Get(ctx, key); err != nil {
		return err
	}
	return fmt.Errorf("consul: %s %s: version %d: %w", op, key, version, driver.ErrVersionConflict)
}

// Set compares the ModifyIndex (unless AnyVersion) and sets, keeping the key's
// session.
func (c *Conn) Set(ctx context.Context, key string, value []byte, version int64) (driver.Node, error) {
	if version < 0 && version != driver.AnyVersion {
		return driver.Node{}, c.conflictOrMissing(ctx, "set", key, version)
	}
	if value == nil {
		value = []byte{}
	}
	k := c.kvKey(key)
	ops := []*api.KVTxnOp{{Verb: api.KVGet, Key: k}}
	if version == driver.AnyVersion {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: k, Value: value})
	} else {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVCAS, Key: k, Value: value, Index: uint64(version)})
	}
	ops = append(ops, &api.KVTxnOp{Verb: api.KVGet, Key: k})
	ok, res, errs, err := c.txn(ctx, "set", key, ops)
	if err != nil {
		return driver.Node{}, err
	}
	switch {
	case ok && len(res) > 0:
		return c.node(res[len(res)-1]), nil
	case ok:
		return driver.Node{}, fmt.Errorf("consul: set %s: no result: %w", key, driver.ErrUnavailable)
	}
	if _, missing := errs[0]; missing {
		return driver.Node{}, fmt.Errorf("consul: set %s: %w", key, driver.ErrNotFound)
	}
	return driver.Node{}, fmt.Errorf("consul: set %s: version %d: %w", key, version, driver.ErrVersionConflict)
}

// children returns the Consul keys one level below k.
func (c *Conn) children(ctx context.Context, k string) ([]string, error) {
	keys, _, err := c.cli.KV().Keys(k+"/", "/", storeOpts(ctx))
	return keys, err
}

// Delete removes a key (and the tree under it if recursive) in one transaction
// comparing the ModifyIndex when a version is given.
func (c *Conn) Delete(ctx context.Context, key string, version int64, recursive bool) error {
	if version < 0 && version != driver.AnyVersion {
		return c.conflictOrMissing(ctx, "delete", key, version)
	}
	k := c.kvKey(key)
	if !recursive {
		kids, err := c.children(ctx, k)
		if err != nil {
			return wrap("delete", key, err)
		}
		if len(kids) > 0 {
			if key != "/" {
				if _, err := c.Get(ctx, key); err != nil {
					return err
				}
			}
			return fmt.Errorf("consul: delete %s: %w", key, driver.ErrNotEmpty)
		}
	}
	var ops []*api.KVTxnOp
	getOp, checkOp := -1, -1
	if key != "/" {
		getOp = len(ops)
		ops = append(ops, &api.KVTxnOp{Verb: api.KVGet, Key: k})
		if version != driver.AnyVersion {
			checkOp = len(ops)
			ops = append(ops, &api.KVTxnOp{Verb: api.KVCheckIndex, Key: k, Index: uint64(version)})
		}
	}
	if recursive {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVDeleteTree, Key: k + "/"})
	}
	ops = append(ops, &api.KVTxnOp{Verb: api.KVDelete, Key: k})
	ok, _, errs, err := c.txn(ctx, "delete", key, ops)
	if err != nil || ok {
		return err
	}
	if _, bad := errs[getOp]; bad {
		return fmt.Errorf("consul: delete %s: %w", key, driver.ErrNotFound)
	}
	if _, bad := errs[checkOp]; bad {
		return fmt.Errorf("consul: delete %s: version %d: %w", key, version, driver.ErrVersionConflict)
	}
	return fmt.Errorf("consul: delete %s: %w: %v", key, driver.ErrUnavailable, errs)
}

// Children lists the names of the key's direct children.
func (c *Conn) Children(ctx context.Context, key string) ([]string, error) {
	if key != "/" {
		if _, err := c.Get(ctx, key); err != nil {
			return nil, err
		}
	}
	k := c.kvKey(key)
	keys, err := c.children(ctx, k)
	if err != nil {
		return nil, wrap("children", key, err)
	}
	out := []string{}
	for _, ck := range keys {
		name := strings.TrimSuffix(strings.TrimPrefix(ck, k+"/"), "/")
		if name != "" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Tree reads the key and its descendants in one read of the key's prefix.
func (c *Conn) Tree(ctx context.Context, key string) ([]driver.Node, error) {
	k := c.kvKey(key)
	pairs, _, err := c.cli.KV().List(k, storeOpts(ctx))
	if err != nil {
		return nil, wrap("tree", key, err)
	}
	var out []driver.Node
	for _, p := range pairs {
		if p.Key == k || strings.HasPrefix(p.Key, k+"/") {
			out = append(out, c.node(p))
		}
	}
	driver.SortNodes(out)
	return out, nil
}

// WatchTree runs blocking queries on the key's prefix.
func (c *Conn) WatchTree(ctx context.Context, key string, notify func()) error {
	k := c.kvKey(key)
	return c.block(ctx, key, false, notify, func(q *api.QueryOptions) (*api.QueryMeta, error) {
		_, meta, err := c.cli.KV().Keys(k, "", q)
		if err != nil {
			return nil, err
		}
		return meta, nil
	})
}
