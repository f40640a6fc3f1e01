package etcd

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/regkit/regkit/registry/driver"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// kvKey maps a store key to its etcd key.
func (c *Conn) kvKey(key string) string {
	if key == "/" {
		return c.prefix + "/kv"
	}
	return c.prefix + "/kv" + key
}

func (c *Conn) storeKey(k []byte) string {
	s := strings.TrimPrefix(string(k), c.prefix+"/kv")
	if s == "" {
		return "/"
	}
	return s
}

func (c *Conn) node(kv *mvccpb.KeyValue) driver.Node {
	n := driver.Node{Key: c.storeKey(kv.Key), Value: kv.Value, Version: kv.ModRevision, CreateRevision: kv.CreateRevision}
	if n.Value == nil {
		n.Value = []byte{}
	}
	if kv.Lease != 0 {
		n.Session = strconv.FormatInt(kv.Lease, 16)
	}
	return n
}

// parentOps returns, for every ancestor of key, a nested transaction creating it
// empty if it does not exist.
func (c *Conn) parentOps(key string) []clientv3.Op {
	var ops []clientv3.Op
	for p := driver.ParentKey(key); p != "/"; p = driver.ParentKey(p) {
		k := c.kvKey(p)
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k, "")}, nil))
	}
	slices.Reverse(ops)
	return ops
}

// Create writes a new key with its missing parents in one transaction.
func (c *Conn) Create(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (driver.Node, error) {
	n, _, err := c.create(ctx, key, value, spec, false)
	return n, err
}

// CreateAndChildren is Create with the parent's children read in the same
// transaction (driver.CreateLister): one round trip, as etcd's
// concurrency.Mutex takes its lock with one transaction that puts its key and
// reads the prefix's owner.
func (c *Conn) CreateAndChildren(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (driver.Node, []string, error) {
	return c.create(ctx, key, value, spec, true)
}

// seqGuess is the last sequence counter of a parent this Conn saw: its value and
// its mod revision.
type seqGuess struct{ next, mod int64 }

// maxSeqGuesses bounds the Conn's memory of counters (one per parent that had a
// sequential create); past it an arbitrary one is forgotten, which only costs
// its parent one more round trip at its next create.
const maxSeqGuesses = 4096

func (c *Conn) seqGuess(seqKey string) seqGuess {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	return c.seqs[seqKey]
}

func (c *Conn) setSeqGuess(seqKey string, g seqGuess) {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	if c.seqs == nil {
		c.seqs = map[string]seqGuess{}
	}
	if _, ok := c.seqs[seqKey]; !ok && len(c.seqs) >= maxSeqGuesses {
		for k := range c.seqs {
			delete(c.seqs, k)
			break
		}
	}
	c.seqs[seqKey] = g
}

// create writes a new key with its missing parents in one transaction and, with
// list, reads the parent's children in it. A sequential create compares the
// parent's counter with the value this Conn last saw (its mod revision), so that
// it takes one round trip; when another creator moved the counter meanwhile the
// transaction fails, its else branch reads the counter, and the create is tried
// again with that value. Names are only ever taken by moving the counter in the
// same transaction that creates the key, so the order of sequence numbers is the
// order of creation, as before.
func (c *Conn) create(ctx context.Context, key string, value []byte, spec driver.CreateSpec, list bool) (driver.Node, []string, error) {
	var putOpts []clientv3.OpOption
	var leaseID clientv3.LeaseID
	if spec.Session != nil {
		l, ok := spec.Session.(*lease)
		if !ok || l.c != c {
			return driver.Node{}, nil, &driver.FieldError{Field: "Session", Value: spec.Session.ID(), Reason: "not a session of this etcd connection"}
		}
		leaseID = l.id
		putOpts = append(putOpts, clientv3.WithLease(l.id))
	}
	parent := c.kvKey(driver.ParentKey(key))
	seqKey := c.prefix + "/seq" + driver.ParentKey(key)
	var guess seqGuess
	if spec.Sequential {
		guess = c.seqGuess(seqKey)
	}
	for {
		name := key
		cmps := []clientv3.Cmp{}
		ops := c.parentOps(key)
		var elseOps []clientv3.Op
		if spec.Sequential {
			name = key + driver.SequenceSuffix(guess.next)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(seqKey), "=", guess.mod))
			ops = append(ops, clientv3.OpPut(seqKey, strconv.FormatInt(guess.next+1, 10)))
			elseOps = append(elseOps, clientv3.OpGet(seqKey))
		}
		k := c.kvKey(name)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		ops = append(ops, clientv3.OpPut(k, string(value), putOpts...))
		if list {
			ops = append(ops, clientv3.OpGet(parent+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly()))
		}
		resp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
		if err != nil {
			if l, ok := spec.Session.(*lease); ok {
				if lost := l.loseIfGone(err); lost != nil {
					return driver.Node{}, nil, fmt.Errorf("etcd: create %s: %w", name, lost)
				}
			}
			return driver.Node{}, nil, wrap("create", name, err)
		}
		if resp.Succeeded {
			if spec.Sequential {
				// Every put of the transaction has its revision.
				c.setSeqGuess(seqKey, seqGuess{next: guess.next + 1, mod: resp.Header.Revision})
			}
			var names []string
			if list {
				names = c.childNames(parent, resp.Responses[len(resp.Responses)-1].GetResponseRange().Kvs)
			}
			// The key was created by this transaction (its create revision was 0),
			// so its create and mod revisions are the transaction's: no read back.
			rev := resp.Header.Revision
			return c.node(&mvccpb.KeyValue{Key: []byte(k), Value: value, CreateRevision: rev, ModRevision: rev,
				Version: 1, Lease: int64(leaseID)}), names, nil
		}
		if !spec.Sequential {
			return driver.Node{}, nil, fmt.Errorf("etcd: create %s: %w", name, driver.ErrExists)
		}
		var now seqGuess
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			now.next, _ = strconv.ParseInt(string(kvs[0].Value), 10, 64)
			now.mod = kvs[0].ModRevision
		}
		if now.mod == guess.mod {
			// The counter was as guessed, so the name was taken (a key created
			// without Sequential): skip it.
			now.next = guess.next + 1
		}
		// Another creator moved the counter: try its next number.
		guess = now
	}
}

