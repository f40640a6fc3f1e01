package nacos_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
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
	sw := testenv.NewSecretWitness()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := "nacos://" + e.proxy.Addr() + "?namespace=leak&" + fastParams

	sw.Refused(t, "Open with the wrong password", 3*time.Second, func() error {
		_, err := registry.Open(ctx, base, sw.Options(registry.WithCredentials(user, "wrong-"+pass))...)
		return err
	})
	sw.Refused(t, "Open without credentials", 3*time.Second, func() error {
		_, err := registry.Open(ctx, base, sw.Options()...)
		return err
	})
	c, err := registry.Open(ctx, base, sw.Options(registry.WithCredentials(user, pass))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "leak", ID: "l1", Host: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	sw.ThroughCut(t, ctx, c, "leak", e.proxy.Cut, e.proxy.Heal, func() { e.srv.Restart(t) },
		func(ctx context.Context) error { _, err := c.Conn().List(ctx, "leak"); return err })
	_, err = registry.Open(ctx, "nacos://"+testenv.ClosedAddr(t)+"?timeout=1s", sw.Options(registry.WithCredentials(user, pass))...)
	sw.Keep(err)
	sw.Check(t, []string{pass}, tokenRE)
}
