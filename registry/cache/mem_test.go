package cache_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
)

// TestMemBackend runs the cache over a real registry.Client on the in-memory
// backend: registration seen, outage served stale, recovery.
func TestMemBackend(t *testing.T) {
	ctx := ctxT(t)
	name := fmt.Sprintf("cache-%d", time.Now().UnixNano())
	cl, err := registry.Open(ctx, "mem://"+name, registry.WithLogger(quiet),
		registry.WithRetryBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reg, err := cl.Register(ctx, registry.Instance{ID: "i1", Service: "svc", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	c := newCache(t, cl)
	s, err := c.Lookup(ctx, "svc")
	if err != nil || len(s.Instances) != 1 || s.Instances[0].ID != "i1" || s.Stale {
		t.Fatalf("Lookup = %+v, %v", s, err)
	}
	srv := mem.Lookup(name)
	srv.Cut()
	eventually(t, "stale during the cut", func() bool {
		s, err := c.Lookup(ctx, "svc")
		return err == nil && s.Stale && len(s.Instances) == 1
	})
	srv.Heal()
	eventually(t, "recovery", func() bool {
		s, err := c.Lookup(ctx, "svc")
		return err == nil && !s.Stale && len(s.Instances) == 1
	})
	c.Close()
}

// Over a registry.Client the Cache follows services through pushed snapshots
// (Client.WatchFunc): the goroutines do not grow with the services looked up,
// and a registration still reaches Lookup.
func TestCacheGoroutinesDoNotGrowWithServices(t *testing.T) {
	ctx := ctxT(t)
	cl, err := registry.Open(ctx, fmt.Sprintf("mem://cache-g-%d", time.Now().UnixNano()), registry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := newCache(t, cl)
	defer c.Close()
	if _, err := c.Lookup(ctx, "warm"); err != nil { // the backend's own goroutines start
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	const services = 300
	for i := range services {
		if _, err := c.Lookup(ctx, fmt.Sprint("svc", i)); err != nil {
			t.Fatal(err)
		}
	}
	if grew := runtime.NumGoroutine() - before; grew > services/10 {
		t.Fatalf("%d more goroutines after looking up %d services", grew, services)
	}
	reg, err := cl.Register(ctx, registry.Instance{ID: "i1", Service: "svc7", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	eventually(t, "the registration in the cache", func() bool {
		s, err := c.Lookup(ctx, "svc7")
		return err == nil && len(s.Instances) == 1
	})
}
