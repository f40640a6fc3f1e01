package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
)

func Example() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://example")
	if err != nil {
		panic(err)
	}
	defer c.Close()

	reg, err := c.Register(ctx, registry.Instance{Service: "greeter", Host: "10.0.0.7", Port: 8080, Zone: "eu-1"})
	if err != nil {
		panic(err)
	}
	fmt.Println(reg.Instance().ID, reg.Instance().Weight, reg.State())

	w, err := c.Watch(ctx, "greeter")
	if err != nil {
		panic(err)
	}
	defer w.Close()
	snap, _ := w.Next(ctx)
	for _, in := range snap.Instances {
		fmt.Println(in.Addr(), in.Zone, in.Healthy)
	}

	_ = reg.Close()
	snap, _ = w.Next(ctx)
	fmt.Println(len(snap.Instances), "instances after deregistering")
	// Output:
	// 10.0.0.7:8080 100 registered
	// 10.0.0.7:8080 eu-1 true
	// 0 instances after deregistering
}

func ExampleOpen_errors() {
	ctx := context.Background()
	_, err := registry.Open(ctx, "nosuch://h:1")
	fmt.Println(err)
	_, err = registry.Open(ctx, "mem://x?timeout=3s")
	fmt.Println(err)
	// Output:
	// registry: invalid url "nosuch://h:1": unknown scheme "nosuch" (forgotten import? registered: [mem])
	// registry: invalid url "mem://x?timeout=3s": unknown query parameter "timeout" (this backend takes none)
}

func ExampleInstance_Validate() {
	err := registry.Instance{Service: "orders", Host: "10.0.0.1", Port: 0, ID: "a"}.Validate()
	fmt.Println(err)
	// Output:
	// registry: invalid Port 0: port must be in 1-65535
}

func ExampleStore() {
	ctx := context.Background()
	c, _ := registry.Open(ctx, "mem://store-example")
	defer c.Close()
	st := c.Store()

	sess, _ := c.NewSession(ctx)
	n1, _ := st.Create(ctx, "/locks/job/lock-", nil, registry.Ephemeral(sess), registry.Sequential())
	n2, _ := st.Create(ctx, "/locks/job/lock-", nil, registry.Ephemeral(sess), registry.Sequential())
	fmt.Println(n1.Key, n2.Key, n1.CreateRevision < n2.CreateRevision)

	cfg, _ := st.Create(ctx, "/config/db", []byte("v1"))
	_, err := st.Set(ctx, "/config/db", []byte("v2"), cfg.Version+1)
	fmt.Println(err != nil)
	_ = sess.Close()
	kids, _ := st.Children(ctx, "/locks/job")
	fmt.Println(len(kids), "lock nodes after the session closed")
	// Output:
	// /locks/job/lock-0000000000 /locks/job/lock-0000000001 true
	// true
	// 0 lock nodes after the session closed
}

// CreateAndChildren enqueues and tells the place in line in one step (one
// transaction on etcd and Consul): the first node in sequence order holds.
func ExampleStore_CreateAndChildren() {
	ctx := context.Background()
	c, _ := registry.Open(ctx, "mem://create-and-children")
	defer c.Close()
	sess, _ := c.NewSession(ctx)
	defer sess.Close()
	st := c.Store()

	first, _, _ := st.CreateAndChildren(ctx, "/locks/job/lock-", nil, registry.Ephemeral(sess), registry.Sequential())
	n, line, _ := st.CreateAndChildren(ctx, "/locks/job/lock-", nil, registry.Ephemeral(sess), registry.Sequential())
	fmt.Println(first.Key)
	fmt.Println(n.Key, line)
	// Output:
	// /locks/job/lock-0000000000
	// /locks/job/lock-0000000001 [lock-0000000000 lock-0000000001]
}

// A PersistentNode keeps a membership key present, bound to a session, and puts it
// back after the session is lost or someone deletes it.
func ExampleStore_NewPersistentNode() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://persistent-node")
	if err != nil {
		panic(err)
	}
	defer c.Close()

	p, err := c.Store().NewPersistentNode("/workers/w1", []byte("10.0.0.7:9000"))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	if err := p.WaitForCreate(ctx); err != nil {
		panic(err)
	}
	n, _ := c.Store().Get(ctx, "/workers/w1")
	fmt.Println(n.Key, string(n.Value), n.Session != "")
	// Output:
	// /workers/w1 10.0.0.7:9000 true
}

