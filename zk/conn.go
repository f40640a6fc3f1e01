package zk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/broadcast"
	"github.com/regkit/regkit/registry/driver"
)

// zkConn is one go-zookeeper connection with the connection-state model the driver
// needs: the current state, the current session (an epoch whose lost channel closes
// when that session is gone), and a channel closed at every state change.
type zkConn struct {
	zk     *zk.Conn
	events <-chan zk.Event
	// refuse makes the dialer fail, so that a connection whose session was lost
	// never silently starts a new one (store sessions are terminal).
	refuse atomic.Bool
	hook   func(*zkConn, zk.State, int64) // called after every session-state change, outside mu
	watch  func(zk.Event)                 // called with every watch event (nil: none); must not block
	nc     atomic.Pointer[net.Conn]       // the socket dialed last (see abort)

	mu      sync.Mutex
	state   zk.State
	sid     int64 // current session id, 0 while there is none
	passwd  []byte
	pending struct {
		sid    int64
		passwd []byte
	} // from the last ConnectResponse seen by the dialer
	ep      *epoch
	changed broadcast.Signal // at every state change
}

// epoch is one ZooKeeper session of a zkConn, as seen by ephemeral registrations.
type epoch struct {
	id  int64
	sig driver.LostSignal
}

func newEpoch(id int64) *epoch { return &epoch{id: id} }

func (e *epoch) lose(err error) { e.sig.Lose(err) }

// Err says why the session ended, or nil while it lives.
func (e *epoch) Err() error { return e.sig.Err() }

// dial opens a go-zookeeper connection with the given session timeout (hook sees
// its session-state changes, watch its watch events) and, with
// wait, waits for its first session and sends the digest credentials. Without wait
// (registry.WithLazyConnect) it returns at once; the credentials are sent on a
// goroutine the Conn owns, and calls wait for them (see call).
func (c *Conn) dial(ctx context.Context, timeout time.Duration, hook func(*zkConn, zk.State, int64), watch func(zk.Event), wait bool) (*zkConn, error) {
	zc := &zkConn{state: zk.StateDisconnected, hook: hook, watch: watch}
	dialer := func(network, addr string, t time.Duration) (net.Conn, error) {
		if zc.refuse.Load() {
			return nil, errors.New("zk: session lost; this connection does not open a new one")
		}
		nc, err := c.cfg.dialer(network, addr, t)
		if err != nil {
			return nil, err
		}
		sc := net.Conn(&sniffConn{Conn: nc, on: zc.sniffed, handshake: handshakeLimit(timeout, len(c.cfg.hosts)),
			gate: make(chan struct{}), prevSID: zc.lastSession()})
		zc.nc.Store(&sc)
		return sc, nil
	}
	conn, events, err := zk.Connect(c.cfg.hosts, timeout, zk.WithDialer(dialer), zk.WithHostProvider(&hostProvider{}),
		zk.WithLogger(slogPrinter{c.cfg.log}), zk.WithLogInfo(false), zk.WithEventCallback(zc.onEvent))
	if err != nil {
		return nil, wrap("connect", strings.Join(c.cfg.hosts, ","), err)
	}
	zc.zk, zc.events = conn, events
	if !wait {
		if c.cfg.auth != nil {
			c.authed = make(chan struct{})
			c.spawn(func() {
				defer close(c.authed)
				if err := conn.AddAuth("digest", c.cfg.auth); err != nil {
					if !isConnLoss(err) {
						err = fmt.Errorf("%w: %w", driver.ErrPermission, err)
					}
					c.authErr = wrap("add digest auth", strings.Join(c.cfg.hosts, ","), err)
					c.cfg.log.Warn("zk: digest credentials refused; every call will fail", "err", c.authErr)
				}
			})
		}
		return zc, nil
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.connectTimeout)
	defer cancel()
	for {
		st, _, ch := zc.status()
		if st == zk.StateHasSession {
			break
		}
		select {
		case <-ch:
			continue
		case <-wctx.Done():
		}
		zc.close()
		return nil, fmt.Errorf("zk: connect %s: no session after %v: %w: %w", strings.Join(c.cfg.hosts, ","),
			c.cfg.connectTimeout, driver.ErrUnavailable, wctx.Err())
	}
	if c.cfg.auth != nil {
		if _, err := call(ctx, c, func() (struct{}, error) { return struct{}{}, conn.AddAuth("digest", c.cfg.auth) }); err != nil {
			zc.close()
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !isConnLoss(err) {
				err = fmt.Errorf("%w: %w", driver.ErrPermission, err)
			}
			return nil, wrap("add digest auth", strings.Join(c.cfg.hosts, ","), err)
		}
	}
	return zc, nil
}

