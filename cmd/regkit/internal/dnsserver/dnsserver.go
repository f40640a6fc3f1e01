// Package dnsserver answers DNS queries for registered services from a
// stale-serving lookup (package registry/cache), for `regkit dns`.
//
// # Names
//
// Under the zone Suffix (default "regkit."):
//
//   - <service>.<suffix> and _<service>._tcp.<suffix> (or _udp): SRV, one record
//     per healthy instance; A and AAAA for the <service>.<suffix> form, one per
//     healthy instance whose host is an IPv4 or IPv6 address. Service names may
//     contain dots (they become several labels); the _<service>._tcp form is for
//     names without dots.
//   - <hex>.addr.<suffix>: the SRV target of an instance whose host is an IP
//     address (8 hex digits for IPv4, 32 for IPv6, as Consul's .addr. names); A or
//     AAAA decode the name, no lookup needed. These names are reserved.
//   - <suffix> itself: SOA.
//
// DNS names are case-insensitive, service names are not: a query is matched
// against the served services ignoring case; with All, the lower-cased name is
// looked up, so services with upper-case letters must be listed to be served.
//
// # Answers
//
//   - Only healthy instances. SRV priority 0 for all (the registry has no
//     priorities); SRV weight is the instance's weight when every weight fits in
//     0–65535, else all weights are scaled by 65535/max (a positive weight stays at
//     least 1); port is the instance's port. The target is the host itself when it
//     is a DNS name (no A or AAAA is made up for it), else its .addr. name, whose
//     A/AAAA is added to the additional section.
//   - TTL (default 5s) on every record, and as the SOA minimum for negative answers.
//   - NXDOMAIN for a name outside the served services, and for a service with no
//     instance at all (registries cannot tell an unknown service from an empty
//     one). NOERROR with no answer (NODATA, SOA in authority) for a service whose
//     instances are all unhealthy, or which has none of the asked type.
//   - SERVFAIL when the service's first view has not arrived within
//     LookupTimeout (the backend has been down since startup and no snapshot file
//     had it); REFUSED for names outside the suffix.
//   - Served stale: once a service was read, its last good instances keep being
//     served while the backend is unreachable (the cache's Stale snapshots).
//   - UDP answers larger than 512 bytes (or the client's EDNS0 size) are truncated
//     with TC set, so that the client retries over TCP.
package dnsserver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/regkit/regkit/registry"
)

// DefaultSuffix is the zone answered when Config.Suffix is empty.
const DefaultSuffix = "regkit."

// DefaultTTL is the TTL of answers when Config.TTL is zero.
const DefaultTTL = 5 * time.Second

// DefaultLookupTimeout bounds the wait for a service's first view in a query.
const DefaultLookupTimeout = 2 * time.Second

// DefaultMaxServices bounds how many services All mode follows.
const DefaultMaxServices = 1000

// Lookup returns the current snapshot of a service; *cache.Cache implements it.
type Lookup interface {
	Lookup(ctx context.Context, service string) (registry.Snapshot, error)
}

