package zk_test

import (
	"context"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// TestCredentialsNeverLeak runs a digest-authenticated client through a wrong
// password, cut connections and a server restart, with every log line captured at
// Debug and every error kept: none shows the password (nor the digest).
func TestCredentialsNeverLeak(t *testing.T) {
	e := newEnv(t)
	const user, pass = "alice", "pw-Zk-9f3a1c77"
	sw := testenv.NewSecretWitness()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	owner, err := registry.Open(ctx, "zk://"+user+":"+pass+"@"+e.proxy.Addr()+"/leak?session_timeout=2s", sw.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err := owner.Register(ctx, registry.Instance{Service: "leak", ID: "l1", Host: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	_, err = owner.Store().Create(ctx, "/secret", []byte("v"))
	sw.Keep(err)

	// The wrong password: ZooKeeper accepts the connection, then refuses reads of
	// the digest-protected node with ErrPermission, never retried.
	wrong, err := registry.Open(ctx, "zk://"+user+":wrong-"+pass+"@"+e.proxy.Addr()+"/leak", sw.Options()...)
	if sw.Keep(err) == nil {
		sw.Refused(t, "Get with the wrong password", 2*time.Second, func() error {
			_, err := wrong.Store().Get(ctx, "/secret")
			return err
		})
		_, err = wrong.Register(ctx, registry.Instance{Service: "leak", ID: "l2", Host: "10.0.0.1", Port: 81})
		sw.Keep(err)
		wrong.Close()
	}

	sw.ThroughCut(t, ctx, owner, "leak", e.proxy.Cut, e.proxy.Heal, func() { e.srv.Restart(t) },
		func(ctx context.Context) error { _, err := owner.Store().Get(ctx, "/secret"); return err })
	if _, err := registry.Open(ctx, "zk://"+user+":"+pass+"@"+testenv.ClosedAddr(t)+"/leak?connect_timeout=1s", sw.Options()...); err != nil {
		sw.Keep(err)
	} else {
		t.Error("Open of a closed port succeeded")
	}
	sw.Check(t, []string{pass, user + ":" + pass})
}
