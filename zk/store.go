package zk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry/driver"
)

// ProtectedPrefix starts the last segment of a protected key: ProtectedPrefix, a
// UUID in its 36-character text form, '-', then the caller's name (Curator's
// format: "_c_<uuid>-lock-0000000007").
const ProtectedPrefix = "_c_"

// SequenceOf returns the 10-digit sequence suffix of a sequential key or name
// (protected or not) as a number, or -1 if it has none. Sort sequential children
// by it: a protected name's GUID does not sort in creation order.
func SequenceOf(name string) int64 {
	if len(name) < 10 {
		return -1
	}
	var n int64
	for _, r := range name[len(name)-10:] {
		if r < '0' || r > '9' {
			return -1
		}
		n = n*10 + int64(r-'0')
	}
	return n
}

// StripProtection returns name without a protected-creation prefix (either
// form ProtectedID accepts).
func StripProtection(name string) string {
	if _, rest, ok := ProtectedID(name); ok {
		return rest
	}
	return name
}

// ProtectedID splits a protected name, ProtectedPrefix + ID + '-' + rest, into its
// ID and rest. The ID is Curator's, a UUID in its 36-character text form
// (8-4-4-4-12 hex digits), or 32 hex digits (what regkit wrote before it used
// Curator's form). ok is false for a name that is not protected.
func ProtectedID(name string) (id, rest string, ok bool) {
	s, found := strings.CutPrefix(name, ProtectedPrefix)
	if !found {
		return "", name, false
	}
	for _, n := range []int{36, 32} {
		if len(s) > n && s[n] == '-' && isID(s[:n]) {
			return s[:n], s[n+1:], true
		}
	}
	return "", name, false
}

