package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// TestDNS runs `regkit dns` against an etcd of its own, queries it with a real
// DNS client over UDP and TCP on loopback, then stops etcd and checks that the
// answers are still served (stale).
func TestDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := embedded.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.Close()
		}
	}()
	url := srv.URL("dns")

	// Register in-process: two IP instances of greeter, one DNS-name instance of db.
	c, err := registry.Open(ctx, url, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true}),
		registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	var regs []registry.Registration
	defer func() {
		// etcd is gone by now: give up deregistering at once (Close would try
		// each for 10s); the lease is gone with the server anyway.
		for _, r := range regs {
			dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
			_ = r.Deregister(dctx)
			dcancel()
		}
		c.Close()
	}()
	for _, in := range []registry.Instance{
		{Service: "greeter", ID: "g1", Host: "127.0.0.1", Port: 8081, Weight: 10},
		{Service: "greeter", ID: "g2", Host: "10.0.0.2", Port: 8082, Weight: 30},
		{Service: "greeter", ID: "g3", Host: "::1", Port: 8083},
		{Service: "db", ID: "d1", Host: "db1.example.com", Port: 5432},
	} {
		r, err := c.Register(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}

	p := start(t, url, "dns", "--listen", "127.0.0.1:0", "--ttl", "2s", "greeter", "db", "empty")
	var addr string
	re := regexp.MustCompile(`serving DNS on (\S+) \(udp, tcp\)`)
	poll.Until(t, 60*time.Second, "dns listening", func() error {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited %d: %s", p.code, p.stderr.String())
		default:
		}
		return fmt.Errorf("not yet: %s", p.stderr.String())
	})

	q := func(t *testing.T, net, name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		cl := &dns.Client{Net: net, Timeout: 5 * time.Second}
		r, _, err := cl.Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s %s %s: %v", net, dns.TypeToString[qtype], name, err)
		}
		return r
	}
	srvs := func(r *dns.Msg) []string {
		var out []string
		for _, rr := range r.Answer {
			if s, ok := rr.(*dns.SRV); ok {
				out = append(out, fmt.Sprintf("%d %d %d %s", s.Priority, s.Weight, s.Port, s.Target))
			}
		}
		slices.Sort(out)
		return out
	}
	wantSRV := []string{
		"0 10 8081 7f000001.addr.regkit.",
		"0 100 8083 00000000000000000000000000000001.addr.regkit.",
		"0 30 8082 0a000002.addr.regkit.",
	}
	check := func(t *testing.T) {
		t.Helper()
		for _, nw := range []string{"udp", "tcp"} {
			r := q(t, nw, "greeter.regkit.", dns.TypeSRV)
			if r.Rcode != dns.RcodeSuccess || !slices.Equal(srvs(r), wantSRV) {
				t.Fatalf("%s SRV greeter: rcode %s, %q; want %q\n%v", nw, dns.RcodeToString[r.Rcode], srvs(r), wantSRV, r)
			}
			if len(r.Extra) != 3 || r.Answer[0].Header().Ttl != 2 || !r.Authoritative {
				t.Fatalf("%s SRV greeter: additional %v, ttl %d, aa %v", nw, r.Extra, r.Answer[0].Header().Ttl, r.Authoritative)
			}
		}
		r := q(t, "udp", "_greeter._tcp.regkit.", dns.TypeSRV)
		if !slices.Equal(srvs(r), wantSRV) {
			t.Fatalf("SRV _greeter._tcp: %v", r)
		}
		r = q(t, "udp", "GREETER.Regkit.", dns.TypeA)
		var as []string
		for _, rr := range r.Answer {
			as = append(as, rr.(*dns.A).A.String())
		}
		slices.Sort(as)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(as, []string{"10.0.0.2", "127.0.0.1"}) {
			t.Fatalf("A greeter: %v", r)
		}
		r = q(t, "udp", "greeter.regkit.", dns.TypeAAAA)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "::1" {
			t.Fatalf("AAAA greeter: %v", r)
		}
		r = q(t, "udp", "7f000001.addr.regkit.", dns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
			t.Fatalf("A of an SRV target: %v", r)
		}
		// A DNS-name host: SRV targets the name, no A made up.
		r = q(t, "udp", "db.regkit.", dns.TypeSRV)
		if got := srvs(r); !slices.Equal(got, []string{"0 100 5432 db1.example.com."}) || len(r.Extra) != 0 {
			t.Fatalf("SRV db: %v", r)
		}
		r = q(t, "udp", "db.regkit.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Fatalf("A db (want NODATA with SOA): %v", r)
		}
		for _, name := range []string{"unknown.regkit.", "empty.regkit."} {
			r = q(t, "udp", name, dns.TypeSRV)
			if r.Rcode != dns.RcodeNameError {
				t.Fatalf("SRV %s: rcode %s, want NXDOMAIN", name, dns.RcodeToString[r.Rcode])
			}
		}
		if r = q(t, "udp", "example.com.", dns.TypeA); r.Rcode != dns.RcodeRefused {
			t.Fatalf("outside the suffix: %s", dns.RcodeToString[r.Rcode])
		}
	}
	t.Run("live", check)

	// The registry goes down: the answers stay. Wait until the command's watch
	// has noticed (it logs the failed re-list), then query again.
	srv.Close()
	stopped = true
	poll.Until(t, 60*time.Second, "the dns command notices the outage", func() error {
		if s := p.stderr.String(); strings.Contains(s, "level=WARN") {
			return nil
		}
		return fmt.Errorf("no warning yet; stderr:\n%s", p.stderr.String())
	})
	t.Run("stale", check)

	if code := p.stop(t); code != exitOK {
		t.Fatalf("dns exited %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
}

// TestDNSBackends: `regkit dns` answers SRV and A queries from every backend,
// follows a registration made while it runs, and serves /metrics.
func TestDNSBackends(t *testing.T) {
	for name, urlFor := range backends(t) {
		t.Run(name, func(t *testing.T) {
			url := urlFor(t)
			c := openClient(t, url)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: "g1", Host: "127.0.0.1", Port: 8081, Weight: 10}); err != nil {
				t.Fatal(err)
			}
			p := start(t, url, "dns", "--listen", "127.0.0.1:0", "--ttl", "1s", "--metrics-addr", "127.0.0.1:0", "greeter")
			addr := waitMatch(t, p, `serving DNS on (\S+) \(udp, tcp\)`)
			srv := func() ([]string, error) {
				m := new(dns.Msg)
				m.SetQuestion("greeter.regkit.", dns.TypeSRV)
				r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
				if err != nil {
					return nil, err
				}
				var out []string
				for _, rr := range r.Answer {
					if s, ok := rr.(*dns.SRV); ok {
						out = append(out, fmt.Sprintf("%d %d %s", s.Weight, s.Port, s.Target))
					}
				}
				slices.Sort(out)
				return out, nil
			}
			wantSRV := func(want ...string) {
				t.Helper()
				poll.Until(t, 30*time.Second, "SRV greeter", func() error {
					got, err := srv()
					if err != nil {
						return err
					}
					if !slices.Equal(got, want) {
						return fmt.Errorf("SRV %q, want %q", got, want)
					}
					return nil
				})
			}
			wantSRV("10 8081 7f000001.addr.regkit.")
			if _, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: "g2", Host: "127.0.0.2", Port: 8082, Weight: 30}); err != nil {
				t.Fatal(err)
			}
			wantSRV("10 8081 7f000001.addr.regkit.", "30 8082 7f000002.addr.regkit.")

			m, err := scrape(waitMatch(t, p, `serving metrics on http://(\S+)/metrics`))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(m, "go_goroutines ") {
				t.Fatalf("/metrics lacks the runtime's metrics:\n%s", m)
			}
			if code := p.stop(t); code != exitOK {
				t.Fatalf("dns exited %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
			}
		})
	}
}
