package lock_test

import (
	"context"
	"errors"
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

// Two transfers lock both accounts they touch. They list the accounts in opposite
// orders, yet cannot deadlock: a MultiLock takes its keys in sorted order. Each
// key's Hold carries that key's fencing token, for the resource it guards.
func ExampleMultiLock() {
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, accounts := range [][]string{{"/accounts/alice", "/accounts/bob"}, {"/accounts/bob", "/accounts/alice"}} {
		c, err := registry.Open(ctx, "mem://example-multilock")
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		sess, err := c.NewSession(ctx)
		if err != nil {
			log.Fatal(err)
		}
		m, err := lock.NewMultiLock(c, sess, accounts)
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				holds, err := m.Lock(ctx)
				if err != nil {
					log.Fatal(err)
				}
				for i := range holds {
					_ = holds[i].Token() // write to the account m.Keys()[i] with this token
				}
				if err := m.Unlock(ctx); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Println("both transfers done")
	// Output:
	// both transfers done
}

// TryLock takes every key or none: with one key held elsewhere it releases the
// others and answers ErrLocked.
func ExampleMultiLock_TryLock() {
	ctx := context.Background()
	a, _ := registry.Open(ctx, "mem://example-multilock-try")
	defer a.Close()
	b, _ := registry.Open(ctx, "mem://example-multilock-try")
	defer b.Close()
	sa, _ := a.NewSession(ctx)
	sb, _ := b.NewSession(ctx)
	single, _ := lock.NewMutex(a, sa, "/jobs/b")
	multi, _ := lock.NewMultiLock(b, sb, []string{"/jobs/c", "/jobs/a", "/jobs/b"})
	fmt.Println(multi.Keys())

	if _, err := single.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	_, err := multi.TryLock(ctx)
	fmt.Println(errors.Is(err, lock.ErrLocked), multi.Holds() == nil)
	_ = single.Unlock(ctx)
	holds, err := multi.TryLock(ctx)
	fmt.Println(len(holds), err)
	_ = multi.Unlock(ctx)
	// Output:
	// [/jobs/a /jobs/b /jobs/c]
	// true true
	// 3 <nil>
}
