package zk_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
	rzk "github.com/regkit/regkit/zk"
)

// sessionRequests returns how many requests the server has received on session
// sid's connection (the four-letter word "cons": "recved=N,...,sid=0x...").
func sessionRequests(t *testing.T, addr string, sid int64) int64 {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write([]byte("cons")); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(nc)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`recved=(\d+),.*sid=0x([0-9a-f]+)`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		if id, _ := strconv.ParseInt(m[2], 16, 64); id == sid {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			return n
		}
	}
	t.Fatalf("cons: session %x not listed in %q", sid, out)
	return 0
}

// A Client registering many instances of one service follows the service (its
// registrations' guard), and its child watch fires on each of its own creates:
// the re-arm, a listing of every child, waits until the burst of own creates
// settles instead of following each create (one create and one data read per
// registration, not a listing more).
func TestOwnCreatesShareReArm(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := openURL(t, "zk://"+e.srv.Addr()+"/burst", quiet)
	reg := func(i int) {
		if _, err := c.Register(ctx, registry.Instance{Service: "burst", ID: fmt.Sprint("i", i), Host: "127.0.0.1", Port: 9000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	reg(0) // the guard's subscription is up
	creds := rzk.SessionCreds(c.Conn().(*rzk.Conn))
	if len(creds) == 0 {
		t.Fatal("no session")
	}
	before := sessionRequests(t, e.srv.Addr(), creds[0].ID)
	const n = 100
	for i := 1; i <= n; i++ {
		reg(i)
	}
	// The subscription has read them all once a Watch of the same Client (on
	// the same subscription) shows them.
	w, err := c.Watch(ctx, "burst")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Instances) == n+1 {
			break
		}
	}
	got := sessionRequests(t, e.srv.Addr(), creds[0].ID) - before
	// Each registration: its create and the data read arming its watch; a few
	// listings and pings besides. Re-arming after every create is 3 per.
	if got > n*2+n/4 {
		t.Errorf("%d requests for %d registrations, want at most %d", got, n, n*2+n/4)
	}
	t.Logf("%d requests for %d registrations", got, n)
}

// An own node deleted by someone else while the subscription defers its
// re-arm (before any listing showed it) is reported deleted when the re-arm
// comes, so that the registration's guard puts it again.
func TestOwnCreateDeletedBeforeListing(t *testing.T) {
	t.Cleanup(rzk.SetOwnMaxDefer(time.Hour)) // the deferral lasts as long as the hold below
	e := newEnv(t)
	c := e.open(t, "own")
	defer c.Close()
	conn := c.Conn().(*rzk.Conn)
	changes := make(chan driver.Change, 100)
	cancel, err := conn.SubscribeEvents("api", func(ch driver.Change) { changes <- ch })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	// await waits for a change satisfying ok.
	await := func(what string, ok func(driver.Change) bool) {
		t.Helper()
		for {
			select {
			case ch := <-changes:
				if ch.Err != nil {
					t.Fatalf("%s: %v", what, ch.Err)
				}
				if ok(ch) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no change: %s", what)
			}
		}
	}
	put := func(id string) {
		if _, err := conn.Put(ctx, driver.Instance{Service: "api", ID: id, Host: "127.0.0.1", Port: 9000, Weight: 100}); err != nil {
			t.Fatal(err)
		}
	}
	put("a0")
	await("the put of a0", func(ch driver.Change) bool {
		return slices.ContainsFunc(append(ch.Puts, ch.Listing.Instances...), func(in driver.Instance) bool { return in.ID == "a0" })
	})
	release := rzk.HoldOwnCreate(conn, "api")
	put("a1") // its child event comes; the re-arm waits for the hold
	if err := e.adm(t).Delete("/own/services/api/a1", -1); err != nil {
		t.Fatal(err)
	}
	release()
	await("the delete of a1", func(ch driver.Change) bool {
		if slices.ContainsFunc(ch.Puts, func(in driver.Instance) bool { return in.ID == "a1" }) {
			t.Fatalf("a put of a1, deleted: %+v", ch)
		}
		return slices.Contains(ch.Deletes, "a1")
	})
}