// lastSession returns the id of the last session this connection had, or 0.
func (zc *zkConn) lastSession() int64 {
	zc.mu.Lock()
	defer zc.mu.Unlock()
	if zc.ep == nil {
		return 0
	}
	return zc.ep.id
}

// sniffed records the session id and password of a ConnectResponse.
func (zc *zkConn) sniffed(sid int64, passwd []byte) {
	zc.mu.Lock()
	zc.pending.sid, zc.pending.passwd = sid, passwd
	zc.mu.Unlock()
}

// onEvent is go-zookeeper's event callback; it must not block.
func (zc *zkConn) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		if zc.watch != nil {
			zc.watch(ev)
		}
		return
	}
	zc.mu.Lock()
	zc.state = ev.State
	switch ev.State {
	case zk.StateHasSession:
		sid := zc.pending.sid
		if zc.ep == nil || zc.ep.id != sid {
			if zc.ep != nil {
				zc.ep.lose(fmt.Errorf("zk: session %s replaced by %s: %w", hexID(zc.ep.id), hexID(sid), driver.ErrSessionLost))
			}
			zc.ep = newEpoch(sid)
		}
		zc.sid, zc.passwd = sid, zc.pending.passwd
	case zk.StateExpired:
		if zc.ep != nil {
			zc.ep.lose(fmt.Errorf("zk: session %s expired: %w", hexID(zc.ep.id), driver.ErrSessionLost))
		}
		zc.sid, zc.passwd = 0, nil
	}
	sid := zc.sid
	zc.changed.Notify()
	zc.mu.Unlock()
	if zc.hook != nil {
		zc.hook(zc, ev.State, sid)
	}
}

// status returns the state, the session id and a channel closed at the next change.
func (zc *zkConn) status() (zk.State, int64, <-chan struct{}) {
	zc.mu.Lock()
	defer zc.mu.Unlock()
	return zc.state, zc.sid, zc.changed.C()
}

// session returns the current session id and password (0, nil while there is none).
func (zc *zkConn) session() (int64, []byte) {
	zc.mu.Lock()
	defer zc.mu.Unlock()
	return zc.sid, zc.passwd
}

// currentEpoch returns the epoch of the current session, nil while there is none.
func (zc *zkConn) currentEpoch() *epoch {
	zc.mu.Lock()
	defer zc.mu.Unlock()
	if zc.sid == 0 || zc.ep == nil || zc.ep.id != zc.sid {
		return nil
	}
	return zc.ep
}

// epochFor returns the current epoch if its session is id, else a lost epoch.
func (zc *zkConn) epochFor(id int64) *epoch {
	zc.mu.Lock()
	ep := zc.ep
	zc.mu.Unlock()
	if ep != nil && ep.id == id && id != 0 {
		return ep
	}
	dead := newEpoch(id)
	dead.lose(fmt.Errorf("zk: node owned by session %s, not the current one: %w", hexID(id), driver.ErrSessionLost))
	return dead
}

// close closes the connection (ending its session on the server when connected)
// and waits until go-zookeeper's goroutines have ended.
// abort makes a close that is under way stop waiting for the server: it closes
// the socket (go-zookeeper waits a second for its close request, then for its
// receive loop, which a server that does not answer holds for a read timeout)
// and refuses to dial again.
func (zc *zkConn) abort() {
	zc.refuse.Store(true)
	if p := zc.nc.Load(); p != nil {
		_ = (*p).Close()
	}
}

