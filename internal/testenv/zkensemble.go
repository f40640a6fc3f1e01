//go:build unix

package testenv

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ZooKeeperEnsemble is a real 3-node ZooKeeper ensemble (the Debian package's
// ZooKeeper 3.8) on loopback, every port of every member behind a fault Proxy:
// clients dial Addrs (each member's client proxy); members reach each other's
// quorum and election ports through proxies that tag every connection with the
// server id that opened it, so Isolate cuts one member off from its peers and its
// clients in both directions. Kill is kill -9; Start restarts a member on its data
// dir; KillMajority and Start of those members make a quorum loss.
type ZooKeeperEnsemble struct {
	members []*zkMember
}

type zkMember struct {
	sid                         int
	dir                         string
	clientP, quorumP, electionP *Proxy

	mu                       sync.Mutex
	client, quorum, election int // real ports (they move when one was taken)
	up                       bool
	proc                     procSlot
}

func (m *zkMember) clientPort() int { c, _, _ := m.ports(); return c }

// ports returns m's real client, quorum and election ports.
func (m *zkMember) ports() (client, quorum, election int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.client, m.quorum, m.election
}

// EnsembleSize is the number of members of the test clusters.
const EnsembleSize = 3

// StartZooKeeperEnsemble starts three ZooKeeper servers (tickTime 500ms: sessions
// may be as short as 1s; a follower that misses its leader for syncLimit, 2.5s,
// leaves it; 128 MB heap each) and waits until they have elected a leader. It is
// stopped by t.Cleanup.
func StartZooKeeperEnsemble(t testing.TB) *ZooKeeperEnsemble {
	t.Helper()
	needZooKeeper(t, false)
	z := &ZooKeeperEnsemble{}
	root := t.TempDir()
	for i := range EnsembleSize {
		m := &zkMember{sid: i + 1, dir: filepath.Join(root, fmt.Sprintf("zk%d", i+1)),
			client: FreePort(t), quorum: FreePort(t), election: FreePort(t)}
		m.clientP = NewProxy(t, fmt.Sprintf("127.0.0.1:%d", m.client))
		m.quorumP = NewProxy(t, fmt.Sprintf("127.0.0.1:%d", m.quorum))
		m.electionP = NewProxy(t, fmt.Sprintf("127.0.0.1:%d", m.election))
		m.quorumP.SetClassifier(classifyZKQuorum)
		m.electionP.SetClassifier(z.classifyZKElection)
		if err := os.MkdirAll(filepath.Join(m.dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(m.dir, "data", "myid"), []byte(strconv.Itoa(m.sid)), 0o644); err != nil {
			t.Fatal(err)
		}
		z.members = append(z.members, m)
	}
	for _, m := range z.members {
		if err := z.writeConfig(m); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	t.Cleanup(z.Stop)
	for i := range z.members {
		z.Start(t, i)
	}
	z.WaitQuorum(t, 2*time.Minute)
	return z
}

// writeConfig writes m's zoo.cfg: its own quorum and election ports to bind, the
// other members' proxies to dial.
func (z *ZooKeeperEnsemble) writeConfig(m *zkMember) error {
	var b strings.Builder
	fmt.Fprintf(&b, `tickTime=500
initLimit=10
syncLimit=5
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
reconfigEnabled=false
standaloneEnabled=false
`, filepath.Join(m.dir, "data"), m.clientPort())
	for _, o := range z.members {
		q, e := o.quorumP.Addr(), o.electionP.Addr()
		if o == m {
			_, oq, oe := o.ports()
			q, e = fmt.Sprintf("127.0.0.1:%d", oq), fmt.Sprintf("127.0.0.1:%d", oe)
		}
		fmt.Fprintf(&b, "server.%d=%s:%s\n", o.sid, q, e[strings.LastIndexByte(e, ':')+1:])
	}
	return os.WriteFile(filepath.Join(m.dir, "zoo.cfg"), []byte(b.String()), 0o644)
}

// classifyZKQuorum tags a learner's connection to a leader's quorum port by the
// server id in its first packet: a QuorumPacket (int type, long zxid, buffer data)
// of type FOLLOWERINFO (11) or OBSERVERINFO (16) whose data starts with the sid.
func classifyZKQuorum(b []byte) (string, []byte, bool) {
	if len(b) < 24 {
		return "", b, false
	}
	typ := int32(binary.BigEndian.Uint32(b[0:4]))
	if typ != 11 && typ != 16 {
		return "", b, true
	}
	return "sid:" + strconv.FormatInt(int64(binary.BigEndian.Uint64(b[16:24])), 10), b, true
}

// classifyZKElection tags a connection to an election port by the server id of its
// initial message (long protocol version < 0, long sid, int length, the sender's
// election address) and rewrites that address to the sender's election proxy, so
// that a server which dials the sender back (ZooKeeper keeps the connection opened
// by the larger sid) goes through the proxy too.
func (z *ZooKeeperEnsemble) classifyZKElection(b []byte) (string, []byte, bool) {
	if len(b) < 8 {
		return "", b, false
	}
	first := int64(binary.BigEndian.Uint64(b[0:8]))
	if first >= 0 { // the protocol before versioned initial messages: just the sid
		return "sid:" + strconv.FormatInt(first, 10), b, true
	}
	if len(b) < 20 {
		return "", b, false
	}
	sid := int64(binary.BigEndian.Uint64(b[8:16]))
	n := int(binary.BigEndian.Uint32(b[16:20]))
	if n < 0 || n > 4096 {
		return "sid:" + strconv.FormatInt(sid, 10), b, true
	}
	if len(b) < 20+n {
		return "", b, false
	}
	addr := string(b[20 : 20+n])
	for _, m := range z.members {
		_, _, me := m.ports()
		real := fmt.Sprintf("127.0.0.1:%d", me)
		addr = strings.ReplaceAll(addr, real, m.electionP.Addr())
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:16]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(addr)))
	out = append(out, addr...)
	out = append(out, b[20+n:]...)
	return "sid:" + strconv.FormatInt(sid, 10), out, true
}

// Addrs are the client addresses of every member (their client proxies), in
// member order.
func (z *ZooKeeperEnsemble) Addrs() []string {
	out := make([]string, len(z.members))
	for i, m := range z.members {
		out[i] = m.clientP.Addr()
	}
	return out
}

// DirectAddrs are the members' own client addresses, bypassing the proxies (for
// admin reads that must not count as the client's traffic).
func (z *ZooKeeperEnsemble) DirectAddrs() []string {
	out := make([]string, len(z.members))
	for i, m := range z.members {
		out[i] = fmt.Sprintf("127.0.0.1:%d", m.clientPort())
	}
	return out
}

// ClientProxy is member i's client proxy (Cut, Blackhole, counters).
func (z *ZooKeeperEnsemble) ClientProxy(i int) *Proxy { return z.members[i].clientP }

// Start starts member i (again) on its ports and data dir, and waits until its
// process answers (not for a quorum: see WaitQuorum).
func (z *ZooKeeperEnsemble) Start(t testing.TB, i int) {
	t.Helper()
	m := z.members[i]
	args := zkArgs("16m", "128m", zkJars, "org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(m.dir, "zoo.cfg"),
		"-XX:ActiveProcessorCount=1",
		// Election connections time out after 1s instead of 5s (a dead peer).
		"-Dzookeeper.cnxTimeout=1000")
	ready := func() error {
		// Before it has a quorum a member answers only ruok; a port taken by
		// another process shows in the member's log.
		if lb, _ := os.ReadFile(filepath.Join(m.dir, "zookeeper.log")); strings.Contains(string(lb), "Address already in use") {
			return fmt.Errorf("a port of member %d is taken", m.sid)
		}
		return zkAnswers(fmt.Sprintf("127.0.0.1:%d", m.clientPort()), "ruok", "imok")
	}
	for attempt := 1; ; attempt++ {
		err := launchZooKeeper(&m.proc, fmt.Sprintf("zookeeper-%d", m.sid), m.dir, args, 90*time.Second, ready)
		if err == nil {
			break
		}
		if !errPortTaken(err) || attempt == 3 {
			t.Fatalf("testenv: %v", err)
		}
		// Another process took one of the member's ports between FreePort and the
		// bind: move the member to fresh ports behind the same proxies (its peers
		// and clients dial the proxies, so nothing else changes).
		c, q, e := FreePort(t), FreePort(t), FreePort(t)
		m.mu.Lock()
		m.client, m.quorum, m.election = c, q, e
		m.mu.Unlock()
		m.clientP.SetUpstream(fmt.Sprintf("127.0.0.1:%d", c))
		m.quorumP.SetUpstream(fmt.Sprintf("127.0.0.1:%d", q))
		m.electionP.SetUpstream(fmt.Sprintf("127.0.0.1:%d", e))
		_ = os.Remove(filepath.Join(m.dir, "zookeeper.log"))
		if err := z.writeConfig(m); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	m.mu.Lock()
	m.up = true
	m.mu.Unlock()
}

// Kill SIGKILLs member i: a crash; its sessions and connections die unannounced.
func (z *ZooKeeperEnsemble) Kill(i int) {
	m := z.members[i]
	m.proc.kill()
	m.mu.Lock()
	m.up = false
	m.mu.Unlock()
}

// Up reports whether member i's process runs.
func (z *ZooKeeperEnsemble) Up(i int) bool {
	m := z.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.up
}

// Mode returns member i's "Mode:" as srvr reports it (leader, follower), or "" when
// it does not serve.
func (z *ZooKeeperEnsemble) Mode(i int) string {
	b, _ := fourLetter(fmt.Sprintf("127.0.0.1:%d", z.members[i].clientPort()), "srvr")
	for _, line := range strings.Split(b, "\n") {
		if v, ok := strings.CutPrefix(line, "Mode: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Leader returns the index of the member that is leader, or -1.
func (z *ZooKeeperEnsemble) Leader() int {
	for i := range z.members {
		if z.Up(i) && z.Mode(i) == "leader" {
			return i
		}
	}
	return -1
}

// Follower returns the index of a running follower, or -1.
func (z *ZooKeeperEnsemble) Follower() int {
	for i := range z.members {
		if z.Up(i) && z.Mode(i) == "follower" {
			return i
		}
	}
	return -1
}

// WaitQuorum waits until every running member serves as leader or follower, with
// exactly one leader.
func (z *ZooKeeperEnsemble) WaitQuorum(t testing.TB, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "zookeeper ensemble has a leader and every running member serves", func() error {
		leaders := 0
		for i := range z.members {
			if !z.Up(i) {
				continue
			}
			switch mode := z.Mode(i); mode {
			case "leader":
				leaders++
			case "follower":
			default:
				return fmt.Errorf("member %d: mode %q", i, mode)
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d leaders", leaders)
		}
		return nil
	})
}

// KillMajority kills the leader and one follower (the quorum is lost) and returns
// their indexes, to Start again later.
func (z *ZooKeeperEnsemble) KillMajority() []int {
	l := z.Leader()
	var out []int
	if l >= 0 {
		out = append(out, l)
	}
	for i := range z.members {
		if len(out) == EnsembleSize/2+1 {
			break
		}
		if i != l && z.Up(i) {
			out = append(out, i)
		}
	}
	for _, i := range out {
		z.Kill(i)
	}
	return out
}

// Isolate cuts member i off: its clients' and peers' connections to it carry
// nothing (blackholed), and its own connections to the other members are dropped
// and refused, until Rejoin.
func (z *ZooKeeperEnsemble) Isolate(i int) {
	m := z.members[i]
	tag := "sid:" + strconv.Itoa(m.sid)
	m.clientP.Blackhole()
	m.quorumP.Blackhole()
	m.electionP.Blackhole()
	for _, o := range z.members {
		if o != m {
			o.quorumP.Block(tag)
			o.electionP.Block(tag)
		}
	}
}

// Rejoin undoes Isolate.
func (z *ZooKeeperEnsemble) Rejoin(i int) {
	m := z.members[i]
	tag := "sid:" + strconv.Itoa(m.sid)
	for _, o := range z.members {
		if o != m {
			o.quorumP.Unblock(tag)
			o.electionP.Unblock(tag)
		}
	}
	m.clientP.Heal()
	m.quorumP.Heal()
	m.electionP.Heal()
}

// Stop stops every member.
func (z *ZooKeeperEnsemble) Stop() {
	var wg sync.WaitGroup
	for _, m := range z.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.proc.stop(5 * time.Second)
		}()
	}
	wg.Wait()
}
