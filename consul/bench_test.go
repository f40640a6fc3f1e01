package consul_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/internal/latency"
	"github.com/regkit/regkit/registry"
)

// BenchmarkRegisterToNotified measures the time from the start of a registration
// to the moment a watcher on another client sees the new instance, through
// Client.Register and Client.Watch ("regkit") and through the raw api: agent
// ServiceRegister and a loop of blocking Health().Service queries ("native"), on
// the same agent, the two paths taking turns in every iteration so that both see
// the same machine load. Each iteration then deregisters the instances and waits
// for the watchers to see them gone, outside the timed part. Run with
// -benchtime=200x; it reports both paths' p50 and p99 and their ratios
// (latency.ReportPair).
func BenchmarkRegisterToNotified(b *testing.B) {
	s := startServer(b)
	ctx := ctxT(b, 10*time.Minute)
	a, c := s.open(b, "bench", ""), s.open(b, "bench", "")
	defer a.Close()
	defer c.Close()
	w, err := c.Watch(ctx, "lat")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	wait := func(id string, present bool) {
		for {
			snap, err := w.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if slices.Contains(ids(snap.Instances), id) == present {
				return
			}
		}
	}

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cli, err := api.NewClient(&api.Config{Address: s.proxy.Addr(), Transport: tr, HttpClient: &http.Client{Transport: tr}})
	if err != nil {
		b.Fatal(err)
	}
	const name = "bench-raw"
	views := make(chan []string, 1)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var index uint64
		for wctx.Err() == nil {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second, AllowStale: true}).WithContext(wctx)
			entries, meta, err := cli.Health().Service(name, "", true, q)
			if err != nil {
				continue
			}
			if meta.LastIndex < index {
				index = 0
			} else {
				index = meta.LastIndex
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Service.ID)
			}
			select { // keep only the newest view
			case <-views:
			default:
			}
			views <- got
		}
	}()
	defer func() { stop(); <-done }()
	rawWait := func(id string, present bool) {
		for {
			select {
			case v := <-views:
				if slices.Contains(v, id) == present {
					return
				}
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
		}
	}

	regkit := make([]time.Duration, 0, b.N)
	native := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("r%d", i)
		start := time.Now()
		r, err := a.Register(ctx, registry.Instance{Service: "lat", ID: id, Host: "127.0.0.1", Port: 8000})
		if err != nil {
			b.Fatal(err)
		}
		wait(id, true)
		regkit = append(regkit, time.Since(start))
		if err := r.Deregister(ctx); err != nil {
			b.Fatal(err)
		}
		wait(id, false)

		start = time.Now()
		err = cli.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: name, Address: "127.0.0.1", Port: 8000,
			Check: &api.AgentServiceCheck{CheckID: id + ":ttl", TTL: "10s", Status: api.HealthPassing}})
		if err != nil {
			b.Fatal(err)
		}
		rawWait(id, true)
		native = append(native, time.Since(start))
		if err := cli.Agent().ServiceDeregister(id); err != nil {
			b.Fatal(err)
		}
		rawWait(id, false)
	}
	b.StopTimer()
	latency.ReportPair(b, regkit, native)
}
