package nacos_test

import (
	"context"
	"fmt"
	"time"

	_ "github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/registry"
)

// Opening Nacos from a URL: two servers, a namespace, a group, the cluster for
// instances without a Zone, and a faster watch poll. (Needs a running Nacos;
// compiled, not run, by go test.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "nacos://10.0.0.1:8848,10.0.0.2:8848/nacos?namespace=prod&group=DEFAULT_GROUP&cluster=DEFAULT&poll_interval=2s",
		registry.WithCredentials("nacos", "secret"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	reg, err := c.Register(ctx, registry.Instance{Service: "orders", Port: 8080, Weight: 100})
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
	fmt.Println(len(snap.Healthy()), snap.ProtectThreshold)
}
