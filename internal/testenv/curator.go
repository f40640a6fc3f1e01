//go:build unix

package testenv

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Curator peer's Java sources: CuratorPeer.java (the command loop) and the
// payload classes its readers and writers use.
//
//go:embed curator
var curatorSrc embed.FS

// curatorJars is the Curator peer's classpath, from Debian's libcurator-*-java
// (5.4), zookeeper (3.8), libjackson2-* and libslf4j-java packages. ZooKeeper's
// client uses NIO by default, so netty and the rest of zookeeper.jar's manifest
// Class-Path are not needed.
var curatorJars = []string{
	"/usr/share/java/curator-x-discovery.jar",
	"/usr/share/java/curator-recipes.jar",
	"/usr/share/java/curator-framework.jar",
	"/usr/share/java/curator-client.jar",
	"/usr/share/java/zookeeper.jar",
	"/usr/share/java/zookeeper-jute.jar",
	"/usr/share/java/guava.jar",
	"/usr/share/java/jackson-databind.jar",
	"/usr/share/java/jackson-core.jar",
	"/usr/share/java/jackson-annotations.jar",
	"/usr/share/java/slf4j-api.jar",
	"/usr/share/java/slf4j-simple.jar",
}

// Payload classes the Curator peer's commands name (CuratorPeer.Payload).
const (
	// CuratorVoid is ServiceDiscovery<Void>: reads only null payloads, registers null.
	CuratorVoid = "Void"
	// CuratorObject is ServiceDiscovery<Object>: reads any payload whose class is on
	// the peer's classpath, registers null.
	CuratorObject = "Object"
	// CuratorCustom is ServiceDiscovery<com.example.InstanceDetails>, a payload
	// class of the application's own ({"description"}).
	CuratorCustom = "Custom"
	// CuratorSpring is ServiceDiscovery<ZookeeperInstance>, Spring Cloud
	// Zookeeper's payload class ({"id","name","metadata"}; a stand-in of the same
	// name and shape, Spring Cloud not being packaged in Debian).
	CuratorSpring = "Spring"
)

// CuratorPeerConfig configures StartCuratorPeer.
type CuratorPeerConfig struct {
	// Connect is ZooKeeper's connect string ("host:port[,host:port][/chroot]").
	Connect string
	// SessionTimeout is the session timeout Curator asks for (default 4s).
	SessionTimeout time.Duration
	// BasePath is x-discovery's ServiceDiscoveryBuilder basePath (default "/services").
	BasePath string
	// Spring puts (a stand-in of) Spring Cloud Zookeeper's ZookeeperInstance on the
	// classpath: a Spring Cloud Zookeeper process. Without it the peer is a plain
	// Curator process, to which that class is unknown (Jackson's
	// InvalidTypeIdException on reading it), and CuratorSpring cannot be used.
	Spring bool
}

// CuratorPeer is a live Apache Curator 5.4 client in a Java process of its own,
// driven by the test over a line protocol (see CuratorPeer.java): the other side
// of interop tests, for x-discovery today and Curator's recipes tomorrow (add a
// command to CuratorPeer.java and, if wanted, a typed helper here). Its methods are
// safe for concurrent use; requests are answered one at a time.
type CuratorPeer struct {
	*peerProc // Kill, Close (it closes its Curator client, deleting its ephemeral nodes)
	t         testing.TB

	reqMu   sync.Mutex  // one request in flight
	answers chan string // lines that are not events

	mu     sync.Mutex
	events []string
}

// CuratorError is a command the peer answered with "err": Class is the Java
// exception's class name (e.g. "com.fasterxml.jackson.databind.exc.InvalidTypeIdException").
type CuratorError struct {
	Command string
	Class   string
	Message string
}

func (e *CuratorError) Error() string {
	return fmt.Sprintf("curator peer: %s: %s: %s", e.Command, e.Class, e.Message)
}

