package etcdtest_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// kvCounter is an etcd client whose KV calls (Range, Put, DeleteRange, Txn) are
// counted: the round trips a recipe takes.
func kvCounter(t *testing.T, endpoint string) (*clientv3.Client, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasPrefix(method, "/etcdserverpb.KV/") {
			n.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop(), DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(count)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, &n
}

// An uncontended Mutex takes etcd's concurrency.Mutex's two round trips: one
// transaction creates the node and reads the queue, one deletes it. (It took
// four: the sequence counter was read before the create, the queue listed after.)
func TestMutexUncontendedRoundTrips(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, calls := kvCounter(t, e.srv.Endpoint())
	c, err := etcd.New(cli, etcd.WithPrefix("/rt"), registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	m, err := lock.NewMutex(c, sess, "/locks/rt")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		before := calls.Load()
		h, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if got := calls.Load() - before; got != 2 {
			t.Fatalf("Lock+Unlock %d took %d KV calls, want 2", i, got)
		}
		if h.Token() <= 0 {
			t.Fatalf("token %d", h.Token())
		}
	}
}

// CreateAndChildren returns the parent's children as of the create, the new key
// among them.
func TestCreateAndChildren(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.open(t, "cac")
	defer c.Close()
	if _, err := c.Store().Create(ctx, "/d/a/deep", nil); err != nil {
		t.Fatal(err)
	}
	n, names, err := c.Store().CreateAndChildren(ctx, "/d/b-", []byte("v"), registry.Sequential())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b-0000000000"}; n.Key != "/d/b-0000000000" || !slices.Equal(names, want) {
		t.Fatalf("CreateAndChildren: %s %v, want /d/b-0000000000 %v", n.Key, names, want)
	}
	got, err := c.Store().Get(ctx, n.Key)
	if err != nil || got.CreateRevision != n.CreateRevision || string(got.Value) != "v" {
		t.Fatalf("Get: %+v %v, created %+v", got, err, n)
	}
	if _, _, err := c.Store().CreateAndChildren(ctx, "/d/a", nil); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("existing key: %v, want ErrExists", err)
	}
}
