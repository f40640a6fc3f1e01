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

// BenchmarkRegisterToWatch measures register -> watcher notified through regkit
// (Register on one Client, the snapshot with the instance from Client.Watch on
// another) next to a native go-zookeeper watcher on the same server, the two
// paths taking turns in every iteration so that both see the same machine load.
// The native watcher does what any watcher must to know the new instance, as
// Curator's ServiceCache does: on the child event (which names no child) it
// re-arms its child watch with ChildrenW, which names the new child, and reads
// that child with GetW, which arms its data watch. Each iteration also removes
// the instances again, outside the measured time. Run with -benchtime=200x; it
// reports both paths' p50 and p99 and their ratios (latency.ReportPair).
func BenchmarkRegisterToWatch(b *testing.B) {
	e := newEnv(b)
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
	waitFor := func(id string, present bool) {
		for {
			s, err := w.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if has(s, id) == present {
				return
			}
		}
	}

	ra, rc := rawConn(b, e.srv.Addr()), rawConn(b, e.srv.Addr())
	const dir = "/bench-raw/lat"
	for _, p := range []string{"/bench-raw", dir} {
		if _, err := ra.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			b.Fatal(err)
		}
	}
	// The native watcher's state: the child watch and the children it knows.
	_, _, kidsW, err := rc.ChildrenW(dir)
	if err != nil {
		b.Fatal(err)
	}
	known := map[string]bool{}
	// rawNext waits for the child event, re-arms the child watch and reads
	// (GetW) every child it did not know.
	rawNext := func() {
		if ev := <-kidsW; ev.Type != zk.EventNodeChildrenChanged {
			b.Fatalf("event %+v", ev)
		}
		kids, _, ch, err := rc.ChildrenW(dir)
		if err != nil {
			b.Fatal(err)
		}
		kidsW = ch
		now := map[string]bool{}
		for _, k := range kids {
			now[k] = true
			if known[k] {
				continue
			}
			data, _, _, err := rc.GetW(dir + "/" + k)
			if err != nil && err != zk.ErrNoNode {
				b.Fatal(err)
			}
			if err == nil && len(data) == 0 {
				b.Fatal("empty instance data")
			}
		}
		known = now
	}

	regkit := make([]time.Duration, 0, b.N)
	native := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("i%d", i)
		start := time.Now()
		r, err := a.Register(ctx, registry.Instance{Service: "lat", ID: id, Host: "127.0.0.1", Port: 1000 + i%60000})
		if err != nil {
			b.Fatal(err)
		}
		waitFor(id, true)
		regkit = append(regkit, time.Since(start))
		if err := r.Deregister(ctx); err != nil {
			b.Fatal(err)
		}
		waitFor(id, false)

		p := dir + "/" + id
		start = time.Now()
		if _, err := ra.Create(p, []byte(`{"id":"x"}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
			b.Fatal(err)
		}
		rawNext()
		if !known[id] {
			b.Fatalf("native watcher missed %s", id)
		}
		native = append(native, time.Since(start))
		if err := ra.Delete(p, -1); err != nil {
			b.Fatal(err)
		}
		rawNext()
	}
	b.StopTimer()
	latency.ReportPair(b, regkit, native)
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
