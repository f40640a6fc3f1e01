package mem_test

import (
	"context"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

func TestHostileEntryPoints(t *testing.T) {
	var keep *registry.Client
	testenv.RunEntryPoints(t, testenv.EntryPointEnv{
		Open: func(t *testing.T) *registry.Client {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := registry.Open(ctx, "mem://hostile", registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
			if err != nil {
				t.Fatal(err)
			}
			if keep == nil {
				keep = c
			}
			return c
		},
		Dump: func(t *testing.T) []string {
			// A second client of the same named store reads what is there.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := registry.Open(ctx, "mem://hostile")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			nodes, err := c.Store().Tree(ctx, "/")
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, n := range nodes {
				out = append(out, n.Key)
			}
			for _, svc := range []string{"hostile"} {
				l, _ := c.Instances(ctx, svc)
				for _, in := range l {
					out = append(out, "instance "+in.ID)
				}
			}
			return out
		},
		Store:    true,
		Sessions: true,
	})
}
