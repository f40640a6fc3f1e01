package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// TestCredentialsNeverLeak runs a client with a user and password through a wrong
// password, cut connections, a server restart and a closed port, with every log
// line captured at Debug and every error kept: none shows the password. A wrong
// password is ErrPermission at once.
func TestCredentialsNeverLeak(t *testing.T) {
	e := newEnv(t)
	const pass = "pw-Etcd-7c1d0e55"
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i, step := range []func() error{
		func() error { _, err := e.admin.UserAdd(ctx, "root", pass); return err },
		func() error { _, err := e.admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := e.admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := e.admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	sw := testenv.NewSecretWitness()
	base := "etcd://" + e.proxy.Addr() + "/leak?dial_timeout=5s&lease_ttl=3s"

	sw.Refused(t, "Open with the wrong password", 3*time.Second, func() error {
		_, err := registry.Open(ctx, base, sw.Options(registry.WithCredentials("root", "wrong-"+pass))...)
		return err
	})
	c, err := registry.Open(ctx, base, sw.Options(registry.WithCredentials("root", pass))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "leak", ID: "l1", Host: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	sw.ThroughCut(t, ctx, c, "leak", e.proxy.Cut, e.proxy.Heal, func() { e.srv.Restart(t, false) },
		func(ctx context.Context) error { _, err := c.Conn().List(ctx, "leak"); return err })
	octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = registry.Open(octx, "etcd://root:"+pass+"@"+testenv.ClosedAddr(t)+"/leak?dial_timeout=1s", sw.Options()...)
	ocancel()
	sw.Keep(err)
	sw.Check(t, []string{pass})
}
