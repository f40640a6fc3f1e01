package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"

	"github.com/regkit/regkit/cmd/regkit/internal/dnsserver"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

func newDNSCmd(g *globals) *cobra.Command {
	var (
		listen      string
		suffix      string
		ttl         time.Duration
		all         bool
		maxServices int
		snapDir     string
		metricsAddr string
	)
	cmd := &cobra.Command{
		Use:   "dns [--all | SERVICE...]",
		Short: "Serve the registry over DNS (SRV, A, AAAA), stale during outages",
		Long: `Answer DNS queries over UDP and TCP from a shared cache of the registry (package
registry/cache: one watch per service), until SIGINT or SIGTERM (exit status 0).

  <service>.<suffix>            SRV, A and AAAA of the healthy instances
  _<service>._tcp.<suffix>      SRV (RFC 2782 form, for service names without dots)
  <hex-ip>.addr.<suffix>        A/AAAA: the SRV target of an instance whose host is an IP

Choices: only healthy instances; SRV priority 0; SRV weight = the instance's weight,
scaled proportionally into 0-65535 when some weight is larger; the SRV target is the
host itself when it is a DNS name (no A/AAAA made up for it), else its .addr. name
with the address in the additional section; every record has --ttl. NXDOMAIN for a
service not served or with no instance at all; NODATA when all its instances are
unhealthy; SERVFAIL when a service was never read (backend down since startup and no
--snapshot-dir file); REFUSED outside the suffix. UDP answers are truncated (TC) to
512 bytes or the client's EDNS0 size, so clients retry over TCP.

While the backend is unreachable the last good instances keep being served (stale):
DNS clients keep resolving through a registry outage. With --snapshot-dir the last
good views are also kept on disk and served when regkit dns starts during an outage.

The services listed are followed from startup; --all serves any service asked for
(lower-cased: list services with upper-case letters explicitly), following each from
its first query, up to --max-services.

Once both listeners are bound it prints "serving DNS on ADDR (udp, tcp)" to stderr
(with the actual port when --listen ends in :0).
` + metricsHelp + "\n" + exitHelp,
		Example: `  regkit dns --listen 127.0.0.1:5353 greeter billing
  regkit dns --all --suffix svc.example. --ttl 2s
  dig @127.0.0.1 -p 5353 SRV greeter.regkit.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if all && len(args) > 0 {
				return usagef("--all and a SERVICE list %q cannot be combined", args)
			}
			if !all && len(args) == 0 {
				return usagef("missing argument SERVICE (or --all)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, s := range args {
				if err := registry.ValidServiceName(s); err != nil {
					return usagef("invalid argument SERVICE: %v", err)
				}
			}
			if _, _, err := net.SplitHostPort(listen); err != nil {
				return usagef("invalid --listen %q: %v", listen, err)
			}
			if ttl < time.Second || ttl%time.Second != 0 {
				return usagef("invalid --ttl %v: want whole seconds, at least 1s", ttl)
			}
			if maxServices < 1 {
				return usagef("invalid --max-services %d: must be at least 1", maxServices)
			}
			if err := (dnsserver.Config{Suffix: suffix, TTL: ttl, Services: args, All: all}).Validate(); err != nil {
				return usagef("invalid --suffix or SERVICE list: %v", err)
			}
			if err := validMetricsAddr(metricsAddr); err != nil {
				return err
			}
			if _, err := g.registryURL(); err != nil {
				return err
			}
			return serveDNS(cmd.Context(), g, dnsOptions{listen: listen, suffix: suffix, ttl: ttl, services: args,
				all: all, maxServices: maxServices, snapDir: snapDir, metricsAddr: metricsAddr})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:5353", "UDP and TCP `address` to serve on")
	f.StringVar(&suffix, "suffix", dnsserver.DefaultSuffix, "DNS zone the services are under")
	f.DurationVar(&ttl, "ttl", dnsserver.DefaultTTL, "TTL of every answer (whole seconds)")
	f.BoolVar(&all, "all", false, "serve any service asked for instead of a list")
	f.IntVar(&maxServices, "max-services", dnsserver.DefaultMaxServices, "with --all, how many services to follow at most")
	f.StringVar(&snapDir, "snapshot-dir", "", "keep each service's last good view in `dir` and serve it when starting during an outage")
	addMetricsFlag(cmd, &metricsAddr)
	return cmd
}

type dnsOptions struct {
	listen, suffix string
	ttl            time.Duration
	services       []string
	all            bool
	maxServices    int
	snapDir        string
	metricsAddr    string
}

// serveDNS runs the DNS server until ctx is done. Every goroutine it starts has
// ended when it returns.
func serveDNS(ctx context.Context, g *globals, o dnsOptions) error {
	ms, err := startMetrics(g, o.metricsAddr)
	if err != nil {
		return err
	}
	defer ms.close()
	c, err := g.open(ctx, registry.WithMeterProvider(ms.MeterProvider()))
	if err != nil {
		return err
	}
	defer c.Close()
	copts := []cache.Option{cache.WithLogger(g.logger()), cache.WithMeterProvider(ms.MeterProvider())}
	if o.snapDir != "" {
		copts = append(copts, cache.WithSnapshotDir(o.snapDir))
	}
	cch, err := cache.New(c, copts...)
	if err != nil {
		return usagef("invalid --snapshot-dir: %v", err)
	}
	defer cch.Close()
	h, err := dnsserver.New(cch, dnsserver.Config{Suffix: o.suffix, TTL: o.ttl, Services: o.services, All: o.all,
		MaxServices: o.maxServices, Logger: g.logger()})
	if err != nil {
		return usageError{err}
	}
	defer h.Close()

	pc, ln, err := listenBoth(o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	var wg sync.WaitGroup
	errc := make(chan error, len(servers))
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- s.ActivateAndServe()
		}()
		select {
		case <-started:
		case err := <-errc:
			shutdown(servers, &wg)
			return fmt.Errorf("serve DNS: %w", err)
		}
	}
	fmt.Fprintf(g.stderr, "serving DNS on %s (udp, tcp) for %s under %s\n", pc.LocalAddr(), describe(o), h.Suffix())

	// Follow the listed services from the start, so that their first answers
	// are ready and a later outage finds a last good view to serve.
	for _, s := range o.services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := cch.Lookup(ctx, s); err != nil && ctx.Err() == nil {
				g.logger().Warn("dns: first read of the service failed; it is retried", "service", s, "err", err)
			}
		}()
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	shutdown(servers, &wg)
	if serveErr != nil {
		return fmt.Errorf("serve DNS: %w", serveErr)
	}
	return nil
}

func describe(o dnsOptions) string {
	if o.all {
		return "every service asked for"
	}
	return strconv.Itoa(len(o.services)) + " service(s)"
}

func shutdown(servers []*dns.Server, wg *sync.WaitGroup) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.ShutdownContext(ctx) // "server not started" for one that failed: nothing to stop
	}
	wg.Wait()
}

// listenBoth binds UDP and TCP on the same address; with port 0 it finds a port
// free for both.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		tcpAddr := addr
		if port == "0" {
			tcpAddr = net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		}
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, errors.Join(errors.New("cannot bind UDP and TCP on the same port"), lastErr)
}
