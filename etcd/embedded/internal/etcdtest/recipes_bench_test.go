package etcdtest_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/recipes/recipestest"
	"github.com/regkit/regkit/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// benchOpen opens a regkit client on namespace ns of the server at endpoint.
func benchOpen(b testing.TB, endpoint, ns string) *registry.Client {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "etcd://"+endpoint+"/"+ns+"?lease_ttl=10s",
		registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// etcdLocker is etcd's own concurrency.Mutex with a session of its own.
type etcdLocker struct{ m *concurrency.Mutex }

func (l etcdLocker) Lock(ctx context.Context) error   { return l.m.Lock(ctx) }
func (l etcdLocker) Unlock(ctx context.Context) error { return l.m.Unlock(ctx) }

func newEtcdLocker(b testing.TB, cli *clientv3.Client, key string) recipestest.Locker {
	b.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return etcdLocker{concurrency.NewMutex(s, key)}
}

func benchClient(b testing.TB, endpoint string) *clientv3.Client {
	b.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return cli
}

// BenchmarkMutexUncontended measures one uncontended acquire+release of
// lock.Mutex and of etcd's concurrency.Mutex on the same embedded etcd, both
// in every iteration (interleaved, so load and server state hit both alike), and
// reports each as acquire+release per second and their ratio.
func BenchmarkMutexUncontended(b *testing.B) {
	srv := etcdtest.Start(b)
	c := benchOpen(b, srv.Endpoint(), "bench")
	defer c.Close()
	recipestest.BenchUncontended(b, recipestest.NewMutexLocker(b, c, "/locks/bench"),
		newEtcdLocker(b, benchClient(b, srv.Endpoint()), "/etcd-locks/bench"))
}

// BenchmarkMutexContended measures the throughput of one lock with 8 and 64
// waiters, each with a session of its own, regkit's next to concurrency.Mutex's
// (see recipestest.BenchContended).
func BenchmarkMutexContended(b *testing.B) {
	srv := etcdtest.Start(b)
	c := benchOpen(b, srv.Endpoint(), "bench")
	defer c.Close()
	cli := benchClient(b, srv.Endpoint())
	for _, w := range []int{8, 64} {
		b.Run(fmt.Sprintf("waiters=%d", w), func(b *testing.B) {
			var ours, native []recipestest.Locker
			for range w {
				ours = append(ours, recipestest.NewMutexLocker(b, c, fmt.Sprintf("/locks/c%d", w)))
				native = append(native, newEtcdLocker(b, cli, fmt.Sprintf("/etcd-locks/c%d", w)))
			}
			recipestest.BenchContended(b, ours, native, 4*w)
		})
	}
}

// BenchmarkFailover measures the time from a leader's Resign, its Client's Close,
// or the cut of its connection to the moment the next candidate leads (see
// recipestest.BenchFailover), with 3s leases.
func BenchmarkFailover(b *testing.B) {
	srv := etcdtest.Start(b)
	proxy := testenv.NewProxy(b, srv.Endpoint())
	open := func(addr string) func(b testing.TB, ns string) *registry.Client {
		return func(b testing.TB, ns string) *registry.Client {
			b.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := registry.Open(ctx, "etcd://"+addr+"/"+ns+"?lease_ttl=3s&dial_timeout=10s",
				registry.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
	}
	env := recipestest.FailoverEnv{
		Open: open(srv.Endpoint()),
		OpenCuttable: func(b testing.TB, ns string) (*registry.Client, func() func()) {
			return open(proxy.Addr())(b, ns), func() func() { proxy.Blackhole(); return proxy.Heal }
		},
		TTL: 3 * time.Second,
	}
	b.Run("after=resign", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverResign) })
	b.Run("after=close", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverClose) })
	b.Run("after=expiry", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverExpiry) })
}