func (zc *zkConn) close() {
	zc.zk.Close()
	for range zc.events { // drained until the client's loop ends and closes it
	}
}

// sniffConn passes a connection through, reading the session id and password out
// of the first frame the server sends (the ConnectResponse: protocolVersion int32,
// timeOut int32, sessionId int64, passwd as a length-prefixed buffer).
//
// It also bounds the handshake: go-zookeeper waits ten times its receive timeout
// (6.7 session timeouts) for a ConnectResponse, and then without any deadline for
// its body, so a server that accepts but does not answer (a partition, a hung
// process) stalls reconnection for minutes. Until the ConnectResponse is read,
// deadlines are clamped to handshakeLimit.
// handshakeLimit bounds one connection attempt's handshake: a third of the Java
// client's connect timeout (the session timeout divided by the number of
// servers), at least a second. The driver declares a session lost after a whole
// session timeout without a connection, so at least three attempts must fit in
// it: a restarting server accepts connections before it has loaded its data and
// answers them only then, and one attempt waiting the whole connect timeout on
// it lost a live session (seen in CI: a 60s session, a restart under load).
func handshakeLimit(sessionTimeout time.Duration, hosts int) time.Duration {
	return max(sessionTimeout/time.Duration(3*max(hosts, 1)), time.Second)
}

type sniffConn struct {
	net.Conn
	on        func(sid int64, passwd []byte)
	handshake time.Duration
	buf       []byte
	done      bool
	start     time.Time

	// See readFramed.
	prevSID   int64 // the session before this connection
	pending   []byte
	gate      chan struct{}
	gateOnce  sync.Once
	gateTimer *time.Timer
}

func (s *sniffConn) clamp(t time.Time) time.Time {
	if s.done || s.handshake <= 0 {
		return t
	}
	if s.start.IsZero() {
		s.start = time.Now()
	}
	limit := s.start.Add(s.handshake)
	if t.IsZero() || t.After(limit) {
		return limit
	}
	return t
}

func (s *sniffConn) SetReadDeadline(t time.Time) error  { return s.Conn.SetReadDeadline(s.clamp(t)) }
func (s *sniffConn) SetWriteDeadline(t time.Time) error { return s.Conn.SetWriteDeadline(s.clamp(t)) }

func (s *sniffConn) Read(p []byte) (int, error) {
	if s.done {
		return s.readFramed(p)
	}
	n, err := s.Conn.Read(p)
	if !s.done && n > 0 {
		s.buf = append(s.buf, p[:n]...)
		if sid, ok := s.parse(); ok && sid != s.prevSID {
			s.openGate() // a new session re-sends no watches
		} else if s.done {
			s.gateTimer = time.AfterFunc(gateFallback, s.openGate)
		}
	}
	return n, err
}

// The rest of sniffConn works around a data race inside go-zookeeper v1.0.4
// (go-zookeeper/zk#35, samuel/go-zookeeper#178 and #260, unfixed upstream): after a
// reconnect, its loop goroutine reads Conn.lastZxid to re-send the armed watches
// (sendSetWatches) while the receive goroutine it has just started already writes
// lastZxid for every answer to a request. The read is harmless in practice but
// makes every -race run of a program that reconnects with watches armed fail.
//
// sniffConn removes the race without changing the library: it holds back answers
// that would make go-zookeeper write lastZxid (xid >= 0 and zxid > 0; watch events,
// pings and auth answers pass) until go-zookeeper has written its SetWatches
// request on this connection, which it does only after reading lastZxid. Only a
// reconnection to the same session re-sends watches (go-zookeeper drops them when a
// session expires), so the gate is open at once on a new session; on the same
// session with no watch armed go-zookeeper neither reads lastZxid nor sends
// SetWatches, so the gate also opens gateFallback after the handshake.
// TestResumedSessionRaceFree fails under -race without the gate.

// gateFallback opens the gate of a connection that re-sends no watches.
const gateFallback = 100 * time.Millisecond

