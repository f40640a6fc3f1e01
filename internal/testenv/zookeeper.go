//go:build unix

package testenv

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// zkJars is the classpath of a standalone ZooKeeper 3.8 from Debian's zookeeper
// package: zookeeper.jar's manifest Class-Path names its dependencies
// (zookeeper-jute, slf4j-api, netty, metrics-core, jetty, ...); slf4j-simple is the
// logging binding (the server's log goes to a file in the test's temp dir).
var zkJars = []string{
	"/usr/share/java/zookeeper.jar",
	"/usr/share/java/slf4j-simple.jar",
}

// ZooKeeper is a real standalone ZooKeeper server process.
type ZooKeeper struct {
	port int
	dir  string
	// tls, when set, adds a secure client port (see StartZooKeeperTLS).
	tls        *ZooKeeperTLS
	securePort int

	proc procSlot
}

// StartZooKeeper starts a standalone ZooKeeper (tickTime 500ms, so sessions may be
// as short as 1s; empty container nodes deleted within about a second) on a free 127.0.0.1 port with its data under t.TempDir(). It is
// stopped by t.Cleanup.
func StartZooKeeper(t testing.TB) *ZooKeeper {
	t.Helper()
	for _, j := range zkJars {
		if _, err := os.Stat(j); err != nil {
			t.Fatalf("testenv: ZooKeeper is not installed (%v): run scripts/install-servers.sh", err)
		}
	}
	if _, err := javaBin(); err != nil {
		t.Fatalf("testenv: ZooKeeper needs Java (%v): run scripts/install-servers.sh", err)
	}
	return startZooKeeper(t, &ZooKeeper{dir: t.TempDir()})
}

func startZooKeeper(t testing.TB, z *ZooKeeper) *ZooKeeper {
	t.Helper()
	t.Cleanup(z.Stop)
	for attempt := 1; ; attempt++ {
		z.port = FreePort(t)
		if z.tls != nil {
			z.securePort = FreePort(t)
		}
		err := z.writeConfig()
		if err == nil {
			err = z.tryStart(t)
		}
		if err == nil {
			return z
		}
		if !errPortTaken(err) || attempt == 3 {
			t.Fatalf("testenv: %v", err)
		}
		// Another process took the port between FreePort and the bind: try another.
	}
}

func (z *ZooKeeper) writeConfig() error {
	cfg := fmt.Sprintf(`tickTime=500
maxSessionTimeout=60000
initLimit=10
syncLimit=5
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
`, filepath.Join(z.dir, "data"), z.port)
	if z.tls != nil {
		extra, err := z.tlsConfig()
		if err != nil {
			return err
		}
		cfg += extra
	}
	if err := os.WriteFile(filepath.Join(z.dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write zoo.cfg: %w", err)
	}
	return nil
}

func javaBin() (string, error) {
	if j := os.Getenv("JAVA"); j != "" {
		return j, nil
	}
	return exec.LookPath("java")
}

// Addr is the client address, "127.0.0.1:port".
func (z *ZooKeeper) Addr() string { return fmt.Sprintf("127.0.0.1:%d", z.port) }

func (z *ZooKeeper) start(t testing.TB) {
	t.Helper()
	if err := z.tryStart(t); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func (z *ZooKeeper) tryStart(t testing.TB) error {
	t.Helper()
	java, _ := javaBin()
	cp := ""
	jars := zkJars
	if z.tls != nil {
		jars = append(append([]string(nil), zkJars...), zkTLSJars...)
	}
	for i, j := range jars {
		if i > 0 {
			cp += ":"
		}
		cp += j
	}
	args := []string{
		"-Xms32m", "-Xmx256m",
		"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-Dzookeeper.jmx.log4j.disable=true",
		// Empty container nodes go within a second (default: a minute), so tests
		// can wait for them.
		"-Dznode.container.checkIntervalMs=1000",
		"-cp", cp,
		"org.apache.zookeeper.server.ZooKeeperServerMain",
		filepath.Join(z.dir, "zoo.cfg"),
	}
	return z.proc.tryLaunch("zookeeper", java, args, z.dir, filepath.Join(z.dir, "zookeeper.log"), nil, 60*time.Second, z.ready)
}

// ready sends ZooKeeper's four-letter "srvr", which (unlike "ruok", answered as
// soon as the port is open) reports the server's mode only once it serves requests,
// then "conf", whose dataDir tells that the server on the port is this one and not
// another test's that took the port first.
func (z *ZooKeeper) ready() error {
	b, err := z.fourLetter("srvr")
	if !strings.Contains(b, "Mode: standalone") {
		return fmt.Errorf("srvr answered %q (%v)", b, err)
	}
	b, err = z.fourLetter("conf")
	if !strings.Contains(b, "dataDir="+filepath.Join(z.dir, "data")) {
		return fmt.Errorf("another server on %s: conf answered %q (%v)", z.Addr(), b, err)
	}
	return nil
}

// fourLetter sends one of ZooKeeper's four-letter commands and returns the answer.
func (z *ZooKeeper) fourLetter(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", z.Addr(), 500*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// Kill SIGKILLs the server: a crash, sessions are not closed.
func (z *ZooKeeper) Kill() { z.proc.kill() }

// Stop stops the server (a no-op when it is already stopped).
func (z *ZooKeeper) Stop() { z.proc.stop(5 * time.Second) }

// Restart kills the server and starts it again on the same port with the same data
// dir, so znodes and unexpired sessions survive.
func (z *ZooKeeper) Restart(t testing.TB) {
	t.Helper()
	z.Kill()
	z.start(t)
}
