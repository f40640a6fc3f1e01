package zk_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
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