// opSetWatches is ZooKeeper's SetWatches opcode.
const opSetWatches = 101

func (s *sniffConn) openGate() {
	s.gateOnce.Do(func() { close(s.gate) })
}

func (s *sniffConn) Write(p []byte) (int, error) {
	if len(p) >= 12 && int32(binary.BigEndian.Uint32(p[8:12])) == opSetWatches {
		n, err := s.Conn.Write(p)
		s.openGate() // after the write: lastZxid has been read
		return n, err
	}
	return s.Conn.Write(p)
}

// readFramed serves whole frames read ahead from the connection, holding back a
// frame that answers a request until the gate is open.
func (s *sniffConn) readFramed(p []byte) (int, error) {
	if len(s.pending) == 0 {
		var hdr [4]byte
		if _, err := io.ReadFull(s.Conn, hdr[:]); err != nil {
			return 0, err
		}
		l := int(binary.BigEndian.Uint32(hdr[:]))
		if l < 0 || l > 64<<20 {
			return 0, fmt.Errorf("zk: bad frame length %d", l)
		}
		frame := make([]byte, 4+l)
		copy(frame, hdr[:])
		if _, err := io.ReadFull(s.Conn, frame[4:]); err != nil {
			return 0, err
		}
		if l >= 12 {
			xid := int32(binary.BigEndian.Uint32(frame[4:8]))
			zxid := int64(binary.BigEndian.Uint64(frame[8:16]))
			if xid >= 0 && zxid > 0 {
				<-s.gate // opens at the latest gateFallback after the handshake
			}
		}
		s.pending = frame
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *sniffConn) Close() error {
	if s.gateTimer != nil {
		s.gateTimer.Stop()
	}
	s.openGate()
	return s.Conn.Close()
}

// parse reads the ConnectResponse once it is complete and returns its session id.
func (s *sniffConn) parse() (int64, bool) {
	if len(s.buf) < 4 {
		return 0, false
	}
	l := int(binary.BigEndian.Uint32(s.buf[:4]))
	if len(s.buf) < 4+l {
		return 0, false
	}
	frame := s.buf[4 : 4+l]
	s.done = true
	defer func() { s.buf = nil }()
	if len(frame) < 20 {
		return 0, false
	}
	sid := int64(binary.BigEndian.Uint64(frame[8:16]))
	pl := int(int32(binary.BigEndian.Uint32(frame[16:20])))
	var pass []byte
	if pl > 0 && 20+pl <= len(frame) {
		pass = append([]byte(nil), frame[20:20+pl]...)
	}
	s.on(sid, pass)
	return sid, true
}

// hostProvider hands go-zookeeper the servers round-robin. go-zookeeper's default
// provider makes the client wait a second before every reconnection attempt to a
// single server, so a session expiry (one attempt to learn it, one to open a new
// session, often after attempts the server refuses while it closes the session)
// cost seconds. This one lets the first two attempts after a lost connection go at
// once, paces the next four 50ms to 400ms apart, and only then asks for go-zookeeper's
// one-second pause (retryStart, which also fails queued requests with ErrNoServer).
// Host names are resolved by the dialer at each attempt.
type hostProvider struct {
	mu       sync.Mutex
	servers  []string
	next     int
	attempts int // since the last successful connection
}

func (h *hostProvider) Init(servers []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(servers) == 0 {
		return errors.New("zk: no servers")
	}
	h.servers = append([]string(nil), servers...)
	return nil
}

func (h *hostProvider) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.servers)
}

func (h *hostProvider) Next() (string, bool) {
	h.mu.Lock()
	s := h.servers[h.next]
	h.next = (h.next + 1) % len(h.servers)
	h.attempts++
	a := h.attempts
	h.mu.Unlock()
	switch {
	case a <= 2:
		return s, false
	case a <= 6:
		// A short pause on go-zookeeper's connect loop (it does not block Close for
		// long: at most 400ms).
		time.Sleep(25 * time.Millisecond << (a - 2))
		return s, false
	}
	return s, true
}

func (h *hostProvider) Connected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts = 0
}
