package lock_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

// Three workers, each with a client and session of its own (as three processes
// would have), take turns in a critical section. Each acquisition carries a
// fencing token that grows from holder to holder, and a context that ends if the
// holder can no longer be sure it holds.
func ExampleMutex() {
	ctx := context.Background()
	var mu sync.Mutex
	var tokens []int64
	var wg sync.WaitGroup
	for range 3 {
		c, err := registry.Open(ctx, "mem://example-mutex")
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		sess, err := c.NewSession(ctx)
		if err != nil {
			log.Fatal(err)
		}
		m, err := lock.NewMutex(c, sess, "/locks/report")
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hold, err := m.Lock(ctx)
			if err != nil {
				log.Fatal(err)
			}
			defer m.Unlock(ctx)
			select {
			case <-hold.Done(): // session suspended or lost: stop, do not write
				return
			default:
			}
			mu.Lock()
			tokens = append(tokens, hold.Token()) // write with the token to a fenced resource
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Println(len(tokens), tokens[0] < tokens[1] && tokens[1] < tokens[2])
	// Output:
	// 3 true
}

// TryLock answers at once.
func ExampleMutex_TryLock() {
	ctx := context.Background()
	a, _ := registry.Open(ctx, "mem://example-trylock")
	defer a.Close()
	b, _ := registry.Open(ctx, "mem://example-trylock")
	defer b.Close()
	sa, _ := a.NewSession(ctx)
	sb, _ := b.NewSession(ctx)
	ma, _ := lock.NewMutex(a, sa, "/locks/job")
	mb, _ := lock.NewMutex(b, sb, "/locks/job")

	if _, err := ma.TryLock(ctx); err != nil {
		log.Fatal(err)
	}
	_, err := mb.TryLock(ctx)
	fmt.Println(err)
	_ = ma.Unlock(ctx)
	_, err = mb.TryLock(ctx)
	fmt.Println(err)
	// Output:
	// lock: /locks/job: lock: held by another holder
	// <nil>
}
