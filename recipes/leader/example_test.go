package leader_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"

	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/registry"
)

// fencedStore is a resource that rejects writes carrying a token lower than the
// highest it has accepted: a database row with a token column, a storage service
// that checks a header.
type fencedStore struct {
	mu      sync.Mutex
	highest int64
	value   string
}

var errStaleToken = errors.New("rejected: stale fencing token")

func (f *fencedStore) Write(token int64, v string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if token < f.highest {
		return errStaleToken
	}
	f.highest, f.value = token, v
	return nil
}

// A leader writes with its term's fencing token. When its session expires while
// it is not looking (a long GC pause, say), the next leader's writes carry a
// larger token, so the old leader's late write is rejected, and its term's
// context tells it why once it looks.
func Example_fencedLeader() {
	ctx := context.Background()
	store := &fencedStore{}
	a, err := registry.Open(ctx, "mem://example-leader")
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := registry.Open(ctx, "mem://example-leader")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	sa, err := a.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	ea, err := leader.NewElection(a, sa, "/election/reporter")
	if err != nil {
		log.Fatal(err)
	}
	termA, err := ea.Campaign(ctx, []byte("a"))
	if err != nil {
		log.Fatal(err)
	}
	sb, err := b.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	eb, err := leader.NewElection(b, sb, "/election/reporter")
	if err != nil {
		log.Fatal(err)
	}
	bLeads := make(chan *recipes.Hold, 1)
	go func() {
		term, err := eb.Campaign(ctx, []byte("b")) // waits while a leads
		if err != nil {
			log.Fatal(err)
		}
		bLeads <- term
	}()
	fmt.Println("a writes:", store.Write(termA.Token(), "from a"))

	a.Conn().(*mem.Conn).ExpireSession() // a's session is lost while a is paused

	termB := <-bLeads
	fmt.Println("b writes:", store.Write(termB.Token(), "from b"))
	fmt.Println("a's late write:", store.Write(termA.Token(), "late from a"))
	<-termA.Done()
	fmt.Println("a's term ended:", errors.Is(termA.Err(), registry.ErrSessionLost))
	l, err := leader.LeaderOf(ctx, b, "/election/reporter")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leader %s, value %q\n", l.Value, store.value)
	// Output:
	// a writes: <nil>
	// b writes: <nil>
	// a's late write: rejected: stale fencing token
	// a's term ended: true
	// leader b, value "from b"
}

// A selector's callback runs while it leads; its context ends with leadership.
func ExampleSelector() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://example-selector")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	led := make(chan int64, 1)
	sel, err := leader.NewSelector(c, "/election/compactor", func(ctx context.Context, term *recipes.Hold) error {
		led <- term.Token()
		<-ctx.Done() // lead until leadership ends or the selector closes
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	tok := <-led
	fmt.Println(tok > 0, sel.HasLeadership())
	if err := sel.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(sel.HasLeadership())
	// Output:
	// true true
	// false
}
