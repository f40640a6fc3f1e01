package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/cmd/regkit/internal/mirror"
	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
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

// syncView summarises a service: "addr native ID" or "addr copy-of ID from NAME by MEMBER".
func syncView(c *registry.Client, svc string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.Instances(ctx, svc)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range list {
		if src := in.Metadata[mirror.MetaSourceCluster]; src != "" {
			out = append(out, fmt.Sprintf("%s copy-of %s from %s", in.Addr(), in.Metadata[mirror.MetaSourceID], src))
		} else {
			out = append(out, fmt.Sprintf("%s native %s", in.Addr(), in.ID))
		}
	}
	sort.Strings(out)
	return out, nil
}

func wantSyncView(t *testing.T, c *registry.Client, svc string, want ...string) {
	t.Helper()
	sort.Strings(want)
	poll.Until(t, 60*time.Second, "view of "+svc, func() error {
		got, err := syncView(c, svc)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		return nil
	})
}

// gapWatch records every snapshot of svc on c and lists each time an address
// seen before is absent.
func gapWatch(t *testing.T, c *registry.Client, svc string) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.Watch(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var gaps []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		for {
			s, err := w.Next(ctx)
			if err != nil {
				return
			}
			now := map[string]bool{}
			for _, in := range s.Instances {
				now[in.Addr()] = true
			}
			mu.Lock()
			for a := range seen {
				if !now[a] {
					gaps = append(gaps, fmt.Sprintf("%s: snapshot %d lacks %s", svc, s.Seq, a))
				}
			}
			maps.Copy(seen, now)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(gaps)
	}
}

// TestSyncBinary runs `regkit sync --both-ways` between etcd and ZooKeeper as two
// processes of one group: the copies converge both ways, the dry run plans them,
// SIGTERM on one process hands its services to the other with no gap a watcher
// on the destination can see, and stopping the last one removes every copy.
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
			"--group", "cli", "--member", member, "--coord", zkU, "-o", "json"}
	}
	m1 := start(t, "", args("m1")...)
	for _, svc := range svcs {
		wantSyncView(t, e, svc, wantE[svc]...)
		wantSyncView(t, z, svc, wantZ[svc]...)
	}
	m1.waitLine(t, 0, "a registered event", `"event":"registered"`)
	var gaps []func() []string
	for _, svc := range svcs {
		gaps = append(gaps, gapWatch(t, e, svc), gapWatch(t, z, svc))
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
		wantSyncView(t, e, svc, wantE[svc]...)
		wantSyncView(t, z, svc, wantZ[svc]...)
	}
	for _, g := range gaps {
		if gs := g(); len(gs) > 0 {
			t.Errorf("a watcher saw copies missing:\n%s", strings.Join(gs, "\n"))
		}
	}
	// A crash: m2 is killed, its copies stay until its sessions and leases
	// expire; m3, started meanwhile, converges to the same views on its own
	// (it never deletes m2's copies, which expire).
	if err := m2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-m2.done
	m3 := start(t, "", args("m3")...)
	poll.Until(t, 60*time.Second, "every copy on m3, m2's expired", func() error {
		if n := owners(); n["m3"] != 2*len(svcs) || len(n) != 1 {
			return fmt.Errorf("copies per owner: %v", n)
		}
		return nil
	})
	for _, svc := range svcs {
		wantSyncView(t, e, svc, wantE[svc]...)
		wantSyncView(t, z, svc, wantZ[svc]...)
	}
	if code := m3.stop(t); code != exitOK {
		t.Fatalf("m3 exited %d; stderr:\n%s", code, m3.stderr.String())
	}
	for i, svc := range svcs {
		wantSyncView(t, e, svc, fmt.Sprintf("127.0.0.1:%d native n1", 7600+i))
		wantSyncView(t, z, svc, fmt.Sprintf("127.0.0.1:%d native n1", 7700+i))
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
		{[]string{"sync", dead, dead}, "name the same registry"},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--services", "["}, `invalid --services "["`},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--group", "a/b"}, `invalid --group "a/b"`},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--member", "a b"}, `invalid --member "a b"`},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--handover-timeout", "0s"}, "invalid --handover-timeout"},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--empty-grace", "-1s"}, "invalid --empty-grace"},
		{[]string{"sync", dead, "zk://127.0.0.1:1", "--coord", "foo://x"}, `invalid --coord "foo://x"`},
	} {
		r := regkit(t, "", tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, exitUsage, tc.msg)
		}
	}
}
