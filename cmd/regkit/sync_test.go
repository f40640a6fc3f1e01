package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/cmd/regkit/internal/mirror"
	"github.com/regkit/regkit/cmd/regkit/internal/mirror/mirrortest"
	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/recipes/group"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

func openClient(t *testing.T, url string) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, url, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true}))
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSyncBinary runs `regkit sync --both-ways` between etcd and ZooKeeper as two
// processes of one group: the copies converge both ways, the dry run plans them,
// SIGTERM on one process hands its services to the other with no gap a watcher
// on the destination can see, so does kill -9 (a --member-ttl below the copies'
// liveness), and stopping the last one removes every copy.
func TestSyncBinary(t *testing.T) {
	zk := testenv.StartZooKeeper(t)
	etcdU := etcdURL(t) + "?lease_ttl=3s"
	zkU := "zk://" + zk.Addr() + "/regkit-sync?session_timeout=4s"
	e, z := openClient(t, etcdU), openClient(t, zkU)
	var svcs []string
	wantE, wantZ := map[string][]string{}, map[string][]string{}
	for i := range 4 {
		svc := fmt.Sprintf("svc-%d", i)
		svcs = append(svcs, svc)
		for _, side := range []struct {
			c    *registry.Client
			port int
		}{{e, 7600 + i}, {z, 7700 + i}} {
			r, err := side.c.Register(context.Background(), registry.Instance{Service: svc, ID: "n1", Host: "127.0.0.1", Port: side.port})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
		}
		wantE[svc] = []string{fmt.Sprintf("127.0.0.1:%d native n1", 7600+i), fmt.Sprintf("127.0.0.1:%d copy-of n1 from zk", 7700+i)}
		wantZ[svc] = []string{fmt.Sprintf("127.0.0.1:%d native n1", 7700+i), fmt.Sprintf("127.0.0.1:%d copy-of n1 from etcd", 7600+i)}
	}

	plan := regkit(t, "", "sync", etcdU, zkU, "--both-ways", "--src-name", "etcd", "--dst-name", "zk", "--dry-run")
	plan.want(t, exitOK, "etcd -> zk  svc-0", "zk -> etcd  svc-3", "copy")

	args := func(member string) []string {
		return []string{"sync", etcdU, zkU, "--both-ways", "--src-name", "etcd", "--dst-name", "zk",
			"--group", "cli", "--member", member, "--coord", zkU, "--member-ttl", "1s", "-o", "json"}
	}
	m1 := start(t, "", args("m1")...)
	for _, svc := range svcs {
		mirrortest.WantView(t, e, svc, wantE[svc]...)
		mirrortest.WantView(t, z, svc, wantZ[svc]...)
	}
	m1.waitLine(t, 0, "a registered event", `"event":"registered"`)
	var gaps []*mirrortest.GapWatch
	for _, svc := range svcs {
		gaps = append(gaps, mirrortest.WatchGaps(t, e, svc), mirrortest.WatchGaps(t, z, svc))
	}
	owners := func() map[string]int {
		n := map[string]int{}
		for _, c := range []*registry.Client{e, z} {
			for _, svc := range svcs {
				list, _ := c.Instances(context.Background(), svc)
				for _, in := range list {
					if o := in.Metadata[mirror.MetaOwner]; o != "" {
						n[o]++
					}
				}
			}
		}
		return n
	}
	m2 := start(t, "", args("m2")...)
	poll.Until(t, 60*time.Second, "copies split between m1 and m2", func() error {
		if n := owners(); n["m1"] == 0 || n["m2"] == 0 || n["m1"]+n["m2"] != 2*len(svcs) {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	if code := m1.stop(t); code != exitOK {
		t.Fatalf("m1 exited %d; stderr:\n%s", code, m1.stderr.String())
	}
	poll.Until(t, 30*time.Second, "every copy on m2", func() error {
		if n := owners(); n["m2"] != 2*len(svcs) || len(n) != 1 {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	for _, svc := range svcs {
		mirrortest.WantView(t, e, svc, wantE[svc]...)
		mirrortest.WantView(t, z, svc, wantZ[svc]...)
	}
	for _, g := range gaps {
		if gs := g.Gaps(); len(gs) > 0 {
			t.Errorf("a watcher saw copies missing:\n%s", strings.Join(gs, "\n"))
		}
	}
	// A crash: m3 joins and takes some services from m2, then m2 is killed.
	// Its membership session (--member-ttl 1s) expires well before its copies
	// (etcd lease_ttl 3s, zk session_timeout 4s), so m3 registers its copies
	// of m2's services first: watchers see both for a moment, never none. m3
	// never deletes m2's copies, which expire.
	m3 := start(t, "", args("m3")...)
	poll.Until(t, 60*time.Second, "copies split between m2 and m3", func() error {
		if n := owners(); n["m2"] == 0 || n["m3"] == 0 || n["m2"]+n["m3"] != 2*len(svcs) {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	left := memberLeft(t, z, mirror.MembershipKey("cli"), "m2")
	killed := time.Now()
	if err := m2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-m2.done
	poll.Until(t, 60*time.Second, "every copy on m3, m2's expired", func() error {
		if n := owners(); n["m3"] != 2*len(svcs) || len(n) != 1 {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	// Measured, not asserted: how long after m2's node left m3 had registered
	// its copies of m2's services.
	gone := left()
	var last time.Time
	for _, l := range strings.Split(m3.stdout(), "\n") {
		var ev struct {
			Time  time.Time `json:"time"`
			Event string    `json:"event"`
		}
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "registered" && ev.Time.After(last) {
			last = ev.Time
		}
	}
	t.Logf("after the kill: m2's member node gone in %v, m3's last copy registered %v after that, m2's copies gone in %v",
		gone.Sub(killed).Round(time.Millisecond), last.Sub(gone).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	for _, svc := range svcs {
		mirrortest.WantView(t, e, svc, wantE[svc]...)
		mirrortest.WantView(t, z, svc, wantZ[svc]...)
	}
	for _, g := range gaps {
		if gs := g.Gaps(); len(gs) > 0 {
			t.Errorf("after the crash, a watcher saw copies missing:\n%s", strings.Join(gs, "\n"))
		}
	}
	if code := m3.stop(t); code != exitOK {
		t.Fatalf("m3 exited %d; stderr:\n%s", code, m3.stderr.String())
	}
	for i, svc := range svcs {
		mirrortest.WantView(t, e, svc, fmt.Sprintf("127.0.0.1:%d native n1", 7600+i))
		mirrortest.WantView(t, z, svc, fmt.Sprintf("127.0.0.1:%d native n1", 7700+i))
	}
}

// memberLeft follows the group on key through c and returns a function that
// returns when member was last seen leaving it (zero if never).
func memberLeft(t *testing.T, c *registry.Client, key, member string) func() time.Time {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := group.Watch(ctx, c, key)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var at time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		in := false
		for {
			ms, err := w.Next(ctx)
			if err != nil {
				return
			}
			_, now := ms[member]
			if in && !now {
				mu.Lock()
				at = time.Now()
				mu.Unlock()
			}
			in = now
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return at
	}
}

// TestSyncUsage: bad arguments and flags are usage errors naming what is wrong,
// before any I/O (the URLs point nowhere).
func TestSyncUsage(t *testing.T) {
	dead := deadURL(t)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"sync", dead}, "missing argument DST_URL"},
		{[]string{"sync", dead, "foo://x"}, `invalid DST_URL "foo://x": unknown scheme "foo"`},
		// A URL only the driver can check is reported as such, not after (or
		// instead of) the other side's failed connect.
		{[]string{"sync", dead, "zk://127.0.0.1:99999"}, "DST_URL: invalid registry URL"},
		{[]string{"sync", "zk://127.0.0.1:99999", dead}, "SRC_URL: invalid registry URL"},
		{[]string{"sync", dead, dead}, "name the same registry"},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--services", "["}, `invalid --services "["`},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--group", "a/b"}, `invalid --group "a/b"`},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--member", "a b"}, `invalid --member "a b"`},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--handover-timeout", "0s"}, "invalid --handover-timeout"},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--empty-grace", "-1s"}, "invalid --empty-grace"},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--member-ttl", "0s"}, "invalid --member-ttl"},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--coord", "foo://x"}, `invalid --coord "foo://x"`},
	} {
		r := regkit(t, "", tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, exitUsage, tc.msg)
		}
	}
}

// TestSyncZooKeeperNacos runs `regkit sync --both-ways` between ZooKeeper and
// the in-repo Nacos server: the copies converge both ways, the metrics endpoint
// counts them (regkit.sync.copies), and SIGTERM leaves only the originals.
func TestSyncZooKeeperNacos(t *testing.T) {
	zk := testenv.StartZooKeeper(t)
	ns := nacostest.Start(t, nacostest.WithCacheMillis(200))
	zkU := "zk://" + zk.Addr() + "/regkit-sync?session_timeout=4s"
	nacosU := "nacos://" + ns.Addr() + "?namespace=cli&poll_interval=200ms&beat_interval=500ms&presence_check=1s"
	z, n := openClient(t, zkU), openClient(t, nacosU)
	var svcs []string
	wantZ, wantN := map[string][]string{}, map[string][]string{}
	for i := range 2 {
		svc := fmt.Sprintf("svc-%d", i)
		svcs = append(svcs, svc)
		for _, side := range []struct {
			c    *registry.Client
			port int
		}{{z, 7800 + i}, {n, 7900 + i}} {
			r, err := side.c.Register(context.Background(), registry.Instance{Service: svc, ID: "n1", Host: "127.0.0.1", Port: side.port})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
		}
		wantZ[svc] = []string{fmt.Sprintf("127.0.0.1:%d native n1", 7800+i), fmt.Sprintf("127.0.0.1:%d copy-of n1 from nacos", 7900+i)}
		wantN[svc] = []string{fmt.Sprintf("127.0.0.1:%d native n1", 7900+i), fmt.Sprintf("127.0.0.1:%d copy-of n1 from zk", 7800+i)}
	}
	// A third service on ZooKeeper only: one copy, on Nacos.
	r, err := z.Register(context.Background(), registry.Instance{Service: "solo", ID: "n1", Host: "127.0.0.1", Port: 7850})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	p := start(t, "", "sync", zkU, nacosU, "--both-ways", "--src-name", "zk", "--dst-name", "nacos",
		"--member", "m1", "--metrics-addr", "127.0.0.1:0")
	for _, svc := range svcs {
		mirrortest.WantView(t, z, svc, wantZ[svc]...)
		mirrortest.WantView(t, n, svc, wantN[svc]...)
	}
	mirrortest.WantView(t, n, "solo", "127.0.0.1:7850 copy-of n1 from zk")
	mirrortest.WantView(t, z, "solo", "127.0.0.1:7850 native n1")

	// The metrics: each of svc-0 and svc-1 has two copies (one each way), solo one.
	addr := waitMatch(t, p, `serving metrics on http://(\S+)/metrics`)
	poll.Until(t, 30*time.Second, "regkit_sync_copies on /metrics", func() error {
		m, err := scrape(addr)
		if err != nil {
			return err
		}
		for svc, want := range map[string]string{"svc-0": "2", "svc-1": "2", "solo": "1"} {
			if got := sample(m, "regkit_sync_copies", `service="`+svc+`"`); got != want {
				return fmt.Errorf("regkit_sync_copies{service=%q} = %q, want %s; /metrics:\n%s", svc, got, want, m)
			}
		}
		if sample(m, "regkit_sync_lag_seconds_bucket", `le="0.1"`) == "" { // second-scale buckets
			return fmt.Errorf("no regkit_sync_lag_seconds_bucket{le=\"0.1\"}; /metrics:\n%s", m)
		}
		return nil
	})

	if code := p.stop(t); code != exitOK {
		t.Fatalf("sync exited %d; stderr:\n%s", code, p.stderr.String())
	}
	for i, svc := range svcs {
		mirrortest.WantView(t, z, svc, fmt.Sprintf("127.0.0.1:%d native n1", 7800+i))
		mirrortest.WantView(t, n, svc, fmt.Sprintf("127.0.0.1:%d native n1", 7900+i))
	}
	mirrortest.WantView(t, n, "solo")
	mirrortest.WantView(t, z, "solo", "127.0.0.1:7850 native n1")
}

// waitMatch waits for a stderr line of p matching re and returns its first group.
func waitMatch(t *testing.T, p *proc, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	poll.Until(t, 60*time.Second, re, func() error {
		if m = rx.FindStringSubmatch(p.stderr.String()); m != nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited %d; stderr:\n%s", p.code, p.stderr.String())
		default:
		}
		return fmt.Errorf("no %q on stderr yet:\n%s", re, p.stderr.String())
	})
	return m[1]
}

// scrape GETs http://addr/metrics.
func scrape(addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// sample returns the value of the first sample of metric name whose labels
// contain label ("" if none).
func sample(text, name, label string) string {
	for _, l := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(l, name+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if ok && strings.Contains(labels, label) {
			return value
		}
	}
	return ""
}
