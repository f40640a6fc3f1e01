package nacos_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
)

// checkTLS: through a TLS-terminating proxy whose certificate comes from a CA
// generated in the test, a client trusting that CA registers, lists and watches;
// certificates that do not verify (an unknown CA, another host name) are refused
// before a request is forwarded, and plain http to the https port fails.
func checkTLS(t *testing.T, p *testenv.TLSProxy, base string, opts ...registry.Option) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := "nacos://" + base
	u = strings.Replace(u, "@HOST", "@"+p.Addr(), 1)
	u = strings.Replace(u, "//HOST", "//"+p.Addr(), 1)
	trusted := append([]registry.Option{registry.WithTLS(&tls.Config{RootCAs: p.CA.Pool})}, opts...)
	// First, while no client of the proxy runs: nothing may be forwarded.
	before := p.Requests("")
	for name, cfg := range map[string]*tls.Config{
		"an unknown CA":   {RootCAs: x509.NewCertPool()},
		"another host":    {RootCAs: p.CA.Pool, ServerName: "nacos.example.com"},
		"the system's CA": {},
	} {
		_, err := registry.Open(ctx, u, append([]registry.Option{registry.WithTLS(cfg)}, opts...)...)
		var verr *tls.CertificateVerificationError
		if !errors.Is(err, registry.ErrUnavailable) || !errors.As(err, &verr) {
			t.Errorf("Open trusting %s = %v, want ErrUnavailable from the certificate verification", name, err)
		}
	}
	if _, err := registry.Open(ctx, u, opts...); err == nil {
		t.Error("plain http to the https port succeeded")
	}
	if n := p.Requests("") - before; n != 0 {
		t.Errorf("%d requests forwarded over connections whose certificate did not verify", n)
	}
	var c *registry.Client
	// Polaris may still be creating the namespace.
	testenv.Eventually(t, 15*time.Second, "open over https", func() error {
		var err error
		c, err = registry.Open(ctx, u, trusted...)
		return err
	})
	defer c.Close()
	if _, err := c.Register(ctx, inst("tls", "t1", 7901)); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "tls")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch over https: %v", err)
		}
		if slices.Equal(snapIDs(s), []string{"t1"}) {
			break
		}
	}
}

func polarisTLS(t *testing.T, e *polarisEnv) {
	p := testenv.NewTLSProxy(t, e.srv.NacosAddr())
	checkTLS(t, p, "polaris:polaris@HOST?namespace="+newNS(t)+"&"+fastParams)
}

// TestTLSAuth: the test server with auth behind a TLS-terminating proxy. With the
// right credentials everything works over https; a wrong password, and no
// credentials, are ErrPermission at once: one refused login, or one refused call,
// and nothing retried.
func TestTLSAuth(t *testing.T) {
	const user, pass = "tls-user", "pw-tls-7c1a"
	srv := nacostest.Start(t, nacostest.WithAuth(user, pass, time.Hour), nacostest.WithCacheMillis(200))
	p := testenv.NewTLSProxy(t, srv.Addr())
	checkTLS(t, p, "HOST?namespace=tlsauth&"+fastParams, registry.WithCredentials(user, pass))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	trusted := registry.WithTLS(&tls.Config{RootCAs: p.CA.Pool})
	u := "nacos://" + p.Addr() + "?namespace=tlsauth&" + fastParams
	before, st := p.Requests(""), srv.Stats()
	_, err := registry.Open(ctx, u, trusted, registry.WithCredentials(user, "wrong-"+pass))
	if !errors.Is(err, registry.ErrPermission) {
		t.Errorf("Open with a wrong password = %v, want ErrPermission", err)
	}
	// The refused login is the only request: no retry, no call without a token.
	if n, got := p.Requests(""), srv.Stats(); n-before != 1 || p.Requests("/login") == 0 ||
		got.Logins != st.Logins || got.Forbidden-st.Forbidden != 1 {
		t.Errorf("a wrong password: %d requests (server stats %+v, before %+v), want 1 refused login", n-before, srv.Stats(), st)
	}
	st = srv.Stats()
	_, err = registry.Open(ctx, u, trusted)
	if !errors.Is(err, registry.ErrPermission) {
		t.Errorf("Open without credentials = %v, want ErrPermission", err)
	}
	// The API probe finds the v1 API (v3 answers 404 here) and its one call is
	// refused: not retried.
	if got := srv.Stats(); got.Forbidden-st.Forbidden != 1 || got.Logins != st.Logins {
		t.Errorf("no credentials: %d calls refused, %d logins, want 1 refused call and no login",
			got.Forbidden-st.Forbidden, got.Logins-st.Logins)
	}
}
