package consul_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// TestCredentialsNeverLeak runs clients with an ACL token (in the URL and as
// credentials) through a wrong token, cut connections and a closed port, with
// every log line captured at Debug and every error kept: none shows a token. A
// wrong token is ErrPermission at once.
func TestCredentialsNeverLeak(t *testing.T) {
	s := startServer(t, testenv.WithConsulACL(aclToken))
	const wrongToken = "0badc0de-0000-4000-8000-000000000001"
	sw := testenv.NewSecretWitness()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	sw.Refused(t, "Open with a wrong token", 3*time.Second, func() error {
		_, err := registry.Open(ctx, s.url("leak", "token="+wrongToken), sw.Options()...)
		return err
	})
	_, err := registry.Open(ctx, s.url("leak", ""), sw.Options(registry.WithCredentials("", wrongToken))...)
	sw.Keep(err)

	c := s.open(t, "leak", "token="+aclToken, sw.Options()...)
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "leak", ID: "l1", Host: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	sw.ThroughCut(t, ctx, c, "leak", s.proxy.Cut, s.proxy.Heal, nil, func(ctx context.Context) error {
		if _, err := c.Conn().List(ctx, "leak"); err != nil {
			return err
		}
		_, err := c.Store().Get(ctx, "/x")
		if errors.Is(err, registry.ErrNotFound) {
			return nil
		}
		return err
	})
	_, err = registry.Open(ctx, "consul://"+testenv.ClosedAddr(t)+"?timeout=1s&token="+aclToken, sw.Options()...)
	sw.Keep(err)
	sw.Check(t, []string{aclToken, wrongToken})
}
