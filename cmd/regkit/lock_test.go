package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
)

// holdBackend is a real server for the lock and leader tests: URLs straight to
// it, and through a fault proxy of the test's own.
type holdBackend struct {
	scheme, addr string
	// slowExpiry: sessions expire no sooner than 10s (Consul's least TTL, which
	// Consul may double), so the subtests that wait for a session to expire
	// (about 50s on Consul) are left to etcd and ZooKeeper.
	slowExpiry bool
}

// skipSlowExpiry skips a subtest that waits for a session to expire.
func (b holdBackend) skipSlowExpiry(t *testing.T) {
	t.Helper()
	if b.slowExpiry {
		t.Skipf("waits for a session expiry, 10-20s on %s; etcd and ZooKeeper cover it", b.scheme)
	}
}

func holdBackends(t *testing.T) map[string]holdBackend {
	zk := testenv.StartZooKeeper(t)
	consul := testenv.StartConsul(t)
	return map[string]holdBackend{
		"etcd":   {scheme: "etcd", addr: etcd.Endpoint()},
		"zk":     {scheme: "zk", addr: zk.Addr()},
		"consul": {scheme: "consul", addr: consul.Addr(), slowExpiry: true},
	}
}

// url is a URL of the server with a key prefix (chroot) of the test's own.
func (b holdBackend) url(t *testing.T) string {
	return b.scheme + "://" + b.addr + "/" + strings.ReplaceAll(t.Name(), "/", "_")
}

// proxied is url through a fault proxy.
func (b holdBackend) proxied(t *testing.T) (string, *testenv.Proxy) {
	p := testenv.NewProxy(t, b.addr)
	return b.scheme + "://" + p.Addr() + "/" + strings.ReplaceAll(t.Name(), "/", "_"), p
}

// sh is a shell command line run in dir.
func sh(dir, script string) []string {
	return []string{"--", "sh", "-c", "cd '" + dir + "' && " + script}
}

// lines returns the lines of file (none if it does not exist yet).
func lines(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "_"))
}

// waitLines waits until file has at least n lines and returns them.
func waitLines(t *testing.T, file string, n int, what string) []string {
	t.Helper()
	var got []string
	poll.Until(t, 60*time.Second, what, func() error {
		if got = lines(t, file); len(got) < n {
			return fmt.Errorf("%d lines, want %d: %q", len(got), n, got)
		}
		return nil
	})
	return got
}

// waitQueued waits until n participants' nodes are under key.
func waitQueued(t *testing.T, url, key string, n int) {
	t.Helper()
	poll.Until(t, 60*time.Second, fmt.Sprintf("%d nodes under %s", n, key), func() error {
		r := regkit(t, url, "tree", key, "-o", "json")
		if r.code == exitNotFound {
			return fmt.Errorf("nothing under %s", key)
		}
		var nodes []nodeJSON
		if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil {
			return fmt.Errorf("%v: %s %s", err, r.stdout, r.stderr)
		}
		var under []string
		for _, n := range nodes {
			if strings.HasPrefix(n.Key, key+"/") {
				under = append(under, n.Key)
			}
		}
		if len(under) != n {
			return fmt.Errorf("nodes under %s: %q", key, under)
		}
		return nil
	})
}

// exited waits for p to exit and returns its status.
func (p *proc) exited(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("still running after 90s; stderr:\n%s", p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
		t.Fatalf("data race:\n%s", p.stderr.String())
	}
	return p.code
}

// tokens parses the fencing tokens of lines "<name>_<token>..." and checks that
// they only grow.
func tokens(t *testing.T, ls []string) []int64 {
	t.Helper()
	var out []int64
	for _, l := range ls {
		f := strings.Split(l, "_")
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("line %q: no fencing token", l)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			t.Fatalf("fencing token %d after %d: tokens must grow (%q)", n, out[len(out)-1], ls)
		}
		out = append(out, n)
	}
	return out
}

