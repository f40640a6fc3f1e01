package etcdtest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// A Client holds one etcd watch per followed service up to service_watches,
// then one watch of the whole prefix: the watches already open move onto it
// with a new listing (no snapshot goes stale) and keep seeing changes.
func TestWatchesPerServiceThenPrefix(t *testing.T) {
	e := newEnv(t)
	e.query = "&service_watches=2"
	c := e.open(t, "adapt")
	defer c.Close()
	reg := e.open(t, "adapt")
	defer reg.Close()
	ctx := ctxT(t)
	conn := c.Conn().(*etcd.Conn)
	var ws []registry.Watcher
	for i := range 3 {
		svc := fmt.Sprint("s", i)
		if _, err := reg.Register(ctx, registry.Instance{Service: svc, ID: "a", Host: "127.0.0.1", Port: 80}); err != nil {
			t.Fatal(err)
		}
		w, err := c.Watch(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ws = append(ws, w)
		waitIDs(t, w, "a")
		n, prefix := conn.Watches()
		switch {
		case i < 2 && (n != i+1 || prefix):
			t.Fatalf("%d services followed: %d per-service watches, prefix %v; want %d, false", i+1, n, prefix, i+1)
		case i == 2 && (n != 0 || !prefix):
			t.Fatalf("3 services followed past service_watches=2: %d per-service watches, prefix %v; want 0, true", n, prefix)
		}
	}
	for i, w := range ws {
		if _, err := reg.Register(ctx, registry.Instance{Service: fmt.Sprint("s", i), ID: "b", Host: "127.0.0.1", Port: 81}); err != nil {
			t.Fatal(err)
		}
		waitIDs(t, w, "a", "b")
	}
}

// waitIDs reads w until its snapshot holds exactly ids; a stale snapshot on
// the way fails the test.
func waitIDs(t *testing.T, w registry.Watcher, ids ...string) {
	t.Helper()
	ctx := ctxT(t)
	testenv.Eventually(t, 20*time.Second, fmt.Sprint("instances ", ids), func() error {
		s, err := w.Next(ctx)
		if err != nil {
			return err
		}
		if s.Stale {
			t.Fatalf("stale snapshot %+v", s)
		}
		var got []string
		for _, in := range s.Instances {
			got = append(got, in.ID)
		}
		if !slices.Equal(got, ids) {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
