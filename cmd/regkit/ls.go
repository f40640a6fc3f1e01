package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/regkit/regkit/registry"
)

func newLsCmd(g *globals) *cobra.Command {
	var healthyOnly bool
	cmd := &cobra.Command{
		Use:   "ls [SERVICE]",
		Short: "List the services, or the instances of a service",
		Long: `Without SERVICE, list the services that have at least one instance, healthy or
not, sorted (-o json: a JSON array of names); none is "not found", exit status 3. A
backend that cannot list services (etcd with layout=naming and no target_prefix, a
Nacos server without the v1 service list) is exit status 1: name the service.

With SERVICE, list its instances, sorted by ID: ID, address, zone, weight, health
and metadata; -o json prints a JSON array of instances. No instance (or no healthy
one with --healthy) is "not found", exit status 3.
` + exitHelp,
		Example: `  regkit ls --url etcd://127.0.0.1:2379/prod
  regkit ls greeter --url etcd://127.0.0.1:2379/prod
  REGKIT_URL=zk://127.0.0.1:2181 regkit ls greeter -o json | jq -r '.[].host'`,
		Args: argsBetween(0, 1, "service"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				if healthyOnly {
					return usagef("--healthy needs a SERVICE")
				}
				return listServices(g, cmd)
			}
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

// listServices prints the services with at least one instance.
func listServices(g *globals, cmd *cobra.Command) error {
	ctx, cancel := g.withTimeout(cmd.Context())
	defer cancel()
	c, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	names, err := c.Services(ctx)
	if errors.Is(err, registry.ErrNotSupported) {
		return fmt.Errorf("this registry cannot list its services; name one: regkit ls SERVICE (%w)", err)
	}
	if err != nil {
		return err
	}
	if g.json() {
		if names == nil {
			names = []string{}
		}
		if err := writeJSON(g.stdout, names); err != nil {
			return err
		}
	} else if len(names) > 0 {
		t := newTable(g.stdout, "SERVICE")
		for _, n := range names {
			t.row(n)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(names) == 0 {
		return notFoundError{"no service has an instance"}
	}
	return nil
}
