package nacos

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/regkit/regkit/registry/driver"
)

// StorePrefix is the dataId of the store's root; key "/a/b" is the dataId
// "regkit.kv:a:b" (see the package doc, Store).
const StorePrefix = "regkit.kv"

// absentMD5 is the casMd5 Create sends: no content ever has it, so a server that
// enforces casMd5 refuses the publish when the key appeared meanwhile.
const absentMD5 = "00000000000000000000000000000000"

var _ driver.StoreConn = (*Conn)(nil)

// escapeSegment keeps [A-Za-z0-9.-] and writes every other byte as '_' and two
// upper-case hex digits, so that ':' can separate segments.
func escapeSegment(seg string) string {
	var b strings.Builder
	for i := 0; i < len(seg); i++ {
		ch := seg[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '.', ch == '-':
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, "_%02X", ch)
		}
	}
	return b.String()
}

func unescapeSegment(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '_' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return "", false
		}
		b.WriteByte(v[0])
		i += 2
	}
	return b.String(), true
}

// KeyToDataID maps a store key to its Nacos dataId.
func KeyToDataID(key string) string {
	if key == "/" {
		return StorePrefix
	}
	var b strings.Builder
	b.WriteString(StorePrefix)
	for _, seg := range strings.Split(key[1:], "/") {
		b.WriteByte(':')
		b.WriteString(escapeSegment(seg))
	}
	return b.String()
}

// DataIDToKey maps a dataId written by KeyToDataID back to its key; false for
// any other dataId.
func DataIDToKey(id string) (string, bool) {
	if id == StorePrefix {
		return "/", true
	}
	rest, ok := strings.CutPrefix(id, StorePrefix+":")
	if !ok {
		return "", false
	}
	var b strings.Builder
	for _, seg := range strings.Split(rest, ":") {
		s, ok := unescapeSegment(seg)
		if !ok || s == "" {
			return "", false
		}
		b.WriteByte('/')
		b.WriteString(s)
	}
	k := b.String()
	if driver.ValidKey(k) != nil {
		return "", false
	}
	return k, true
}

// encodeValue makes the stored content: "=" and the value when it is UTF-8,
// else "~" and its standard base64 (Nacos refuses empty content and keeps text).
func encodeValue(v []byte) string {
	if utf8.Valid(v) {
		return "=" + string(v)
	}
	return "~" + base64.StdEncoding.EncodeToString(v)
}

func decodeValue(content string) []byte {
	switch {
	case strings.HasPrefix(content, "="):
		return []byte(content[1:])
	case strings.HasPrefix(content, "~"):
		if b, err := base64.StdEncoding.DecodeString(content[1:]); err == nil {
			return b
		}
	}
	return []byte(content) // written by someone else: shown as it is
}

// VersionOf is the store Version of a content MD5: its first 8 bytes as a
// positive int64 (never 0).
func VersionOf(md5hex string) int64 {
	b, err := hex.DecodeString(md5hex)
	if err != nil || len(b) < 8 {
		return 1
	}
	v := int64(binary.BigEndian.Uint64(b[:8]) & 0x7fffffffffffffff)
	if v == 0 {
		v = 1
	}
	return v
}

func nodeOf(key string, it ConfigItem) driver.Node {
	return driver.Node{Key: key, Value: decodeValue(it.Content), Version: VersionOf(it.MD5), CreateRevision: it.ID}
}

// The store's state: whether the server offers it.
const (
	storeUnknown int32 = iota // not probed yet (WithLazyConnect)
	storeYes
	storeNo
)

// storeConfig returns the configuration client of the store, or ErrNotSupported
// when the server does not offer it. A Conn opened lazily probes on the first
// store call; while the server does not answer that call fails and the next one
// probes again.
func (c *Conn) storeConfig(ctx context.Context) (*Config, error) {
	switch c.store.Load() {
	case storeYes:
		return c.Config(), nil
	case storeNo:
		return nil, fmt.Errorf("nacos: store: %w", driver.ErrNotSupported)
	}
	c.storeMu.Lock()
	defer c.storeMu.Unlock()
	if c.store.Load() == storeUnknown {
		if err := c.probe(ctx); err != nil {
			return nil, fmt.Errorf("nacos: store: %w", err)
		}
		st := c.probeStore(ctx)
		if err := ctx.Err(); err != nil {
			return nil, wrap("store", err)
		}
		c.store.Store(st)
	}
	return c.storeConfig(ctx)
}

// probeStore decides whether the store is offered (storeYes or storeNo): the
// server must list configurations (search=blur) and enforce casMd5.
func (c *Conn) probeStore(ctx context.Context) int32 {
	f := c.Config()
	if _, err := f.search(ctx, "blur", StorePrefix+".probe*"); err != nil {
		c.log.Info("nacos: no coordination store: the server cannot list configurations", "err", err)
		return storeNo
	}
	enforced, err := f.CASEnforced(ctx)
	if err != nil || !enforced {
		c.log.Info("nacos: no coordination store: the server does not enforce casMd5", "err", err)
		return storeNo
	}
	return storeYes
}