// Config configures a Handler.
type Config struct {
	// Suffix is the zone, e.g. "regkit." (a final dot is added if missing).
	Suffix string
	// TTL of every answer, rounded down to whole seconds; 0 means DefaultTTL.
	TTL time.Duration
	// Services are the services served. With All, any valid service name is.
	Services []string
	// All serves any valid service name, following each one asked for from its
	// first query on (see MaxServices).
	All bool
	// MaxServices bounds how many distinct services All mode follows (each is one
	// watch for the life of the server); further names get NXDOMAIN and a
	// warning. 0 means DefaultMaxServices.
	MaxServices int
	// LookupTimeout bounds the wait for a service's first view; 0 means
	// DefaultLookupTimeout.
	LookupTimeout time.Duration
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// Handler is a dns.Handler answering from a Lookup. It is safe for concurrent
// use. Close waits for queries in progress.
type Handler struct {
	l      Lookup
	suffix string
	ttl    uint32
	lookup time.Duration
	all    bool
	max    int
	log    *slog.Logger

	life   context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	served   map[string]string // lower-cased name -> service
}

var _ dns.Handler = (*Handler)(nil)

// Validate reports what is wrong with cfg, naming the field, or nil.
func (cfg Config) Validate() error {
	_, err := cfg.canonical()
	return err
}

// canonical returns cfg with its defaults applied and the suffix canonical.
func (cfg Config) canonical() (Config, error) {
	if cfg.Suffix == "" {
		cfg.Suffix = DefaultSuffix
	}
	suffix := dns.CanonicalName(cfg.Suffix)
	if _, ok := dns.IsDomainName(suffix); !ok || suffix == "." {
		return cfg, fmt.Errorf("suffix %q is not a domain name below the root", cfg.Suffix)
	}
	cfg.Suffix = suffix
	if cfg.TTL < 0 {
		return cfg, fmt.Errorf("ttl %v is negative", cfg.TTL)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.All && len(cfg.Services) > 0 {
		return cfg, errors.New("services listed and All: choose one")
	}
	if !cfg.All && len(cfg.Services) == 0 {
		return cfg, errors.New("no service to serve: list services or choose All")
	}
	seen := map[string]string{}
	for _, s := range cfg.Services {
		if err := registry.ValidServiceName(s); err != nil {
			return cfg, err
		}
		low := strings.ToLower(s)
		if other, ok := seen[low]; ok && other != s {
			return cfg, fmt.Errorf("services %q and %q differ only in case: DNS cannot tell them apart", other, s)
		}
		seen[low] = s
	}
	if cfg.MaxServices <= 0 {
		cfg.MaxServices = DefaultMaxServices
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// New validates cfg and returns a Handler over l. Errors name the bad field.
func New(l Lookup, cfg Config) (*Handler, error) {
	if l == nil {
		return nil, errors.New("dnsserver: nil Lookup")
	}
	cfg, err := cfg.canonical()
	if err != nil {
		return nil, err
	}
	h := &Handler{l: l, suffix: cfg.Suffix, ttl: uint32(cfg.TTL / time.Second), all: cfg.All,
		lookup: cfg.LookupTimeout, max: cfg.MaxServices, log: cfg.Logger, served: map[string]string{}}
	for _, s := range cfg.Services {
		h.served[strings.ToLower(s)] = s
	}
	h.life, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

// Suffix returns the zone answered, canonical (lower case, final dot).
func (h *Handler) Suffix() string { return h.suffix }

// Close makes later queries fail with SERVFAIL, cancels lookups in progress and
// waits for them.
func (h *Handler) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.inflight.Wait()
}

func (h *Handler) begin() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.inflight.Add(1)
	return true
}

// ServeDNS implements dns.Handler.
func (h *Handler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	if !h.begin() {
		m.SetRcode(r, dns.RcodeServerFailure)
		_ = w.WriteMsg(m)
		return
	}
	defer h.inflight.Done()
	h.answer(m, r)
	size := dns.MinMsgSize
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
		size = dns.MaxMsgSize
	} else if opt := r.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
		size = int(opt.UDPSize())
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(uint16(min(size, dns.MaxMsgSize)), false)
	}
	m.Truncate(size)
	_ = w.WriteMsg(m)
}

// answer fills m with the reply to r.
func (h *Handler) answer(m *dns.Msg, r *dns.Msg) {
	m.SetReply(r)
	m.Authoritative = true
	m.Compress = true
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		m.Rcode = dns.RcodeNotImplemented
		return
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return
	}
	name := dns.CanonicalName(q.Name)
	if !dns.IsSubDomain(h.suffix, name) {
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		return
	}
	if name == h.suffix {
		if q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, h.soa())
		} else {
			m.Ns = append(m.Ns, h.soa())
		}
		return
	}
	rel := strings.TrimSuffix(name, "."+h.suffix)
	labels := strings.Split(rel, ".")

	if len(labels) == 2 && labels[1] == "addr" {
		if ip, ok := decodeAddr(labels[0]); ok {
			if rr := h.addrRR(q.Name, ip, q.Qtype); rr != nil {
				m.Answer = append(m.Answer, rr)
			} else {
				m.Ns = append(m.Ns, h.soa())
			}
			return
		}
	}
	srvForm := false
	if len(labels) == 2 && strings.HasPrefix(labels[0], "_") && (labels[1] == "_tcp" || labels[1] == "_udp") {
		rel, srvForm = labels[0][1:], true
	}
	service, ok := h.service(rel)
	if !ok {
		h.nxdomain(m)
		return
	}
	ctx, cancel := context.WithTimeout(h.life, h.lookup)
	snap, err := h.l.Lookup(ctx, service)
	cancel()
	if err != nil {
		h.log.Warn("dns: no view of the service", "service", service, "err", err)
		m.Rcode = dns.RcodeServerFailure
		return
	}
	if len(snap.Instances) == 0 {
		h.nxdomain(m)
		return
	}
	healthy := snap.Healthy()
	switch {
	case q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeANY:
		weights := srvWeights(healthy)
		for i, in := range healthy {
			target := dns.Fqdn(in.Host)
			ip, isIP := parseIP(in.Host)
			if isIP {
				target = encodeAddr(ip) + ".addr." + h.suffix
			}
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:      h.hdr(q.Name, dns.TypeSRV),
				Priority: 0, Weight: weights[i], Port: uint16(in.Port), Target: target,
			})
			if isIP {
				m.Extra = append(m.Extra, h.addrRR(target, ip, 0))
			}
		}
	case (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) && !srvForm:
		for _, in := range healthy {
			if ip, ok := parseIP(in.Host); ok {
				if rr := h.addrRR(q.Name, ip, q.Qtype); rr != nil {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, h.soa())
	}
}

