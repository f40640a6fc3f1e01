package nacos_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// TestNew: nacos.New connects from a server list and typed options.
func TestNew(t *testing.T) {
	srv := nacostest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := nacos.New(ctx, []string{srv.Addr()}, nacos.WithNamespace("newtest"), nacos.WithGroup("G"),
		nacos.WithHTTPClient(&http.Client{}), registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := c.Conn().(*nacos.Conn)
	if conn.Namespace() != "newtest" || conn.Group() != "G" {
		t.Errorf("namespace %q group %q, want newtest and G", conn.Namespace(), conn.Group())
	}
	r, err := c.Register(ctx, registry.Instance{Service: "svc", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := c.Instances(ctx, "svc"); err != nil || len(got) != 1 {
		t.Errorf("Instances = %v, %v", got, err)
	}
	for _, bad := range [][]string{nil, {"127.0.0.1:99999"}} {
		if _, err := nacos.New(ctx, bad); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("New(%v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := nacos.New(ctx, []string{srv.Addr()}, nacos.WithGroup("a@@b")); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("New with a bad group = %v, want ErrInvalid", err)
	}
}