// A server's shutdown on SIGTERM, inside Kubernetes' 30s grace period:
// deregister, let callers notice, drain, stop.
func ExampleClient_Shutdown() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://shutdown-example")
	if err != nil {
		panic(err)
	}
	if _, err := c.Register(ctx, registry.Instance{Service: "greeter", Host: "10.0.0.7", Port: 8080}); err != nil {
		panic(err)
	}
	// A caller, elsewhere, following the service.
	caller, err := registry.Open(ctx, "mem://shutdown-example")
	if err != nil {
		panic(err)
	}
	defer caller.Close()
	w, err := caller.Watch(ctx, "greeter")
	if err != nil {
		panic(err)
	}
	defer w.Close()
	snap, _ := w.Next(ctx)
	fmt.Println(len(snap.Instances), "instance before shutdown")

	// On SIGTERM (signal.NotifyContext in a real server):
	// 1. Deregister, everything at once, within 10 of the 30 seconds.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Shutdown(sctx); err != nil {
		fmt.Println("left to the backend's expiry:", err)
	}
	// 2. Let callers notice: here the caller's watch shows it at once; in
	// production keep serving for the watches' propagation delay (a few seconds).
	snap, _ = w.Next(ctx)
	fmt.Println(len(snap.Instances), "instances once callers noticed")
	// 3. Drain in-flight requests: srv.Shutdown(ctx) or grpcServer.GracefulStop().
	// 4. Stop: return from main.

	// Output:
	// 1 instance before shutdown
	// 0 instances once callers noticed
}

func ExampleClient_WatchFunc() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://example-watchfunc")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	// The callback runs on the Client's goroutines: hand the snapshot over and
	// return (never modify it, never call into the Client from here).
	sizes := make(chan int, 16)
	stop, err := c.WatchFunc(ctx, "greeter", func(s registry.Snapshot, err error) {
		if err == nil {
			sizes <- len(s.Instances)
		}
	})
	if err != nil {
		panic(err)
	}
	defer stop()
	fmt.Println(<-sizes, "instances")
	if _, err := c.Register(ctx, registry.Instance{Service: "greeter", Host: "10.0.0.7", Port: 8080}); err != nil {
		panic(err)
	}
	fmt.Println(<-sizes, "instance")
	// Output:
	// 0 instances
	// 1 instance
}

// Services lists the services that have at least one instance, sorted;
// WatchServices follows that set.
func ExampleClient_Services() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://services-example")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	for _, in := range []registry.Instance{
		{Service: "greeter", Host: "10.0.0.7", Port: 8080},
		{Service: "greeter", Host: "10.0.0.8", Port: 8080},
		{Service: "billing", Host: "10.0.0.9", Port: 9090},
	} {
		if _, err := c.Register(ctx, in); err != nil {
			panic(err)
		}
	}
	names, err := c.Services(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(names)
	w, err := c.WatchServices(ctx)
	if err != nil {
		panic(err)
	}
	defer w.Close()
	set, err := w.Next(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(set.Services)

	// Output:
	// [billing greeter]
	// [billing greeter]
}

// A local health check tied to the registration: while it fails, the instance
// stays listed but unhealthy (registry.MarkUnhealthy), and Snapshot.Healthy
// leaves it out; the first passing run restores it.
func ExampleWithHealthCheck() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "mem://health-example")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	var dependencyUp atomic.Bool
	check := func(ctx context.Context) error {
		if !dependencyUp.Load() {
			return errors.New("database unreachable")
		}
		return nil
	}
	dependencyUp.Store(true)
	r, err := c.Register(ctx, registry.Instance{Service: "greeter", Host: "10.0.0.7", Port: 8080},
		registry.WithHealthCheck(check, 50*time.Millisecond, registry.MarkUnhealthy))
	if err != nil {
		panic(err)
	}
	defer r.Close()
	w, err := c.Watch(ctx, "greeter")
	if err != nil {
		panic(err)
	}
	defer w.Close()
	// until returns the first snapshot whose healthy instances number n.
	until := func(n int) registry.Snapshot {
		for {
			s, err := w.Next(ctx)
			if err != nil {
				panic(err)
			}
			if len(s.Instances) == 1 && len(s.Healthy()) == n {
				return s
			}
		}
	}
	s := until(1)
	fmt.Println(len(s.Instances), "listed,", len(s.Healthy()), "healthy")
	dependencyUp.Store(false)
	s = until(0)
	fmt.Println(len(s.Instances), "listed,", len(s.Healthy()), "healthy")
	dependencyUp.Store(true)
	s = until(1)
	fmt.Println(len(s.Instances), "listed,", len(s.Healthy()), "healthy")

	// Output:
	// 1 listed, 1 healthy
	// 1 listed, 0 healthy
	// 1 listed, 1 healthy
}
