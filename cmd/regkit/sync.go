package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/metric"

	"github.com/regkit/regkit/cmd/regkit/internal/mirror"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

func newSyncCmd(g *globals) *cobra.Command {
	var (
		bothWays        bool
		services        []string
		groupName       string
		coordURL        string
		member          string
		srcName         string
		dstName         string
		emptyGrace      time.Duration
		handoverTimeout time.Duration
		memberTTL       time.Duration
		dryRun          bool
		metricsAddr     string
	)
	cmd := &cobra.Command{
		Use:   "sync SRC_URL DST_URL",
		Short: "Mirror services from one registry to another, one way or both ways",
		Long: `Copy every selected service's instances from SRC_URL to DST_URL (and from
DST_URL to SRC_URL with --both-ways) and keep the copies following their sources
until SIGINT or SIGTERM; any pair of backends works (zk, etcd, consul, nacos).
--url and REGKIT_URL are not used.

A copy is registered under the destination's own liveness (session, lease, TTL
check, heartbeats) by this process, so the copies go when every sync process is
gone. It carries the source's address, weight, zone and metadata plus:
  sourceClusterId, destClusterId   the registries' names (--src-name, --dst-name)
  sync.instance.tag                the sync group (--group)
  regkit.sync.source-id            the source instance's ID
  regkit.sync.owner                the sync process (--member) holding it
  regkit.sync.held-since           set while the source lists nothing
Its ID is SOURCE_ID~MEMBER, or SOURCE_ID~MEMBER~INCARNATION (6 random hex
digits per process) while another process with the same --member (a crashed
predecessor, or the old process of a restart) still holds the first: the two
copies are listed side by side until the old one goes. To restart without a
gap, start the new process before stopping the old one. An instance that carries sourceClusterId is a copy
and is never copied again (no loops); one registered natively on both sides
(same host:port) is left alone; unhealthy instances are not copied. A copy
goes when its source is deregistered, expires or turns unhealthy; when the
source suddenly lists no healthy instance at all, copies are kept, marked, for
--empty-grace (plus jitter).

High availability: run several processes with the same --group. They join a
membership on the coordinator (--coord, else SRC_URL if its backend has sessions,
else DST_URL; Nacos has none) and split the services by rendezvous hashing over
the registries' names, so give every process of a group the same names (the same
URLs, or --src-name and --dst-name). On
SIGTERM a process leaves, and keeps each copy until the new owner's copy is
listed on the destination (at most --handover-timeout), so watchers never see a
service's instances missing; then it exits with status 0. A process that dies
(kill -9, a crash) is replaced when its membership session expires, after
--member-ttl (default 5s): keep it below the liveness of the copies on the
destinations (ZooKeeper session_timeout, etcd lease_ttl, Consul check_ttl: 10s
by default; Nacos 15s), so the others register their copies before the dead
process's expire and watchers see both for a moment, never none. Consul as
--coord raises the TTL to at least 10s and expires sessions only after twice
it, so with Consul as coordinator a crash can still show a gap.

Each change prints one line (-o json: one JSON object a line, "event" is
registered, updated, held, removed or failed). --dry-run prints the plan (what
would be copied and what skipped, and why) and exits.

Metrics (--metrics-addr): regkit_sync_copies{service} (copies held, a gauge),
regkit_sync_errors_total{op} and regkit_sync_lag_seconds{service} (a histogram),
with the registry clients' own (regkit_registration_*, regkit_watch_*,
regkit_session_*, regkit_request_errors_total).
` + metricsHelp + "\n" + exitHelp,
		Example: `  regkit sync zk://zk1:2181/dubbo nacos://nacos:8848?namespace=prod --services 'org.example.*'
  regkit sync zk://zk1:2181 etcd://etcd1:2379/prod --both-ways --group zk-etcd
  regkit sync zk://zk1:2181 nacos://nacos:8848 --dry-run`,
		Args: argsBetween(2, 2, "src_url", "dst_url"),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcURL, err := syncURL("SRC_URL", args[0])
			if err != nil {
				return err
			}
			dstURL, err := syncURL("DST_URL", args[1])
			if err != nil {
				return err
			}
			if coordURL != "" {
				if _, err := syncURL("--coord", coordURL); err != nil {
					return err
				}
			}
			if srcName == "" {
				srcName = endpointName(srcURL)
			}
			if dstName == "" {
				dstName = endpointName(dstURL)
			}
			if srcName == dstName {
				return usagef("SRC_URL and DST_URL name the same registry %q: give --src-name and --dst-name", srcName)
			}
			if emptyGrace < 0 {
				return usagef("invalid --empty-grace %v: must not be negative", emptyGrace)
			}
			if handoverTimeout <= 0 {
				return usagef("invalid --handover-timeout %v: must be positive", handoverTimeout)
			}
			if memberTTL <= 0 {
				return usagef("invalid --member-ttl %v: must be positive", memberTTL)
			}
			// Validate the rest (patterns, group, member) before any I/O.
			opts := []mirror.Option{mirror.WithGroup(groupName), mirror.WithServices(services...),
				mirror.WithEmptyGrace(emptyGrace), mirror.WithHandoverTimeout(handoverTimeout),
				mirror.WithMemberTTL(memberTTL), mirror.WithLogger(g.logger())}
			if member != "" {
				opts = append(opts, mirror.WithMemberID(member))
			}
			if err := mirror.CheckOptions(opts...); err != nil {
				var fe *registry.FieldError
				if errors.As(err, &fe) {
					flag := map[string]string{"group": "--group", "member ID": "--member", "services": "--services"}[fe.Field]
					return usagef("invalid %s %q: %s", flag, fmt.Sprint(fe.Value), fe.Reason)
				}
				return usageError{err}
			}
			if err := validMetricsAddr(metricsAddr); err != nil {
				return err
			}

			ctx := cmd.Context()
			var ms *metricsServer
			if !dryRun {
				if ms, err = startMetrics(g, metricsAddr); err != nil {
					return err
				}
				defer ms.close()
				opts = append(opts, mirror.WithMeterProvider(ms.MeterProvider()))
			}
			mp := ms.MeterProvider()
			src, dst, err := g.openPair(ctx, srcURL, dstURL, mp)
			if err != nil {
				return err
			}
			defer src.Close()
			defer dst.Close()
			a, b := mirror.Endpoint{Client: src, Name: srcName}, mirror.Endpoint{Client: dst, Name: dstName}
			routes := []mirror.Route{{From: a, To: b}}
			if bothWays {
				routes = append(routes, mirror.Route{From: b, To: a})
			}

			if dryRun {
				s, err := mirror.New(routes, opts...)
				if err != nil {
					return usageError{err}
				}
				pctx, cancel := g.withTimeout(ctx)
				defer cancel()
				steps, err := s.Plan(pctx)
				if err != nil {
					return err
				}
				return printPlan(g, steps)
			}

			var coord *registry.Client
			switch {
			case coordURL != "":
				coord, err = g.openSync(ctx, coordURL, mp)
				if err != nil {
					return fmt.Errorf("--coord: %w", err)
				}
				defer coord.Close()
			case src.Capabilities().Sessions:
				coord = src
			case dst.Capabilities().Sessions:
				coord = dst
			default:
				fmt.Fprintln(g.stderr, "regkit: no coordinator with sessions (give --coord): this process is the only member and syncs every service")
			}
			if coord != nil {
				opts = append(opts, mirror.WithCoordinator(coord))
			}
			var mu sync.Mutex // serialises the lines of the services' goroutines
			var werr error
			opts = append(opts, mirror.WithEventHandler(func(e mirror.Event) {
				mu.Lock()
				defer mu.Unlock()
				if werr == nil {
					werr = printSyncEvent(g, e)
				}
			}))
			s, err := mirror.New(routes, opts...)
			if err != nil {
				return usageError{err}
			}
			fmt.Fprintf(g.stderr, "regkit: syncing %s as member %s of group %s\n", routesString(routes), s.MemberID(), groupName)
			if err := s.Run(ctx); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			return werr
		},
	}
	f := cmd.Flags()
	f.BoolVar(&bothWays, "both-ways", false, "also copy DST_URL's services to SRC_URL")
	f.StringSliceVar(&services, "services", nil, "sync only services matching these `patterns` (path.Match: *, ?, [a-z]; comma-separated or repeated; default all)")
	f.StringVar(&groupName, "group", mirror.DefaultGroup, "sync group: processes of one group share the work; its name tags the copies")
	f.StringVar(&coordURL, "coord", "", "registry `URL` whose store keeps the group's membership (default: SRC_URL if it has sessions, else DST_URL)")
	f.StringVar(&member, "member", "", "this process's member ID, unique in the group (default random)")
	f.StringVar(&srcName, "src-name", "", "SRC_URL's name in the copies' metadata (default: the URL without credentials and query)")
	f.StringVar(&dstName, "dst-name", "", "DST_URL's name in the copies' metadata (default: the URL without credentials and query)")
	f.DurationVar(&emptyGrace, "empty-grace", mirror.DefaultEmptyGrace, "keep copies this long after their source suddenly lists no healthy instance")
	f.DurationVar(&handoverTimeout, "handover-timeout", mirror.DefaultHandoverTimeout, "on shutdown or rebalance, keep copies at most this long for the new owner's to appear")
	f.DurationVar(&memberTTL, "member-ttl", mirror.DefaultMemberTTL, "TTL of this process's membership session on the coordinator: after a crash the others take over its services this long after; keep it below the copies' liveness on the destinations")
	f.BoolVar(&dryRun, "dry-run", false, "print what would be copied and skipped, then exit")
	addMetricsFlag(cmd, &metricsAddr)
	return cmd
}

