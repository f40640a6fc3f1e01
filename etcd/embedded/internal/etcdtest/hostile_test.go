package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestHostileEntryPoints(t *testing.T) {
	e := newEnv(t)
	testenv.RunEntryPoints(t, testenv.EntryPointEnv{
		Open: func(t *testing.T) *registry.Client {
			c, err := openURL(t, "etcd://"+e.srv.Endpoint()+"/hostile?dial_timeout=10s",
				registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		Dump: func(t *testing.T) []string {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := e.admin.Get(ctx, "/hostile", clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, kv := range r.Kvs {
				out = append(out, string(kv.Key))
			}
			return out
		},
		Store:    true,
		Sessions: true,
	})
}
