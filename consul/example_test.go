package consul_test

import (
	"context"
	"fmt"
	"time"

	"github.com/regkit/regkit/consul"
	"github.com/regkit/regkit/registry"
)

// Opening Consul from a URL: the local agent, a namespace ("prod": Consul service
// "prod-orders", store keys under "prod/kv"), the ACL token, the TTL of the
// registration's check and an extra HTTP check. (Needs a running agent; compiled,
// not run, by go test.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "consul://127.0.0.1:8500/prod?token=my-acl-token&check_ttl=10s&deregister_after=1m",
		consul.WithChecks(consul.HTTPCheck("/healthz", 5*time.Second)))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	reg, err := c.Register(ctx, registry.Instance{Service: "orders", Port: 8080, Zone: "eu-west-1a"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	w, err := c.Watch(ctx, "orders")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	snap, err := w.Next(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(snap.Instances), "passing instances of orders")
}
