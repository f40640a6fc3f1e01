package mem

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/regkit/regkit/registry/driver"
)

func (n *node) public() driver.Node {
	out := n.Node
	out.Value = slices.Clone(n.Value)
	return out
}

func (s *Server) childrenLocked(key string) []string {
	var out []string
	pfx := key + "/"
	if key == "/" {
		pfx = "/"
	}
	for k := range s.nodes {
		if rest, ok := strings.CutPrefix(k, pfx); ok && rest != "" && !strings.Contains(rest, "/") {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out
}

// Create writes a new key, creating missing parents.
func (c *Conn) Create(ctx context.Context, key string, value []byte, spec driver.CreateSpec) (driver.Node, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return driver.Node{}, err
	}
	var sess *session
	if spec.Session != nil {
		ss, ok := spec.Session.(*session)
		if !ok || ss.c.s != s {
			return driver.Node{}, &driver.FieldError{Field: "Session", Value: spec.Session.ID(), Reason: "not a session of this mem server"}
		}
		if ss.err != nil {
			return driver.Node{}, fmt.Errorf("mem: create %s: %w", key, ss.err)
		}
		sess = ss
	}
	parent := driver.ParentKey(key)
	if spec.Sequential {
		// Names taken by plain creates are skipped, as ZooKeeper (whose counter
		// is the parent's child version) and the other drivers do.
		for {
			n := s.seq[parent]
			s.seq[parent] = n + 1
			if _, ok := s.nodes[key+driver.SequenceSuffix(n)]; !ok {
				key += driver.SequenceSuffix(n)
				break
			}
		}
	}
	if _, ok := s.nodes[key]; ok {
		return driver.Node{}, fmt.Errorf("mem: create %s: %w", key, driver.ErrExists)
	}
	// Parents first, persistent and empty.
	var missing []string
	for p := parent; p != "/"; p = driver.ParentKey(p) {
		if _, ok := s.nodes[p]; ok {
			break
		}
		missing = append(missing, p)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		s.rev++
		s.nodes[missing[i]] = &node{Node: driver.Node{Key: missing[i], Value: []byte{}, Version: s.rev, CreateRevision: s.rev}}
		s.changedLocked("", missing[i])
	}
	s.rev++
	n := &node{Node: driver.Node{Key: key, Value: slices.Clone(value), Version: s.rev, CreateRevision: s.rev}, sess: sess}
	if n.Value == nil {
		n.Value = []byte{}
	}
	if sess != nil {
		n.Session = sess.id
		sess.keys[key] = struct{}{}
	}
	s.nodes[key] = n
	s.changedLocked("", key)
	return n.public(), nil
}

// Get reads one key.
func (c *Conn) Get(ctx context.Context, key string) (driver.Node, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return driver.Node{}, err
	}
	n, ok := s.nodes[key]
	if !ok {
		return driver.Node{}, fmt.Errorf("mem: get %s: %w", key, driver.ErrNotFound)
	}
	return n.public(), nil
}

// Set compares and sets.
func (c *Conn) Set(ctx context.Context, key string, value []byte, version int64) (driver.Node, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return driver.Node{}, err
	}
	n, ok := s.nodes[key]
	if !ok {
		return driver.Node{}, fmt.Errorf("mem: set %s: %w", key, driver.ErrNotFound)
	}
	if version != driver.AnyVersion && version != n.Version {
		return driver.Node{}, fmt.Errorf("mem: set %s: version %d, want %d: %w", key, n.Version, version, driver.ErrVersionConflict)
	}
	s.rev++
	n.Value, n.Version = slices.Clone(value), s.rev
	if n.Value == nil {
		n.Value = []byte{}
	}
	s.changedLocked("", key)
	return n.public(), nil
}

// Delete removes a key, with its descendants if recursive.
func (c *Conn) Delete(ctx context.Context, key string, version int64, recursive bool) error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return err
	}
	n, ok := s.nodes[key]
	if !ok && key != "/" {
		return fmt.Errorf("mem: delete %s: %w", key, driver.ErrNotFound)
	}
	if ok && version != driver.AnyVersion && version != n.Version {
		return fmt.Errorf("mem: delete %s: %w", key, driver.ErrVersionConflict)
	}
	kids := s.childrenLocked(key)
	if len(kids) > 0 && !recursive {
		return fmt.Errorf("mem: delete %s: %w", key, driver.ErrNotEmpty)
	}
	for k := range s.nodes {
		if k == key || strings.HasPrefix(k, key+"/") || key == "/" {
			s.deleteLocked(k)
		}
	}
	return nil
}

func (s *Server) deleteLocked(key string) {
	n := s.nodes[key]
	if n == nil {
		return
	}
	if n.sess != nil {
		delete(n.sess.keys, key)
	}
	delete(s.nodes, key)
	s.changedLocked("", key)
}

// Children lists direct children.
func (c *Conn) Children(ctx context.Context, key string) ([]string, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return nil, err
	}
	if _, ok := s.nodes[key]; !ok && key != "/" {
		return nil, fmt.Errorf("mem: children %s: %w", key, driver.ErrNotFound)
	}
	out := s.childrenLocked(key)
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// Tree returns key and its descendants.
func (c *Conn) Tree(ctx context.Context, key string) ([]driver.Node, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return nil, err
	}
	var out []driver.Node
	for k, n := range s.nodes {
		if k == key || key == "/" || strings.HasPrefix(k, key+"/") {
			out = append(out, n.public())
		}
	}
	driver.SortNodes(out)
	return out, nil
}

// WatchTree notifies on every change under key.
func (c *Conn) WatchTree(ctx context.Context, key string, notify func()) error {
	return c.watch(ctx, &watch{key: key, tree: true, notify: notify})
}

type session struct {
	c       *Conn
	id      string
	keys    map[string]struct{}
	onState func(driver.SessionState)
	done    chan struct{}
	err     error
	once    sync.Once
}

// NewSession starts a session; it lives until closed or expired by a fault hook.
func (c *Conn) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return nil, err
	}
	ss := &session{c: c, id: "mem-" + c.newID(), keys: map[string]struct{}{}, onState: spec.OnState, done: make(chan struct{})}
	c.sessions[ss] = struct{}{}
	ss.state(driver.StateConnected)
	return ss, nil
}

func (ss *session) state(st driver.SessionState) {
	if ss.onState != nil {
		ss.onState(st)
	}
}

// endLocked deletes the session's ephemeral keys and ends it.
func (ss *session) endLocked(st driver.SessionState) {
	s := ss.c.s
	for k := range ss.keys {
		s.deleteLocked(k)
	}
	delete(ss.c.sessions, ss)
	ss.once.Do(func() {
		if st == driver.StateLost {
			ss.err = fmt.Errorf("mem: session %s expired: %w", ss.id, driver.ErrSessionLost)
		} else {
			ss.err = fmt.Errorf("mem: session %s: %w", ss.id, driver.ErrClosed)
		}
		close(ss.done)
		ss.state(st)
	})
}

func (ss *session) ID() string            { return ss.id }
func (ss *session) Done() <-chan struct{} { return ss.done }

func (ss *session) Err() error {
	ss.c.s.mu.Lock()
	defer ss.c.s.mu.Unlock()
	return ss.err
}

func (ss *session) Close(ctx context.Context) error {
	s := ss.c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.endLocked(driver.StateClosed)
	return nil
}
