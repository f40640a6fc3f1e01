package nacos_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/regkit/regkit/nacos"
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

// The configuration client on its own: publish, read, compare-and-set, and wait
// for the next change. (Needs a running Nacos; compiled, not run, by go test.)
func ExampleConfig() {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	f, err := nacos.OpenConfig(ctx, "nacos://nacos:secret@10.0.0.1:8848/nacos?namespace=prod&group=APPS")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	if err := f.Publish(ctx, "orders.yaml", "pool: 10", ""); err != nil {
		fmt.Println(err)
		return
	}
	content, md5, err := f.Get(ctx, "orders.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	// Fails with registry.ErrVersionConflict if someone wrote in between.
	if err := f.Publish(ctx, "orders.yaml", content+"\ntimeout: 3s", md5); errors.Is(err, registry.ErrVersionConflict) {
		fmt.Println("changed meanwhile")
	}
	changed, err := f.Listen(ctx, map[string]string{"orders.yaml": nacos.MD5(content + "\ntimeout: 3s")}, 30*time.Second)
	fmt.Println(changed, err)
}

// The coordination store on Nacos 1.x-3.1: keys are configurations, versions are
// content hashes. (Needs a running Nacos; compiled, not run, by go test.)
func Example_store() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "nacos://10.0.0.1:8848?namespace=prod")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if !c.Capabilities().Store {
		fmt.Println("this server cannot list configurations or enforce casMd5")
		return
	}
	st := c.Store()
	n, err := st.Create(ctx, "/app/config/db", []byte("dsn=..."))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = st.Set(ctx, "/app/config/db", []byte("dsn=new"), n.Version)
	fmt.Println(err)
	kids, err := st.Children(ctx, "/app/config")
	fmt.Println(kids, err)
}
