package consul_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/consul"
	"github.com/regkit/regkit/registry"
)

// countingTransport counts the requests of one path.
type countingTransport struct {
	http.RoundTripper
	path string
	n    atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == c.path {
		c.n.Add(1)
	}
	return c.RoundTripper.RoundTrip(r)
}

// A Put reads the agent's node name (/v1/agent/self, its largest answer) once
// per Conn, not once per registration.
func TestAgentSelfReadOncePerConn(t *testing.T) {
	s := startServer(t)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	ct := &countingTransport{RoundTripper: tr, path: "/v1/agent/self"}
	cli, err := api.NewClient(&api.Config{Address: s.srv.Addr(), Token: s.srv.Token(), Transport: tr,
		HttpClient: &http.Client{Transport: ct, Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := consul.New(cli)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		r, err := c.Register(ctx, registry.Instance{Service: "self", ID: fmt.Sprint("i", i), Host: "127.0.0.1", Port: 8000 + i})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
	}
	if n := ct.n.Load(); n > 1 {
		t.Fatalf("/v1/agent/self read %d times for 5 registrations, want at most 1", n)
	}
}