// CuratorInstance is a ServiceInstance as the peer's readers returned it.
type CuratorInstance struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Address      string          `json:"address"`
	Port         *int            `json:"port"`
	SSLPort      *int            `json:"sslPort"`
	Enabled      bool            `json:"enabled"`
	PayloadClass string          `json:"payloadClass"`
	Payload      json.RawMessage `json:"payload"`
}

// StartCuratorPeer compiles the peer (once, cached under the user cache dir by the
// hash of its sources), starts it against cfg.Connect and waits until its
// session is established. It is stopped by t.Cleanup. A missing JDK or Curator
// fails the test: run scripts/install-servers.sh.
func StartCuratorPeer(t testing.TB, cfg CuratorPeerConfig) *CuratorPeer {
	t.Helper()
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 4 * time.Second
	}
	if cfg.BasePath == "" {
		cfg.BasePath = "/services"
	}
	build := curatorClasses(t)
	cp := filepath.Join(build, "classes")
	if cfg.Spring {
		cp += ":" + filepath.Join(build, "spring")
	}
	java, err := javaBin()
	if err != nil {
		t.Fatalf("testenv: the Curator peer needs Java (%v): run scripts/install-servers.sh", err)
	}
	p := &CuratorPeer{t: t, answers: make(chan string, 4)}
	cmd := exec.Command(java, "-Xms16m", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-cp", cp+":"+strings.Join(curatorJars, ":"),
		"CuratorPeer", cfg.Connect, strconv.FormatInt(cfg.SessionTimeout.Milliseconds(), 10), cfg.BasePath)
	p.peerProc = startPeerProc(t, "Curator peer", cmd, filepath.Join(t.TempDir(), "curator-peer.log"), "quit", p.onLine)
	select {
	case line := <-p.answers:
		if line != "ready" {
			t.Fatalf("testenv: Curator peer said %q, want ready\n%s", line, p.logTail())
		}
	case <-p.done:
		t.Fatalf("testenv: Curator peer exited before it was ready\n%s", p.logTail())
	case <-time.After(90 * time.Second):
		t.Fatalf("testenv: Curator peer not ready after 90s\n%s", p.logTail())
	}
	return p
}

// onLine dispatches one line of the peer's output: an event, or an answer.
func (p *CuratorPeer) onLine(line string) bool {
	if ev, ok := strings.CutPrefix(line, "event "); ok {
		p.mu.Lock()
		p.events = append(p.events, ev)
		p.mu.Unlock()
		return true
	}
	select {
	case p.answers <- line:
	default: // nobody asked: a protocol error the next Do reports as a wrong answer
	}
	return true
}

// Do sends one command (its tokens must not contain white space) and returns the
// JSON of its "ok" answer, a *CuratorError for "err", or an error if the peer has
// exited or did not answer within a minute.
func (p *CuratorPeer) Do(args ...string) (json.RawMessage, error) {
	p.reqMu.Lock()
	defer p.reqMu.Unlock()
	line := strings.Join(args, " ")
	select {
	case <-p.done:
		return nil, fmt.Errorf("curator peer: %s: the peer has exited", line)
	default:
	}
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		return nil, fmt.Errorf("curator peer: %s: %w", line, err)
	}
	select {
	case a := <-p.answers:
		if v, ok := strings.CutPrefix(a, "ok "); ok {
			return json.RawMessage(v), nil
		}
		if e, ok := strings.CutPrefix(a, "err "); ok {
			class, msg, _ := strings.Cut(e, ": ")
			return nil, &CuratorError{Command: line, Class: class, Message: msg}
		}
		return nil, fmt.Errorf("curator peer: %s: unexpected answer %q", line, a)
	case <-p.done:
		return nil, fmt.Errorf("curator peer: %s: the peer exited\n%s", line, p.logTail())
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("curator peer: %s: no answer after a minute", line)
	}
}

