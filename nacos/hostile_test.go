package nacos_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

func TestHostileEntryPoints(t *testing.T) {
	e := newFake(t, "")
	testenv.RunEntryPoints(t, testenv.EntryPointEnv{
		Open: func(t *testing.T) *registry.Client {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := registry.Open(ctx, "nacos://"+e.srv.Addr()+"?namespace=hostile&"+fastParams,
				registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		},
		Dump: func(t *testing.T) []string {
			var out []string
			for _, in := range e.srv.Instances("hostile", "DEFAULT_GROUP", "hostile") {
				out = append(out, fmt.Sprintf("%s:%d %v", in.IP, in.Port, in.Metadata))
			}
			slices.Sort(out)
			return out
		},
		Store: true,
	})
}
