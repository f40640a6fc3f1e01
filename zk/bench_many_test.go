package zk_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry"
)

// manyInstances is how many instances of one service BenchmarkRegisterMany puts.
const manyInstances = 1000

// manyChunk is how many registrations of each path BenchmarkRegisterMany times
// in a row before the other path takes its turn.
const manyChunk = 50

// BenchmarkRegisterMany registers 1,000 instances of one service from one Client
// (Register after Register) and creates the same 1,000 ephemeral nodes with a
// raw go-zookeeper connection, the two paths taking turns every 50
// registrations (back to back within a turn, as a program registering many
// instances does), so both see the same machine load. It reports each path's
// seconds and their ratio; run with -benchtime=1x -count 6.
func BenchmarkRegisterMany(b *testing.B) {
	e := newEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var regkit, native time.Duration
	for i := range b.N {
		r, n := registerMany(b, ctx, fmt.Sprintf("zk://%s/many%d", e.srv.Addr(), i), e.srv.Addr(), fmt.Sprintf("/rawmany%d", i))
		regkit += r
		native += n
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(regkit.Seconds()/float64(b.N), "regkit-s")
	b.ReportMetric(native.Seconds()/float64(b.N), "native-s")
	b.ReportMetric(float64(regkit)/float64(native), "ratio")
}

// registerMany times manyInstances Registers of one service on a new Client
// and manyInstances raw ephemeral creates under root/many (the directories'
// creation included) on a new connection, taking turns every manyChunk; the
// Client's Close (deregistering them) and the connection's are not timed.
func registerMany(b *testing.B, ctx context.Context, url, addr, root string) (regkit, native time.Duration) {
	b.Helper()
	c, err := registry.Open(ctx, url, quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	raw, events, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogger(nopLogger{}))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		raw.Close()
		for range events {
		}
	}()
	for ev := range events {
		if ev.State == zk.StateHasSession {
			break
		}
	}
	acl := zk.WorldACL(zk.PermAll)
	start := time.Now()
	for _, p := range []string{root, root + "/many"} {
		if _, err := raw.Create(p, nil, 0, acl); err != nil && err != zk.ErrNodeExists {
			b.Fatal(err)
		}
	}
	native += time.Since(start)
	for from := 0; from < manyInstances; from += manyChunk {
		start := time.Now()
		for j := from; j < from+manyChunk; j++ {
			if _, err := c.Register(ctx, registry.Instance{Service: "many", ID: fmt.Sprint("i", j), Host: "127.0.0.1", Port: 9000 + j}); err != nil {
				b.Fatal(err)
			}
		}
		regkit += time.Since(start)
		start = time.Now()
		for j := from; j < from+manyChunk; j++ {
			data := fmt.Sprintf(`{"id":"i%d","service":"many","host":"127.0.0.1","port":%d,"weight":100}`, j, 9000+j)
			if _, err := raw.Create(fmt.Sprintf("%s/many/i%d", root, j), []byte(data), zk.FlagEphemeral, acl); err != nil {
				b.Fatal(err)
			}
		}
		native += time.Since(start)
	}
	return regkit, native
}
