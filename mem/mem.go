// Package mem is a complete in-process backend, scheme "mem://NAME": registry,
// coordination store, sessions and watches with the semantics of the real backends,
// for unit tests and examples. Every Client opened on the same NAME in one process
// shares one store; different names are independent. Sessions never expire by
// themselves (there is no network to lose); Conn.ExpireSession and the Server fault
// hooks (Restart, Cut, Heal) inject the failures real backends have.
//
// Layout: instances are kept in a map keyed by service, then instance ID, per NAME,
// so the mapping is injective by construction and nothing but a validated Put can
// become an instance; the store is a tree of its own, apart from the registry.
//
// Ownership (registry's one-owner rule): an instance belongs to the connection
// that put it; a Put of an ID another connection keeps fails with ErrExists, and
// the ID is free once that connection's lease ends (Deregister, ExpireSession).
// Check and write are one step under the server's lock: there is no race.
//
// There is no New: a mem store has no native client; open it by URL. mem declares
// no size limits, but validates like every backend (Host, UTF-8 metadata).
//
// URL: NAME is one or more letters, digits, '-', '.', '_' and '~' (URL unreserved
// characters), given as the host ("mem://test") or opaque part ("mem:test"); no
// port, path, query parameters or fragment. Anything else ("mem://x:1",
// "mem://%zz", "mem://a,b") is an error matching registry.ErrInvalid naming the
// part. User info is ignored.
//
//	import _ "github.com/regkit/regkit/mem"
//	c, err := registry.Open(ctx, "mem://test")
package mem

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/regkit/regkit/registry/driver"
)

func init() { driver.Register("mem", drv{}) }

// drv is this backend's driver.Driver.
type drv struct{}

func (drv) Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Conn, error) {
	p := driver.NewParams(u)
	if err := p.Done(); err != nil {
		return nil, err
	}
	// mem has no options of its own: any is another backend's.
	if err := driver.ApplyOptions("mem", cfg.Options, func(struct{}) error { return nil }); err != nil {
		return nil, err
	}
	if u.Path != "" && u.Path != "/" {
		return nil, &driver.FieldError{Field: "url", Value: driver.RedactURL(u), Reason: "mem:// takes a name as host and no path"}
	}
	name := u.Host
	if name == "" {
		name = u.Opaque
	}
	if name == "" {
		return nil, &driver.FieldError{Field: "url", Value: driver.RedactURL(u), Reason: "mem:// needs a name, e.g. mem://test"}
	}
	if err := checkName(name); err != "" {
		return nil, &driver.FieldError{Field: "url", Value: driver.RedactURL(u), Reason: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mem: open %s: %w", name, err)
	}
	return Lookup(name).connect(cfg.Lazy)
}

// checkName says why name, the host of a mem:// URL, is not a NAME, or "".
func checkName(name string) string {
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.HasPrefix(name, "[") {
		return "mem:// takes a name and no port, not " + strconv.Quote(name[i:])
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
			return "mem:// name " + strconv.Quote(name) + " has " + strconv.QuoteRune(rune(c)) + ": a name is letters, digits, '-', '.', '_' and '~'"
		}
	}
	return ""
}

var (
	serversMu sync.Mutex
	servers   = map[string]*Server{}
)

// Server is one named in-process store. Its methods inject faults into every Conn
// opened on it.
type Server struct {
	mu       sync.Mutex
	rev      int64
	services map[string]map[string]*entry
	nodes    map[string]*node
	seq      map[string]int64
	conns    map[*Conn]struct{}
	watches  map[*watch]struct{}
	nextID   int64
	down     bool
}

type entry struct {
	inst  driver.Instance
	lease *lease
}

type node struct {
	driver.Node
	sess *session
}

type watch struct {
	conn    *Conn
	service string // registry watch of a service, or
	key     string // store watch of a tree
	tree    bool
	all     bool // registry watch of every service
	notify  func()
	broken  chan error
	onBreak func(error) // if set, called (under the server's lock) instead of sending on broken
}

// Lookup returns the server named name, creating it empty on first use.
func Lookup(name string) *Server {
	serversMu.Lock()
	defer serversMu.Unlock()
	s := servers[name]
	if s == nil {
		s = &Server{services: map[string]map[string]*entry{}, nodes: map[string]*node{}, seq: map[string]int64{},
			conns: map[*Conn]struct{}{}, watches: map[*watch]struct{}{}}
		servers[name] = s
	}
	return s
}

// connect opens a Conn; it fails with ErrUnavailable while the server is Cut,
// unless lazy (registry.WithLazyConnect): then the Conn's calls fail until Heal.
func (s *Server) connect(lazy bool) (*Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down && !lazy {
		return nil, fmt.Errorf("mem: connect: server cut: %w", driver.ErrUnavailable)
	}
	c := &Conn{s: s, leases: map[*lease]struct{}{}, sessions: map[*session]struct{}{}}
	s.conns[c] = struct{}{}
	return c, nil
}

