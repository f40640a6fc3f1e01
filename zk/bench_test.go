package zk_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/latency"
	"github.com/regkit/regkit/registry"
	rzk "github.com/regkit/regkit/zk"
)

// quiet keeps the registry's warnings (expected during the faults the benchmarks
// inject) out of the benchmark output.
var quiet = registry.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))

// reportPercentiles reports the p50 and p99 of per-iteration latencies.
func reportPercentiles(b *testing.B, lat []time.Duration) {
	latency.Report(b, lat)
	b.ReportMetric(0, "ns/op") // the percentiles are the result, not the loop time
}

// Register -> watcher notified: through our Client.Watch (register on one client,
// snapshot with the instance on another) next to a raw go-zookeeper child watch on
// the same server (create on one connection, event on another).
func BenchmarkRegisterToWatch(b *testing.B) {
	e := newEnv(b)
	b.Run("client=regkit", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		a := openURL(b, "zk://"+e.srv.Addr()+"/bench", quiet)
		c := openURL(b, "zk://"+e.srv.Addr()+"/bench", quiet)
		w, err := c.Watch(ctx, "lat")
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Next(ctx); err != nil {
			b.Fatal(err)
		}
		has := func(s registry.Snapshot, id string) bool {
			return slices.ContainsFunc(s.Instances, func(in registry.Instance) bool { return in.ID == id })
		}
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("i%d", i)
			start := time.Now()
			r, err := a.Register(ctx, registry.Instance{Service: "lat", ID: id, Host: "127.0.0.1", Port: 1000 + i%60000})
			if err != nil {
				b.Fatal(err)
			}
			for {
				s, err := w.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if has(s, id) {
					break
				}
			}
			lat = append(lat, time.Since(start))
			if err := r.Deregister(ctx); err != nil {
				b.Fatal(err)
			}
			for {
				s, err := w.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if !has(s, id) {
					break
				}
			}
		}
		b.StopTimer()
		reportPercentiles(b, lat)
	})
	b.Run("client=raw-go-zookeeper", func(b *testing.B) {
		a, c := rawConn(b, e.srv.Addr()), rawConn(b, e.srv.Addr())
		const dir = "/bench-raw/lat"
		if _, err := a.Create("/bench-raw", nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			b.Fatal(err)
		}
		if _, err := a.Create(dir, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, _, ch, err := c.ChildrenW(dir)
			if err != nil {
				b.Fatal(err)
			}
			p := fmt.Sprintf("%s/i%d", dir, i)
			start := time.Now()
			if _, err := a.Create(p, []byte(`{"id":"x"}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
				b.Fatal(err)
			}
			if ev := <-ch; ev.Type != zk.EventNodeChildrenChanged {
				b.Fatalf("event %+v", ev)
			}
			lat = append(lat, time.Since(start))
			if err := a.Delete(p, -1); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportPercentiles(b, lat)
	})
}

// Time from a session expiry to the registration being back on the server in the
// client's new session. Each iteration cuts the client off (through the fault
// proxy), expires its session on the server (KillSession), waits until the server
// deleted the registration, then heals: the clock runs from the heal, the moment the
// client can learn of the expiry, to the node being back, and so includes the
// client's reconnection pacing after an outage.
func BenchmarkExpiryToReregistration(b *testing.B) {
	e := newEnv(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a := openURL(b, "zk://"+e.proxy.Addr()+"/bench-exp?session_timeout=4s", quiet)
	if _, err := a.Register(ctx, registry.Instance{Service: "api", ID: "e1", Host: "127.0.0.1", Port: 4000}); err != nil {
		b.Fatal(err)
	}
	const path = "/bench-exp/services/api/e1"
	conn := a.Conn().(*rzk.Conn)
	admin := e.adm(b)
	// await waits until the node's existence and owner satisfy ok, using watches.
	await := func(what string, ok func(exists bool, owner int64) bool) {
		for {
			exists, st, ch, err := admin.ExistsW(path)
			if err != nil {
				b.Fatal(err)
			}
			if ok(exists, st.EphemeralOwner) {
				return
			}
			select {
			case <-ch:
			case <-ctx.Done():
				b.Fatal(what)
			}
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var creds []rzk.SessionCred
		await("registration never settled", func(exists bool, owner int64) bool {
			creds = rzk.SessionCreds(conn)
			return exists && len(creds) > 0 && owner == creds[0].ID
		})
		e.proxy.Cut()
		killSession(b, e.srv.Addr(), creds[0].ID, creds[0].Passwd)
		await("server never deleted the expired session's node", func(exists bool, _ int64) bool { return !exists })
		start := time.Now()
		e.proxy.Heal()
		await("never re-registered", func(exists bool, owner int64) bool { return exists && owner != creds[0].ID })
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}
