package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP fault proxy between clients and one server address: clients dial
// Addr; Cut, Blackhole and Heal change what happens to their connections.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	mode  proxyMode
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetUpstream changes where new connections go.
func (p *Proxy) SetUpstream(addr string) {
	p.mu.Lock()
	p.upstream = addr
	p.mu.Unlock()
}

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

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == modeCut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode, up := p.mode, p.upstream
		p.mu.Unlock()
		if mode == modeCut || !p.track(c) {
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
			s, err := net.Dial("tcp", up)
			if err != nil {
				return
			}
			if !p.track(s) {
				s.Close()
				return
			}
			defer p.untrack(s)
			done := make(chan struct{}, 2)
			go func() { io.Copy(s, c); done <- struct{}{} }()
			go func() { io.Copy(c, s); done <- struct{}{} }()
			<-done
			c.Close()
			s.Close()
			<-done
		}()
	}
}
