package barrier_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes/barrier"
	"github.com/regkit/regkit/registry"
)

// A barrier holds workers back until the coordinator removes it.
func ExampleBarrier() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://example-barrier")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	b, err := barrier.New(c, "/barriers/deploy")
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Set(ctx); err != nil {
		log.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		if err := b.Wait(ctx); err != nil { // waits while the barrier is set
			log.Fatal(err)
		}
		close(released)
	}()
	fmt.Println("barrier set; the worker waits")
	if err := b.Remove(ctx); err != nil {
		log.Fatal(err)
	}
	<-released
	fmt.Println("barrier removed; the worker goes on")
	// Output:
	// barrier set; the worker waits
	// barrier removed; the worker goes on
}

// A double barrier of 3: nobody starts before all three entered, nobody leaves
// before all three left.
func ExampleDouble() {
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	entered := 0
	for range 3 {
		c, err := registry.Open(ctx, "mem://example-double")
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		s, err := c.NewSession(ctx)
		if err != nil {
			log.Fatal(err)
		}
		d, err := barrier.NewDouble(c, s, "/barriers/round", 3)
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Enter(ctx); err != nil {
				log.Fatal(err)
			}
			mu.Lock()
			entered++
			mu.Unlock()
			if err := d.Leave(ctx); err != nil {
				log.Fatal(err)
			}
		}()
	}
	wg.Wait()
	fmt.Println("entered:", entered)
	// Output:
	// entered: 3
}
