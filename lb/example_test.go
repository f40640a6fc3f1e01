package lb_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/regkit/regkit/lb"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// A Balancer over the shared cache: calls spread by weight, and a failing
// instance is ejected.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "mem://lb-example")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	for i, w := range []int{300, 100, 100} {
		if _, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: fmt.Sprintf("g%d", i+1),
			Host: "10.0.0.1", Port: 8001 + i, Weight: w}); err != nil {
			panic(err)
		}
	}
	// One cache per process: every Balancer and lookup of a service shares its watch.
	view, err := cache.New(c)
	if err != nil {
		panic(err)
	}
	defer view.Close()

	b, err := lb.New(ctx, view, "greeter", lb.WeightedRoundRobin(),
		lb.WithEjection(lb.Ejection{ConsecutiveFailures: 2, BaseTime: time.Minute}))
	if err != nil {
		panic(err)
	}
	defer b.Close()

	call := func() string {
		r, err := b.Pick(lb.PickInfo{})
		if err != nil {
			panic(err)
		}
		var callErr error
		if r.Endpoint.Instance.ID == "g3" {
			callErr = errors.New("connection refused") // g3 is down
		}
		r.Done(callErr)
		return r.Endpoint.Instance.ID
	}
	count := map[string]int{}
	for range 50 { // g3 fails twice and is ejected for a minute
		count[call()]++
	}
	fmt.Println("calls to g3:", count["g3"])
	for _, s := range b.Stats() {
		fmt.Println(s.ID, "ejected:", s.Ejected)
	}
	clear(count)
	for range 40 { // the others share by weight, 3:1
		count[call()]++
	}
	fmt.Println("g1:", count["g1"], "g2:", count["g2"], "g3:", count["g3"])
	// Output:
	// calls to g3: 2
	// g1 ejected: false
	// g2 ejected: false
	// g3 ejected: true
	// g1: 30 g2: 10 g3: 0
}

// Sticky keys: a user's calls go to the same instance.
func ExampleConsistentHash() {
	p, err := lb.NewPool(lb.ConsistentHash(lb.ConsistentHashConfig{}))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	p.Update([]registry.Instance{
		{ID: "a", Host: "10.0.0.1", Port: 80, Healthy: true},
		{ID: "b", Host: "10.0.0.2", Port: 80, Healthy: true},
		{ID: "c", Host: "10.0.0.3", Port: 80, Healthy: true},
	})
	first, _ := p.Pick(lb.PickInfo{Key: "user-42"})
	first.Done(nil)
	same := true
	for range 10 {
		r, _ := p.Pick(lb.PickInfo{Key: "user-42"})
		same = same && r.Endpoint == first.Endpoint
		r.Done(nil)
	}
	fmt.Println("sticky:", same)
	// Output:
	// sticky: true
}

// Prefer the caller's zone while at least half of it is ready.
func ExampleZoneAware() {
	p, err := lb.NewPool(lb.ZoneAware("eu-1", 0.5, lb.RoundRobin()))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	p.Update([]registry.Instance{
		{ID: "eu-a", Host: "10.0.0.1", Port: 80, Zone: "eu-1", Healthy: true},
		{ID: "eu-b", Host: "10.0.0.2", Port: 80, Zone: "eu-1", Healthy: true},
		{ID: "us-a", Host: "10.1.0.1", Port: 80, Zone: "us-1", Healthy: true},
	})
	fmt.Println(len(p.Endpoints().Ready), "ready;", "picked zone:", pickZone(p))
	p.Update([]registry.Instance{
		{ID: "eu-a", Host: "10.0.0.1", Port: 80, Zone: "eu-1", Healthy: false},
		{ID: "eu-b", Host: "10.0.0.2", Port: 80, Zone: "eu-1", Healthy: false},
		{ID: "eu-c", Host: "10.0.0.3", Port: 80, Zone: "eu-1", Healthy: true},
		{ID: "us-a", Host: "10.1.0.1", Port: 80, Zone: "us-1", Healthy: true},
	})
	zones := map[string]bool{}
	for range 4 {
		zones[pickZone(p)] = true
	}
	fmt.Println("1 of 3 local ready, spill over:", zones["eu-1"] && zones["us-1"])
	// Output:
	// 3 ready; picked zone: eu-1
	// 1 of 3 local ready, spill over: true
}

func pickZone(p *lb.Pool) string {
	r, err := p.Pick(lb.PickInfo{})
	if err != nil {
		return err.Error()
	}
	r.Done(nil)
	return r.Endpoint.Instance.Zone
}
