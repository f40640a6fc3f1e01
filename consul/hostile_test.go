package consul_test

import (
	"slices"
	"testing"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

func TestHostileEntryPoints(t *testing.T) {
	s := startServer(t)
	testenv.RunEntryPoints(t, testenv.EntryPointEnv{
		Open: func(t *testing.T) *registry.Client {
			c := s.open(t, "hostile", "", registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
			t.Cleanup(func() { c.Close() })
			return c
		},
		Dump: func(t *testing.T) []string {
			svcs, err := s.admin.Agent().Services()
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for id := range svcs {
				out = append(out, "service "+id)
			}
			keys, _, err := s.admin.KV().Keys("", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, keys...)
			slices.Sort(out)
			return out
		},
		Store:    true,
		Sessions: true,
	})
}
