package cache_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// fleet puts services × perService instances on a fresh mem server (through the
// driver, without registrations) and returns its URL.
func fleet(tb testing.TB, ctx context.Context, services, perService int) string {
	tb.Helper()
	url := fmt.Sprintf("mem://fleet-%d", time.Now().UnixNano())
	w, err := registry.Open(ctx, url, registry.WithLogger(quiet))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.Close() })
	for s := range services {
		for i := range perService {
			in := registry.Instance{Service: fmt.Sprintf("svc-%05d", s), ID: fmt.Sprintf("i%02d", i),
				Host: fmt.Sprintf("10.%d.%d.%d", s/250%250, s%250, i), Port: 8080, Weight: 100, Zone: "zone-a",
				Metadata: map[string]string{"version": "1.4.2", "protocol": "grpc"}}
			if _, err := w.Conn().Put(ctx, in); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return url
}

// writeHeapProfile writes the live heap to file (for scripts/bench.sh's profiles).
func writeHeapProfile(tb testing.TB, file string) {
	f, err := os.Create(file)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

func heapMB() float64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// BenchmarkFleet follows 10,000 services of 10 instances each through one Cache
// over one Client on the mem backend: the initial sync (a Lookup of each, in
// turn), the heap the Client and the Cache hold afterwards (after GC, the mem
// server's own data excluded) and their goroutines. Run with -benchtime=1x.
func BenchmarkFleet(b *testing.B) {
	const services, perService = 10000, 10
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	url := fleet(b, ctx, services, perService)
	var syncS, heap, gor float64
	for range b.N {
		baseHeap, baseG := heapMB(), runtime.NumGoroutine()
		cl, err := registry.Open(ctx, url, registry.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		c, err := cache.New(cl, cache.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for s := range services {
			snap, err := c.Lookup(ctx, fmt.Sprintf("svc-%05d", s))
			if err != nil || len(snap.Instances) != perService {
				b.Fatalf("lookup %d: %d instances, %v", s, len(snap.Instances), err)
			}
		}
		syncS += time.Since(start).Seconds()
		heap += heapMB() - baseHeap
		if f := os.Getenv("REGKIT_FLEET_HEAPPROFILE"); f != "" {
			writeHeapProfile(b, f)
		}
		gor += float64(runtime.NumGoroutine() - baseG)
		c.Close()
		cl.Close()
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(syncS/n, "sync-s")
	b.ReportMetric(heap/n, "heap-MB")
	b.ReportMetric(gor/n, "goroutines")
}
