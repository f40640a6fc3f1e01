package etcd_test

import (
	"context"
	"fmt"
	"time"

	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/registry"
)

// Opening etcd from a URL: endpoints, key prefix, dial timeout and the TTL of the
// registration lease. (Needs a running etcd; compiled, not run, by go test.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "etcd://10.0.0.1:2379,10.0.0.2:2379/prod?dial_timeout=3s&lease_ttl=10s")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	reg, err := c.Register(ctx, registry.Instance{Service: "orders", Port: 8080})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
}
