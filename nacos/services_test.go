package nacos_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// A set of services that the poller saw, then left for another that only a
// Services call (package registry's re-list after a notify) read, then came back
// to, must be notified again: otherwise the watcher keeps the intermediate set
// for good. The test server hit it under load: an instance expired for a moment
// between the poller's read and the re-list, came back, and WatchServices kept
// [] while [svc-b] was registered.
func TestWatchServicesNotifiesReturnToPolledSet(t *testing.T) {
	srv := nacostest.Start(t, nacostest.WithMode(nacostest.Mode30))
	// A poll period much longer than the three calls below, so the poller does not
	// read the intermediate set itself (if it did, the test would pass on any code).
	u := "nacos://" + srv.Addr() + "?namespace=retpoll&poll_interval=1500ms&beat_interval=500ms&presence_check=1s&timeout=10s"
	c, other := openURL(t, u), openURL(t, u)
	defer c.Close()
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := other.Register(ctx, inst("svc-b", "b1", 9001)); err != nil {
		t.Fatal(err)
	}
	conn := c.Conn().(*nacos.Conn)
	notes := make(chan struct{}, 64)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- conn.WatchServices(wctx, func() { notes <- struct{}{} })
	}()
	defer func() {
		wcancel()
		<-done
	}()
	select {
	case <-notes: // armed: the poller read [svc-b]
	case <-ctx.Done():
		t.Fatal("WatchServices never notified its first read")
	}
	// svc-a appears, a re-list reads [svc-a svc-b], svc-a goes: the set is back
	// to what the poller read last.
	r, err := other.Register(ctx, inst("svc-a", "a1", 9002))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := conn.Services(ctx); err != nil || len(got) != 2 {
		t.Fatalf("Services with svc-a registered = %v, %v; want [svc-a svc-b]", got, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notes:
	case <-time.After(10 * time.Second):
		t.Fatal("WatchServices did not notify the return to the set it polled last: a re-list read another set meanwhile, so the watcher would keep that one")
	case err := <-done:
		t.Fatalf("WatchServices ended: %v", err)
	}
}

// The same for a tree watch of the store: a key created and deleted while the
// long poll listens to the dataIds it listed is only seen by a Tree call (package
// registry's re-list); the watch must notify when the tree is back to what it
// listed, or the watcher keeps the tree with the key.
func TestWatchTreeNotifiesReturnToListedTree(t *testing.T) {
	srv := nacostest.Start(t, nacostest.WithMode(nacostest.Mode30))
	c := openURL(t, "nacos://"+srv.Addr()+"?namespace=retpoll&poll_interval=1500ms&timeout=10s")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := c.Conn().(*nacos.Conn)
	if _, err := conn.Create(ctx, "/t/a", []byte("a"), driver.CreateSpec{}); err != nil {
		t.Fatal(err)
	}
	notes := make(chan struct{}, 64)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- conn.WatchTree(wctx, "/t", func() { notes <- struct{}{} })
	}()
	defer func() {
		wcancel()
		<-done
	}()
	select {
	case <-notes:
	case <-ctx.Done():
		t.Fatal("WatchTree never notified its first listing")
	}
	if _, err := conn.Create(ctx, "/t/b", []byte("b"), driver.CreateSpec{}); err != nil {
		t.Fatal(err)
	}
	got, err := conn.Tree(ctx, "/t")
	if err != nil || !slices.ContainsFunc(got, func(n driver.Node) bool { return n.Key == "/t/b" }) {
		t.Fatalf("Tree with /t/b created = %v, %v; want /t/b in it", got, err)
	}
	if err := conn.Delete(ctx, "/t/b", driver.AnyVersion, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notes:
	case <-time.After(10 * time.Second):
		t.Fatal("WatchTree did not notify the return to the tree it listed last: a re-list read another tree meanwhile, so the watcher would keep that one")
	case err := <-done:
		t.Fatalf("WatchTree ended: %v", err)
	}
}

// Nacos names an instance by ip:port and cluster: Registration.Update to another
// port or zone must leave no entry at the old address (it was left to expire with
// its heartbeats, and for a persistent instance never; meanwhile the new entry's
// presence check saw the old one as a rival owner of the ID and withdrew itself).
func TestUpdateAddressLeavesNoOldEntry(t *testing.T) {
	for _, eph := range []bool{true, false} {
		t.Run(fmt.Sprintf("ephemeral=%v", eph), func(t *testing.T) {
			srv := nacostest.Start(t, nacostest.WithMode(nacostest.Mode30))
			params := fastParams
			if !eph {
				params = "poll_interval=200ms&presence_check=1s&timeout=10s&ephemeral=false"
			}
			c := openURL(t, "nacos://"+srv.Addr()+"?namespace=upd&"+params)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r, err := c.Register(ctx, inst("svc", "u1", 7001))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			addrs := func() []string {
				var out []string
				for _, in := range srv.Instances("upd", "DEFAULT_GROUP", "svc") {
					out = append(out, fmt.Sprintf("%s:%d#%s", in.IP, in.Port, in.Cluster))
				}
				slices.Sort(out)
				return out
			}
			for i, up := range []registry.Instance{inst("svc", "u1", 7002), func() registry.Instance {
				in := inst("svc", "u1", 7002)
				in.Zone = "z2"
				return in
			}()} {
				if err := r.Update(ctx, up); err != nil {
					t.Fatalf("Update %d: %v", i, err)
				}
				want := fmt.Sprintf("127.0.0.1:7002#%s", up.Zone)
				if got := addrs(); len(got) != 1 || got[0] != want {
					t.Fatalf("after Update %d the server holds %v, want [%s]", i, got, want)
				}
			}
			// The new entry outlives several presence checks (1s) unchallenged.
			changed := r.Changed()
			deadline := time.After(3500 * time.Millisecond)
		wait:
			for {
				select {
				case <-changed:
					t.Fatalf("the registration changed state after Update: %v (%v)", r.State(), r.Err())
				case <-deadline:
					break wait
				}
			}
			if got := addrs(); len(got) != 1 || got[0] != "127.0.0.1:7002#z2" {
				t.Fatalf("the server holds %v, want [127.0.0.1:7002#z2]", got)
			}
		})
	}
}
