package zk_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	rzk "github.com/regkit/regkit/zk"
)

// A server that accepts a connection but answers its handshake only later (a
// restarting ZooKeeper loading its data) must not hold the reconnection for the
// whole session timeout: the driver declares the session lost after a session
// timeout without a connection, so one attempt waiting that long lost a live
// session (CI: a kill -9 test, a 60s session, a restart under load).
func TestHandshakeStallKeepsSession(t *testing.T) {
	e := newEnv(t)
	// The upstream a stalled attempt reaches: it accepts and never answers, and
	// closes its connections only when the test ends.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		silent.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	c := openURL(t, strings.Replace(e.url("stall"), "session_timeout=4s", "session_timeout=6s", 1))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Store().Create(ctx, "/x", nil); err != nil {
		t.Fatal(err)
	}
	sid := c.Conn().(*rzk.Conn).SessionID()
	// Drop the connection; the reconnection's first attempt stalls on the silent
	// upstream, and the server is reachable again a second later.
	e.proxy.SetUpstream(silent.Addr().String())
	e.proxy.Blackhole()
	e.proxy.Heal()
	stalled := time.Now()
	testenv.Eventually(t, 5*time.Second, "an attempt reached the silent upstream", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(held) == 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	// The server stays silent for 4s of the 6s session: a stalled attempt must be
	// given up and another one made meanwhile (the old bound, the whole session
	// timeout, made one attempt wait until the session was as good as lost).
	hold := time.NewTimer(4 * time.Second) // the length of the fault, not a wait for a condition
	<-hold.C
	e.proxy.SetUpstream(e.srv.Addr())
	mu.Lock()
	attempts := len(held)
	mu.Unlock()
	if attempts < 2 {
		t.Errorf("%d connection attempt(s) during a 4s stall of a 6s session, want at least 2: one attempt waited out the stall", attempts)
	}
	testenv.Eventually(t, 20*time.Second, "reads again", func() error {
		_, err := c.Store().Get(ctx, "/x")
		return err
	})
	if got := c.Conn().(*rzk.Conn).SessionID(); got != sid {
		t.Errorf("session %x after a stalled handshake of %v, want the same %x: the stall cost the session",
			got, time.Since(stalled).Round(time.Millisecond), sid)
	}
}
