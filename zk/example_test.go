package zk_test

import (
	"context"
	"fmt"
	"time"

	"github.com/regkit/regkit/registry"
	_ "github.com/regkit/regkit/zk"
)

// Opening ZooKeeper from a URL: the server list, the chroot, the session timeout of
// the registration session, and digest credentials (the nodes this client creates
// are then readable and writable by that identity only). (Needs a running
// ZooKeeper; compiled, not run, by go test.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "zk://app:secret@10.0.0.1:2181,10.0.0.2:2181/prod?session_timeout=10s")
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

// A Go service in a Java fleet: discover the providers Dubbo registered for an
// interface, and register next to them in Dubbo's own format.
func Example_dubbo() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "zk://10.0.0.1:2181?layout=dubbo")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	providers, err := c.Instances(ctx, "org.example.DemoService")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range providers {
		fmt.Println(p.Addr(), p.Weight, p.Metadata["application"])
	}
	reg, err := c.Register(ctx, registry.Instance{Service: "org.example.DemoService", Port: 20880,
		Metadata: map[string]string{"application": "go-provider", "methods": "sayHello"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
}

// Curator x-discovery (and Spring Cloud Zookeeper) services under base path
// /services: their instances are discovered, ours are written as Curator's
// ServiceInstance JSON.
func Example_curator() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "zk://10.0.0.1:2181?layout=curator&base=/services")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	w, err := c.Watch(ctx, "orders")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	s, err := w.Next(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(s.Healthy()), "healthy instances")
}
