package consul_test

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

// TestCredentialsNeverLeak runs clients with an ACL token (in the URL and as
// credentials) through a wrong token, cut connections, an agent restart and a
// closed port, with every log line captured at Debug and every error kept: none
// shows a token. A wrong token is ErrPermission at once.
func TestCredentialsNeverLeak(t *testing.T) {
	s := startServer(t, testenv.WithConsulACL(aclToken))
	const wrongToken = "0badc0de-0000-4000-8000-000000000001"
	secrets := []string{aclToken, wrongToken}
	logs := testenv.NewLogCapture(slog.LevelDebug)
	var errs []string
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	opts := []registry.Option{registry.WithLogger(logs.Logger()), registry.WithRequestTimeout(2 * time.Second),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true})}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	start := time.Now()
	_, err := registry.Open(ctx, s.url("leak", "token="+wrongToken), opts...)
	keep(err)
	if !errors.Is(err, registry.ErrPermission) {
		t.Errorf("Open with a wrong token = %v, want ErrPermission", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a refused token took %v: retried", d)
	}
	_, err = registry.Open(ctx, s.url("leak", ""), append(opts, registry.WithCredentials("", wrongToken))...)
	keep(err)

	c := s.open(t, "leak", "token="+aclToken, opts...)
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
	s.proxy.Cut()
	sctx, scancel := context.WithTimeout(ctx, 4*time.Second)
	_, err = c.Conn().List(sctx, "leak")
	keep(err)
	_, err = c.Store().Get(sctx, "/x")
	keep(err)
	scancel()
	s.proxy.Heal()
	testenv.Eventually(t, 30*time.Second, "lists again", func() error {
		_, err := c.Conn().List(ctx, "leak")
		keep(err)
		return err
	})
	_, err = registry.Open(ctx, "consul://"+testenv.ClosedAddr(t)+"?timeout=1s&token="+aclToken, opts...)
	keep(err)

	if len(logs.Lines())+len(errs) == 0 {
		t.Fatal("no log line or error captured: the test proves nothing")
	}
	testenv.NoSecrets(t, "a log line", secrets, logs.Lines()...)
	testenv.NoSecrets(t, "an error", secrets, errs...)
	t.Logf("%d log lines and %d errors checked", len(logs.Lines()), len(errs))
}
