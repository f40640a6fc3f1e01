package testenv

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP fault proxy between clients and one server address: clients dial
// Addr; Cut, Blackhole and Heal change what happens to their connections. A
// Classifier tags connections by their first bytes (which member opened a peer
// connection), so that Block can drop one source's connections only; the counters
// say how much traffic went through (a client's requests during an outage).
type Proxy struct {
	ln       net.Listener
	upstream string

	accepted atomic.Int64 // connections accepted
	bytesUp  atomic.Int64 // bytes carried from clients to the server

	mu       sync.Mutex
	mode     proxyMode
	classify Classifier
	bySource bool // tag connections with their source IP (TagBySource)
	blocked  map[string]bool
	conns    map[net.Conn]string // open connections (both halves) and their tags
	wg       sync.WaitGroup
}

// Classifier looks at the first bytes a client sent on a connection. It returns
// done=false while it needs more bytes; once done, tag names the connection's
// source ("" for none) and out replaces the bytes read so far (out may rewrite an
// address the peer advertises, so that replies come back through a proxy too).
type Classifier func(prefix []byte) (tag string, out []byte, done bool)

type proxyMode int

const (
	modePass proxyMode = iota
	modeCut
	modeBlackhole
)

// NewProxy listens on a free loopback port and forwards to upstream. It is closed
// by t.Cleanup.
func NewProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	return NewProxyOn(t, "127.0.0.1:0", upstream)
}

// Addr is the address clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetUpstream changes where new connections go.
func (p *Proxy) SetUpstream(addr string) {
	p.mu.Lock()
	p.upstream = addr
	p.mu.Unlock()
}

// SetClassifier makes the proxy tag every new connection with f (see Classifier)
// before it forwards a byte.
func (p *Proxy) SetClassifier(f Classifier) {
	p.mu.Lock()
	p.classify = f
	p.mu.Unlock()
}

// TagBySource makes the proxy tag every new connection with "ip:" and its source
// IP (a server bound to a loopback address of its own dials from it), for Block.
// A Classifier, when set too, replaces that tag once it is done.
func (p *Proxy) TagBySource() {
	p.mu.Lock()
	p.bySource = true
	p.mu.Unlock()
}

// NewProxyOn is NewProxy listening on listen ("ip:port"; port 0 for a free one).
func NewProxyOn(t testing.TB, listen, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("testenv: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]string{}, blocked: map[string]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Block closes the open connections tagged tag and refuses new ones (accepted,
// then closed once classified) until Unblock.
func (p *Proxy) Block(tag string) {
	p.mu.Lock()
	p.blocked[tag] = true
	var victims []net.Conn
	for c, tg := range p.conns {
		if tg == tag {
			victims = append(victims, c)
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
}

// Unblock lets connections tagged tag through again.
func (p *Proxy) Unblock(tag string) {
	p.mu.Lock()
	delete(p.blocked, tag)
	p.mu.Unlock()
}

// Accepted is the number of connections the proxy has accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// BytesUp is the number of bytes carried from clients to the server so far.
func (p *Proxy) BytesUp() int64 { return p.bytesUp.Load() }

// Cut closes every open connection and refuses new ones (they are accepted and
// closed at once) until Heal: a server that went away.
func (p *Proxy) Cut() { p.set(modeCut, true) }

// Blackhole closes every open connection and lets new ones connect but carries no
// byte either way until Heal: a network partition.
func (p *Proxy) Blackhole() { p.set(modeBlackhole, true) }

// Heal forwards new connections again (connections held by Blackhole are closed,
// so their clients reconnect).
func (p *Proxy) Heal() {
	p.mu.Lock()
	bh := p.mode == modeBlackhole
	p.mu.Unlock()
	p.set(modePass, bh)
}

func (p *Proxy) set(m proxyMode, drop bool) {
	p.mu.Lock()
	p.mode = m
	var victims []net.Conn
	if drop {
		for c := range p.conns {
			victims = append(victims, c)
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.set(modeCut, true)
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn, tag string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == modeCut || p.blocked[tag] && tag != "" {
		return false
	}
	p.conns[c] = tag
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (cw countWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n.Add(int64(n))
	return n, err
}

// readPrefix reads from c until f is done (at most 64 KiB or 10s).
func readPrefix(c net.Conn, f Classifier) (string, []byte, bool) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var buf []byte
	chunk := make([]byte, 4096)
	for len(buf) < 64<<10 {
		if tag, out, done := f(buf); done && len(buf) > 0 {
			return tag, out, true
		}
		n, err := c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			return "", nil, false
		}
	}
	return "", buf, true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		mode, up, classify, bySource := p.mode, p.upstream, p.classify, p.bySource
		p.mu.Unlock()
		tag0 := ""
		if bySource {
			if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
				tag0 = "ip:" + a.IP.String()
			}
		}
		if mode == modeCut || !p.track(c, tag0) {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			if mode == modeBlackhole {
				io.Copy(io.Discard, c) // hold it open, carry nothing, until closed
				return
			}
			var first []byte
			if classify != nil {
				tag, out, ok := readPrefix(c, classify)
				if !ok {
					return
				}
				first = out
				p.mu.Lock()
				blocked := p.blocked[tag] && tag != ""
				if _, open := p.conns[c]; open && !blocked {
					p.conns[c] = tag
				}
				p.mu.Unlock()
				if blocked {
					return
				}
			}
			s, err := net.Dial("tcp", up)
			if err != nil {
				return
			}
			p.mu.Lock()
			tag := p.conns[c]
			p.mu.Unlock()
			if !p.track(s, tag) {
				s.Close()
				return
			}
			defer p.untrack(s)
			up := countWriter{s, &p.bytesUp}
			if _, err := up.Write(first); err != nil {
				return
			}
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); done <- struct{}{} }()
			go func() { io.Copy(c, s); done <- struct{}{} }()
			<-done
			c.Close()
			s.Close()
			<-done
		}()
	}
}
