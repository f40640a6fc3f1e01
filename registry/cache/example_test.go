package cache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// Example serves lookups of a service from memory. The Discovery here is the
// test fake; in a program it is a *registry.Client from registry.Open.
func Example() {
	var d registry.Discovery = newExampleDiscovery()

	c, err := cache.New(d, cache.WithProtectThreshold(0.5, 30*time.Second))
	if err != nil {
		panic(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The first lookup starts the shared watch and waits for its first snapshot;
	// later ones answer from memory.
	s, err := c.Lookup(ctx, "orders")
	if err != nil {
		panic(err)
	}
	for _, in := range s.Instances {
		fmt.Println(in.ID, in.Addr(), "stale:", s.Stale)
	}
	// Output:
	// a 10.0.0.1:8001 stale: false
	// b 10.0.0.1:8000 stale: false
}

func newExampleDiscovery() *fakeDiscovery {
	f := &fakeDiscovery{}
	f.Publish(registry.Snapshot{Service: "orders", Instances: insts("orders", "b", "a"), LastGood: time.Now()})
	return f
}
