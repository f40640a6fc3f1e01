package dnsserver

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/miekg/dns"

	"github.com/regkit/regkit/registry"
)

type fakeLookup map[string]registry.Snapshot

func (f fakeLookup) Lookup(_ context.Context, service string) (registry.Snapshot, error) {
	if s, ok := f[service]; ok {
		return s, nil
	}
	return registry.Snapshot{Service: service}, nil
}

// recorder is a dns.ResponseWriter that keeps the reply.
type recorder struct {
	dns.ResponseWriter
	tcp bool
	msg *dns.Msg
}

func (r *recorder) RemoteAddr() net.Addr {
	if r.tcp {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}
func (r *recorder) WriteMsg(m *dns.Msg) error { r.msg = m; return nil }

func ask(t *testing.T, h *Handler, tcp bool, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	w := &recorder{tcp: tcp}
	h.ServeDNS(w, q)
	if w.msg == nil {
		t.Fatal("no reply")
	}
	return w.msg
}

func newHandler(t *testing.T, l Lookup, cfg Config) *Handler {
	t.Helper()
	h, err := New(l, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func TestHealthyOnlyAndNoData(t *testing.T) {
	l := fakeLookup{
		"web": {Instances: []registry.Instance{
			{ID: "a", Host: "10.0.0.1", Port: 80, Weight: 1, Healthy: true},
			{ID: "b", Host: "10.0.0.2", Port: 80, Weight: 1, Healthy: false},
		}},
		"sick": {Instances: []registry.Instance{{ID: "a", Host: "10.0.0.3", Port: 80, Healthy: false}}},
	}
	h := newHandler(t, l, Config{Services: []string{"web", "sick"}})
	if r := ask(t, h, false, "web.regkit.", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.1" {
		t.Fatalf("A web: %v", r)
	}
	r := ask(t, h, false, "sick.regkit.", dns.TypeSRV)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].(*dns.SOA).Minttl != 5 {
		t.Fatalf("all unhealthy: want NODATA with SOA, got %v", r)
	}
	if r := ask(t, h, false, "other.regkit.", dns.TypeSRV); r.Rcode != dns.RcodeNameError {
		t.Fatalf("not served: %v", r)
	}
	if r := ask(t, h, false, "regkit.", dns.TypeSOA); len(r.Answer) != 1 {
		t.Fatalf("SOA: %v", r)
	}
}

func TestWeightsScaled(t *testing.T) {
	got := srvWeights([]registry.Instance{{Weight: 10}, {Weight: 0}, {Weight: 30}})
	if fmt.Sprint(got) != "[10 0 30]" {
		t.Fatalf("small weights kept: %v", got)
	}
	got = srvWeights([]registry.Instance{{Weight: 1}, {Weight: 131070}, {Weight: 65535}})
	if fmt.Sprint(got) != "[1 65535 32767]" {
		t.Fatalf("large weights scaled: %v", got)
	}
}

func TestTruncatedOverUDP(t *testing.T) {
	var list []registry.Instance
	for i := range 60 {
		list = append(list, registry.Instance{ID: fmt.Sprint(i), Host: fmt.Sprintf("10.0.1.%d", i), Port: 80, Weight: 1, Healthy: true})
	}
	h := newHandler(t, fakeLookup{"big": {Instances: list}}, Config{Services: []string{"big"}})
	u := ask(t, h, false, "big.regkit.", dns.TypeSRV)
	if !u.Truncated || u.Len() > dns.MinMsgSize {
		t.Fatalf("UDP: truncated %v, %d bytes", u.Truncated, u.Len())
	}
	if r := ask(t, h, true, "big.regkit.", dns.TypeSRV); r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("TCP: truncated %v, %d answers", r.Truncated, len(r.Answer))
	}
}

func TestAllModeBounded(t *testing.T) {
	l := fakeLookup{"a": {Instances: []registry.Instance{{ID: "a", Host: "10.0.0.1", Port: 1, Healthy: true}}},
		"b": {Instances: []registry.Instance{{ID: "b", Host: "10.0.0.2", Port: 1, Healthy: true}}}}
	h := newHandler(t, l, Config{All: true, MaxServices: 1, Suffix: "svc.example"})
	if r := ask(t, h, false, "A.SVC.example.", dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("a: %v", r)
	}
	if r := ask(t, h, false, "b.svc.example.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("beyond MaxServices: %v", r)
	}
	if r := ask(t, h, false, "-bad.svc.example.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("invalid name: %v", r)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{All: true, Services: []string{"a"}},
		{Services: []string{"Web", "web"}},
		{Services: []string{"a"}, Suffix: "a..b"},
		{Services: []string{"a"}, TTL: -1},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