// TestHoldUsage: lock and leader reject bad input with exit status 2 before any
// I/O (the URL points at nothing), and document their exit codes.
func TestHoldUsage(t *testing.T) {
	for _, c := range []string{"lock", "leader"} {
		regkit(t, "", c, "--help").want(t, exitOK, "REGKIT_FENCING_TOKEN", "124", "125", "SIGKILL")
	}
	dead := deadURL(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lock"}, "missing argument PATH"},
		{[]string{"lock", "/a"}, "missing -- and COMMAND"},
		{[]string{"lock", "/a", "true"}, "missing -- and COMMAND"},
		{[]string{"lock", "/a", "--"}, "missing COMMAND after --"},
		{[]string{"lock", "--", "true"}, "missing argument PATH"},
		{[]string{"lock", "/a", "b", "--", "true"}, `unexpected argument "b" before --`},
		{[]string{"lock", "no-slash", "--", "true"}, "invalid argument PATH"},
		{[]string{"lock", "/", "--", "true"}, "not the root"},
		{[]string{"lock", "/a", "--grace", "-1s", "--", "true"}, "invalid --grace"},
		{[]string{"lock", "/a", "--ttl", "-1s", "--", "true"}, "invalid --ttl"},
		{[]string{"leader", "/a", "--policy", "nope", "--", "true"}, `invalid --policy "nope"`},
		{[]string{"leader", "/a"}, "missing -- and COMMAND"},
	} {
		r := regkit(t, dead, tc.args...)
		r.want(t, exitUsage)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%q: stderr lacks %q:\n%s", tc.args, tc.want, r.stderr)
		}
	}
	// A backend that cannot be reached: exit status 1, the command never ran.
	dir := t.TempDir()
	r := regkit(t, dead, append([]string{"lock", "/a", "--timeout", "2s"}, sh(dir, "touch ran")...)...)
	r.want(t, exitError)
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("the command ran without the lock")
	}
}

// TestLock runs `regkit lock` processes against real etcd, ZooKeeper and Consul.
func TestLock(t *testing.T) {
	for name, b := range holdBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("SecondWaits", func(t *testing.T) { testLockSecondWaits(t, b) })
			t.Run("NeverOverlap", func(t *testing.T) { testLockNeverOverlap(t, b) })
			t.Run("ExitCodes", func(t *testing.T) { testLockExitCodes(t, b) })
			t.Run("LostKillsCommand", func(t *testing.T) { testLockLost(t, b) })
			t.Run("RegkitKilled", func(t *testing.T) { testLockRegkitKilled(t, b) })
		})
	}
}