// syncURL validates a URL argument without I/O.
func syncURL(from, raw string) (string, error) {
	u, err := registry.ParseURL(raw)
	if err != nil {
		return "", usagef("invalid %s: %v", from, err)
	}
	if u.Scheme == "" || !slices.Contains(registry.Drivers(), u.Scheme) {
		return "", usagef("invalid %s %q: unknown scheme %q (want one of %s)", from, registry.RedactURL(u), u.Scheme, strings.Join(schemes(), ", "))
	}
	return raw, nil
}

// endpointName is the URL without credentials, query or fragment.
func endpointName(raw string) string {
	u, err := registry.ParseURL(raw)
	if err != nil {
		return raw
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return registry.RedactURL(u)
}

// openSync opens a registry whose instances are registered exactly as given:
// copies keep their source's address whatever the environment says. mp records
// the client's metrics (nil: none).
func (g *globals) openSync(ctx context.Context, raw string, mp metric.MeterProvider) (*registry.Client, error) {
	octx, cancel := g.withTimeout(ctx)
	defer cancel()
	c, err := registry.Open(octx, raw, registry.WithLogger(g.logger()), registry.WithMeterProvider(mp),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true}))
	if err != nil {
		if errors.Is(err, registry.ErrInvalid) {
			return nil, usageError{fmt.Errorf("invalid registry URL: %w", err)}
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return c, nil
}

// openPair opens SRC_URL and DST_URL at once, so that a URL the driver refuses
// (a bad port, a parameter of another layout) is reported at once, before the
// other side's connect has to finish or time out. An invalid URL is reported
// before a connect failure of the other side; SRC_URL's error comes first when
// both are of one kind.
func (g *globals) openPair(ctx context.Context, srcURL, dstURL string, mp metric.MeterProvider) (src, dst *registry.Client, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   *registry.Client
		err error
	}
	srcc, dstc := make(chan result, 1), make(chan result, 1)
	open := func(raw string, out chan<- result) {
		c, err := g.openSync(ctx, raw, mp)
		if err != nil && isUsage(err) {
			cancel() // the command fails anyway: stop the other side's connect
		}
		out <- result{c, err}
	}
	go open(srcURL, srcc)
	go open(dstURL, dstc)
	s, d := <-srcc, <-dstc
	if s.err == nil && d.err == nil {
		return s.c, d.c, nil
	}
	for _, r := range []result{s, d} {
		if r.c != nil {
			r.c.Close()
		}
	}
	serr, derr := s.err, d.err
	if serr != nil {
		serr = fmt.Errorf("SRC_URL: %w", serr)
	}
	if derr != nil {
		derr = fmt.Errorf("DST_URL: %w", derr)
	}
	switch {
	case serr != nil && isUsage(s.err):
		return nil, nil, serr
	case derr != nil && isUsage(d.err):
		return nil, nil, derr
	case serr != nil:
		return nil, nil, serr
	default:
		return nil, nil, derr
	}
}

