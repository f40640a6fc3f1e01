package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/regkit/regkit/registry"
)

func newWatchCmd(g *globals) *cobra.Command {
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "watch SERVICE",
		Short: "Print each change of a service live, with staleness",
		Long: `Follow SERVICE and print every snapshot the watch publishes: a header line
(time, sequence number, instance counts, STALE with the age and error of the last
good view while the backend cannot be read, RESYNCED on the first view after a gap)
then one line per added (+), removed (-) and changed (~) instance. The first
snapshot lists every instance as added. Bursts of changes are coalesced: every final
state is shown, maybe not each step.

-o json prints one JSON object per snapshot and line:
  {"time","service","seq","revision","instances","healthy","stale","resynced",
   "error","last_good","added":[...],"removed":[...],"changed":[...]}

Runs until SIGINT or SIGTERM (exit status 0).
` + metricsHelp + "\n" + exitHelp,
		Example: `  regkit watch greeter --url etcd://127.0.0.1:2379/prod
  regkit watch greeter -o json | jq -c '{seq, stale, added: [.added[].id]}'`,
		Args: argsBetween(1, 1, "service"),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := args[0]
			if err := registry.ValidServiceName(service); err != nil {
				return usagef("invalid argument SERVICE: %v", err)
			}
			if err := validMetricsAddr(metricsAddr); err != nil {
				return err
			}
			if _, err := g.registryURL(); err != nil {
				return err
			}
			ms, err := startMetrics(g, metricsAddr)
			if err != nil {
				return err
			}
			defer ms.close()
			ctx := cmd.Context()
			c, err := g.open(ctx, registry.WithMeterProvider(ms.MeterProvider()))
			if err != nil {
				return err
			}
			defer c.Close()
			w, err := c.Watch(ctx, service)
			if err != nil {
				return err
			}
			defer w.Close()
			var prev []registry.Instance
			for {
				s, err := w.Next(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return nil // interrupted
					}
					return err
				}
				d := diff(prev, s.Instances)
				prev = s.Instances
				if err := printSnapshot(g, s, d); err != nil {
					return err
				}
			}
		},
	}
	addMetricsFlag(cmd, &metricsAddr)
	return cmd
}

// change is what one snapshot changed relative to the previous one.
type change struct {
	added, removed, changed []registry.Instance
}

// diff compares two ID-sorted instance lists.
func diff(old, cur []registry.Instance) change {
	var d change
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		switch {
		case j == len(cur) || i < len(old) && old[i].ID < cur[j].ID:
			d.removed = append(d.removed, old[i])
			i++
		case i == len(old) || cur[j].ID < old[i].ID:
			d.added = append(d.added, cur[j])
			j++
		default:
			if !old[i].Equal(cur[j]) {
				d.changed = append(d.changed, cur[j])
			}
			i++
			j++
		}
	}
	return d
}

type snapshotJSON struct {
	Time      time.Time      `json:"time"`
	Service   string         `json:"service"`
	Seq       uint64         `json:"seq"`
	Revision  uint64         `json:"revision,omitempty"`
	Instances int            `json:"instances"`
	Healthy   int            `json:"healthy"`
	Stale     bool           `json:"stale"`
	Resynced  bool           `json:"resynced"`
	Error     string         `json:"error,omitempty"`
	LastGood  *time.Time     `json:"last_good,omitempty"`
	Added     []instanceJSON `json:"added"`
	Removed   []instanceJSON `json:"removed"`
	Changed   []instanceJSON `json:"changed"`
}

func printSnapshot(g *globals, s registry.Snapshot, d change) error {
	now := time.Now()
	healthy := len(s.Healthy())
	if g.json() {
		j := snapshotJSON{Time: now, Service: s.Service, Seq: s.Seq, Revision: s.Revision,
			Instances: len(s.Instances), Healthy: healthy, Stale: s.Stale, Resynced: s.Resynced,
			Added: instancesJSON(d.added), Removed: instancesJSON(d.removed), Changed: instancesJSON(d.changed)}
		if s.Err != nil {
			j.Error = s.Err.Error()
		}
		if !s.LastGood.IsZero() {
			lg := s.LastGood
			j.LastGood = &lg
		}
		return writeJSON(g.stdout, j)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s seq=%d instances=%d healthy=%d", now.Format("15:04:05.000"), s.Service, s.Seq, len(s.Instances), healthy)
	if s.Stale {
		fmt.Fprintf(&b, " STALE(age %v", round(s.Age()))
		if s.Err != nil {
			fmt.Fprintf(&b, ": %v", s.Err)
		}
		b.WriteString(")")
	}
	if s.Resynced {
		b.WriteString(" RESYNCED")
	}
	if s.NoLeader {
		b.WriteString(" NO-LEADER")
	}
	if s.ProtectThreshold {
		b.WriteString(" PROTECT-THRESHOLD")
	}
	b.WriteString("\n")
	line := func(sign string, in registry.Instance) {
		fmt.Fprintf(&b, "  %s %s %s zone=%s weight=%d %s meta=%s\n", sign, in.ID, in.Addr(), orDash(in.Zone), in.Weight, healthWord(in.Healthy), formatMeta(in.Metadata))
	}
	for _, in := range d.added {
		line("+", in)
	}
	for _, in := range d.removed {
		line("-", in)
	}
	for _, in := range d.changed {
		line("~", in)
	}
	_, err := io.WriteString(g.stdout, b.String())
	return err
}