// isID reports whether s is 32 hex digits or a UUID's 8-4-4-4-12 text form.
func isID(s string) bool {
	for i, r := range s {
		if len(s) == 36 && (i == 8 || i == 13 || i == 18 || i == 23) {
			if r != '-' {
				return false
			}
			continue
		}
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return len(s) == 32 || len(s) == 36
}

// newGUID returns a random (version 4) UUID in its text form, as Curator's
// protected names carry (java.util.UUID.randomUUID().toString()).
func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (c *Conn) node(path string, value []byte, st *zk.Stat) driver.Node {
	if value == nil {
		value = []byte{}
	}
	return driver.Node{Key: c.rel(path), Value: value, Version: int64(st.Version),
		CreateRevision: st.Czxid, Session: hexID(st.EphemeralOwner)}
}

// hidden reports whether an absolute path is the server's own subtree or the
// connection's registry tree, which the store never shows nor deletes.
func (c *Conn) hidden(abs string) bool {
	return under(abs, "/zookeeper") || under(abs, c.registryRoot())
}

// under reports whether abs is root or a descendant of it.
func under(abs, root string) bool { return abs == root || strings.HasPrefix(abs, root+"/") }

// registryRoot is the znode under which the connection's layout keeps instances:
// <chroot>/services, <chroot><base> or <chroot>/<group>.
func (c *Conn) registryRoot() string {
	switch c.cfg.layout {
	case LayoutCurator:
		return c.cfg.base
	case LayoutDubbo:
		return c.cfg.group
	}
	return c.cfg.chroot + "/services"
}

// storePath maps a store key to its znode, refusing keys inside the registry's
// tree: the store and the registry never share znodes, so store data is never
// read as an instance and a store delete never removes a registration.
func (c *Conn) storePath(key string) (string, error) {
	path := c.path(key)
	if key != "/" && under(path, c.registryRoot()) {
		return "", &driver.FieldError{Field: "key", Value: key, Reason: "inside the registry's tree " + c.registryRoot() +
			" (the store and the registry never share znodes; choose another key)"}
	}
	return path, nil
}

// Create writes a new key (see StoreConn). Ephemeral keys are created through the
// session's own connection; ephemeral sequential keys are protected (see the
// package doc).
func (c *Conn) Create(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (driver.Node, error) {
	zc := c.zc
	var flags int32
	var sess *session
	if spec.Session != nil {
		s, ok := spec.Session.(*session)
		if !ok || s.c != c {
			return driver.Node{}, &driver.FieldError{Field: "Session", Value: spec.Session.ID(), Reason: "not a session of this zk connection"}
		}
		if err := s.Err(); err != nil {
			return driver.Node{}, wrap("create", key, err)
		}
		sess, zc = s, s.zc
		flags |= zk.FlagEphemeral
	}
	if spec.Sequential {
		flags |= zk.FlagSequence
	}
	path, err := c.storePath(key)
	if err != nil {
		return driver.Node{}, err
	}
	parent := driver.ParentKey(path)
	var guid string
	if sess != nil && spec.Sequential && c.cfg.protect {
		name := path[strings.LastIndexByte(path, '/')+1:]
		if id, _, ok := ProtectedID(name); ok {
			// Already protected by the caller (the recipes name their nodes so on
			// every backend): use its ID, do not wrap it a second time.
			guid = id
		} else {
			guid = newGUID()
			path = driver.JoinKey(parent, ProtectedPrefix+guid+"-"+name)
		}
	}
	lostConn := false
	for attempt := 0; ; attempt++ {
		if sess != nil {
			if err := sess.Err(); err != nil {
				return driver.Node{}, wrap("create", key, err)
			}
		}
		created, err := call(ctx, c, func() (string, error) { return zc.zk.Create(path, value, flags, c.cfg.acl) })
		switch {
		case err == nil:
			return c.readCreated(ctx, zc, created, value)
		case errors.Is(err, zk.ErrNoNode):
			if err := c.ensurePath(ctx, zc, parent); err != nil {
				return driver.Node{}, err
			}
			continue
		case errors.Is(err, zk.ErrNodeExists) && lostConn && sess != nil && !spec.Sequential:
			// A retried ephemeral create: ours if owned by the session.
			st, serr := c.existsOn(ctx, zc, path)
			if serr == nil && st.EphemeralOwner == sess.id {
				return c.node(path, value, st), nil
			}
			return driver.Node{}, wrap("create", key, err)
		case isConnLoss(err) && attempt < 5:
			lostConn = true
			if err := c.awaitSession(ctx, zc); err != nil {
				return driver.Node{}, wrap("create", key, err)
			}
			switch {
			case guid != "":
				// Protected: the create may have been applied; look for our GUID.
				if n, ok, err := c.findProtected(ctx, zc, parent, guid, value); err != nil {
					return driver.Node{}, err
				} else if ok {
					return n, nil
				}
				continue
			case sess != nil && !spec.Sequential:
				continue
			}
			return driver.Node{}, fmt.Errorf("zk: create %s: connection lost, the create may or may not have been applied: %w: %w",
				key, driver.ErrUnavailable, err)
		}
		return driver.Node{}, wrap("create", key, err)
	}
}

// awaitSession waits until zc has a session again (or ctx ends).
func (c *Conn) awaitSession(ctx context.Context, zc *zkConn) error {
	for {
		st, _, ch := zc.status()
		if st == zk.StateHasSession {
			return nil
		}
		if zc.refuse.Load() {
			return fmt.Errorf("session lost: %w", driver.ErrSessionLost)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// findProtected looks in parent for the child carrying guid.
func (c *Conn) findProtected(ctx context.Context, zc *zkConn, parent, guid string, value []byte) (driver.Node, bool, error) {
	kids, err := call(ctx, c, func() ([]string, error) {
		kids, _, err := zc.zk.Children(parent)
		return kids, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return driver.Node{}, false, nil
	}
	if err != nil {
		return driver.Node{}, false, wrap("create: find protected node", parent, err)
	}
	for _, k := range kids {
		if strings.HasPrefix(k, ProtectedPrefix+guid+"-") {
			n, err := c.readCreated(ctx, zc, driver.JoinKey(parent, k), value)
			return n, err == nil, err
		}
	}
	return driver.Node{}, false, nil
}

func (c *Conn) existsOn(ctx context.Context, zc *zkConn, path string) (*zk.Stat, error) {
	return call(ctx, c, func() (*zk.Stat, error) {
		ok, st, err := zc.zk.Exists(path)
		if err == nil && !ok {
			err = zk.ErrNoNode
		}
		return st, err
	})
}

// readCreated returns the node just created at path, reading its stat.
func (c *Conn) readCreated(ctx context.Context, zc *zkConn, path string, value []byte) (driver.Node, error) {
	st, err := c.existsOn(ctx, zc, path)
	if errors.Is(err, zk.ErrNoNode) { // deleted at once by someone else
		return c.node(path, value, &zk.Stat{}), nil
	}
	if err != nil {
		return driver.Node{}, wrap("create: read back", c.rel(path), err)
	}
	return c.node(path, value, st), nil
}

// Get reads one key.
func (c *Conn) Get(ctx context.Context, key string) (driver.Node, error) {
	path, err := c.storePath(key)
	if err != nil {
		return driver.Node{}, err
	}
	type res struct {
		b  []byte
		st *zk.Stat
	}
	r, err := call(ctx, c, func() (res, error) {
		b, st, err := c.zc.zk.Get(path)
		return res{b, st}, err
	})
	if err != nil {
		return driver.Node{}, wrap("get", key, err)
	}
	return c.node(path, r.b, r.st), nil
}

func version32(v int64) (int32, bool) {
	if v == driver.AnyVersion {
		return -1, true
	}
	if v < 0 || v > math.MaxInt32 {
		return 0, false
	}
	return int32(v), true
}

// Set writes the value if the data version matches.
func (c *Conn) Set(ctx context.Context, key string, value []byte, version int64) (driver.Node, error) {
	path, err := c.storePath(key)
	if err != nil {
		return driver.Node{}, err
	}
	v, ok := version32(version)
	if !ok {
		if _, err := c.exists(ctx, path); err != nil {
			return driver.Node{}, wrap("set", key, err)
		}
		return driver.Node{}, fmt.Errorf("zk: set %s: version %d: %w", key, version, driver.ErrVersionConflict)
	}
	st, err := call(ctx, c, func() (*zk.Stat, error) { return c.zc.zk.Set(path, value, v) })
	if err != nil {
		return driver.Node{}, wrap("set", key, err)
	}
	return c.node(path, value, st), nil
}

// Delete removes a key; recursive deletes children first, tolerating concurrent
// deletes.
func (c *Conn) Delete(ctx context.Context, key string, version int64, recursive bool) error {
	path, err := c.storePath(key)
	if err != nil {
		return err
	}
	v, ok := version32(version)
	if !recursive {
		if !ok {
			if _, err := c.exists(ctx, path); err != nil {
				return wrap("delete", key, err)
			}
			return fmt.Errorf("zk: delete %s: version %d: %w", key, version, driver.ErrVersionConflict)
		}
		return wrap("delete", key, c.del(ctx, path, v))
	}
	if key != "/" {
		st, err := c.exists(ctx, path)
		if err != nil {
			return wrap("delete", key, err)
		}
		if !ok || (v != -1 && st.Version != v) {
			return fmt.Errorf("zk: delete %s: version %d, want %d: %w", key, st.Version, version, driver.ErrVersionConflict)
		}
	}
	for attempt := 0; ; attempt++ {
		if err := c.deleteChildren(ctx, path); err != nil {
			return wrap("delete", key, err)
		}
		if key == "/" {
			return nil // the store's root (the chroot) stays
		}
		if c.holdsRegistry(path) {
			return fmt.Errorf("zk: delete %s: its descendants are deleted, but it holds the registry's tree %s, which stays: %w",
				key, c.registryRoot(), driver.ErrNotEmpty)
		}
		err := c.del(ctx, path, v)
		switch {
		case err == nil, errors.Is(err, zk.ErrNoNode):
			return nil
		case errors.Is(err, zk.ErrNotEmpty) && attempt < 10:
			continue // a child was created meanwhile
		}
		return wrap("delete", key, err)
	}
}

// holdsRegistry reports whether abs is a proper ancestor of the registry's tree
// (a layout whose tree lies deeper than one level under the chroot, e.g. a
// curator base /a/b): the store deletes its other descendants, never the node.
func (c *Conn) holdsRegistry(abs string) bool {
	root := c.registryRoot()
	return root != abs && under(root, abs)
}

// deleteChildren deletes every descendant of path, deepest first, except the
// registry's tree and its ancestors.
func (c *Conn) deleteChildren(ctx context.Context, path string) error {
	kids, err := call(ctx, c, func() ([]string, error) {
		kids, _, err := c.zc.zk.Children(path)
		return kids, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, k := range kids {
		cp := driver.JoinKey(path, k)
		if c.hidden(cp) {
			continue
		}
		for attempt := 0; ; attempt++ {
			if err := c.deleteChildren(ctx, cp); err != nil {
				return err
			}
			if c.holdsRegistry(cp) {
				break
			}
			err := c.del(ctx, cp, -1)
			if err == nil || errors.Is(err, zk.ErrNoNode) {
				break
			}
			if errors.Is(err, zk.ErrNotEmpty) && attempt < 10 {
				continue
			}
			return err
		}
	}
	return nil
}

// Children lists the direct children's names, sorted.
func (c *Conn) Children(ctx context.Context, key string) ([]string, error) {
	path, err := c.storePath(key)
	if err != nil {
		return nil, err
	}
	kids, err := call(ctx, c, func() ([]string, error) {
		kids, _, err := c.zc.zk.Children(path)
		return kids, err
	})
	if errors.Is(err, zk.ErrNoNode) && key == "/" {
		return []string{}, nil
	}
	if err != nil {
		return nil, wrap("children", key, err)
	}
	out := make([]string, 0, len(kids))
	for _, k := range kids {
		if !c.hidden(driver.JoinKey(path, k)) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Tree reads the key and its descendants, node by node.
func (c *Conn) Tree(ctx context.Context, key string) ([]driver.Node, error) {
	path, err := c.storePath(key)
	if err != nil {
		return nil, err
	}
	var out []driver.Node
	if err := c.tree(ctx, path, &out); err != nil {
		return nil, wrap("tree", key, err)
	}
	driver.SortNodes(out)
	return out, nil
}

func (c *Conn) tree(ctx context.Context, path string, out *[]driver.Node) error {
	type res struct {
		b    []byte
		st   *zk.Stat
		kids []string
	}
	r, err := call(ctx, c, func() (res, error) {
		b, st, err := c.zc.zk.Get(path)
		if err != nil {
			return res{}, err
		}
		kids, _, err := c.zc.zk.Children(path)
		return res{b, st, kids}, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil // absent, or deleted meanwhile
	}
	if err != nil {
		return err
	}
	*out = append(*out, c.node(path, r.b, r.st))
	for _, k := range r.kids {
		cp := driver.JoinKey(path, k)
		if c.hidden(cp) {
			continue
		}
		if err := c.tree(ctx, cp, out); err != nil {
			return err
		}
	}
	return nil
}

// WatchTree follows the key and all its descendants.
func (c *Conn) WatchTree(ctx context.Context, key string, notify func()) error {
	path, err := c.storePath(key)
	if err != nil {
		return err
	}
	return c.watchTree(ctx, path, -1, notify)
}

// SessionIDString formats a ZooKeeper session id as Node.Session and
// SessionConn.ID show it (lower-case hex, "" for 0).
func SessionIDString(id int64) string { return hexID(id) }
