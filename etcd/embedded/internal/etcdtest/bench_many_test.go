package etcdtest_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// quiet keeps the registry's warnings out of the benchmark output.
var quiet = registry.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))

// manyInstances is how many instances of one service BenchmarkRegisterMany puts.
const manyInstances = 1000

// BenchmarkRegisterMany registers 1,000 instances of one service from one Client
// (Register after Register) and, in the same iteration, puts the same 1,000 keys
// under one lease with the raw client, so both paths see the same machine load.
// It reports each path's seconds and their ratio; run with -benchtime=1x -count 6.
func BenchmarkRegisterMany(b *testing.B) {
	srv := etcdtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var regkit, native time.Duration
	for i := range b.N {
		regkit += registerMany(b, ctx, "etcd://"+srv.Endpoint()+fmt.Sprintf("/many%d?lease_ttl=10s", i))
		native += putMany(b, ctx, srv.Endpoint(), fmt.Sprintf("/rawmany%d/services/many/", i))
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(regkit.Seconds()/float64(b.N), "regkit-s")
	b.ReportMetric(native.Seconds()/float64(b.N), "native-s")
	b.ReportMetric(float64(regkit)/float64(native), "ratio")
}

// registerMany times manyInstances Registers of one service on a new Client; the
// Client's Close (deregistering them) is not timed.
func registerMany(b *testing.B, ctx context.Context, url string) time.Duration {
	b.Helper()
	c, err := registry.Open(ctx, url, quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	for j := range manyInstances {
		if _, err := c.Register(ctx, registry.Instance{Service: "many", ID: fmt.Sprint("i", j), Host: "127.0.0.1", Port: 9000 + j}); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// putMany times manyInstances raw puts under one kept-alive lease.
func putMany(b *testing.B, ctx context.Context, endpoint, prefix string) time.Duration {
	b.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	start := time.Now()
	lease, err := cli.Grant(ctx, 10)
	if err != nil {
		b.Fatal(err)
	}
	ka, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { // drained until kctx ends
		defer close(done)
		for range ka {
		}
	}()
	defer func() { kcancel(); <-done }()
	for j := range manyInstances {
		val := fmt.Sprintf(`{"id":"i%d","service":"many","host":"127.0.0.1","port":%d,"weight":100}`, j, 9000+j)
		if _, err := cli.Put(ctx, fmt.Sprint(prefix, "i", j), val, clientv3.WithLease(lease.ID)); err != nil {
			b.Fatal(err)
		}
	}
	d := time.Since(start)
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		b.Fatal(err)
	}
	return d
}
