package recipestest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/latency"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

// The recipe benchmarks of issue 16, written once and run by every backend's
// bench files against its real server, each next to the backend's native
// recipe (etcd's concurrency.Mutex, Consul's api.Lock, a plain go-zookeeper
// lock). They only measure: nothing asserts on time.

// Locker is one participant of a lock: regkit's Mutex or a native lock.
type Locker interface {
	Lock(ctx context.Context) error
	Unlock(ctx context.Context) error
}

// MutexLocker adapts a lock.Mutex to Locker.
type MutexLocker struct{ M *lock.Mutex }

// Lock takes the Mutex.
func (m MutexLocker) Lock(ctx context.Context) error { _, err := m.M.Lock(ctx); return err }

// Unlock releases it.
func (m MutexLocker) Unlock(ctx context.Context) error { return m.M.Unlock(ctx) }

// NewMutexLocker opens a session of its own on c and returns a Mutex on key
// bound to it, as a Locker; both end with b.
func NewMutexLocker(b testing.TB, c *registry.Client, key string, opts ...registry.SessionOption) Locker {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.NewSession(ctx, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	m, err := lock.NewMutex(c, s, key)
	if err != nil {
		b.Fatal(err)
	}
	return MutexLocker{m}
}

// BenchUncontended measures one uncontended acquire+release of ours and of
// native, both in every iteration (ours first, then native: interleaved, so the
// machine's load and the server's state hit both alike), and reports each as
// acquire+release per second ("regkit-ops/s", "native-ops/s") and the ratio
// regkit/native of the rates ("ratio"; above 1 is regkit faster).
func BenchUncontended(b *testing.B, ours, native Locker) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cycle := func(l Locker) time.Duration {
		t0 := time.Now()
		if err := l.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	var o, n time.Duration
	b.ResetTimer()
	for range b.N {
		o += cycle(ours)
		n += cycle(native)
	}
	b.StopTimer()
	reportRates(b, float64(b.N), o, n)
}

func reportRates(b *testing.B, ops float64, ours, native time.Duration) {
	b.ReportMetric(ops/ours.Seconds(), "regkit-ops/s")
	b.ReportMetric(ops/native.Seconds(), "native-ops/s")
	b.ReportMetric(native.Seconds()/ours.Seconds(), "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchContended measures the throughput of one lock held in turn by
// len(ours) waiters (each a Locker with a session of its own, each looping
// Lock, Unlock as fast as it can), next to as many native waiters: every
// iteration runs a burst of rounds acquisitions with ours, then one with native,
// and the rates are acquisitions per second of the bursts' wall time, summed
// over the iterations ("regkit-ops/s", "native-ops/s", "ratio" as in
// BenchUncontended). A burst starts with every waiter queueing, so rounds
// should be a few times the number of waiters.
func BenchContended(b *testing.B, ours, native []Locker, rounds int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	burst := func(ls []Locker) time.Duration {
		var taken atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, len(ls))
		t0 := time.Now()
		for _, l := range ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for taken.Add(1) <= int64(rounds) {
					if err := l.Lock(ctx); err != nil {
						errs <- err
						return
					}
					if err := l.Unlock(ctx); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		d := time.Since(t0)
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		return d
	}
	var o, n time.Duration
	b.ResetTimer()
	for range b.N {
		o += burst(ours)
		n += burst(native)
	}
	b.StopTimer()
	reportRates(b, float64(b.N*rounds), o, n)
}

// Failover says how the leader of BenchFailover goes.
type Failover int

// How the leader goes.
const (
	// FailoverResign: the leader calls Resign.
	FailoverResign Failover = iota + 1
	// FailoverClose: the leader's Client is closed without Resign (its
	// session is closed with it: the lease revoked, the ZooKeeper session
	// closed, the Consul session destroyed).
	FailoverClose
	// FailoverExpiry: the leader's connection is cut (blackholed) and the
	// server expires its session after the TTL.
	FailoverExpiry
)

// FailoverEnv is what BenchFailover needs of a backend.
type FailoverEnv struct {
	// Open opens a client on namespace ns straight to the server.
	Open func(b testing.TB, ns string) *registry.Client
	// OpenCuttable opens a client on ns whose connections alone blackhole cuts
	// (a fault proxy of its own) until heal is called. Needed for
	// FailoverExpiry.
	OpenCuttable func(b testing.TB, ns string) (c *registry.Client, blackhole func() (heal func()))
	// TTL is the sessions' TTL (the backend may clamp it: Consul to 10s).
	TTL time.Duration
}

// BenchFailover measures, in every iteration, the time from the moment the
// leader of a leader.Election goes (as how says) to the moment the waiting
// candidate's Campaign returns: its p50 and p99 in milliseconds ("p50-ms",
// "p99-ms"). The leader has a Client and session of its own, new in each
// iteration; the candidate's Client opens straight to the server.
func BenchFailover(b *testing.B, env FailoverEnv, how Failover) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	ns := fmt.Sprintf("fo%d", time.Now().UnixNano()%1e9)
	const key = "/bench/election"
	cc := env.Open(b, ns)
	defer cc.Close()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var lc *registry.Client
		var blackhole func() func()
		if how == FailoverExpiry {
			lc, blackhole = env.OpenCuttable(b, ns)
		} else {
			lc = env.Open(b, ns)
		}
		ls, err := lc.NewSession(ctx, registry.WithTTL(env.TTL))
		if err != nil {
			b.Fatal(err)
		}
		le, err := leader.NewElection(lc, ls, key, recipes.WithPolicy(recipes.LostOnly))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := le.Campaign(ctx, []byte("old")); err != nil {
			b.Fatal(err)
		}
		cs, err := cc.NewSession(ctx, registry.WithTTL(env.TTL))
		if err != nil {
			b.Fatal(err)
		}
		ce, err := leader.NewElection(cc, cs, key)
		if err != nil {
			b.Fatal(err)
		}
		won := make(chan time.Time, 1)
		campaign := make(chan error, 1)
		go func() {
			_, err := ce.Campaign(ctx, []byte("new"))
			won <- time.Now()
			campaign <- err
		}()
		// Wait until the candidate is queued behind the leader.
		for {
			names, err := cc.Store().Children(ctx, key)
			if err != nil && !errors.Is(err, registry.ErrNotFound) {
				b.Fatal(err)
			}
			if len(names) >= 2 {
				break
			}
			if err := sleep(ctx, time.Millisecond); err != nil {
				b.Fatal(err)
			}
		}
		var heal func()
		b.StartTimer()
		t0 := time.Now()
		switch how {
		case FailoverResign:
			err = le.Resign(ctx)
		case FailoverClose:
			err = lc.Close()
		case FailoverExpiry:
			heal = blackhole()
		}
		if err != nil {
			b.Fatal(err)
		}
		t1 := <-won
		b.StopTimer()
		if err := <-campaign; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, t1.Sub(t0))
		if heal != nil {
			heal()
		}
		if err := ce.Resign(ctx); err != nil {
			b.Fatal(err)
		}
		_ = cs.Close()
		_ = ls.Close()
		_ = lc.Close()
		b.StartTimer()
	}
	b.StopTimer()
	latency.Report(b, lat)
	b.ReportMetric(0, "ns/op")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
