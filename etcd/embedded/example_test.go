package embedded_test

import (
	"context"
	"fmt"
	"time"

	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/registry"
)

// A real etcd inside the process, and a registry client on it: registration,
// discovery and the store work as against any etcd.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	c, err := registry.Open(ctx, srv.URL("demo"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	reg, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: "g1", Host: "127.0.0.1", Port: 8080})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	got, _ := c.Instances(ctx, "greeter")
	fmt.Println(len(got), got[0].ID, got[0].Addr())

	if _, err := c.Store().Create(ctx, "/config/feature", []byte("on")); err != nil {
		fmt.Println(err)
		return
	}
	n, _ := c.Store().Get(ctx, "/config/feature")
	fmt.Println(n.Key, string(n.Value))
	// Output:
	// 1 g1 127.0.0.1:8080
	// /config/feature on
}