// service maps the relative query name to a served service.
func (h *Handler) service(rel string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.served[rel]; ok {
		return s, true
	}
	if !h.all || registry.ValidServiceName(rel) != nil {
		return "", false
	}
	if len(h.served) >= h.max {
		h.log.Warn("dns: not following another service: the maximum is reached", "service", rel, "max", h.max)
		return "", false
	}
	h.served[rel] = rel
	return rel, true
}

func (h *Handler) nxdomain(m *dns.Msg) {
	m.Rcode = dns.RcodeNameError
	m.Ns = append(m.Ns, h.soa())
}

func (h *Handler) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: h.ttl}
}

func (h *Handler) soa() dns.RR {
	return &dns.SOA{
		Hdr: h.hdr(h.suffix, dns.TypeSOA),
		Ns:  "ns." + h.suffix, Mbox: "hostmaster." + h.suffix,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: h.ttl,
	}
}

// addrRR returns an A or AAAA record for ip when it matches qtype (0: either).
func (h *Handler) addrRR(name string, ip netip.Addr, qtype uint16) dns.RR {
	switch {
	case ip.Is4() && (qtype == 0 || qtype == dns.TypeA || qtype == dns.TypeANY):
		return &dns.A{Hdr: h.hdr(name, dns.TypeA), A: net.IP(ip.AsSlice())}
	case ip.Is6() && (qtype == 0 || qtype == dns.TypeAAAA || qtype == dns.TypeANY):
		return &dns.AAAA{Hdr: h.hdr(name, dns.TypeAAAA), AAAA: net.IP(ip.AsSlice())}
	}
	return nil
}

// parseIP parses an instance host as an IP address (IPv4-mapped IPv6 as IPv4).
func parseIP(host string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func encodeAddr(ip netip.Addr) string { return hex.EncodeToString(ip.AsSlice()) }

func decodeAddr(label string) (netip.Addr, bool) {
	if len(label) != 8 && len(label) != 32 {
		return netip.Addr{}, false
	}
	b, err := hex.DecodeString(label)
	if err != nil {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(b)
	return ip, ok
}

// srvWeights maps instance weights to SRV weights (0–65535), proportionally.
func srvWeights(list []registry.Instance) []uint16 {
	maxW := 0
	for _, in := range list {
		maxW = max(maxW, in.Weight)
	}
	out := make([]uint16, len(list))
	for i, in := range list {
		w := max(in.Weight, 0)
		if maxW > 65535 {
			scaled := int(int64(w) * 65535 / int64(maxW))
			if scaled == 0 && w > 0 {
				scaled = 1
			}
			w = scaled
		}
		out[i] = uint16(w)
	}
	return out
}
