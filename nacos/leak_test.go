package nacos_test

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// tokenRE finds an access token in a text (a request URL or form in an error).
var tokenRE = regexp.MustCompile(`(?i)accessToken["=:\s]+[^x&"\s]`)

// TestCredentialsNeverLeak runs a client of a server with auth through a wrong
// password, cut connections and a server restart (which forgets its tokens),
// with every log line captured at Debug and every error kept: none shows the
// password or an access token. A wrong password is ErrPermission at once.
func TestCredentialsNeverLeak(t *testing.T) {
	const user, pass = "nacos-user", "pw-Nacos-4b2e9d"
	e := newFake(t, "", nacostest.WithAuth(user, pass, time.Hour))
	logs := testenv.NewLogCapture(slog.LevelDebug)
	var errs []string
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	opts := []registry.Option{registry.WithLogger(logs.Logger()), registry.WithRetryBackoff(50*time.Millisecond, 500*time.Millisecond),
		registry.WithRequestTimeout(2 * time.Second), registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true})}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := "nacos://" + e.proxy.Addr() + "?namespace=leak&" + fastParams

	start := time.Now()
	_, err := registry.Open(ctx, base, append(opts, registry.WithCredentials(user, "wrong-"+pass))...)
	keep(err)
	if !errors.Is(err, registry.ErrPermission) {
		t.Errorf("Open with the wrong password = %v, want ErrPermission", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a refused login took %v: retried", d)
	}
	_, err = registry.Open(ctx, base, opts...)
	keep(err)
	if !errors.Is(err, registry.ErrPermission) {
		t.Errorf("Open without credentials = %v, want ErrPermission", err)
	}

	c, err := registry.Open(ctx, base, append(opts, registry.WithCredentials(user, pass))...)
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
	sctx, scancel := context.WithTimeout(ctx, 4*time.Second)
	_, err = c.Conn().List(sctx, "leak")
	keep(err)
	for {
		s, err := w.Next(sctx)
		keep(err)
		if err != nil || s.Stale {
			keep(s.Err)
			break
		}
	}
	scancel()
	e.proxy.Heal()
	e.srv.Restart(t)
	testenv.Eventually(t, 30*time.Second, "lists after the restart", func() error {
		_, err := c.Conn().List(ctx, "leak")
		keep(err)
		return err
	})
	_, err = registry.Open(ctx, "nacos://"+testenv.ClosedAddr(t)+"?timeout=1s", append(opts, registry.WithCredentials(user, pass))...)
	keep(err)

	if len(logs.Lines())+len(errs) == 0 {
		t.Fatal("no log line or error captured: the test proves nothing")
	}
	texts := append(logs.Lines(), errs...)
	testenv.NoSecrets(t, "a log line or error", []string{pass}, texts...)
	for _, x := range texts {
		if tokenRE.MatchString(x) {
			t.Errorf("an access token shows in: %s", x)
		}
	}
	t.Logf("%d log lines and %d errors checked", len(logs.Lines()), len(errs))
}
