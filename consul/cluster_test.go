//go:build linux

package consul_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// nextWhere reads w until a snapshot satisfies ok, or ctx ends.
func nextWhere(ctx context.Context, w registry.Watcher, ok func(registry.Snapshot) bool) (registry.Snapshot, error) {
	for {
		s, err := w.Next(ctx)
		if err != nil {
			return s, err
		}
		if ok(s) {
			return s, nil
		}
	}
}

func instanceIDs(s registry.Snapshot) []string {
	var out []string
	for _, in := range s.Instances {
		out = append(out, in.ID)
	}
	return out
}

// TestWatchStaleWithoutLeader: a watcher reading through a server whose two peers
// died (it knows no leader, so its blocking query would wait the whole wait, 30s,
// and answer the same index) is marked stale, with its last instances and an error
// matching ErrUnavailable, long before that wait ends (the leader probe breaks the
// query; see consul.StaleBound); Health says so; once the quorum is back the view
// is fresh again and Health nil. Before the probe the watcher was never marked
// stale during the outage.
func TestWatchStaleWithoutLeader(t *testing.T) {
	c := testenv.StartConsulCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := c.Follower()
	if f < 0 {
		t.Fatal("no follower")
	}
	cl, err := registry.Open(ctx, "consul://"+c.ServerHTTPAddrs()[f]+"/stale?check_ttl=30s",
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Register(ctx, registry.Instance{Service: "svc", ID: "i1", Host: "127.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	w, err := cl.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fresh := func(s registry.Snapshot) bool { return !s.Stale && slices.Equal(instanceIDs(s), []string{"i1"}) }
	if _, err := nextWhere(ctx, w, fresh); err != nil {
		t.Fatal(err)
	}
	if err := cl.Health(); err != nil {
		t.Fatalf("Health with a leader = %v", err)
	}

	var down []int
	for i := range testenv.EnsembleSize {
		if i != f {
			c.Kill(i)
			down = append(down, i)
		}
	}
	killed := time.Now()
	// A deadline shorter than the blocking query's wait: the old watch only
	// returned when the wait ran out, and then not marked stale.
	sctx, scancel := context.WithTimeout(ctx, 25*time.Second)
	s, err := nextWhere(sctx, w, func(s registry.Snapshot) bool { return s.Stale })
	scancel()
	if err != nil {
		t.Fatalf("no stale snapshot while the cluster has no leader: %v", err)
	}
	t.Logf("marked stale %v after the quorum was lost", time.Since(killed).Round(10*time.Millisecond))
	if !errors.Is(s.Err, registry.ErrUnavailable) || !slices.Equal(instanceIDs(s), []string{"i1"}) || s.Age() <= 0 {
		t.Errorf("stale snapshot %v err %v age %v, want i1, ErrUnavailable, an age", instanceIDs(s), s.Err, s.Age())
	}
	if err := cl.Health(); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Health without a leader = %v, want ErrUnavailable", err)
	}

	for _, i := range down {
		c.Start(t, i)
	}
	c.WaitQuorum(t, time.Minute)
	if _, err := nextWhere(ctx, w, fresh); err != nil {
		t.Fatalf("no fresh snapshot after the quorum is back: %v", err)
	}
	testenv.Eventually(t, 30*time.Second, "Health nil again", cl.Health)
}

// TestLazyOpenHealth: with WithLazyConnect, Open does no I/O and Health is
// ErrUnavailable until a probe reaches the agent and hears of a leader; an agent
// that does not answer keeps it so.
func TestLazyOpenHealth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dead, err := registry.Open(ctx, "consul://"+testenv.ClosedAddr(t), registry.WithLazyConnect())
	if err != nil {
		t.Fatalf("lazy Open of an agent that does not answer: %v", err)
	}
	defer dead.Close()
	if err := dead.Health(); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Health before any probe = %v, want ErrUnavailable", err)
	}
	s := startServer(t)
	cl, err := registry.Open(ctx, s.url("lazy", ""), registry.WithLazyConnect())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testenv.Eventually(t, 30*time.Second, "Health nil once the agent answered", cl.Health)
	if err := dead.Health(); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Health of the agent that does not answer = %v, want ErrUnavailable", err)
	}
}
