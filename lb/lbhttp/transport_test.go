package lbhttp_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/lb/lbhttp"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func setup(t *testing.T, name string) (*registry.Client, *cache.Cache) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "mem://"+name, registry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	view, err := cache.New(c, cache.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	return c, view
}

func register(t *testing.T, c *registry.Client, id, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(port, &n)
	if _, err := c.Register(context.Background(), registry.Instance{Service: "greeter", ID: id, Host: host, Port: n}); err != nil {
		t.Fatal(err)
	}
}

func serve(t *testing.T, name string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.Host, body)
	}))
	t.Cleanup(s.Close)
	return s
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func get(t *testing.T, hc *http.Client, method, url, body string) (string, error) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body == "" {
		req.Body = nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Requests to http://greeter/ spread over the instances; a registered instance
// that refuses connections costs retries, never a failed request, and is
// ejected.
func TestTransportRetriesAndEjects(t *testing.T) {
	c, view := setup(t, "http-retry")
	register(t, c, "a", serve(t, "a").Listener.Addr().String())
	register(t, c, "b", serve(t, "b").Listener.Addr().String())
	register(t, c, "dead", deadAddr(t))
	tr := lbhttp.NewTransport(view, lb.RoundRobin(), lbhttp.WithBase(&http.Transport{}),
		lbhttp.WithBalancerOptions(lb.WithLogger(quiet), lb.WithEjection(lb.Ejection{ConsecutiveFailures: 2, BaseTime: time.Minute})))
	defer tr.Close()
	hc := &http.Client{Transport: tr}
	defer tr.Close()
	got := map[string]int{}
	for i := range 30 {
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost // dial errors are retried for any method
		}
		body, err := get(t, hc, method, "http://greeter/hello", "x")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		name, rest, _ := strings.Cut(body, " ")
		got[name]++
		if !strings.Contains(rest, "greeter") || !strings.HasSuffix(rest, " x") {
			t.Errorf("server saw %q: want Host greeter and the body", rest)
		}
	}
	// Round-robin from a random start; ejecting "dead" rebuilds the picker with a
	// new random start, so the split is even within a few requests, not exact.
	if got["a"]+got["b"] != 30 || got["a"] < 12 || got["b"] < 12 {
		t.Errorf("spread %v, want 30 requests split about evenly between a and b", got)
	}
	b, err := tr.Balancer(context.Background(), "greeter")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range b.Stats() {
		if s.Ejected != (s.ID == "dead") {
			t.Errorf("%s ejected=%v", s.ID, s.Ejected)
		}
	}
	// Hosts with a port bypass the registry.
	direct := serve(t, "direct")
	if body, err := get(t, hc, "GET", direct.URL, ""); err != nil || !strings.HasPrefix(body, "direct") {
		t.Errorf("direct request: %q, %v", body, err)
	}
	// Unknown services fail within the request's context.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://nobody/", nil)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		t.Error("request to a service with no instance succeeded")
	}
}

// A connection that breaks after the request was sent is retried for GET, not
// for POST.
func TestTransportIdempotentOnly(t *testing.T) {
	c, view := setup(t, "http-idem")
	var broken atomic.Int32 // requests whose connection the breaker broke
	breaker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		broken.Add(1)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer breaker.Close()
	register(t, c, "a-breaker", breaker.Listener.Addr().String())
	register(t, c, "b", serve(t, "b").Listener.Addr().String())
	tr := lbhttp.NewTransport(view, lb.RoundRobin(), lbhttp.WithBase(&http.Transport{}),
		lbhttp.WithBalancerOptions(lb.WithLogger(quiet), lb.WithoutEjection()))
	defer tr.Close()
	hc := &http.Client{Transport: tr}
	// GETs alone: a GET that meets the breaker is retried on b, so the next
	// turn is the breaker's again; all but maybe the first meet it.
	var postErrs, getErrs int
	for range 10 {
		if _, err := get(t, hc, "GET", "http://greeter/", ""); err != nil {
			getErrs++
		}
	}
	if getErrs != 0 || broken.Load() < 9 {
		t.Errorf("%d of 10 GETs failed, %d broken by a-breaker: they should be retried on b", getErrs, broken.Load())
	}
	// POSTs alone: every other one meets the breaker.
	for range 10 {
		if _, err := get(t, hc, "POST", "http://greeter/", "x"); err != nil {
			postErrs++
		}
	}
	if postErrs == 0 {
		t.Error("no POST failed: a POST whose connection broke after sending must not be retried")
	}
}
