package lb_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	_ "github.com/regkit/regkit/zk"
)

// The Balancer on real backends: it follows registrations through the shared
// cache, keeps serving a stale view while the backend is down, and holds back
// the empty view after every instance deregistered until the grace period
// confirms it.
func TestBalancerOnBackends(t *testing.T) {
	t.Run("mem", func(t *testing.T) { testBalancerOn(t, "mem://lb-backend", nil) })
	t.Run("zk", func(t *testing.T) {
		zk := testenv.StartZooKeeper(t)
		testBalancerOn(t, "zk://"+zk.Addr()+"/lbtest", zk)
	})
}

func testBalancerOn(t *testing.T, url string, zk *testenv.ZooKeeper) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, url, registry.WithRetryBackoff(50*time.Millisecond, 500*time.Millisecond),
		registry.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	view, err := cache.New(c, cache.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()

	var regs []registry.Registration
	for i := range 3 {
		reg, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: fmt.Sprintf("g%d", i+1),
			Host: "127.0.0.1", Port: 9001 + i, Weight: 100 * (i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, reg)
	}
	const grace = 10 * time.Second
	clk := clockwork.NewFakeClock()
	b, err := lb.New(ctx, view, "greeter", lb.WeightedRoundRobin(), lb.WithEmptyGrace(grace), lb.WithClock(clk),
		lb.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A second Balancer of the same service shares the cache's one watch.
	b2, err := lb.New(ctx, view, "greeter", lb.RoundRobin(), lb.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()

	shares := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			r, err := b.Pick(lb.PickInfo{})
			if err != nil {
				t.Fatal(err)
			}
			got[r.Endpoint.Instance.ID]++
			r.Done(nil)
		}
		return got
	}
	poll.Until(t, 20*time.Second, "all three instances in the balancer", func() error {
		if n := len(b.Endpoints().Ready); n != 3 {
			return fmt.Errorf("%d ready", n)
		}
		return nil
	})
	if got := shares(600); got["g1"] != 100 || got["g2"] != 200 || got["g3"] != 300 {
		t.Errorf("weighted shares %v, want 100/200/300", got)
	}

	if zk != nil {
		// The backend goes away: the stale view keeps serving.
		zk.Stop()
		poll.Until(t, 30*time.Second, "stale snapshot", func() error {
			if !b.Snapshot().Stale {
				return errors.New("not stale yet")
			}
			return nil
		})
		if got := shares(6); len(got) != 3 {
			t.Errorf("stale view: picked %v, want all three", got)
		}
		zk.Restart(t)
		poll.Until(t, 30*time.Second, "fresh again with three instances", func() error {
			if s := b.Snapshot(); s.Stale || len(s.Instances) != 3 {
				return fmt.Errorf("stale=%v, %d instances", s.Stale, len(s.Instances))
			}
			return nil
		})
	}

	// Every instance deregisters: the empty view is held back for the grace
	// period (the guard's timer is the clock's only one: nothing is ejected),
	// then applied.
	for _, r := range regs {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 20*time.Second, "the cache sees no instance", func() error {
		s, err := view.Lookup(ctx, "greeter")
		if err != nil {
			return err
		}
		if len(s.Instances) != 0 {
			return fmt.Errorf("%d instances", len(s.Instances))
		}
		return nil
	})
	held, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	if err := clk.BlockUntilContext(held, 1); err != nil {
		t.Fatalf("the empty view is not held back: no grace timer (%v); Pick: %v", err, pickErr(b))
	}
	if err := pickErr(b); err != nil {
		t.Fatalf("empty view applied while held back: %v", err)
	}
	clk.Advance(grace)
	poll.Until(t, 10*time.Second, "empty view confirmed", func() error {
		if err := pickErr(b); !errors.Is(err, lb.ErrNoInstances) {
			return fmt.Errorf("still picking (%v)", err)
		}
		return nil
	})
}

func pickErr(b *lb.Balancer) error {
	r, err := b.Pick(lb.PickInfo{})
	if err == nil {
		r.Done(nil)
	}
	return err
}
