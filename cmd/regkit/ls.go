package main

import (
	"strconv"

	"github.com/spf13/cobra"

	"github.com/regkit/regkit/registry"
)

func newLsCmd(g *globals) *cobra.Command {
	var healthyOnly bool
	cmd := &cobra.Command{
		Use:   "ls SERVICE",
		Short: "List the instances of a service",
		Long: `List the instances of SERVICE, sorted by ID: ID, address, zone, weight, health
and metadata; -o json prints a JSON array of instances.

A service is required: the registry API cannot list services yet.
No instance (or no healthy one with --healthy) is "not found", exit status 3.
` + exitHelp,
		Example: `  regkit ls greeter --url etcd://127.0.0.1:2379/prod
  REGKIT_URL=zk://127.0.0.1:2181 regkit ls greeter -o json | jq -r '.[].host'`,
		Args: argsBetween(1, 1, "service"),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := args[0]
			if err := registry.ValidServiceName(service); err != nil {
				return usagef("invalid argument SERVICE: %v", err)
			}
			ctx, cancel := g.withTimeout(cmd.Context())
			defer cancel()
			c, err := g.open(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			list, err := c.Instances(ctx, service)
			if err != nil {
				return err
			}
			if healthyOnly {
				list = registry.Snapshot{Instances: list}.Healthy()
			}
			if g.json() {
				if err := writeJSON(g.stdout, instancesJSON(list)); err != nil {
					return err
				}
			} else if len(list) > 0 {
				t := newTable(g.stdout, "ID", "ADDRESS", "ZONE", "WEIGHT", "HEALTH", "METADATA")
				for _, in := range list {
					t.row(in.ID, in.Addr(), orDash(in.Zone), strconv.Itoa(in.Weight), healthWord(in.Healthy), formatMeta(in.Metadata))
				}
				if err := t.flush(); err != nil {
					return err
				}
			}
			if len(list) == 0 {
				what := "no instance"
				if healthyOnly {
					what = "no healthy instance"
				}
				return notFoundError{what + " of service " + strconv.Quote(service)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&healthyOnly, "healthy", false, "only healthy instances")
	return cmd
}
