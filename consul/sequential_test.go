package consul_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/consul"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

// kvCounter counts the requests to Consul's KV and transaction endpoints.
type kvCounter struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (c *kvCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Path, "/v1/kv/") || r.URL.Path == "/v1/txn" {
		c.n.Add(1)
	}
	return c.rt.RoundTrip(r)
}

// An uncontended Mutex takes three KV requests: one transaction creates the node
// and reads the queue, and a delete (a read of the node's children, then a
// transaction). It took six: a read of the parents and counter before the
// create, a read of the node and its siblings to list the queue, the delete.
func TestMutexUncontendedRequests(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 30*time.Second)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	counter := &kvCounter{rt: tr}
	cfg := api.DefaultConfig()
	cfg.Address = s.srv.Addr()
	cfg.Token = s.srv.Token()
	cfg.HttpClient = &http.Client{Transport: counter}
	cli, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := consul.New(cli)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sess *registry.Session
	testenv.Eventually(t, 30*time.Second, "a session (the agent registers serfHealth after it leads)", func() error {
		var err error
		sess, err = c.NewSession(ctx)
		return err
	})
	defer sess.Close()
	m, err := lock.NewMutex(c, sess, "/locks/rt")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		before := counter.n.Load()
		if _, err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		got := counter.n.Load() - before
		want := int64(3)
		if i == 0 {
			want = 4 // the first create under a parent reads it first
		}
		if got != want {
			t.Fatalf("Lock+Unlock %d took %d KV requests, want %d", i, got, want)
		}
	}
}

// Sequential creates from two Conns that move the same counter take increasing
// numbers in creation order, a create after the parent was deleted recreates it,
// and CreateAndChildren lists the parent as of the create.
func TestSequentialCreateGuesses(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 30*time.Second)
	a, b := s.open(t, "seq", ""), s.open(t, "seq", "")
	defer a.Close()
	defer b.Close()
	var names []string
	var revs []int64
	for i := range 6 {
		c := a
		if i%2 == 1 {
			c = b // each Conn's guess of the counter is stale by one create
		}
		n, err := c.Store().Create(ctx, "/q/r/n-", nil, registry.Sequential())
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, n.Key)
		revs = append(revs, n.CreateRevision)
	}
	if !slices.IsSorted(names) || !slices.IsSorted(revs) || names[0] != "/q/r/n-0000000000" || names[5] != "/q/r/n-0000000005" {
		t.Fatalf("names %v, revisions %v: want 0 to 5 in creation order", names, revs)
	}
	// Take the next two names with plain creates behind the counter's back: they
	// are skipped (the create used to read the same counter again and again).
	for _, k := range []string{"/q/r/n-0000000006", "/q/r/n-0000000007"} {
		if _, err := a.Store().Create(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*registry.Client{a, b} {
		n, err := c.Store().Create(ctx, "/q/r/n-", nil, registry.Sequential())
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, n.Key)
	}
	if names[6] != "/q/r/n-0000000008" || names[7] != "/q/r/n-0000000009" {
		t.Fatalf("after two taken names: %v", names[6:])
	}
	if err := a.Store().Delete(ctx, "/q", registry.Recursive()); err != nil {
		t.Fatal(err)
	}
	n, kids, err := a.Store().CreateAndChildren(ctx, "/q/r/n-", []byte("v"), registry.Sequential())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kids, []string{n.Key[len("/q/r/"):]}) || string(n.Value) != "v" {
		t.Fatalf("after the parent went: %+v %v", n, kids)
	}
	if _, err := a.Store().Get(ctx, "/q/r"); err != nil {
		t.Fatalf("parent not recreated: %v", err)
	}
	if _, _, err := a.Store().CreateAndChildren(ctx, n.Key, nil); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("existing key: %v, want ErrExists", err)
	}
}
