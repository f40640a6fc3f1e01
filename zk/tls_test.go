package zk_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// testCA is a throwaway certificate authority for TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf returns a certificate for 127.0.0.1 signed by ca, and its PKCS#8 key, as PEM.
func (ca *testCA) leaf(t *testing.T, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func tryOpen(rawURL string, opts ...registry.Option) (*registry.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return registry.Open(ctx, rawURL, opts...)
}

func registerAndRead(t *testing.T, c *registry.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := c.Register(ctx, registry.Instance{Service: "tls-svc", ID: "t1", Host: "10.0.0.1", Port: 443}); err != nil {
		t.Fatal(err)
	}
	waitInstances(t, c, "tls-svc", []registry.Instance{{ID: "t1", Service: "tls-svc", Host: "10.0.0.1", Port: 443,
		Weight: registry.DefaultWeight, Healthy: true}})
}

// TestTLS runs the driver's TLS dialing (registry.WithTLS) against ZooKeeper 3.8's
// secure client port (Netty), without and with client certificates: a trusted
// server works, a server certificate that does not verify is refused, a plain
// client gets nowhere, and a server requiring client certificates refuses a
// client without one.
func TestTLS(t *testing.T) {
	ca := newTestCA(t, "regkit-test-ca")
	srvCert, srvKey := ca.leaf(t, "zookeeper", x509.ExtKeyUsageServerAuth)
	other := newTestCA(t, "someone-else")
	q := "/tls?connect_timeout=3s&session_timeout=2s"

	t.Run("server auth only", func(t *testing.T) {
		z := testenv.StartZooKeeperTLS(t, testenv.ZooKeeperTLS{CertPEM: srvCert, KeyPEM: srvKey, CAPEM: ca.pem})
		c, err := tryOpen("zk://"+z.SecureAddr()+q, registry.WithTLS(&tls.Config{RootCAs: ca.pool()}))
		if err != nil {
			t.Fatalf("Open over TLS: %v", err)
		}
		defer c.Close()
		registerAndRead(t, c)

		start := time.Now()
		if c, err := tryOpen("zk://"+z.SecureAddr()+q, registry.WithTLS(&tls.Config{RootCAs: other.pool()})); err == nil {
			c.Close()
			t.Error("a server certificate from an untrusted CA was accepted")
		} else {
			t.Logf("untrusted server certificate: refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
		if c, err := tryOpen("zk://"+z.SecureAddr()+q, registry.WithTLS(&tls.Config{RootCAs: ca.pool(), ServerName: "not-the-server"})); err == nil {
			c.Close()
			t.Error("a server certificate for another name was accepted")
		}
		if c, err := tryOpen("zk://" + z.SecureAddr() + q); err == nil {
			c.Close()
			t.Error("a plain-text client connected to the secure port")
		}
	})

	t.Run("client certificates required", func(t *testing.T) {
		z := testenv.StartZooKeeperTLS(t, testenv.ZooKeeperTLS{CertPEM: srvCert, KeyPEM: srvKey, CAPEM: ca.pem, ClientAuth: true})
		cliCert, cliKey := ca.leaf(t, "regkit-client", x509.ExtKeyUsageClientAuth)
		pair, err := tls.X509KeyPair(cliCert, cliKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tryOpen("zk://"+z.SecureAddr()+q, registry.WithTLS(&tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{pair}}))
		if err != nil {
			t.Fatalf("Open with a client certificate: %v", err)
		}
		defer c.Close()
		registerAndRead(t, c)

		if c, err := tryOpen("zk://"+z.SecureAddr()+q, registry.WithTLS(&tls.Config{RootCAs: ca.pool()})); err == nil {
			c.Close()
			t.Error("a client without a certificate connected to a server requiring one")
		}
		foreignCert, foreignKey := other.leaf(t, "intruder", x509.ExtKeyUsageClientAuth)
		fpair, err := tls.X509KeyPair(foreignCert, foreignKey)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := tryOpen("zk://"+z.SecureAddr()+q, registry.WithTLS(&tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{fpair}})); err == nil {
			c.Close()
			t.Error("a client certificate from an untrusted CA was accepted")
		}
	})
}
