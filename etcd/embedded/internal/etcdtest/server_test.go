package etcdtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func since(t *testing.T, what string, start time.Time) {
	t.Logf("%s took %v", what, time.Since(start).Round(time.Millisecond))
}

// TestServer checks the helper itself: a round trip, a restart keeping the data, a
// fresh restart losing it, all on the same client port.
func TestEtcd(t *testing.T) {
	start := time.Now()
	e := etcdtest.Start(t)
	since(t, "etcd start", start)

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	roundTrip := func(val string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, "/testenv/k", val); err != nil {
			t.Fatalf("put: %v", err)
		}
		resp, err := cli.Get(ctx, "/testenv/k")
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
			t.Fatalf("get: %v, want %q", resp.Kvs, val)
		}
	}
	roundTrip("v1")

	start = time.Now()
	e.Restart(t, false)
	since(t, "etcd restart", start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/testenv/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart: %v %v, want v1 kept", resp, err)
	}
	roundTrip("v2")

	start = time.Now()
	e.Restart(t, true)
	since(t, "etcd fresh restart", start)
	resp, err = cli.Get(ctx, "/testenv/k")
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("after fresh restart: %v %v, want no key", resp, err)
	}
	roundTrip("v3")
}

func TestCluster(t *testing.T) {
	start := time.Now()
	c := etcdtest.StartCluster(t)
	t.Logf("cluster start took %v", time.Since(start))
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := func(v string) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, "put "+v, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := cli.Put(ctx, "/k", v)
			return err
		})
	}
	put("1")
	l := c.Leader()
	start = time.Now()
	c.Kill(l)
	c.WaitQuorum(t, time.Minute)
	t.Logf("new leader after leader kill took %v", time.Since(start))
	if nl := c.Leader(); nl == l || nl < 0 {
		t.Fatalf("leader %d after killing %d", nl, l)
	}
	put("2")
	c.Start(t, l)
	c.WaitQuorum(t, time.Minute)
	l = c.Leader()
	start = time.Now()
	c.Isolate(l)
	testenv.Eventually(t, time.Minute, "a new leader among the others", func() error {
		if nl := c.Leader(); nl >= 0 && nl != l {
			return nil
		}
		return fmt.Errorf("no leader besides the isolated %d", l)
	})
	t.Logf("new leader after isolating the leader took %v", time.Since(start))
	put("3")
	c.Rejoin(l)
	c.WaitQuorum(t, time.Minute)
	down := c.KillMajority()
	for _, i := range down {
		c.Start(t, i)
	}
	c.WaitQuorum(t, time.Minute)
	put("4")
}
