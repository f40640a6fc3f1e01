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
	needZooKeeper(t, false)
	return startZooKeeper(t, &ZooKeeper{dir: t.TempDir()})
}

// needZooKeeper fails t unless ZooKeeper's jars (with tls, those of
// StartZooKeeperTLS too) and Java are installed.
func needZooKeeper(t testing.TB, tls bool) {
	t.Helper()
	for _, j := range zkJars {
		if _, err := os.Stat(j); err != nil {
			t.Fatalf("testenv: ZooKeeper is not installed (%v): run scripts/install-servers.sh", err)
		}
	}
	if tls {
		for _, j := range zkTLSJars {
			if _, err := os.Stat(j); err != nil {
				t.Fatalf("testenv: ZooKeeper TLS needs %s (%v): run scripts/install-servers.sh", j, err)
			}
		}
	}
	if _, err := javaBin(); err != nil {
		t.Fatalf("testenv: ZooKeeper needs Java (%v): run scripts/install-servers.sh", err)
	}
}

// zkArgs is the java command line of a ZooKeeper server: heap bounds xms and
// xmx, a JVM tuned to start fast and stay small, the server's log (slf4j-simple)
// at warn, empty container nodes deleted within a second (default: a minute) so
// that tests can wait for them, then the extra flags, the classpath jars, the
// main class and its zoo.cfg.
func zkArgs(xms, xmx string, jars []string, main, cfg string, extra ...string) []string {
	args := []string{
		"-Xms" + xms, "-Xmx" + xmx,
		"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-Dzookeeper.jmx.log4j.disable=true",
		"-Dznode.container.checkIntervalMs=1000",
	}
	args = append(args, extra...)
	return append(args, "-cp", strings.Join(jars, ":"), main, cfg)
}

// launchZooKeeper starts the ZooKeeper server of command line args in slot p,
// in dir with its log in dir/zookeeper.log, and waits up to timeout until ready
// passes (see procSlot.tryLaunch).
func launchZooKeeper(p *procSlot, name, dir string, args []string, timeout time.Duration, ready func() error) error {
	java, _ := javaBin()
	return p.tryLaunch(name, java, args, dir, filepath.Join(dir, "zookeeper.log"), nil, timeout, ready)
}

// zkAnswers sends four-letter command cmd to the server at addr and returns an
// error unless the answer contains want.
func zkAnswers(addr, cmd, want string) error {
	b, err := fourLetter(addr, cmd)
	if !strings.Contains(b, want) {
		return fmt.Errorf("%s answered %q (%v)", cmd, b, err)
	}
	return nil
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
	jars := zkJars
	if z.tls != nil {
		jars = append(append([]string(nil), zkJars...), zkTLSJars...)
	}
	args := zkArgs("32m", "256m", jars, "org.apache.zookeeper.server.ZooKeeperServerMain", filepath.Join(z.dir, "zoo.cfg"))
	return launchZooKeeper(&z.proc, "zookeeper", z.dir, args, 60*time.Second, z.ready)
}

// ready sends ZooKeeper's four-letter "srvr", which (unlike "ruok", answered as
// soon as the port is open) reports the server's mode only once it serves requests,
// then "conf", whose dataDir tells that the server on the port is this one and not
// another test's that took the port first.
func (z *ZooKeeper) ready() error {
	if err := zkAnswers(z.Addr(), "srvr", "Mode: standalone"); err != nil {
		return err
	}
	b, err := fourLetter(z.Addr(), "conf")
	if !strings.Contains(b, "dataDir="+filepath.Join(z.dir, "data")) {
		return fmt.Errorf("another server on %s: conf answered %q (%v)", z.Addr(), b, err)
	}
	return nil
}

// fourLetter sends one of ZooKeeper's four-letter commands to addr and returns the
// answer.
func fourLetter(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
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