// DeleteInstance deletes instance id of service as an operator would, whoever
// registered it; its Lease is not told (a registry guard notices the absence). It
// reports whether there was such an instance.
func (s *Server) DeleteInstance(service, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.services[service][id]; !ok {
		return false
	}
	delete(s.services[service], id)
	s.changedLocked(service, "")
	return true
}

// Restart breaks every watch, as a server restart does; data and sessions survive.
func (s *Server) Restart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakWatchesLocked(nil, fmt.Errorf("mem: server restarted: %w", driver.ErrUnavailable))
}

// Cut makes the server unreachable until Heal: calls (and Open, unless with
// registry.WithLazyConnect) fail with ErrUnavailable,
// watches break, sessions are suspended (they survive, as within a TTL).
func (s *Server) Cut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = true
	s.breakWatchesLocked(nil, fmt.Errorf("mem: connection cut: %w", driver.ErrUnavailable))
	for c := range s.conns {
		for ss := range c.sessions {
			ss.state(driver.StateSuspended)
		}
	}
}

// Heal ends a Cut; suspended sessions report reconnected.
func (s *Server) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = false
	for c := range s.conns {
		for ss := range c.sessions {
			ss.state(driver.StateReconnected)
		}
	}
}

func (s *Server) breakWatchesLocked(only *Conn, err error) {
	for w := range s.watches {
		if only == nil || w.conn == only {
			if w.onBreak != nil {
				w.onBreak(err)
				delete(s.watches, w)
				continue
			}
			select {
			case w.broken <- err:
			default:
			}
			delete(s.watches, w)
		}
	}
}

// changedLocked notifies the watches of a service (service != "") or of the trees
// containing key.
func (s *Server) changedLocked(service, key string) {
	s.rev++
	for w := range s.watches {
		switch {
		case service != "" && !w.tree && (w.all || w.service == service):
			w.notify()
		case key != "" && w.tree && (w.key == "/" || key == w.key || strings.HasPrefix(key, w.key+"/")):
			w.notify()
		}
	}
}

func (s *Server) check(c *Conn) error {
	if c.closed {
		return driver.ErrClosed
	}
	if s.down {
		return fmt.Errorf("mem: %w", driver.ErrUnavailable)
	}
	return nil
}

// Conn is one client connection to a Server.
type Conn struct {
	s        *Server
	closed   bool
	leases   map[*lease]struct{}
	sessions map[*session]struct{}
	ev       events // event subscriptions' delivery (events.go)
}

var (
	_ driver.Conn      = (*Conn)(nil)
	_ driver.StoreConn = (*Conn)(nil)
)

// Server returns the server this connection talks to.
func (c *Conn) Server() *Server { return c.s }

// ExpireSession drops everything this connection keeps alive, as a session expiry
// does: its registrations are deleted and their leases lost, its store sessions are
// lost and their ephemeral keys deleted, its watches break.
func (c *Conn) ExpireSession() {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range c.leases {
		l.loseLocked(fmt.Errorf("mem: session expired: %w", driver.ErrSessionLost))
	}
	for ss := range c.sessions {
		ss.endLocked(driver.StateLost)
	}
	s.breakWatchesLocked(c, fmt.Errorf("mem: session expired: %w", driver.ErrSessionLost))
}

// Capabilities: everything.
func (c *Conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{Store: true, Ephemeral: true, Sequential: true, Sessions: true, Health: true,
		Limits: driver.Limits{StoreBytes: MaxValueBytes}}
}

// MaxValueBytes is the largest store key plus value mem accepts (512 KiB): the
// smallest limit of the real backends (Consul's KV and Nacos's config), so that
// tests on mem refuse what production would.
const MaxValueBytes = 512 << 10

// Close abandons this connection's leases and closes its sessions (their ephemeral
// keys go, as a real session close does).
func (c *Conn) Close() error {
	s := c.s
	s.mu.Lock()
	if c.closed {
		s.mu.Unlock()
		return nil
	}
	c.closed = true
	for ss := range c.sessions {
		ss.endLocked(driver.StateClosed)
	}
	s.breakWatchesLocked(c, driver.ErrClosed)
	delete(s.conns, c)
	s.mu.Unlock()
	c.ev.close()
	return nil
}

func (c *Conn) watch(ctx context.Context, w *watch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := c.s
	s.mu.Lock()
	if err := s.check(c); err != nil {
		s.mu.Unlock()
		return err
	}
	w.conn, w.broken = c, make(chan error, 1)
	s.watches[w] = struct{}{}
	s.mu.Unlock()
	w.notify()
	select {
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.watches, w)
		s.mu.Unlock()
		return ctx.Err()
	case err := <-w.broken:
		return err
	}
}

func (c *Conn) newID() string {
	c.s.nextID++
	return strconv.FormatInt(c.s.nextID, 10)
}
