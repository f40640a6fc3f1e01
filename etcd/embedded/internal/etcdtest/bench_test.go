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
// watcher on another connection sees it: through regkit (Register, then
// Watcher.Next) and through the raw client (Put, then the clientv3.Watch event), on
// the same server in the same run. Each iteration also removes the instance again,
// outside the measured time. Run with -benchtime=200x for stable percentiles.
func BenchmarkRegisterToWatch(b *testing.B) {
	srv := etcdtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	b.Run("regkit", func(b *testing.B) {
		open := func() *registry.Client {
			c, err := registry.Open(ctx, "etcd://"+srv.Endpoint()+"/bench?lease_ttl=10s")
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
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			r, err := reg.Register(ctx, registry.Instance{Service: "bench", ID: fmt.Sprint("i", i), Host: "127.0.0.1", Port: 9000})
			if err != nil {
				b.Fatal(err)
			}
			waitN(1)
			lat = append(lat, time.Since(start))
			b.StopTimer()
			if err := r.Deregister(ctx); err != nil {
				b.Fatal(err)
			}
			waitN(0)
			b.StartTimer()
		}
		b.StopTimer()
		latency.Report(b, lat)
	})

	b.Run("raw-clientv3", func(b *testing.B) {
		open := func() *clientv3.Client {
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		put, watch := open(), open()
		defer put.Close()
		defer watch.Close()
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
		wch := watch.Watch(ctx, "/raw/services/bench/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
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
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			key := fmt.Sprint("/raw/services/bench/i", i)
			start := time.Now()
			if _, err := put.Put(ctx, key, `{"id":"x","host":"127.0.0.1","port":9000}`, clientv3.WithLease(lease.ID)); err != nil {
				b.Fatal(err)
			}
			waitEvent(false)
			lat = append(lat, time.Since(start))
			b.StopTimer()
			if _, err := put.Delete(ctx, key); err != nil {
				b.Fatal(err)
			}
			waitEvent(true)
			b.StartTimer()
		}
		b.StopTimer()
		latency.Report(b, lat)
	})
}
