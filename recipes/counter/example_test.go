package counter_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes/counter"
	"github.com/regkit/regkit/registry"
)

// Add is an atomic increment (compare-and-set, retried on conflict); TrySet
// writes only over the version it read, like Curator's SharedCount.
func ExampleCount() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://example-counter")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	n, err := counter.NewCount(ctx, c, "/counters/jobs", 0)
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.Add(ctx, 1); err != nil {
				log.Fatal(err)
			}
		}()
	}
	wg.Wait()
	v, err := n.Get(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after 10 concurrent Adds:", v.Value)
	if _, ok, err := n.TrySet(ctx, v, 100); err != nil || !ok {
		log.Fatal(ok, err)
	}
	_, ok, err := n.TrySet(ctx, v, 200) // v is stale now
	fmt.Println("TrySet over a stale version:", ok, err)
	// Output:
	// after 10 concurrent Adds: 10
	// TrySet over a stale version: false <nil>
}
