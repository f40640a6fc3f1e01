package zk_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
	rzk "github.com/regkit/regkit/zk"
)

// TestNew: zk.New connects from a server list and typed options, which replace
// what a URL would say (layout, chroot, timeouts).
func TestNew(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := rzk.New(ctx, []string{e.srv.Addr()}, rzk.WithLayout(rzk.LayoutCurator), rzk.WithChroot("/newtest"),
		rzk.WithSessionTimeout(4*time.Second), rzk.WithConnectTimeout(5*time.Second),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if l := c.Conn().(*rzk.Conn).Layout(); l != rzk.LayoutCurator {
		t.Errorf("Layout = %v, want curator", l)
	}
	r, err := c.Register(ctx, registry.Instance{Service: "svc", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ok, _, err := e.adm(t).Exists("/newtest/services/svc/10.0.0.1:80"); err != nil || !ok {
		t.Errorf("curator node under the chroot: exists=%v err=%v", ok, err)
	}
	for _, bad := range [][]string{nil, {"127.0.0.1:99999"}} {
		if _, err := rzk.New(ctx, bad); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("New(%v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := rzk.New(ctx, []string{e.srv.Addr()}, rzk.WithLayout("eureka")); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("New with a bad layout = %v, want ErrInvalid", err)
	}
}