// isUsage reports whether err is a usage error (a URL refused without I/O).
func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func routesString(routes []mirror.Route) string {
	var parts []string
	for _, r := range routes {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, " and ")
}

type syncEventJSON struct {
	Time     time.Time    `json:"time"`
	Event    string       `json:"event"`
	Route    string       `json:"route"`
	Service  string       `json:"service"`
	SourceID string       `json:"source_id"`
	Reason   string       `json:"reason,omitempty"`
	Error    string       `json:"error,omitempty"`
	Copy     instanceJSON `json:"copy"`
}

func printSyncEvent(g *globals, e mirror.Event) error {
	if g.json() {
		j := syncEventJSON{Time: e.Time, Event: string(e.Kind), Route: e.Route, Service: e.Service,
			SourceID: e.SourceID, Reason: e.Reason, Copy: toJSON(e.Copy)}
		if e.Err != nil {
			j.Error = e.Err.Error()
		}
		return writeJSON(g.stdout, j)
	}
	line := fmt.Sprintf("%s %s %s/%s (copy %s at %s) %s", e.Time.Format("15:04:05.000"), e.Kind, e.Service,
		e.SourceID, e.Copy.ID, e.Copy.Addr(), e.Route)
	if e.Reason != "" {
		line += ": " + e.Reason
	}
	if e.Err != nil {
		line += ": " + e.Err.Error()
	}
	_, err := fmt.Fprintln(g.stdout, line)
	return err
}

type stepJSON struct {
	Route    string `json:"route"`
	Service  string `json:"service"`
	SourceID string `json:"source_id"`
	Addr     string `json:"address"`
	Action   string `json:"action"`
	Reason   string `json:"reason,omitempty"`
}

func printPlan(g *globals, steps []mirror.Step) error {
	if g.json() {
		out := make([]stepJSON, 0, len(steps))
		for _, s := range steps {
			out = append(out, stepJSON(s))
		}
		return writeJSON(g.stdout, out)
	}
	return writePlanTable(g.stdout, steps)
}

func writePlanTable(w io.Writer, steps []mirror.Step) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tSERVICE\tSOURCE ID\tADDRESS\tACTION\tREASON")
	for _, s := range steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Route, s.Service, s.SourceID, s.Addr, s.Action, orDash(s.Reason))
	}
	if len(steps) == 0 {
		fmt.Fprintln(tw, "(no instance to sync)")
	}
	return tw.Flush()
}