// testLockSecondWaits: a second `regkit lock` on the same path waits until the
// first's command has ended, then runs with a larger fencing token.
func testLockSecondWaits(t *testing.T, b holdBackend) {
	url, dir := b.url(t), t.TempDir()
	log := filepath.Join(dir, "log")
	job := func(name string) []string {
		return sh(dir, `echo "start `+name+` $REGKIT_FENCING_TOKEN" >> log; `+
			`while [ ! -e release-`+name+` ]; do sleep 0.02; done; echo "end `+name+`" >> log`)
	}
	a := start(t, url, append([]string{"lock", "/jobs"}, job("a")...)...)
	waitLines(t, log, 1, "a runs")
	bb := start(t, url, append([]string{"lock", "/jobs", "-v"}, job("b")...)...)
	waitQueued(t, url, "/jobs", 2) // b waits behind a
	if got := lines(t, log); len(got) != 1 || strings.Contains(bb.stderr.String(), "acquired") {
		t.Fatalf("b ran while a held the lock: %q\n%s", got, bb.stderr.String())
	}
	if err := os.WriteFile(filepath.Join(dir, "release-a"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := a.exited(t); code != 0 {
		t.Fatalf("a exited %d; stderr:\n%s", code, a.stderr.String())
	}
	waitLines(t, log, 3, "b runs once a ended")
	if err := os.WriteFile(filepath.Join(dir, "release-b"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := bb.exited(t); code != 0 {
		t.Fatalf("b exited %d; stderr:\n%s", code, bb.stderr.String())
	}
	got := lines(t, log)
	if len(got) != 4 || !strings.HasPrefix(got[0], "start_a_") || got[1] != "end_a" ||
		!strings.HasPrefix(got[2], "start_b_") || got[3] != "end_b" {
		t.Fatalf("the commands overlapped or did not run: %q", got)
	}
	tokens(t, []string{strings.TrimPrefix(got[0], "start_"), strings.TrimPrefix(got[2], "start_")})
	waitQueued(t, url, "/jobs", 0) // both released their nodes
}

// testLockNeverOverlap: three `regkit lock` started at once run their commands one
// at a time (a shared directory marks the critical section), tokens growing.
func testLockNeverOverlap(t *testing.T, b holdBackend) {
	url, dir := b.url(t), t.TempDir()
	var ps []*proc
	for i := range 3 {
		ps = append(ps, start(t, url, append([]string{"lock", "/critical"},
			sh(dir, fmt.Sprintf(`mkdir busy || echo OVERLAP >> log; echo "p%d $REGKIT_FENCING_TOKEN" >> log; sleep 0.3; rmdir busy`, i))...)...))
	}
	for i, p := range ps {
		if code := p.exited(t); code != 0 {
			t.Fatalf("p%d exited %d; stderr:\n%s", i, code, p.stderr.String())
		}
	}
	got := lines(t, filepath.Join(dir, "log"))
	if len(got) != 3 || strings.Contains(strings.Join(got, " "), "OVERLAP") {
		t.Fatalf("commands overlapped: %q", got)
	}
	tokens(t, got)
}

// testLockExitCodes: the command's status is regkit's; --timeout, a missing or
// unrunnable command have codes of their own; the token is in the environment.
func testLockExitCodes(t *testing.T, b holdBackend) {
	url, dir := b.url(t), t.TempDir()
	r := regkit(t, url, "lock", "/x", "--", "sh", "-c", `echo "token=$REGKIT_FENCING_TOKEN"`)
	r.want(t, exitOK, "token=")
	t1, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(r.stdout, "token=")), 10, 64)
	if err != nil || t1 <= 0 {
		t.Fatalf("REGKIT_FENCING_TOKEN: %q", r.stdout)
	}
	r = regkit(t, url, "lock", "/x", "--", "sh", "-c", `echo "token=$REGKIT_FENCING_TOKEN"; exit 7`)
	r.want(t, 7)
	if t2, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(r.stdout, "token=")), 10, 64); t2 <= t1 {
		t.Fatalf("second token %q not above the first %d", r.stdout, t1)
	}
	if r.stderr != "" {
		t.Fatalf("regkit added to the command's failure: %q", r.stderr)
	}
	regkit(t, url, "lock", "/x", "--", "sh", "-c", "kill -9 $$").want(t, 128+9)
	r = regkit(t, url, "lock", "/x", "--", filepath.Join(dir, "no-such-command"))
	r.want(t, exitCmdMissing)
	if !strings.Contains(r.stderr, "no-such-command") {
		t.Fatalf("stderr: %q", r.stderr)
	}
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	regkit(t, url, "lock", "/x", "--", notExec).want(t, exitCannotRun)

	// Held by another: --timeout gives up with 124 and the command never runs.
	holder := start(t, url, append([]string{"lock", "/x"}, sh(dir, `touch held; while [ ! -e release ]; do sleep 0.02; done`)...)...)
	poll.Until(t, 60*time.Second, "holder runs", func() error {
		_, err := os.Stat(filepath.Join(dir, "held"))
		return err
	})
	r = regkit(t, url, append([]string{"lock", "/x", "--timeout", "1s"}, sh(dir, "touch ran")...)...)
	r.want(t, exitTimedOut)
	if !strings.Contains(r.stderr, "not acquired within --timeout 1s") {
		t.Fatalf("stderr: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("the command ran although the lock was held")
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := holder.exited(t); code != 0 {
		t.Fatalf("holder exited %d:\n%s", code, holder.stderr.String())
	}
	waitQueued(t, url, "/x", 0) // the waiter that gave up left nothing behind
}

// testLockLost: when the lock is lost (the connection cut: suspended; then a
// session that really expires) the command is stopped and regkit exits 125.
func testLockLost(t *testing.T, b holdBackend) {
	for _, tc := range []struct {
		name  string
		args  []string
		trap  string // the command's reaction to SIGTERM
		code  string // its exit status, as regkit reports it
		cause string
	}{
		{"Suspended", nil, `trap 'echo TERM >> log; exit 0' TERM`, "its exit status: 0", "suspended"},
		{"SigkillAfterGrace", []string{"--grace", "300ms"}, `trap 'echo TERM >> log' TERM`, "its exit status: 137", "suspended"},
		{"Expired", []string{"--policy", "lost-only", "--ttl", "2s"}, `trap 'echo TERM >> log; exit 0' TERM`, "its exit status: 0", "session lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "Expired" {
				b.skipSlowExpiry(t)
			}
			url, proxy := b.proxied(t)
			dir := t.TempDir()
			args := append([]string{"lock", "/x"}, tc.args...)
			p := start(t, url, append(args, sh(dir, tc.trap+`; echo "running $REGKIT_FENCING_TOKEN" >> log; while :; do sleep 0.05; done`)...)...)
			waitLines(t, filepath.Join(dir, "log"), 1, "command runs")
			proxy.Cut()
			defer proxy.Heal()
			if code := p.exited(t); code != exitHoldLost {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitHoldLost, p.stderr.String())
			}
			if got := lines(t, filepath.Join(dir, "log")); len(got) != 2 || got[1] != "TERM" {
				t.Fatalf("the command was not sent SIGTERM: %q", got)
			}
			if s := p.stderr.String(); !strings.Contains(s, "lost while the command ran") || !strings.Contains(s, tc.code) ||
				!strings.Contains(s, tc.cause) {
				t.Fatalf("stderr lacks the loss (%q, %q):\n%s", tc.code, tc.cause, s)
			}
		})
	}
}

