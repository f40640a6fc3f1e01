// Command netrpc shows net/rpc over regkit: two Greeter servers register, an
// lbrpc.Client balances calls over them with lb's round-robin, and keeps
// working when one server stops (deregistered, then closed).
//
//	go run ./examples/netrpc                                  # on an embedded etcd
//	REGKIT_URL=zk://127.0.0.1:2181 go run ./examples/netrpc    # any regkit URL
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"sync"
	"time"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/lb/lbrpc"
	_ "github.com/regkit/regkit/mem"
	_ "github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	_ "github.com/regkit/regkit/zk"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// Greeter is the net/rpc service.
type Greeter struct{ name string }

// Hello greets who.
func (g *Greeter) Hello(who string, reply *string) error {
	*reply = "hello " + who + " from " + g.name
	return nil
}

// server serves net/rpc on a listener and closes its connections on stop.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func serve(name string) (*server, error) {
	rs := rpc.NewServer()
	if err := rs.Register(&Greeter{name: name}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() { defer s.wg.Done(); rs.ServeConn(conn) }()
		}
	}()
	return s, nil
}

func (s *server) stop() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func run(ctx context.Context, out io.Writer) error {
	url := os.Getenv("REGKIT_URL")
	if url == "" {
		e, err := embedded.Start(ctx)
		if err != nil {
			return err
		}
		defer e.Close()
		url = e.URL("netrpc-example")
		fmt.Fprintln(out, "started an embedded etcd at", e.Endpoint())
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := registry.Open(ctx, url, registry.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(out, "backend:", url)

	var servers []*server
	var regs []registry.Registration
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("greeter-%d", i)
		s, err := serve(name)
		if err != nil {
			return err
		}
		defer s.stop()
		reg, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: name, Host: "127.0.0.1", Port: s.ln.Addr().(*net.TCPAddr).Port})
		if err != nil {
			return err
		}
		defer reg.Close()
		servers, regs = append(servers, s), append(regs, reg)
		fmt.Fprintln(out, "registered", name)
	}

	view, err := cache.New(c, cache.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer view.Close()
	b, err := lb.New(ctx, view, "greeter", lb.RoundRobin(), lb.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer b.Close()
	if err := waitAll(ctx, b, 2); err != nil {
		return err
	}
	client := lbrpc.NewClient(b)
	defer client.Close()
	hello := func() (string, error) {
		var reply string
		err := client.Call(ctx, "Greeter.Hello", "regkit", &reply)
		return reply, err
	}
	count := map[string]int{}
	for range 4 {
		r, err := hello()
		if err != nil {
			return err
		}
		count[r]++
	}
	for _, r := range []string{"hello regkit from greeter-1", "hello regkit from greeter-2"} {
		fmt.Fprintf(out, "%d calls: %s\n", count[r], r)
	}

	// greeter-1 stops: deregister first, then close.
	if err := regs[0].Close(); err != nil {
		return err
	}
	if err := waitAll(ctx, b, 1); err != nil {
		return err
	}
	servers[0].stop()
	fmt.Fprintln(out, "stopped greeter-1")
	clear(count)
	for range 4 {
		r, err := hello()
		if err != nil {
			return fmt.Errorf("call after greeter-1 stopped: %w", err)
		}
		count[r]++
	}
	fmt.Fprintf(out, "4 calls, %d answered by greeter-2\n", count["hello regkit from greeter-2"])
	return nil
}

// waitAll polls the balancer until it has n instances or ctx ends.
func waitAll(ctx context.Context, b *lb.Balancer, n int) error {
	for len(b.Endpoints().All) != n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d instances: %w", n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
