// Command quickstart shows regkit end to end: two instances of a small HTTP service
// register, a client watches and discovers them, calls them in turn, one instance
// stops, and the client's view drops it.
//
//	go run ./examples/quickstart                                    # starts an embedded etcd: no server needed
//	REGKIT_URL=etcd://127.0.0.1:2379 go run ./examples/quickstart   # a real etcd (or any regkit URL)
//
// Without REGKIT_URL the program starts a real etcd server inside its own process
// (package etcd/embedded) on free loopback ports, with its data in a temporary
// directory that is removed on exit.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded"
	_ "github.com/regkit/regkit/mem" // REGKIT_URL=mem://x: in-process, for tests
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
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
		url = e.URL("quickstart")
		fmt.Fprintln(out, "started an embedded etcd at", e.Endpoint())
	}
	c, err := registry.Open(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(out, "backend:", url)

	// Two instances of "greeter", each an HTTP server on a free loopback port.
	var regs []registry.Registration
	var servers []*http.Server
	for i := 1; i <= 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		name := fmt.Sprintf("greeter-%d", i)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s", name)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		servers = append(servers, srv)
		reg, err := c.Register(ctx, driver.Instance{
			Service: "greeter", ID: name,
			Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, // explicit: loopback is never chosen silently
			Metadata: map[string]string{"version": "1.0"},
		})
		if err != nil {
			return err
		}
		regs = append(regs, reg)
		fmt.Fprintln(out, "registered", reg.Instance())
	}

	// A client watches the service and calls the instances in turn.
	w, err := c.Watch(ctx, "greeter")
	if err != nil {
		return err
	}
	defer w.Close()
	snap, err := waitFor(ctx, w, 2)
	if err != nil {
		return err
	}
	for i := 0; i < 4; i++ {
		in := snap.Instances[i%len(snap.Instances)]
		resp, err := http.Get("http://" + in.Addr())
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(out, "call %d -> %s: %s\n", i+1, in.ID, body)
	}

	// One instance stops; the watcher's view drops it.
	servers[0].Close()
	if err := regs[0].Close(); err != nil {
		return err
	}
	fmt.Fprintln(out, "stopped greeter-1")
	snap, err = waitFor(ctx, w, 1)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "client now sees:", snap.Instances[0].ID)
	return nil
}

// waitFor reads snapshots until one has n instances.
func waitFor(ctx context.Context, w registry.Watcher, n int) (registry.Snapshot, error) {
	for {
		s, err := w.Next(ctx)
		if err != nil {
			return s, err
		}
		if len(s.Instances) == n {
			return s, nil
		}
	}
}