// Register registers an instance through a ServiceDiscovery of the given payload
// class (CuratorVoid, ...); kv are "key=value" payload fields (Custom: description;
// Spring: metadata).
func (p *CuratorPeer) Register(payload, service, id, host string, port int, kv ...string) error {
	_, err := p.Do(append([]string{"register", payload, service, id, host, strconv.Itoa(port)}, kv...)...)
	return err
}

// Unregister unregisters an instance this peer registered.
func (p *CuratorPeer) Unregister(id string) error {
	_, err := p.Do("unregister", id)
	return err
}

// List is queryForInstances(service) through a ServiceDiscovery of the given
// payload class, sorted by ID.
func (p *CuratorPeer) List(payload, service string) ([]CuratorInstance, error) {
	b, err := p.Do("list", payload, service)
	if err != nil {
		return nil, err
	}
	var out []CuratorInstance
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("curator peer: list: %w", err)
	}
	return out, nil
}

// StartCache starts a ServiceCache of service through a ServiceDiscovery of the
// given payload class.
func (p *CuratorPeer) StartCache(payload, service string) error {
	_, err := p.Do("cache", payload, service)
	return err
}

// Cached returns what the ServiceCache of (payload, service) holds now, sorted by
// ID, and how many times its listener's cacheChanged was called.
func (p *CuratorPeer) Cached(payload, service string) (changes int, instances []CuratorInstance, err error) {
	b, err := p.Do("cached", payload, service)
	if err != nil {
		return 0, nil, err
	}
	var r struct {
		Changes   int               `json:"changes"`
		Instances []CuratorInstance `json:"instances"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, nil, fmt.Errorf("curator peer: cached: %w", err)
	}
	return r.Changes, r.Instances, nil
}

// MutexAcquire is acquire(timeout) of the peer's InterProcessMutex called name on
// path (created at its first use), on the peer's command thread: ok says whether
// it acquired. It blocks every other command of the peer meanwhile.
func (p *CuratorPeer) MutexAcquire(name, path string, timeout time.Duration) (bool, error) {
	return p.doBool("mutex-acquire", name, path, strconv.FormatInt(timeout.Milliseconds(), 10))
}

// MutexRelease releases the InterProcessMutex called name once.
func (p *CuratorPeer) MutexRelease(name string) error {
	_, err := p.Do("mutex-release", name)
	return err
}

// CuratorContention is what a Contend thread of the peer did: Rounds completed,
// Violations (critical sections that found another holder's marker), and the
// error that stopped it, if any; Done once the thread ended.
type CuratorContention struct {
	Done       bool    `json:"done"`
	Rounds     int     `json:"rounds"`
	Violations int     `json:"violations"`
	Error      *string `json:"error"`
}

// Contend starts a thread of the peer (called name) that, for rounds rounds,
// acquires an InterProcessMutex on path and, holding it, creates the persistent
// marker counterPath+"/inside" (a create that finds it there counts a violation:
// someone else is inside), adds one to the decimal counter in counterPath's data,
// deletes the marker and releases.
func (p *CuratorPeer) Contend(name, path string, rounds int, counterPath string) error {
	_, err := p.Do("contend", name, path, strconv.Itoa(rounds), counterPath)
	return err
}

// ContendWait waits up to timeout for the Contend thread called name to end and
// returns what it did so far.
func (p *CuratorPeer) ContendWait(name string, timeout time.Duration) (CuratorContention, error) {
	var r CuratorContention
	b, err := p.Do("contend-wait", name, strconv.FormatInt(timeout.Milliseconds(), 10))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("curator peer: contend-wait: %w", err)
	}
	return r, nil
}

// LatchStart starts a LeaderLatch called name on path with participant id id.
func (p *CuratorPeer) LatchStart(name, path, id string) error {
	_, err := p.Do("latch-start", name, path, id)
	return err
}

// LatchAwait is the LeaderLatch's await(timeout): whether it leads. It blocks
// every other command of the peer meanwhile.
func (p *CuratorPeer) LatchAwait(name string, timeout time.Duration) (bool, error) {
	return p.doBool("latch-await", name, strconv.FormatInt(timeout.Milliseconds(), 10))
}

// LatchHasLeadership is the LeaderLatch's hasLeadership().
func (p *CuratorPeer) LatchHasLeadership(name string) (bool, error) {
	return p.doBool("latch-has", name)
}

// LatchLeader is the participant id of the LeaderLatch's getLeader() ("" when
// there is none).
func (p *CuratorPeer) LatchLeader(name string) (string, error) {
	b, err := p.Do("latch-leader", name)
	if err != nil {
		return "", err
	}
	var id string
	if err := json.Unmarshal(b, &id); err != nil {
		return "", fmt.Errorf("curator peer: latch-leader: %w", err)
	}
	return id, nil
}

// LatchClose closes the LeaderLatch called name (deleting its node).
func (p *CuratorPeer) LatchClose(name string) error {
	_, err := p.Do("latch-close", name)
	return err
}

func (p *CuratorPeer) doBool(args ...string) (bool, error) {
	b, err := p.Do(args...)
	if err != nil {
		return false, err
	}
	var ok bool
	if err := json.Unmarshal(b, &ok); err != nil {
		return false, fmt.Errorf("curator peer: %s: %w", args[0], err)
	}
	return ok, nil
}

// Events returns the JSON of every event line the peer has printed so far (e.g.
// {"event":"connectionState","state":"RECONNECTED"}).
func (p *CuratorPeer) Events() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

var curatorCompile sync.Mutex

// curatorClasses returns the directory of the compiled peer, compiling it if the
// cache has no build of these sources: classes/ holds the peer and the custom
// payload class, spring/ the stand-in of Spring's payload class.
func curatorClasses(t testing.TB) string {
	t.Helper()
	for _, j := range curatorJars {
		if _, err := os.Stat(j); err != nil {
			t.Fatalf("testenv: Curator is not installed (%v): run scripts/install-servers.sh", err)
		}
	}
	h := sha256.New()
	var srcs []string
	err := fs.WalkDir(curatorSrc, "curator", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := curatorSrc.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		srcs = append(srcs, path)
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: Curator peer sources: %v", err)
	}
	fmt.Fprintf(h, "%q", curatorJars)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root := filepath.Join(cache, "regkit", "curator-peer")
	dir := filepath.Join(root, hex.EncodeToString(h.Sum(nil))[:16])
	curatorCompile.Lock()
	defer curatorCompile.Unlock()
	const built = "classes/CuratorPeer.class"
	if _, err := os.Stat(filepath.Join(dir, built)); err == nil {
		return dir
	}
	javac, err := exec.LookPath("javac")
	if err != nil {
		t.Fatalf("testenv: the Curator peer needs a JDK (%v): run scripts/install-servers.sh", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	work, err := os.MkdirTemp(root, "build-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer os.RemoveAll(work)
	var files []string
	for _, s := range srcs {
		b, _ := curatorSrc.ReadFile(s)
		dst := filepath.Join(work, "src", filepath.FromSlash(s))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		files = append(files, dst)
	}
	out := filepath.Join(work, "out")
	classes := filepath.Join(out, "classes")
	cmd := exec.Command(javac, append([]string{"-nowarn", "-encoding", "UTF-8", "-d", classes,
		"-cp", strings.Join(curatorJars, ":")}, files...)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: compile the Curator peer: %v\n%s", err, msg)
	}
	spring := filepath.Join(out, "spring", "org")
	if err := os.MkdirAll(filepath.Dir(spring), 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Rename(filepath.Join(classes, "org"), spring); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Another test binary may have won the race: its build is as good as ours.
	if err := os.Rename(out, dir); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, serr := os.Stat(filepath.Join(dir, built)); serr != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return dir
}