func (c *Conn) lookup(ctx context.Context, f *Config, key string) (driver.Node, error) {
	it, err := f.Lookup(ctx, KeyToDataID(key))
	if err != nil {
		return driver.Node{}, err
	}
	return nodeOf(key, it), nil
}

// descendants lists every key below key (not key itself), sorted by key.
func (c *Conn) descendants(ctx context.Context, f *Config, key string) ([]driver.Node, error) {
	items, err := f.Search(ctx, KeyToDataID(key)+":")
	if err != nil {
		return nil, err
	}
	var out []driver.Node
	for _, it := range items {
		if k, ok := DataIDToKey(it.DataID); ok && k != key {
			out = append(out, nodeOf(k, it))
		}
	}
	driver.SortNodes(out)
	return out, nil
}

// Create writes a new key and its missing parents (empty values). See the package
// doc for the race it cannot close.
func (c *Conn) Create(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (driver.Node, error) {
	f, err := c.storeConfig(ctx)
	if err != nil {
		return driver.Node{}, err
	}
	if spec.Session != nil || spec.Sequential {
		return driver.Node{}, fmt.Errorf("nacos: create %s: ephemeral and sequential keys: %w", key, driver.ErrNotSupported)
	}
	var parents []string
	for p := driver.ParentKey(key); p != "/"; p = driver.ParentKey(p) {
		parents = append(parents, p)
	}
	slices.Reverse(parents)
	for _, p := range parents {
		_, err := f.Lookup(ctx, KeyToDataID(p))
		if err == nil {
			continue
		}
		if !errors.Is(err, driver.ErrNotFound) {
			return driver.Node{}, err
		}
		// The CAS with the empty value's own MD5 inserts a missing parent, rewrites
		// an empty one unchanged and leaves a parent with a value alone.
		empty := encodeValue(nil)
		if err := f.publish(ctx, KeyToDataID(p), empty, MD5(empty)); err != nil && !errors.Is(err, driver.ErrVersionConflict) {
			return driver.Node{}, err
		}
	}
	id := KeyToDataID(key)
	if _, err := f.Lookup(ctx, id); err == nil {
		return driver.Node{}, fmt.Errorf("nacos: create %s: %w", key, driver.ErrExists)
	} else if !errors.Is(err, driver.ErrNotFound) {
		return driver.Node{}, err
	}
	content := encodeValue(value)
	if err := f.publish(ctx, id, content, absentMD5); err != nil {
		if errors.Is(err, driver.ErrVersionConflict) {
			return driver.Node{}, fmt.Errorf("nacos: create %s: %w", key, driver.ErrExists)
		}
		return driver.Node{}, err
	}
	n := driver.Node{Key: key, Value: slices.Clone(value), Version: VersionOf(MD5(content))}
	if it, err := f.Lookup(ctx, id); err == nil && it.MD5 == MD5(content) {
		n.CreateRevision = it.ID
	}
	return n, nil
}

// Get reads one key (through search=accurate, from the server's database).
func (c *Conn) Get(ctx context.Context, key string) (driver.Node, error) {
	f, err := c.storeConfig(ctx)
	if err != nil {
		return driver.Node{}, err
	}
	return c.lookup(ctx, f, key)
}

// maxCASRetries bounds the retries of an unconditional Set that lost a race.
const maxCASRetries = 16

// Set replaces the value of an existing key, compare-and-set with casMd5.
func (c *Conn) Set(ctx context.Context, key string, value []byte, version int64) (driver.Node, error) {
	f, err := c.storeConfig(ctx)
	if err != nil {
		return driver.Node{}, err
	}
	id, content := KeyToDataID(key), encodeValue(value)
	for attempt := 0; ; attempt++ {
		cur, err := f.Lookup(ctx, id)
		if err != nil {
			return driver.Node{}, err
		}
		if version != driver.AnyVersion && VersionOf(cur.MD5) != version {
			return driver.Node{}, fmt.Errorf("nacos: set %s: version %d, not %d: %w", key, VersionOf(cur.MD5), version, driver.ErrVersionConflict)
		}
		err = f.publish(ctx, id, content, cur.MD5)
		if errors.Is(err, driver.ErrVersionConflict) && version == driver.AnyVersion && attempt < maxCASRetries {
			continue
		}
		if err != nil {
			return driver.Node{}, err
		}
		return driver.Node{Key: key, Value: slices.Clone(value), Version: VersionOf(MD5(content)), CreateRevision: cur.ID}, nil
	}
}

// Delete removes a key (and with recursive its descendants, deepest first).
// Nacos's delete has no compare-and-set: version is checked by a read just before.
func (c *Conn) Delete(ctx context.Context, key string, version int64, recursive bool) error {
	f, err := c.storeConfig(ctx)
	if err != nil {
		return err
	}
	if key != "/" {
		cur, err := f.Lookup(ctx, KeyToDataID(key))
		if err != nil {
			return err
		}
		if version != driver.AnyVersion && VersionOf(cur.MD5) != version {
			return fmt.Errorf("nacos: delete %s: version %d, not %d: %w", key, VersionOf(cur.MD5), version, driver.ErrVersionConflict)
		}
	}
	desc, err := c.descendants(ctx, f, key)
	if err != nil {
		return err
	}
	if len(desc) > 0 && !recursive {
		return fmt.Errorf("nacos: delete %s: %d descendants: %w", key, len(desc), driver.ErrNotEmpty)
	}
	slices.Reverse(desc) // children sort after their parents
	for _, n := range desc {
		if err := f.Delete(ctx, KeyToDataID(n.Key)); err != nil {
			return err
		}
	}
	if key == "/" {
		return nil
	}
	return f.Delete(ctx, KeyToDataID(key))
}

// Children lists the names of the key's direct children.
func (c *Conn) Children(ctx context.Context, key string) ([]string, error) {
	f, err := c.storeConfig(ctx)
	if err != nil {
		return nil, err
	}
	if key != "/" {
		if _, err := f.Lookup(ctx, KeyToDataID(key)); err != nil {
			return nil, err
		}
	}
	desc, err := c.descendants(ctx, f, key)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, n := range desc {
		if driver.ParentKey(n.Key) == key {
			names = append(names, n.Key[strings.LastIndexByte(n.Key, '/')+1:])
		}
	}
	slices.Sort(names)
	return names, nil
}

// Tree returns the key (if present) and its descendants, sorted by key.
func (c *Conn) Tree(ctx context.Context, key string) ([]driver.Node, error) {
	f, err := c.storeConfig(ctx)
	if err != nil {
		return nil, err
	}
	return c.tree(ctx, f, key)
}

func (c *Conn) tree(ctx context.Context, f *Config, key string) ([]driver.Node, error) {
	nodes, _, err := c.treeWithMD5s(ctx, f, key)
	return nodes, err
}

// treeWithMD5s returns the tree and a map of the dataId of key and of every
// descendant to the MD5 of its content as stored (key's own dataId to "" when
// absent, so that a listener hears its creation too).
func (c *Conn) treeWithMD5s(ctx context.Context, f *Config, key string) ([]driver.Node, map[string]string, error) {
	var out []driver.Node
	md5s := map[string]string{KeyToDataID(key): ""}
	if key != "/" {
		it, err := f.Lookup(ctx, KeyToDataID(key))
		if err == nil {
			out = append(out, nodeOf(key, it))
			md5s[it.DataID] = it.MD5
		} else if !errors.Is(err, driver.ErrNotFound) {
			return nil, nil, err
		}
	}
	items, err := f.Search(ctx, KeyToDataID(key)+":")
	if err != nil {
		return nil, nil, err
	}
	for _, it := range items {
		if k, ok := DataIDToKey(it.DataID); ok && k != key {
			out = append(out, nodeOf(k, it))
			md5s[it.DataID] = it.MD5
		}
	}
	driver.SortNodes(out)
	c.mu.Lock()
	if set, ok := c.listed[treeKey(key)]; ok {
		set[md5sFingerprint(md5s)] = struct{}{}
	}
	c.mu.Unlock()
	return out, md5s, nil
}

// treeKey is the key of the tree under key among the watched lists (it is not a
// valid service name, so it cannot collide with one).
func treeKey(key string) string { return "\x00tree\x00" + key }

// md5sFingerprint identifies a tree's dataIds and their MD5s.
func md5sFingerprint(md5s map[string]string) string {
	var b strings.Builder
	for _, id := range slices.Sorted(maps.Keys(md5s)) {
		b.WriteString(id)
		b.WriteByte(0)
		b.WriteString(md5s[id])
		b.WriteByte(0)
	}
	return b.String()
}

// WatchTree lists the tree, notifies, then alternates a long poll on the listed
// dataIds (cut after poll_interval) with a re-list, notifying on any change; see
// the package doc, Store. Like Watch, it also notifies when a Tree call since
// its previous listing read another state than the one it lists now (package
// registry's re-list may have read an intermediate state, A then B then A, that
// the long poll on A's MD5s never hears of).
func (c *Conn) WatchTree(ctx context.Context, key string, notify func()) error {
	f, err := c.storeConfig(ctx)
	if err != nil {
		return err
	}
	defer c.watching(treeKey(key))()
	_, snap, err := c.treeWithMD5s(ctx, f, key)
	if err != nil {
		return err
	}
	notify()
	for {
		changed, err := f.Listen(ctx, snap, c.o.pollInterval)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		_, next, err := c.treeWithMD5s(ctx, f, key)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		if other := c.listedOtherThan(treeKey(key), md5sFingerprint(next)); other || !maps.Equal(snap, next) {
			notify()
		} else if len(changed) > 0 {
			// The listener (which reads Nacos's cache) disagrees with the listing
			// (which reads its database): wait for the cache rather than spin.
			t := time.NewTimer(c.o.pollInterval)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		snap = next
	}
}

// NewSession is not supported: Nacos has no sessions.
func (c *Conn) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	return nil, fmt.Errorf("nacos: sessions: %w", driver.ErrNotSupported)
}