// testLockRegkitKilled: when regkit itself is killed (SIGKILL), the kernel kills
// the command (Linux), and the lock is free once the session expires.
func testLockRegkitKilled(t *testing.T, b holdBackend) {
	b.skipSlowExpiry(t)
	url, dir := b.url(t), t.TempDir()
	p := start(t, url, append([]string{"lock", "/x", "--ttl", "2s"}, sh(dir, `echo $$ > pid; exec sleep 600`)...)...)
	poll.Until(t, 60*time.Second, "command runs", func() error {
		b, err := os.ReadFile(filepath.Join(dir, "pid"))
		if err == nil {
			_, err = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return err
	})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.exited(t)
	waitDead(t, filepath.Join(dir, "pid"))
	regkit(t, url, "lock", "/x", "--", "true").want(t, exitOK) // free once the session expired
}

// waitDead waits until the process whose ID is in pidFile has died.
func waitDead(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "command killed with regkit", func() error {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil // gone
		}
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			return nil // dead, not yet reaped
		}
		if err := syscall.Kill(pid, 0); err != nil {
			return nil
		}
		return fmt.Errorf("pid %d still running", pid)
	})
}

// TestLeader runs `regkit leader` processes against real etcd, ZooKeeper and
// Consul.
func TestLeader(t *testing.T) {
	for name, b := range holdBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("OneAtATime", func(t *testing.T) { testLeaderOneAtATime(t, b) })
			t.Run("Requeue", func(t *testing.T) { testLeaderRequeue(t, b) })
			t.Run("Lost", func(t *testing.T) { testLeaderLost(t, b) })
		})
	}
}

