package etcdtest_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
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
	logs := testenv.NewLogCapture(slog.LevelDebug)
	var errs []string
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	opts := []registry.Option{registry.WithLogger(logs.Logger()), registry.WithRetryBackoff(50*time.Millisecond, 500*time.Millisecond),
		registry.WithRequestTimeout(2 * time.Second), registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true})}
	base := "etcd://" + e.proxy.Addr() + "/leak?dial_timeout=5s&lease_ttl=3s"

	start := time.Now()
	_, err := registry.Open(ctx, base, append(opts, registry.WithCredentials("root", "wrong-"+pass))...)
	keep(err)
	if !errors.Is(err, registry.ErrPermission) {
		t.Errorf("Open with the wrong password = %v, want ErrPermission", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a refused password took %v: retried", d)
	}
	c, err := registry.Open(ctx, base, append(opts, registry.WithCredentials("root", pass))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "leak", ID: "l1", Host: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "leak")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, err = w.Next(ctx)
	keep(err)
	e.proxy.Cut()
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = c.Conn().List(sctx, "leak")
	keep(err)
	scancel()
	e.proxy.Heal()
	e.srv.Restart(t, false)
	testenv.Eventually(t, 30*time.Second, "lists after the restart", func() error {
		_, err := c.Conn().List(ctx, "leak")
		keep(err)
		return err
	})
	octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = registry.Open(octx, "etcd://root:"+pass+"@"+testenv.ClosedAddr(t)+"/leak?dial_timeout=1s", opts...)
	ocancel()
	keep(err)

	if len(logs.Lines())+len(errs) == 0 {
		t.Fatal("no log line or error captured: the test proves nothing")
	}
	testenv.NoSecrets(t, "a log line", []string{pass}, logs.Lines()...)
	testenv.NoSecrets(t, "an error", []string{pass}, errs...)
	t.Logf("%d log lines and %d errors checked", len(logs.Lines()), len(errs))
}
