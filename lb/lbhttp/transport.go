// Package lbhttp is an http.RoundTripper that resolves service names through a
// registry and balances requests with package lb: a request to
// http://greeter/hello goes to one of the instances of service "greeter".
//
//	view, _ := cache.New(client)           // one shared watch per service
//	t := lbhttp.NewTransport(view, lb.WeightedRoundRobin())
//	defer t.Close()
//	hc := &http.Client{Transport: t}
//	resp, err := hc.Get("http://greeter/hello")
//
// A request whose URL host has a port (http://10.0.0.1:8080/, localhost:80) is
// not a service name and goes to the base transport untouched. The first request
// to a service starts its lb.Balancer, waiting for the first snapshot within the
// request's context; later requests pick without waiting. The Host header stays
// the service name unless the request sets one.
//
// Retries: a request whose connection could not be made (a dial error: nothing
// was sent) is retried on another instance whatever its method; one whose
// connection broke after sending is retried only if it is idempotent (GET, HEAD,
// OPTIONS, TRACE, PUT, DELETE, or an Idempotency-Key or X-Idempotency-Key header,
// as net/http decides) and its body can be replayed (none, or GetBody set). At
// most WithMaxAttempts tries, each on an instance not tried yet while there is
// one. Responses are never retried; 502, 503 and 504 count as failures for lb's
// outlier ejection, as do connection errors.
package lbhttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/registry"
)

// DefaultMaxAttempts is how many instances a request tries by default.
const DefaultMaxAttempts = 3

// Option configures NewTransport.
type Option func(*Transport)

// WithBase sets the transport requests go through (default http.DefaultTransport).
func WithBase(rt http.RoundTripper) Option { return func(t *Transport) { t.base = rt } }

// WithMaxAttempts sets how many instances a request may try (default
// DefaultMaxAttempts; at least 1).
func WithMaxAttempts(n int) Option { return func(t *Transport) { t.attempts = max(n, 1) } }

// WithBalancerOptions passes options to every lb.New the Transport calls.
func WithBalancerOptions(opts ...lb.Option) Option {
	return func(t *Transport) { t.lbOpts = append(t.lbOpts, opts...) }
}

// WithHashKey sets the affinity key of a request for lb.ConsistentHash (e.g. a
// user ID header).
func WithHashKey(f func(*http.Request) string) Option { return func(t *Transport) { t.key = f } }

// Transport is an http.RoundTripper over a registry; see the package doc. It is
// safe for concurrent use; Close stops its Balancers.
type Transport struct {
	d        registry.Discovery
	policy   lb.Policy
	base     http.RoundTripper
	attempts int
	lbOpts   []lb.Option
	key      func(*http.Request) string

	mu     sync.Mutex
	bals   map[string]*balancerSlot
	closed bool
}

type balancerSlot struct {
	ready chan struct{} // closed once b or err is set
	b     *lb.Balancer
	err   error
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport returns a Transport resolving services through d (a *cache.Cache,
// so that all share one watch per service) and balancing with policy.
func NewTransport(d registry.Discovery, policy lb.Policy, opts ...Option) *Transport {
	t := &Transport{d: d, policy: policy, base: http.DefaultTransport, attempts: DefaultMaxAttempts, bals: map[string]*balancerSlot{}}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Balancer returns the Balancer of service, starting it if needed (waiting for
// its first snapshot within ctx).
func (t *Transport) Balancer(ctx context.Context, service string) (*lb.Balancer, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, registry.ErrClosed
	}
	s := t.bals[service]
	if s == nil {
		s = &balancerSlot{ready: make(chan struct{})}
		t.bals[service] = s
		t.mu.Unlock()
		s.b, s.err = lb.New(ctx, t.d, service, t.policy, t.lbOpts...)
		close(s.ready)
		if s.err != nil {
			t.mu.Lock()
			if t.bals[service] == s {
				delete(t.bals, service) // the next request tries again
			}
			t.mu.Unlock()
		}
		return s.b, s.err
	}
	t.mu.Unlock()
	select {
	case <-s.ready:
		return s.b, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops every Balancer the Transport started. Requests afterwards fail
// with registry.ErrClosed. Idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	bals := t.bals
	t.bals = map[string]*balancerSlot{}
	t.mu.Unlock()
	for _, s := range bals {
		<-s.ready
		if s.b != nil {
			s.b.Close()
		}
	}
	return nil
}

// RoundTrip sends req to an instance of the service named by its URL host.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	if host == "" || strings.Contains(host, ":") || strings.HasPrefix(host, "[") {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	b, err := t.Balancer(ctx, host)
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("lbhttp: %s: %w", host, err)
	}
	info := lb.PickInfo{}
	if t.key != nil {
		info.Key = t.key(req)
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	var tried []string
	var lastErr error
	for attempt := 0; attempt < t.attempts; attempt++ {
		r, err := pickUntried(b, info, tried)
		if err != nil {
			if lastErr != nil {
				err = errors.Join(lastErr, err)
			}
			closeBody(req)
			return nil, fmt.Errorf("lbhttp: %s: %w", host, err)
		}
		tried = append(tried, r.Endpoint.Instance.ID)
		out := req.Clone(ctx)
		out.URL.Host = r.Endpoint.Addr
		if req.Host == "" {
			out.Host = host
		}
		if attempt > 0 && req.GetBody != nil {
			if out.Body, err = req.GetBody(); err != nil {
				r.Done(nil)
				return nil, fmt.Errorf("lbhttp: %s: replay body: %w", host, err)
			}
		}
		resp, err := t.base.RoundTrip(out)
		if err == nil {
			var fail error
			switch resp.StatusCode {
			case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
				fail = fmt.Errorf("lbhttp: %s answered %s", r.Endpoint.Addr, resp.Status)
			}
			resp.Body = &doneBody{ReadCloser: resp.Body, r: r, err: fail}
			return resp, nil
		}
		r.Done(err)
		lastErr = fmt.Errorf("lbhttp: %s (%s): %w", host, r.Endpoint.Addr, err)
		if ctx.Err() != nil || !retryable(req, err, replayable) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// pickUntried picks, avoiding the instances in tried while others are ready.
func pickUntried(b *lb.Balancer, info lb.PickInfo, tried []string) (lb.Result, error) {
	var r lb.Result
	var err error
	for range 2 * (len(tried) + 1) {
		r, err = b.Pick(info)
		if err != nil || !contains(tried, r.Endpoint.Instance.ID) {
			return r, err
		}
		r.Done(nil)
	}
	ready := b.Endpoints().Ready // few instances: walk them
	for _, e := range ready {
		if !contains(tried, e.Instance.ID) {
			for range 4 * len(ready) {
				if r, err = b.Pick(info); err != nil || r.Endpoint.Instance.ID == e.Instance.ID {
					return r, err
				}
				r.Done(nil)
			}
		}
	}
	return b.Pick(info) // all tried: any
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// retryable: a dial error (nothing sent) always; another transport error for
// an idempotent request whose body can be sent again.
func retryable(req *http.Request, err error, replayable bool) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return replayable
	}
	return replayable && idempotent(req)
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// doneBody reports the call's outcome when the response body is closed, so that
// calls count in flight until then.
type doneBody struct {
	io.ReadCloser
	r    lb.Result
	err  error
	once sync.Once
}

func (d *doneBody) Close() error {
	err := d.ReadCloser.Close()
	d.once.Do(func() { d.r.Done(d.err) })
	return err
}
