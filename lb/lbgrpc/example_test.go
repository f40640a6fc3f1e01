package lbgrpc_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/regkit/regkit/lb/lbgrpc"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// Two servers register once serving; a client on regkit:///greeter balances
// over them with weighted round-robin.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _ := registry.Open(ctx, "mem://lbgrpc-example", registry.WithLogger(quietLog))
	defer c.Close()
	for i := 1; i <= 2; i++ {
		lis, _ := net.Listen("tcp", "127.0.0.1:0")
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, health.NewServer())
		s, err := lbgrpc.Serve(ctx, c, srv, lis, registry.Instance{Service: "greeter", ID: fmt.Sprint("s", i), Host: "127.0.0.1"},
			lbgrpc.WithDrainDelay(100*time.Millisecond))
		if err != nil {
			panic(err)
		}
		defer s.GracefulStop(ctx)
	}

	view, _ := cache.New(c, cache.WithLogger(quietLog))
	defer view.Close()
	conn, err := grpc.NewClient("regkit:///greeter",
		grpc.WithResolvers(lbgrpc.NewBuilder(view, lbgrpc.WithLogger(quietLog))),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"regkit_weighted_round_robin":{}}]}`))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.GetStatus())
	// Output:
	// SERVING
}
