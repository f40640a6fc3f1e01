package etcdtest_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/internal/latency"
	"github.com/regkit/regkit/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// BenchmarkWatchers1000 measures, in each iteration, the time from a put until
// all of 1,000 watchers of one service have seen it: 1,000 Watchers of one
// regkit Client (one server watch between them), then 1,000 clientv3.Watch of
// one raw client. It reports both p50s and p99s and the ratio of the p50s.
func BenchmarkWatchers1000(b *testing.B) {
	const n = 1000
	srv := etcdtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer writer.Close()
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	c, err := registry.Open(ctx, "etcd://"+srv.Endpoint()+"/w1k", quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ws := make([]registry.Watcher, n)
	for i := range ws {
		if ws[i], err = c.Watch(ctx, "many"); err != nil {
			b.Fatal(err)
		}
		if _, err := ws[i].Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	chs := make([]clientv3.WatchChan, n)
	for i := range chs {
		chs[i] = raw.Watch(wctx, "/raw1k/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		<-chs[i]
	}
	var regkit, native []time.Duration
	for i := range b.N {
		// regkit: a put of a valid instance record, then every watcher's Next.
		key := fmt.Sprintf("/w1k/services/many/i%d", i)
		val := fmt.Sprintf(`{"id":"i%d","service":"many","host":"127.0.0.1","port":9000,"weight":100}`, i)
		start := time.Now()
		if _, err := writer.Put(ctx, key, val); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					s, err := w.Next(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					if slices.ContainsFunc(s.Instances, func(in registry.Instance) bool { return in.ID == fmt.Sprint("i", i) }) {
						return
					}
				}
			}()
		}
		wg.Wait()
		regkit = append(regkit, time.Since(start))
		// native: a put under the raw prefix, then an event on every watch.
		start = time.Now()
		if _, err := writer.Put(ctx, fmt.Sprintf("/raw1k/i%d", i), val); err != nil {
			b.Fatal(err)
		}
		for _, ch := range chs {
			<-ch
		}
		native = append(native, time.Since(start))
	}
	latency.ReportPair(b, regkit, native)
}

// BenchmarkServicesGoroutines watches 10,000 services (empty) from one Client
// and reports the goroutines the process runs beyond those before the Client
// was opened, and how long the first snapshot of all of them took.
func BenchmarkServicesGoroutines(b *testing.B) {
	const services = 10000
	srv := etcdtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gor, syncS float64
	for range b.N {
		base := runtime.NumGoroutine()
		c, err := registry.Open(ctx, "etcd://"+srv.Endpoint()+"/g10k", quiet)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		ws := make([]registry.Watcher, services)
		for i := range ws {
			if ws[i], err = c.Watch(ctx, fmt.Sprintf("svc-%05d", i)); err != nil {
				b.Fatal(err)
			}
		}
		for _, w := range ws {
			if _, err := w.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
		syncS += time.Since(start).Seconds()
		gor += float64(runtime.NumGoroutine() - base)
		c.Close()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(gor/float64(b.N), "goroutines")
	b.ReportMetric(syncS/float64(b.N), "sync-s")
}
