package zk_test

import (
	"slices"
	"testing"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// zkTree lists every znode under root with the native client.
func zkTree(t *testing.T, c *zk.Conn, root string) []string {
	t.Helper()
	var out []string
	var walk func(p string)
	walk = func(p string) {
		kids, _, err := c.Children(p)
		if err == zk.ErrNoNode {
			return
		}
		if err != nil {
			t.Fatalf("children %s: %v", p, err)
		}
		for _, k := range kids {
			child := p + "/" + k
			if p == "/" {
				child = "/" + k
			}
			out = append(out, child)
			walk(child)
		}
	}
	walk(root)
	slices.Sort(out)
	return out
}

func TestHostileEntryPoints(t *testing.T) {
	e := newEnv(t)
	testenv.RunEntryPoints(t, testenv.EntryPointEnv{
		Open: func(t *testing.T) *registry.Client {
			return openURL(t, "zk://"+e.srv.Addr()+"/hostile", registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
		},
		Dump:     func(t *testing.T) []string { return zkTree(t, e.adm(t), "/hostile") },
		Store:    true,
		Sessions: true,
	})
}
