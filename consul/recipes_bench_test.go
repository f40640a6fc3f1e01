package consul_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/recipes/recipestest"
	"github.com/regkit/regkit/registry"
)

// benchOpen opens a regkit client on namespace ns at addr with 2s blocking
// queries (as the recipes suite: a cancelled blocking query counts against
// Consul's connection limit per client until its wait runs out).
func benchOpen(b testing.TB, addr, ns string) *registry.Client {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "consul://"+addr+"/"+ns+"?check_ttl=4s&wait=2s&timeout=10s",
		registry.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// apiLocker is Consul's own api.Lock on a session of its own (created once and
// renewed, as regkit's Mutex is bound to a long-lived session).
type apiLocker struct{ l *api.Lock }

func (l apiLocker) Lock(ctx context.Context) error {
	stop := make(chan struct{})
	defer context.AfterFunc(ctx, func() { close(stop) })()
	lost, err := l.l.Lock(stop)
	if err == nil && lost == nil {
		err = ctx.Err()
	}
	return err
}

func (l apiLocker) Unlock(context.Context) error { return l.l.Unlock() }

func newAPILocker(b testing.TB, cli *api.Client, key string) recipestest.Locker {
	b.Helper()
	id, _, err := cli.Session().Create(&api.SessionEntry{TTL: "60s", LockDelay: time.Millisecond}, nil)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		_ = cli.Session().RenewPeriodic("60s", id, nil, done) // destroys the session when done closes
	}()
	b.Cleanup(func() { close(done); <-renewed })
	l, err := cli.LockOpts(&api.LockOptions{Key: key, Session: id})
	if err != nil {
		b.Fatal(err)
	}
	return apiLocker{l}
}

func benchAPI(b testing.TB, addr string) *api.Client {
	b.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cli, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return cli
}

// BenchmarkMutexUncontended measures one uncontended acquire+release of
// lock.Mutex next to Consul's api.Lock on the same dev agent, both in every
// iteration (see recipestest.BenchUncontended).
func BenchmarkMutexUncontended(b *testing.B) {
	s := startServer(b)
	c := benchOpen(b, s.srv.Addr(), "bench")
	defer c.Close()
	recipestest.BenchUncontended(b, recipestest.NewMutexLocker(b, c, "/locks/bench"),
		newAPILocker(b, benchAPI(b, s.srv.Addr()), "api-locks/bench"))
}

// BenchmarkMutexContended measures the throughput of one lock with 8 and 64
// waiters, each with a session of its own, regkit's next to api.Lock's (see
// recipestest.BenchContended). Every waiter of either kind sits in a blocking
// query, so the agent allows more than its default 200 connections per client.
func BenchmarkMutexContended(b *testing.B) {
	s := startServer(b, testenv.WithConsulMaxConnsPerClient(2000))
	c := benchOpen(b, s.srv.Addr(), "bench")
	defer c.Close()
	cli := benchAPI(b, s.srv.Addr())
	for _, w := range []int{8, 64} {
		b.Run(fmt.Sprintf("waiters=%d", w), func(b *testing.B) {
			var ours, native []recipestest.Locker
			for range w {
				ours = append(ours, recipestest.NewMutexLocker(b, c, fmt.Sprintf("/locks/c%d", w)))
				native = append(native, newAPILocker(b, cli, fmt.Sprintf("api-locks/c%d", w)))
			}
			recipestest.BenchContended(b, ours, native, 4*w)
		})
	}
}

// BenchmarkFailover measures the time from a leader's Resign, its Client's Close,
// or the cut of its connection to the moment the next candidate leads (see
// recipestest.BenchFailover), with Consul's shortest session TTL, 10s.
func BenchmarkFailover(b *testing.B) {
	s := startServer(b)
	env := recipestest.FailoverEnv{
		Open: func(b testing.TB, ns string) *registry.Client { return benchOpen(b, s.srv.Addr(), ns) },
		OpenCuttable: func(b testing.TB, ns string) (*registry.Client, func() func()) {
			return benchOpen(b, s.proxy.Addr(), ns), func() func() { s.proxy.Blackhole(); return s.proxy.Heal }
		},
		TTL: 10 * time.Second,
	}
	b.Run("after=resign", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverResign) })
	b.Run("after=close", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverClose) })
	b.Run("after=expiry", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverExpiry) })
}
