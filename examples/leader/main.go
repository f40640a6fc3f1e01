// Command leader shows leader election with fencing: three workers, each with a
// Client of its own as separate processes would have, campaign for one job (a
// report only one of them may write at a time). The leader writes with its term's
// fencing token to a resource that rejects tokens lower than the highest it has
// seen. The first leader dies without resigning (its Client closes: its session
// ends), the next one takes over, then resigns gracefully, and the last one leads.
//
//	go run ./examples/leader                                    # starts an embedded etcd: no server needed
//	REGKIT_URL=zk://127.0.0.1:2181/demo go run ./examples/leader  # any backend with sessions
//
// The recipes behind it are in package recipes/leader (Selector, Election, Latch);
// a term's token is its node's creation revision, so it only grows across leaders.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/registry"
	_ "github.com/regkit/regkit/zk"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// report is the fenced resource: a write carrying a token lower than the highest
// accepted one is rejected, as a database row with a token column would.
type report struct {
	mu      sync.Mutex
	highest int64
	writer  string
}

var errStale = errors.New("rejected: stale fencing token")

func (r *report) write(token int64, who string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if token < r.highest {
		return errStale
	}
	r.highest, r.writer = token, who
	return nil
}

// term is one worker's time as leader.
type term struct {
	worker int
	token  int64
}

func run(ctx context.Context, out io.Writer) error {
	url := os.Getenv("REGKIT_URL")
	if url == "" {
		e, err := embedded.Start(ctx)
		if err != nil {
			return err
		}
		defer e.Close()
		url = e.URL("leader-example")
		fmt.Fprintln(out, "started an embedded etcd at", e.Endpoint())
	}
	res := &report{}
	terms := make(chan term, 3)
	clients := make([]*registry.Client, 3)
	selectors := make([]*leader.Selector, 3)
	for i := range clients {
		c, err := registry.Open(ctx, url)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
		worker := i + 1
		s, err := leader.NewSelector(c, "/jobs/report", func(ctx context.Context, h *recipes.Hold) error {
			if err := res.write(h.Token(), fmt.Sprint("worker-", worker)); err != nil {
				return err
			}
			terms <- term{worker, h.Token()}
			<-ctx.Done() // lead until leadership ends: resigned, session lost, closed
			return nil
		})
		if err != nil {
			return err
		}
		defer s.Close(context.WithoutCancel(ctx))
		selectors[i] = s
	}
	next := func() (term, error) {
		select {
		case t := <-terms:
			fmt.Fprintf(out, "worker-%d leads, fencing token %d\n", t.worker, t.token)
			return t, nil
		case <-ctx.Done():
			return term{}, ctx.Err()
		}
	}
	first, err := next()
	if err != nil {
		return err
	}
	// The first leader's process dies: no resign, its Client (and session) closes.
	if err := clients[first.worker-1].Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "worker-%d died without resigning\n", first.worker)
	second, err := next()
	if err != nil {
		return err
	}
	// A late write of the dead leader (a paused process waking up) is rejected.
	fmt.Fprintf(out, "worker-%d's late write: %v\n", first.worker, res.write(first.token, "late"))
	// The second leader resigns gracefully.
	if err := selectors[second.worker-1].Close(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "worker-%d resigned\n", second.worker)
	third, err := next()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "tokens grew: %v; the report was last written by %s\n",
		first.token < second.token && second.token < third.token, res.writer)
	return nil
}
