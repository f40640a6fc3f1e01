package lbrpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/rpc"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/lb/lbrpc"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Greeter is the net/rpc service of the tests.
type Greeter struct{ name string }

// Hello answers with the server's name.
func (g *Greeter) Hello(who string, reply *string) error {
	if who == "" {
		return errors.New("who?")
	}
	*reply = g.name + " greets " + who
	return nil
}

type rpcServer struct {
	lis   net.Listener
	done  chan struct{}
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startRPC(t *testing.T, name string) *rpcServer {
	t.Helper()
	srv := rpc.NewServer()
	if err := srv.Register(&Greeter{name}); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rpcServer{lis: lis, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				srv.ServeConn(conn)
			}()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

// stop closes the listener and every connection, as a process exiting does.
func (s *rpcServer) stop() {
	s.lis.Close()
	<-s.done
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func TestClientBalancesAndFailsOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "mem://rpc", registry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	view, _ := cache.New(c, cache.WithLogger(quiet))
	defer view.Close()
	servers := map[string]*rpcServer{"a": startRPC(t, "a"), "b": startRPC(t, "b")}
	for id, s := range servers {
		if _, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: id, Host: "127.0.0.1",
			Port: s.lis.Addr().(*net.TCPAddr).Port}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := lb.New(ctx, view, "greeter", lb.RoundRobin(), lb.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The first snapshot may predate the second registration (a view may show
	// an intermediate step): wait for both, so that one picker serves the spread.
	poll.Until(t, 10*time.Second, "both instances in the balancer", func() error {
		if n := len(b.Endpoints().Ready); n != 2 {
			return fmt.Errorf("%d ready", n)
		}
		return nil
	})
	cl := lbrpc.NewClient(b)
	defer cl.Close()
	got := map[string]int{}
	for range 10 {
		var reply string
		if err := cl.Call(ctx, "Greeter.Hello", "go", &reply); err != nil {
			t.Fatal(err)
		}
		got[reply]++
	}
	if got["a greets go"] != 5 || got["b greets go"] != 5 {
		t.Errorf("spread %v", got)
	}
	var reply string
	if err := cl.Call(ctx, "Greeter.Hello", "", &reply); err == nil || err.Error() != "who?" {
		t.Errorf("server error: %v", err)
	}

	// a stops (its connections close; still registered): calls go on, on b.
	servers["a"].stop()
	for range 10 {
		var reply string
		if err := cl.Call(ctx, "Greeter.Hello", "go", &reply); err != nil {
			// A call already sent on a's connection as it closed may fail once.
			t.Logf("call during failover: %v", err)
		}
	}
	for range 10 {
		var reply string
		if err := cl.Call(ctx, "Greeter.Hello", "go", &reply); err != nil || reply != "b greets go" {
			t.Fatalf("after a stopped: %q, %v", reply, err)
		}
	}

	// Dial: one connection to a picked instance.
	rc, r, err := lbrpc.Dial(ctx, b, lb.PickInfo{})
	if err != nil {
		t.Fatal(err)
	}
	err = rc.Call("Greeter.Hello", "dial", &reply)
	r.Done(err)
	rc.Close()
	if err != nil || reply != "b greets dial" {
		t.Errorf("Dial: %q, %v", reply, err)
	}
}

// Dial tries another instance when a dial fails: over a dead instance and a live
// one picked in turn (no ejection), every Dial ends on the live one.
func TestDialTriesAnotherInstance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	live := startRPC(t, "live")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close() // nothing listens there: dials are refused
	pool, err := lb.NewPool(lb.RoundRobin(), lb.WithoutEjection(), lb.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pool.Update([]registry.Instance{
		{Service: "greeter", ID: "dead", Host: "127.0.0.1", Port: deadPort, Healthy: true},
		{Service: "greeter", ID: "live", Host: "127.0.0.1", Port: live.lis.Addr().(*net.TCPAddr).Port, Healthy: true},
	})
	for i := range 4 { // round-robin picks the dead one first at least twice
		rc, r, err := lbrpc.Dial(ctx, pool, lb.PickInfo{})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		var reply string
		err = rc.Call("Greeter.Hello", "dial", &reply)
		r.Done(err)
		rc.Close()
		if err != nil || reply != "live greets dial" || r.Endpoint.Instance.ID != "live" {
			t.Errorf("dial %d: %q, %v on %s", i, reply, err, r.Endpoint.Instance.ID)
		}
	}
}