// childNames returns the sorted names of parent's direct children among kvs, the
// keys under parent+"/".
func (c *Conn) childNames(parent string, kvs []*mvccpb.KeyValue) []string {
	out := []string{}
	for _, kv := range kvs {
		rest := strings.TrimPrefix(string(kv.Key), parent+"/")
		name, _, _ := strings.Cut(rest, "/")
		if len(out) == 0 || out[len(out)-1] != name {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Get reads one key.
func (c *Conn) Get(ctx context.Context, key string) (driver.Node, error) {
	resp, err := c.cli.Get(ctx, c.kvKey(key))
	if err != nil {
		return driver.Node{}, wrap("get", key, err)
	}
	if len(resp.Kvs) == 0 {
		return driver.Node{}, fmt.Errorf("etcd: get %s: %w", key, driver.ErrNotFound)
	}
	return c.node(resp.Kvs[0]), nil
}

func versionCmp(k string, version int64) clientv3.Cmp {
	if version == driver.AnyVersion {
		return clientv3.Compare(clientv3.CreateRevision(k), ">", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(k), "=", version)
}

// Set compares the mod revision and sets, keeping the key's lease.
func (c *Conn) Set(ctx context.Context, key string, value []byte, version int64) (driver.Node, error) {
	k := c.kvKey(key)
	resp, err := c.cli.Txn(ctx).If(versionCmp(k, version)).
		Then(clientv3.OpPut(k, string(value), clientv3.WithIgnoreLease()), clientv3.OpGet(k)).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return driver.Node{}, wrap("set", key, err)
	}
	kvs := resp.Responses[len(resp.Responses)-1].GetResponseRange().Kvs
	if resp.Succeeded {
		return c.node(kvs[0]), nil
	}
	if len(kvs) == 0 {
		return driver.Node{}, fmt.Errorf("etcd: set %s: %w", key, driver.ErrNotFound)
	}
	return driver.Node{}, fmt.Errorf("etcd: set %s: version %d, want %d: %w", key, kvs[0].ModRevision, version, driver.ErrVersionConflict)
}

// Delete removes a key (and its descendants if recursive) in one transaction.
func (c *Conn) Delete(ctx context.Context, key string, version int64, recursive bool) error {
	k := c.kvKey(key)
	var cmps []clientv3.Cmp
	if key != "/" {
		cmps = append(cmps, versionCmp(k, version))
	}
	ops := []clientv3.Op{clientv3.OpDelete(k)}
	if recursive {
		ops = append(ops, clientv3.OpDelete(k+"/", clientv3.WithPrefix()))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k+"/"), "=", 0).WithPrefix())
	}
	resp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).
		Else(clientv3.OpGet(k), clientv3.OpGet(k+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return wrap("delete", key, err)
	}
	if resp.Succeeded {
		return nil
	}
	self := resp.Responses[0].GetResponseRange()
	kids := resp.Responses[1].GetResponseRange()
	switch {
	case len(self.Kvs) == 0:
		return fmt.Errorf("etcd: delete %s: %w", key, driver.ErrNotFound)
	case version != driver.AnyVersion && self.Kvs[0].ModRevision != version:
		return fmt.Errorf("etcd: delete %s: %w", key, driver.ErrVersionConflict)
	case kids.Count > 0:
		return fmt.Errorf("etcd: delete %s: %w", key, driver.ErrNotEmpty)
	}
	return fmt.Errorf("etcd: delete %s: %w (raced, try again)", key, driver.ErrVersionConflict)
}

// Children lists the direct children's names.
func (c *Conn) Children(ctx context.Context, key string) ([]string, error) {
	k := c.kvKey(key)
	resp, err := c.cli.Txn(ctx).Then(clientv3.OpGet(k, clientv3.WithCountOnly()),
		clientv3.OpGet(k+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return nil, wrap("children", key, err)
	}
	if key != "/" && resp.Responses[0].GetResponseRange().Count == 0 {
		return nil, fmt.Errorf("etcd: children %s: %w", key, driver.ErrNotFound)
	}
	return c.childNames(k, resp.Responses[1].GetResponseRange().Kvs), nil
}

// Tree reads the key and its descendants at one revision.
func (c *Conn) Tree(ctx context.Context, key string) ([]driver.Node, error) {
	k := c.kvKey(key)
	resp, err := c.cli.Txn(ctx).Then(clientv3.OpGet(k), clientv3.OpGet(k+"/", clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, wrap("tree", key, err)
	}
	var out []driver.Node
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			out = append(out, c.node(kv))
		}
	}
	driver.SortNodes(out)
	return out, nil
}

// WatchTree follows the key and its descendants.
func (c *Conn) WatchTree(ctx context.Context, key string, notify func()) error {
	return c.watchPrefix(ctx, c.kvKey(key), notify)
}
