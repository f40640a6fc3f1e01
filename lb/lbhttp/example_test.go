package lbhttp_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/lb/lbhttp"
	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
)

// An http.Client whose requests to http://greeter/ go to the instances of
// service "greeter".
func Example() {
	ctx := context.Background()
	c, _ := registry.Open(ctx, "mem://lbhttp-example", registry.WithLogger(quiet))
	defer c.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s%s", r.Host, r.URL.Path)
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	c.Register(ctx, registry.Instance{Service: "greeter", Host: host, Port: n})

	view, _ := cache.New(c, cache.WithLogger(quiet))
	defer view.Close()
	tr := lbhttp.NewTransport(view, lb.RoundRobin(), lbhttp.WithBalancerOptions(lb.WithLogger(quiet)))
	defer tr.Close()
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get("http://greeter/world")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// hello greeter/world
}
