package etcdtest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/registry"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func openURL(t *testing.T, raw string, opts ...registry.Option) (*registry.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, raw, append([]registry.Option{registry.WithRequestTimeout(10 * time.Second)}, opts...)...)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// registerAndList registers one instance and reads it back.
func registerAndList(t *testing.T, c *registry.Client, service string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Register(ctx, registry.Instance{Service: service, ID: "a1", Host: "127.0.0.1", Port: 9300})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	got, err := c.Instances(ctx, service)
	if err != nil || len(got) != 1 || got[0].ID != "a1" {
		t.Fatalf("Instances = %v, %v; want [a1]", got, err)
	}
	if err := r.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
}

// TestAuth runs against an embedded etcd with authentication enabled: the URL's
// user info and WithCredentials log in; no, wrong or too weak credentials are
// ErrPermission, and a refused first registration fails at once instead of retrying.
func TestAuth(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	steps := []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		// A user that may read but not write the prefix.
		func() error { _, err := admin.UserAdd(ctx, "reader", "readerpw"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "read-only"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "read-only", "/secure", clientv3.GetPrefixRangeEnd("/secure"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx, "reader", "read-only"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	base := "etcd://" + srv.Endpoint() + "/secure?dial_timeout=10s"

	c, err := openURL(t, "etcd://root:rootpw@"+srv.Endpoint()+"/secure?dial_timeout=10s")
	if err != nil {
		t.Fatalf("Open with URL user info: %v", err)
	}
	registerAndList(t, c, "users-url")

	c, err = openURL(t, base, registry.WithCredentials("root", "rootpw"))
	if err != nil {
		t.Fatalf("Open WithCredentials: %v", err)
	}
	registerAndList(t, c, "users-opt")

	for name, opts := range map[string][]registry.Option{
		"no credentials": nil,
		"wrong password": {registry.WithCredentials("root", "nope")},
	} {
		if _, err := openURL(t, base, opts...); !errors.Is(err, registry.ErrPermission) {
			t.Errorf("Open with %s = %v, want ErrPermission", name, err)
		}
	}

	ro, err := openURL(t, base, registry.WithCredentials("reader", "readerpw"))
	if err != nil {
		t.Fatalf("Open as reader: %v", err)
	}
	start := time.Now()
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if _, err := ro.Register(rctx, registry.Instance{Service: "users-ro", ID: "r1", Host: "127.0.0.1", Port: 9301}); !errors.Is(err, registry.ErrPermission) {
		t.Errorf("Register as a read-only user = %v, want ErrPermission", err)
	}
	if rctx.Err() != nil {
		t.Errorf("a refused registration retried until its context ended (%v) instead of failing", time.Since(start))
	}
	if got, err := ro.Instances(ctx, "users-ro"); err != nil || len(got) != 0 {
		t.Errorf("reader's Instances = %v, %v; want none, no error", got, err)
	}
}

// TestTLS runs against an embedded etcd serving TLS and requiring client
// certificates: WithTLS with the CA and a client certificate works; a plain-text
// client and a client without a certificate do not.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caPEM := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caPEM)
	srvCert, srvKey := newLeaf(t, ca, caKey, "etcd-server", x509.ExtKeyUsageServerAuth)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", srvCert)
	writePEM(t, filepath.Join(dir, "server-key.pem"), "EC PRIVATE KEY", srvKey)
	cliCert, cliKey := newLeaf(t, ca, caKey, "regkit-client", x509.ExtKeyUsageClientAuth)

	srv := etcdtest.Start(t, etcdtest.WithConfig(func(cfg *embed.Config) {
		for i := range cfg.ListenClientUrls {
			cfg.ListenClientUrls[i].Scheme = "https"
		}
		for i := range cfg.AdvertiseClientUrls {
			cfg.AdvertiseClientUrls[i].Scheme = "https"
		}
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem"),
			TrustedCAFile: filepath.Join(dir, "ca.pem"), ClientCertAuth: true,
		}
	}))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pair, err := tls.X509KeyPair(pemBytes("CERTIFICATE", cliCert), pemBytes("EC PRIVATE KEY", cliKey))
	if err != nil {
		t.Fatal(err)
	}
	u := "etcd://" + srv.Endpoint() + "/tls?dial_timeout=10s"

	c, err := openURL(t, u, registry.WithTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}))
	if err != nil {
		t.Fatalf("Open with TLS: %v", err)
	}
	registerAndList(t, c, "secure-svc")

	if _, err := openURL(t, u); err == nil {
		t.Error("a plain-text client connected to a TLS-only server")
	}
	if _, err := openURL(t, u, registry.WithTLS(&tls.Config{RootCAs: pool})); err == nil {
		t.Error("a client without a certificate connected to a server requiring one")
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regkit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, der
}

func newLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) (certDER, keyDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err = x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certDER, keyDER
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pemBytes(typ, der), 0o600); err != nil {
		t.Fatal(err)
	}
}
