package consul_test

import (
	"net/http"
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
