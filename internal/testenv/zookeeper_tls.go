//go:build unix

package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// zkTLSJars are the Netty jars ZooKeeper's Netty connection factory needs beyond
// those zookeeper.jar's manifest names (SslHandler's codec base classes).
var zkTLSJars = []string{
	"/usr/share/java/netty-codec.jar",
	"/usr/share/java/netty-resolver.jar",
	"/usr/share/java/netty-transport-native-unix-common.jar",
}

// ZooKeeperTLS configures the secure client port of StartZooKeeperTLS. Keys and
// certificates are PEM (ZooKeeper 3.8 reads them with ssl.keyStore.type=PEM).
type ZooKeeperTLS struct {
	// CertPEM is the server's certificate chain; KeyPEM its unencrypted PKCS#8
	// private key ("PRIVATE KEY").
	CertPEM, KeyPEM []byte
	// CAPEM is the trust store: the CAs client certificates must chain to.
	CAPEM []byte
	// ClientAuth makes the server require a client certificate
	// (ssl.clientAuth=need); false is ssl.clientAuth=none.
	ClientAuth bool
}

// StartZooKeeperTLS starts a standalone ZooKeeper as StartZooKeeper does, with
// the Netty connection factory and a secure client port (SecureAddr) serving TLS
// with cfg, beside the plain port (Addr; used for readiness checks and by tests as
// an admin path).
func StartZooKeeperTLS(t testing.TB, cfg ZooKeeperTLS) *ZooKeeper {
	t.Helper()
	needZooKeeper(t, true)
	return startZooKeeper(t, &ZooKeeper{dir: t.TempDir(), tls: &cfg})
}

// SecureAddr is the TLS client address, "127.0.0.1:port" (StartZooKeeperTLS only).
func (z *ZooKeeper) SecureAddr() string { return fmt.Sprintf("127.0.0.1:%d", z.securePort) }

// tlsConfig writes the key and trust stores and returns the zoo.cfg lines of the
// secure client port (ZooKeeper turns unknown zoo.cfg keys into "zookeeper."
// system properties, which is where its X509 settings are read).
func (z *ZooKeeper) tlsConfig() (string, error) {
	ks := filepath.Join(z.dir, "keystore.pem")
	ts := filepath.Join(z.dir, "truststore.pem")
	if err := os.WriteFile(ks, append(append([]byte(nil), z.tls.KeyPEM...), z.tls.CertPEM...), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(ts, z.tls.CAPEM, 0o644); err != nil {
		return "", err
	}
	auth := "none"
	if z.tls.ClientAuth {
		auth = "need"
	}
	return fmt.Sprintf(`secureClientPort=%d
secureClientPortAddress=127.0.0.1
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location=%s
ssl.keyStore.type=PEM
ssl.trustStore.location=%s
ssl.trustStore.type=PEM
ssl.clientAuth=%s
`, z.securePort, ks, ts, auth), nil
}
