package lbrpc_test

import (
	"context"
	"fmt"
	"net"
	"net/rpc"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/lb/lbrpc"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// Arith is the net/rpc service of the examples.
type Arith struct{}

// Multiply sets *reply to the product of args.
func (Arith) Multiply(args [2]int, reply *int) error {
	*reply = args[0] * args[1]
	return nil
}

// serveArith serves Arith on a loopback port and registers it as service
// "arith"; the listener's Close stops it.
func serveArith(ctx context.Context, c *registry.Client) net.Listener {
	srv := rpc.NewServer()
	srv.Register(Arith{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { // ends when lis closes
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(conn) // ends when the client closes
		}
	}()
	if _, err := c.Register(ctx, registry.Instance{Service: "arith", Host: "127.0.0.1",
		Port: lis.Addr().(*net.TCPAddr).Port}); err != nil {
		panic(err)
	}
	return lis
}

// A Client calls the instances of service "arith" in turn, one connection per
// instance, trying another when a connection cannot be made.
func ExampleClient() {
	ctx := context.Background()
	c, _ := registry.Open(ctx, "mem://lbrpc-example", registry.WithLogger(quiet))
	defer c.Close()
	lis := serveArith(ctx, c)
	defer lis.Close()

	view, _ := cache.New(c, cache.WithLogger(quiet))
	defer view.Close()
	b, err := lb.New(ctx, view, "arith", lb.RoundRobin(), lb.WithLogger(quiet))
	if err != nil {
		panic(err)
	}
	defer b.Close()
	cl := lbrpc.NewClient(b)
	defer cl.Close()
	var product int
	if err := cl.Call(ctx, "Arith.Multiply", [2]int{6, 7}, &product); err != nil {
		panic(err)
	}
	fmt.Println(product)
	// Output:
	// 42
}

// Dial gives one connection to a picked instance, for callers that keep their
// own; report how it went with the Result's Done.
func ExampleDial() {
	ctx := context.Background()
	c, _ := registry.Open(ctx, "mem://lbrpc-dial-example", registry.WithLogger(quiet))
	defer c.Close()
	lis := serveArith(ctx, c)
	defer lis.Close()

	view, _ := cache.New(c, cache.WithLogger(quiet))
	defer view.Close()
	b, err := lb.New(ctx, view, "arith", lb.RoundRobin(), lb.WithLogger(quiet))
	if err != nil {
		panic(err)
	}
	defer b.Close()
	rc, r, err := lbrpc.Dial(ctx, b, lb.PickInfo{})
	if err != nil {
		panic(err)
	}
	var product int
	err = rc.Call("Arith.Multiply", [2]int{3, 5}, &product)
	r.Done(err)
	rc.Close()
	fmt.Println(product, err)
	// Output:
	// 15 <nil>
}
