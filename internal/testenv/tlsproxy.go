package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCA is a certificate authority generated for one test (ECDSA P-256, valid for
// an hour).
type TestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// Pool holds the CA's certificate: a client's tls.Config.RootCAs.
	Pool *x509.CertPool
}

// NewTestCA generates a CA.
func NewTestCA(t testing.TB) *TestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regkit test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testenv: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &TestCA{cert: cert, key: key, Pool: pool}
}

// ServerCert issues a server certificate for 127.0.0.1 and "localhost".
func (ca *TestCA) ServerCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: server key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testenv: server certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TLSProxy is a TLS-terminating HTTP reverse proxy in front of a plain-HTTP
// server, with a certificate issued by its own TestCA: what a server behind an
// https load balancer looks like to a client. It counts the requests it forwards.
type TLSProxy struct {
	// CA issued the proxy's certificate; CA.Pool makes a client trust it.
	CA  *TestCA
	ln  net.Listener
	srv *http.Server
	tr  *http.Transport

	mu    sync.Mutex
	paths []string // paths of the requests forwarded, in order
}

// NewTLSProxy listens on a free loopback port and forwards every request to
// upstream ("host:port", http). It is closed by t.Cleanup.
func NewTLSProxy(t testing.TB, upstream string) *TLSProxy {
	t.Helper()
	ca := NewTestCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: TLS proxy listen: %v", err)
	}
	p := &TLSProxy{CA: ca, ln: ln, tr: &http.Transport{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	rp.Transport = p.tr
	rp.ErrorLog = log.New(io.Discard, "", 0) // requests cancelled by their clients
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.mu.Lock()
			p.paths = append(p.paths, r.URL.Path)
			p.mu.Unlock()
			rp.ServeHTTP(w, r)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t)}},
		ErrorLog:  log.New(io.Discard, "", 0), // handshakes refused on purpose
	}
	go p.srv.ServeTLS(ln, "", "") // ends with Close
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address, "127.0.0.1:port" (speak https to it).
func (p *TLSProxy) Addr() string { return p.ln.Addr().String() }

// Requests counts the requests forwarded whose path contains part ("" for all).
func (p *TLSProxy) Requests(part string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, x := range p.paths {
		if strings.Contains(x, part) {
			n++
		}
	}
	return n
}

// Close stops the proxy.
func (p *TLSProxy) Close() {
	p.srv.Close()
	p.tr.CloseIdleConnections()
}