// leaderJob marks its term in log (name and token) and the directory busy, and
// runs until release-<name> exists or SIGTERM.
func leaderJob(dir, name string) []string {
	return sh(dir, `trap 'rmdir busy; echo "term `+name+`" >> log; exit 0' TERM; `+
		`mkdir busy || echo OVERLAP >> log; echo "lead `+name+` $REGKIT_FENCING_TOKEN" >> log; `+
		`while [ ! -e release-`+name+` ]; do sleep 0.02; done; rmdir busy; echo "done `+name+`" >> log; exit 3`)
}

// testLeaderOneAtATime: candidates run their command one at a time; leadership
// passes on when the leader's command exits, when regkit is stopped (SIGTERM),
// and when it is killed (its session expires).
func testLeaderOneAtATime(t *testing.T, b holdBackend) {
	b.skipSlowExpiry(t)
	url, dir := b.url(t), t.TempDir()
	log := filepath.Join(dir, "log")
	procs := map[string]*proc{}
	run := func(name string, job []string) {
		// lost-only: a loaded machine's slow keep-alive answer must not end a
		// term here (the Lost test covers the default policy).
		procs[name] = start(t, url, append([]string{"leader", "/e", "--ttl", "2s", "--policy", "lost-only"}, job...)...)
	}
	leaderOf := func(line string) string {
		f := strings.Split(line, "_")
		if len(f) != 3 || f[0] != "lead" {
			t.Fatalf("not a lead line: %q (log %q)", line, lines(t, log))
		}
		return f[1]
	}
	run("a", leaderJob(dir, "a"))
	run("b", leaderJob(dir, "b"))
	first := leaderOf(waitLines(t, log, 1, "one leads")[0])
	waitQueued(t, url, "/e", 2)
	if got := lines(t, log); len(got) != 1 {
		t.Fatalf("two leaders: %q", got)
	}
	// A third candidate with --timeout gives up (124) without running anything
	// and leaves no node behind.
	r := regkit(t, url, append([]string{"leader", "/e", "--timeout", "1s"}, sh(dir, "touch ran")...)...)
	r.want(t, exitTimedOut)
	if !strings.Contains(r.stderr, "not leader of /e within --timeout 1s") {
		t.Fatalf("stderr: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("the command ran without leadership")
	}
	waitQueued(t, url, "/e", 2)
	// 1. The command exits: regkit exits with its status, the other leads.
	if err := os.WriteFile(filepath.Join(dir, "release-"+first), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := procs[first].exited(t); code != 3 {
		t.Fatalf("leader %s exited %d, want its command's 3; stderr:\n%s", first, code, procs[first].stderr.String())
	}
	second := leaderOf(waitLines(t, log, 3, "the other leads")[2])
	if second == first {
		t.Fatalf("%s led twice: %q", first, lines(t, log))
	}
	// 2. regkit is stopped: its command gets SIGTERM, then c leads. (c's command
	// leaves the busy mark alone: it will be killed.)
	run("c", sh(dir, `echo "lead c $REGKIT_FENCING_TOKEN" >> log; echo $$ > c.pid; exec sleep 600`))
	waitQueued(t, url, "/e", 2)
	if code := procs[second].stop(t); code != 0 {
		t.Fatalf("leader %s exited %d after SIGTERM (its command exits 0 on TERM); stderr:\n%s", second, code, procs[second].stderr.String())
	}
	got := waitLines(t, log, 5, "c leads")
	if got[3] != "term_"+second || leaderOf(got[4]) != "c" {
		t.Fatalf("log: %q", got)
	}
	// 3. regkit is killed: its command dies with it and, once the session
	// expired, d leads.
	run("d", leaderJob(dir, "d"))
	waitQueued(t, url, "/e", 2)
	if err := procs["c"].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitDead(t, filepath.Join(dir, "c.pid"))
	got = waitLines(t, log, 6, "d leads after c's session expired")
	if leaderOf(got[5]) != "d" {
		t.Fatalf("log: %q", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "release-d"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	procs["d"].exited(t)
	got = lines(t, log)
	if strings.Contains(strings.Join(got, " "), "OVERLAP") {
		t.Fatalf("two commands ran at once: %q", got)
	}
	var toks []string
	for _, l := range got {
		if strings.HasPrefix(l, "lead_") {
			toks = append(toks, strings.TrimPrefix(l, "lead_"))
		}
	}
	tokens(t, toks)
}

// testLeaderRequeue: two --requeue candidates take turns, one command at a time,
// with growing tokens, until SIGTERM.
func testLeaderRequeue(t *testing.T, b holdBackend) {
	url, dir := b.url(t), t.TempDir()
	var ps []*proc
	for _, name := range []string{"a", "b"} {
		ps = append(ps, start(t, url, append([]string{"leader", "/e", "--requeue"},
			sh(dir, `trap 'rmdir busy; exit 0' TERM; mkdir busy || echo OVERLAP >> log; echo "`+name+` $REGKIT_FENCING_TOKEN" >> log; sleep 0.1; rmdir busy`)...)...))
	}
	got := waitLines(t, filepath.Join(dir, "log"), 6, "six terms")
	for _, p := range ps {
		if code := p.stop(t); code != 0 {
			t.Fatalf("exit status %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
		}
	}
	all := strings.Join(lines(t, filepath.Join(dir, "log")), " ")
	if strings.Contains(all, "OVERLAP") || !strings.Contains(all, "a_") || !strings.Contains(all, "b_") {
		t.Fatalf("terms: %q", all)
	}
	tokens(t, got)
}

// testLeaderLost: leadership lost (connection cut) stops the command; without
// --requeue regkit exits 125, with it the command runs again once leading again.
func testLeaderLost(t *testing.T, b holdBackend) {
	url, proxy := b.proxied(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	p := start(t, url, append([]string{"leader", "/e"}, leaderJob(dir, "a")...)...)
	waitLines(t, log, 1, "a leads")
	proxy.Cut()
	if code := p.exited(t); code != exitHoldLost {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitHoldLost, p.stderr.String())
	}
	if got := lines(t, log); len(got) != 2 || got[1] != "term_a" {
		t.Fatalf("the command was not sent SIGTERM: %q", got)
	}
	proxy.Heal()

	p = start(t, url, append([]string{"leader", "/e2", "--requeue"}, leaderJob(dir, "b")...)...)
	waitLines(t, log, 3, "b leads")
	proxy.Cut()
	got := waitLines(t, log, 4, "b's command stopped")
	if got[3] != "term_b" {
		t.Fatalf("log: %q", got)
	}
	proxy.Heal()
	got = waitLines(t, log, 5, "b leads again")
	if !strings.HasPrefix(got[4], "lead_b_") {
		t.Fatalf("log: %q", got)
	}
	tokens(t, []string{strings.TrimPrefix(got[2], "lead_"), strings.TrimPrefix(got[4], "lead_")})
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "campaigning again") {
		t.Fatalf("stderr:\n%s", p.stderr.String())
	}
}

// TestHoldNotSupported: on Nacos (no sessions) lock and leader are exit status 1
// with a message saying so, before anything is created or run.
func TestHoldNotSupported(t *testing.T) {
	url, dir := nacosURL(t, nacostest.Start(t)), t.TempDir()
	for _, c := range []struct{ cmd, what string }{{"lock", "a lock"}, {"leader", "an election"}} {
		r := regkit(t, url, append([]string{c.cmd, "/x"}, sh(dir, "touch ran")...)...)
		r.want(t, exitError)
		if want := "regkit: the nacos backend cannot hold " + c.what + ": it has no sessions"; !strings.HasPrefix(r.stderr, want) ||
			!strings.Contains(r.stderr, "not supported") {
			t.Fatalf("%s: stderr %q, want it to start with %q", c.cmd, r.stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("the command ran")
	}
	regkit(t, url, "tree", "/").want(t, exitNotFound) // nothing created
}
