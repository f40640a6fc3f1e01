package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// BenchmarkMutexUncontended measures one uncontended acquire+release of
// lock.Mutex and of etcd's concurrency.Mutex on the same embedded etcd, both
// in every iteration (interleaved, so load and server state hit both alike), and
// reports each as acquire+release per second and their ratio.
func BenchmarkMutexUncontended(b *testing.B) {
	srv := etcdtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := registry.Open(ctx, "etcd://"+srv.Endpoint()+"/bench?lease_ttl=10s")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession(ctx)
	if err != nil {
		b.Fatal(err)
	}
	m, err := lock.NewMutex(c, sess, "/locks/bench")
	if err != nil {
		b.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	es, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		b.Fatal(err)
	}
	defer es.Close()
	em := concurrency.NewMutex(es, "/etcd-locks/bench")
	var ours, theirs time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := m.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := m.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := em.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := em.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		ours += t1.Sub(t0)
		theirs += time.Since(t1)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/ours.Seconds(), "regkit-ops/s")
	b.ReportMetric(n/theirs.Seconds(), "etcd-ops/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
}
