package bench

import (
	"context"
	"fmt"
	"testing"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/connectivity"
	estats "google.golang.org/grpc/experimental/stats"
	"google.golang.org/grpc/resolver"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/registry"
)

const n = 8 // endpoints

// ---- grpc-go's round_robin, driven through the public balancer API ----

// fakeCC is the balancer.ClientConn gRPC would give round_robin: it hands out
// fake SubConns and keeps the last picker.
type fakeCC struct {
	balancer.ClientConn
	scs    []*fakeSC
	picker balancer.Picker
	state  connectivity.State
}

func (f *fakeCC) NewSubConn(addrs []resolver.Address, o balancer.NewSubConnOptions) (balancer.SubConn, error) {
	sc := &fakeSC{listener: o.StateListener}
	f.scs = append(f.scs, sc)
	return sc, nil
}
func (f *fakeCC) UpdateState(s balancer.State)                         { f.picker, f.state = s.Picker, s.ConnectivityState }
func (f *fakeCC) ResolveNow(resolver.ResolveNowOptions)                {}
func (f *fakeCC) Target() string                                       { return "bench" }
func (f *fakeCC) MetricsRecorder() estats.MetricsRecorder              { return noMetrics{} }
func (f *fakeCC) RemoveSubConn(balancer.SubConn)                       {}
func (f *fakeCC) UpdateAddresses(balancer.SubConn, []resolver.Address) {}

type fakeSC struct {
	balancer.SubConn
	listener func(balancer.SubConnState)
	health   func(balancer.SubConnState)
}

func (s *fakeSC) Connect()  {}
func (s *fakeSC) Shutdown() {}
func (s *fakeSC) RegisterHealthListener(l func(balancer.SubConnState)) {
	s.health = l
}

type noMetrics struct{}

func (noMetrics) RecordInt64Count(*estats.Int64CountHandle, int64, ...string)       {}
func (noMetrics) RecordFloat64Count(*estats.Float64CountHandle, float64, ...string) {}
func (noMetrics) RecordInt64Histo(*estats.Int64HistoHandle, int64, ...string)       {}
func (noMetrics) RecordFloat64Histo(*estats.Float64HistoHandle, float64, ...string) {}
func (noMetrics) RecordInt64Gauge(*estats.Int64GaugeHandle, int64, ...string)       {}

// grpcRoundRobin builds grpc-go's real round_robin balancer (endpointsharding
// over pick_first children, v1.71) over n READY endpoints and returns its picker.
func grpcRoundRobin(tb testing.TB) balancer.Picker {
	cc := &fakeCC{}
	bal := balancer.Get(roundrobin.Name).Build(cc, balancer.BuildOptions{})
	tb.Cleanup(bal.Close)
	var eps []resolver.Endpoint
	for i := range n {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: fmt.Sprintf("10.0.0.%d:80", i+1)}}})
	}
	if err := bal.UpdateClientConnState(balancer.ClientConnState{ResolverState: resolver.State{Endpoints: eps}}); err != nil {
		tb.Fatal(err)
	}
	for _, sc := range cc.scs {
		sc.listener(balancer.SubConnState{ConnectivityState: connectivity.Connecting})
		sc.listener(balancer.SubConnState{ConnectivityState: connectivity.Ready})
		if sc.health != nil {
			sc.health(balancer.SubConnState{ConnectivityState: connectivity.Ready})
		}
	}
	if cc.state != connectivity.Ready || len(cc.scs) != n {
		tb.Fatalf("round_robin: state %v with %d SubConns", cc.state, len(cc.scs))
	}
	seen := map[balancer.SubConn]bool{}
	for range 2 * n {
		r, err := cc.picker.Pick(balancer.PickInfo{Ctx: context.Background()})
		if err != nil {
			tb.Fatal(err)
		}
		seen[r.SubConn] = true
	}
	if len(seen) != n {
		tb.Fatalf("round_robin picked %d of %d SubConns", len(seen), n)
	}
	return cc.picker
}

// ---- go-kit ----

func gokitRoundRobin() kitlb.Balancer {
	eps := make(sd.FixedEndpointer, n)
	for i := range eps {
		eps[i] = endpoint.Nop
	}
	return kitlb.NewRoundRobin(eps)
}

// ---- regkit ----

func regkitPool(tb testing.TB, p lb.Policy) *lb.Pool {
	pool, err := lb.NewPool(p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pool.Close() })
	var insts []registry.Instance
	for i := range n {
		insts = append(insts, registry.Instance{ID: fmt.Sprintf("i%d", i), Host: fmt.Sprintf("10.0.0.%d", i+1), Port: 80,
			Weight: 100 + 10*i, Zone: fmt.Sprintf("z%d", i%2), Healthy: true})
	}
	pool.Update(insts)
	return pool
}

// BenchmarkPick runs every picker once per invocation, one after the other; run
// the test binary several times (see BENCHMARKS.md) so that the pickers are
// measured interleaved, round after round, under the same machine conditions.
// regkit_* include Result.Done (the outcome report feeding ejection and the
// in-flight counts); regkit_round_robin_pick_only is Pick alone, as grpc-go's
// and go-kit's are measured.
func BenchmarkPick(b *testing.B) {
	gp := grpcRoundRobin(b)
	kb := gokitRoundRobin()
	info := balancer.PickInfo{Ctx: context.Background()}
	pools := []struct {
		name string
		p    *lb.Pool
	}{
		{"regkit_round_robin", regkitPool(b, lb.RoundRobin())},
		{"regkit_weighted_round_robin", regkitPool(b, lb.WeightedRoundRobin())},
		{"regkit_random", regkitPool(b, lb.Random())},
		{"regkit_least_loaded", regkitPool(b, lb.LeastLoaded())},
		{"regkit_consistent_hash", regkitPool(b, lb.ConsistentHash(lb.ConsistentHashConfig{}))},
		{"regkit_zone_aware_wrr", regkitPool(b, lb.ZoneAware("z1", 0.5, lb.WeightedRoundRobin()))},
	}
	for _, par := range []bool{false, true} {
		mode := "serial"
		if par {
			mode = "parallel"
		}
		run := func(name string, f func()) {
			b.Run(mode+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				if par {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							f()
						}
					})
					return
				}
				for range b.N {
					f()
				}
			})
		}
		run("grpc_round_robin", func() {
			if _, err := gp.Pick(info); err != nil {
				panic(err)
			}
		})
		run("gokit_round_robin", func() {
			if _, err := kb.Endpoint(); err != nil {
				panic(err)
			}
		})
		rr := pools[0].p
		run("regkit_round_robin_pick_only", func() {
			if _, err := rr.Pick(lb.PickInfo{}); err != nil {
				panic(err)
			}
		})
		for _, p := range pools {
			pi := lb.PickInfo{Key: "user-42"}
			run(p.name, func() {
				r, err := p.p.Pick(pi)
				if err != nil {
					panic(err)
				}
				r.Done(nil)
			})
		}
	}
}
