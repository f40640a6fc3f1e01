// Command http shows net/http over regkit: two HTTP greeters register, a client
// whose http.Client uses lbhttp's RoundTripper calls "http://greeter/hello",
// spread over both; one greeter dies without deregistering and the client keeps
// working (connection errors are retried on the other instance, which the
// failing one is ejected in favour of), then its registration goes too.
//
//	go run ./examples/http                                    # on an embedded etcd
//	REGKIT_URL=consul://127.0.0.1:8500 go run ./examples/http  # any regkit URL
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/lb/lbhttp"
	_ "github.com/regkit/regkit/mem"
	_ "github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	_ "github.com/regkit/regkit/zk"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	url := os.Getenv("REGKIT_URL")
	if url == "" {
		e, err := embedded.Start(ctx)
		if err != nil {
			return err
		}
		defer e.Close()
		url = e.URL("http-example")
		fmt.Fprintln(out, "started an embedded etcd at", e.Endpoint())
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := registry.Open(ctx, url, registry.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(out, "backend:", url)

	var servers []*http.Server
	var regs []registry.Registration
	for i := 1; i <= 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		name := fmt.Sprintf("greeter-%d", i)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s (Host: %s)", name, r.Host)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		servers = append(servers, srv)
		reg, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: name, Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port})
		if err != nil {
			return err
		}
		defer reg.Close()
		regs = append(regs, reg)
		fmt.Fprintln(out, "registered", name)
	}

	view, err := cache.New(c, cache.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer view.Close()
	tr := lbhttp.NewTransport(view, lb.RoundRobin(), lbhttp.WithBase(&http.Transport{}),
		lbhttp.WithBalancerOptions(lb.WithLogger(quiet), lb.WithEjection(lb.Ejection{ConsecutiveFailures: 1, BaseTime: time.Minute})))
	defer tr.Close()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://greeter/hello", nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	// Wait until the view has both, then spread.
	b, err := tr.Balancer(ctx, "greeter")
	if err != nil {
		return err
	}
	for len(b.Endpoints().Ready) < 2 {
		if _, err := view.Lookup(ctx, "greeter"); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // poll the view until the deadline
		}
	}
	count := map[string]int{}
	for range 4 {
		r, err := get()
		if err != nil {
			return err
		}
		count[r]++
	}
	for _, r := range []string{"hello from greeter-1 (Host: greeter)", "hello from greeter-2 (Host: greeter)"} {
		fmt.Fprintf(out, "%d calls: %s\n", count[r], r)
	}

	// greeter-1 dies without deregistering: its port refuses connections.
	servers[0].Close()
	fmt.Fprintln(out, "greeter-1 died (still registered)")
	clear(count)
	for range 4 {
		r, err := get()
		if err != nil {
			return fmt.Errorf("call after greeter-1 died: %w", err)
		}
		count[r]++
	}
	fmt.Fprintf(out, "4 calls, %d answered by greeter-2, 0 failed\n", count["hello from greeter-2 (Host: greeter)"])
	for _, s := range b.Stats() {
		fmt.Fprintf(out, "%s ejected: %v\n", s.ID, s.Ejected)
	}
	// Its registration goes (the backend's TTL would do it for a crashed process).
	if err := regs[0].Close(); err != nil {
		return err
	}
	for len(b.Endpoints().All) != 1 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // poll until the deadline
		}
	}
	fmt.Fprintln(out, "greeter-1 deregistered; the balancer has", b.Endpoints().All[0].Instance.ID)
	return nil
}
