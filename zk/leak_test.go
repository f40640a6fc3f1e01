package zk_test

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

// TestCredentialsNeverLeak runs a digest-authenticated client through a wrong
// password, cut connections and a server restart, with every log line captured at
// Debug and every error kept: none shows the password (nor the digest).
func TestCredentialsNeverLeak(t *testing.T) {
	e := newEnv(t)
	const user, pass = "alice", "pw-Zk-9f3a1c77"
	secrets := []string{pass, user + ":" + pass}
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

	owner, err := registry.Open(ctx, "zk://"+user+":"+pass+"@"+e.proxy.Addr()+"/leak?session_timeout=2s", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err := owner.Register(ctx, registry.Instance{Service: "leak", ID: "l1", Host: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	_, err = owner.Store().Create(ctx, "/secret", []byte("v"))
	keep(err)

	// The wrong password: refused with ErrPermission, never retried.
	wrong, err := registry.Open(ctx, "zk://"+user+":wrong-"+pass+"@"+e.proxy.Addr()+"/leak", opts...)
	keep(err)
	if err == nil {
		start := time.Now()
		_, err := wrong.Store().Get(ctx, "/secret")
		keep(err)
		if !errors.Is(err, registry.ErrPermission) {
			t.Errorf("Get with the wrong password = %v, want ErrPermission", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("a refused Get took %v: retried", d)
		}
		_, err = wrong.Register(ctx, registry.Instance{Service: "leak", ID: "l2", Host: "10.0.0.1", Port: 81})
		keep(err)
		wrong.Close()
	}

	// Cut connections, then a server restart, while a watch runs.
	w, err := owner.Watch(ctx, "leak")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, err = w.Next(ctx)
	keep(err)
	e.proxy.Cut()
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = owner.Store().Get(sctx, "/secret")
	keep(err)
	for {
		s, err := w.Next(sctx)
		keep(err)
		if err != nil || s.Stale {
			if s.Err != nil {
				keep(s.Err)
			}
			break
		}
	}
	scancel()
	e.proxy.Heal()
	e.srv.Restart(t)
	testenv.Eventually(t, 30*time.Second, "the registration back after the restart", func() error {
		_, err := owner.Store().Get(ctx, "/secret")
		keep(err)
		return err
	})
	if _, err := registry.Open(ctx, "zk://"+user+":"+pass+"@"+testenv.ClosedAddr(t)+"/leak?connect_timeout=1s", opts...); err != nil {
		keep(err)
	} else {
		t.Error("Open of a closed port succeeded")
	}

	if len(logs.Lines())+len(errs) == 0 {
		t.Fatal("no log line or error captured: the test proves nothing")
	}
	testenv.NoSecrets(t, "a log line", secrets, logs.Lines()...)
	testenv.NoSecrets(t, "an error", secrets, errs...)
	t.Logf("%d log lines and %d errors checked", len(logs.Lines()), len(errs))
}
