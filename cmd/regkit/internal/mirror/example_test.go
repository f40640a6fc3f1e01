package mirror_test

import (
	"context"
	"fmt"
	"time"

	"github.com/regkit/regkit/cmd/regkit/internal/mirror"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// Example copies the instances of one in-process registry to another: the copy
// has the source's address and says where it came from.
func Example() {
	ctx := context.Background()
	exact := registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true})
	zk, _ := registry.Open(ctx, "mem://example-zk", exact) // stands for zk://...
	defer zk.Close()
	nacos, _ := registry.Open(ctx, "mem://example-nacos", exact) // stands for nacos://...
	defer nacos.Close()
	reg, _ := zk.Register(ctx, registry.Instance{Service: "greeter", ID: "g1", Host: "10.0.0.7", Port: 8080})
	defer reg.Close()

	s, err := mirror.New([]mirror.Route{{
		From: mirror.Endpoint{Client: zk, Name: "zk"},
		To:   mirror.Endpoint{Client: nacos, Name: "nacos"},
	}}, mirror.WithMemberID("m1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	w, _ := nacos.Watch(ctx, "greeter")
	defer w.Close()
	for {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := w.Next(wctx)
		cancel()
		if err != nil {
			fmt.Println(err)
			break
		}
		if len(snap.Instances) == 1 {
			in := snap.Instances[0]
			fmt.Println(in.ID, in.Addr(), in.Metadata[mirror.MetaSourceCluster], in.Metadata[mirror.MetaSourceID])
			break
		}
	}
	stop()
	fmt.Println(<-done)
	// Output:
	// g1~m1 10.0.0.7:8080 zk g1
	// <nil>
}
