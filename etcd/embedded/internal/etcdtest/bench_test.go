package etcdtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/internal/latency"
	"github.com/regkit/regkit/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// BenchmarkRegisterToWatch measures the time from a registration to the moment a
// watcher on another connection sees it, through regkit (Register, then
// Watcher.Next) and through the raw client (Put, then the clientv3.Watch event),
// on the same server, the two paths taking turns in every iteration so that both
// see the same machine load. Each iteration also removes the instances again,
// outside the measured time. Run with -benchtime=200x for stable percentiles;
// it reports both paths' p50 and p99 and their ratios (latency.ReportPair).
func BenchmarkRegisterToWatch(b *testing.B) {
	srv := etcdtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	open := func() *registry.Client {
		c, err := registry.Open(ctx, "etcd://"+srv.Endpoint()+"/bench?lease_ttl=10s", quiet)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	reg, watch := open(), open()
	defer reg.Close()
	defer watch.Close()
	w, err := watch.Watch(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	waitN := func(n int) {
		for {
			s, err := w.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if len(s.Instances) == n {
				return
			}
		}
	}
	waitN(0)

	rawOpen := func() *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	put, rawWatch := rawOpen(), rawOpen()
	defer put.Close()
	defer rawWatch.Close()
	lease, err := put.Grant(ctx, 10)
	if err != nil {
		b.Fatal(err)
	}
	ka, err := put.KeepAlive(ctx, lease.ID)
	if err != nil {
		b.Fatal(err)
	}
	go func() { // drained until ctx ends (cancel above)
		for range ka {
		}
	}()
	wch := rawWatch.Watch(ctx, "/raw/services/bench/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	<-wch // created
	waitEvent := func(deleted bool) {
		for resp := range wch {
			for _, ev := range resp.Events {
				if (ev.Type == clientv3.EventTypeDelete) == deleted {
					return
				}
			}
		}
		b.Fatal("watch channel closed")
	}

	regkit := make([]time.Duration, 0, b.N)
	native := make([]time.Duration, 0, b.N)
	for i := range b.N {
		start := time.Now()
		r, err := reg.Register(ctx, registry.Instance{Service: "bench", ID: fmt.Sprint("i", i), Host: "127.0.0.1", Port: 9000})
		if err != nil {
			b.Fatal(err)
		}
		waitN(1)
		regkit = append(regkit, time.Since(start))
		if err := r.Deregister(ctx); err != nil {
			b.Fatal(err)
		}
		waitN(0)

		key := fmt.Sprint("/raw/services/bench/i", i)
		start = time.Now()
		if _, err := put.Put(ctx, key, `{"id":"x","host":"127.0.0.1","port":9000}`, clientv3.WithLease(lease.ID)); err != nil {
			b.Fatal(err)
		}
		waitEvent(false)
		native = append(native, time.Since(start))
		if _, err := put.Delete(ctx, key); err != nil {
			b.Fatal(err)
		}
		waitEvent(true)
	}
	latency.ReportPair(b, regkit, native)
}
