// Command grpc shows gRPC over regkit: two greeter servers register once they
// serve (lbgrpc.Serve), a client dials "regkit:///greeter" with regkit's
// resolver and weighted round-robin balancer, spreads calls over both, and keeps
// working while one server stops gracefully (deregister, drain, stop).
//
//	go run ./examples/grpc                                    # on an embedded etcd
//	REGKIT_URL=zk://127.0.0.1:2181 go run ./examples/grpc      # any regkit URL
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/lb/lbgrpc"
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

// The greeter service, written by hand instead of generated from a .proto:
// /greeter.Greeter/SayHello takes and returns a google.protobuf.StringValue.
const sayHello = "/greeter.Greeter/SayHello"

type greeter struct{ name string }

var greeterDesc = grpc.ServiceDesc{
	ServiceName: "greeter.Greeter",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "SayHello", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		return wrapperspb.String("hello " + in.GetValue() + " from " + srv.(*greeter).name), nil
	}}},
}

func run(ctx context.Context, out io.Writer) error {
	url := os.Getenv("REGKIT_URL")
	if url == "" {
		e, err := embedded.Start(ctx)
		if err != nil {
			return err
		}
		defer e.Close()
		url = e.URL("grpc-example")
		fmt.Fprintln(out, "started an embedded etcd at", e.Endpoint())
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := registry.Open(ctx, url, registry.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(out, "backend:", url)

	// Two greeter servers; each is registered once it serves.
	var servers []*lbgrpc.Serving
	for i := 1; i <= 2; i++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := grpc.NewServer()
		srv.RegisterService(&greeterDesc, &greeter{name: fmt.Sprintf("greeter-%d", i)})
		s, err := lbgrpc.Serve(ctx, c, srv, lis, registry.Instance{Service: "greeter", ID: fmt.Sprintf("greeter-%d", i),
			Host: "127.0.0.1"}, lbgrpc.WithDrainDelay(time.Second))
		if err != nil {
			return err
		}
		defer s.Stop()
		servers = append(servers, s)
		fmt.Fprintln(out, "serving and registered", s.Registration().Instance().ID)
	}

	// The client: one cache (one watch per service) behind the resolver.
	view, err := cache.New(c, cache.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer view.Close()
	cc, err := grpc.NewClient("regkit:///greeter",
		grpc.WithResolvers(lbgrpc.NewBuilder(view, lbgrpc.WithLogger(quiet))),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"regkit_weighted_round_robin":{}}]}`))
	if err != nil {
		return err
	}
	defer cc.Close()
	hello := func(ctx context.Context) (string, error) {
		reply := new(wrapperspb.StringValue)
		err := cc.Invoke(ctx, sayHello, wrapperspb.String("regkit"), reply, grpc.WaitForReady(true))
		return reply.GetValue(), err
	}

	// Wait until both servers answer, then spread calls.
	seen := map[string]bool{}
	for len(seen) < 2 {
		r, err := hello(ctx)
		if err != nil {
			return err
		}
		seen[r] = true
	}
	count := map[string]int{}
	for range 10 {
		r, err := hello(ctx)
		if err != nil {
			return err
		}
		count[r]++
	}
	for _, r := range []string{"hello regkit from greeter-1", "hello regkit from greeter-2"} {
		fmt.Fprintf(out, "%d calls: %s\n", count[r], r)
	}

	// greeter-1 stops gracefully while a client keeps calling.
	var calls, failed atomic.Int64
	var lastErr atomic.Value
	cctx, stopCalls := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for cctx.Err() == nil {
			if _, err := hello(cctx); err != nil && cctx.Err() == nil {
				failed.Add(1)
				lastErr.Store(err)
			}
			calls.Add(1)
		}
	}()
	err = servers[0].GracefulStop(ctx)
	stopCalls()
	wg.Wait()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "stopped greeter-1 (deregistered, drained) during %d calls; failed calls: %d\n", calls.Load(), failed.Load())
	if failed.Load() > 0 {
		return fmt.Errorf("calls failed during the stop: %v", lastErr.Load())
	}
	clear(count)
	for range 4 {
		r, err := hello(ctx)
		if err != nil {
			return err
		}
		count[r]++
	}
	if count["hello regkit from greeter-2"] != 4 {
		return errors.New("calls still reach greeter-1")
	}
	fmt.Fprintln(out, "after the stop, 4 of 4 calls: hello regkit from greeter-2")
	return nil
}
