// Command kubernetes is a service for the VM↔container case: it runs in a pod,
// binds the pod's port, and registers the address callers outside the cluster
// can dial, the node's IP and a NodePort, which only the deployment knows. The
// Deployment (deployment.yaml) passes them from the downward API:
//
//	REGKIT_REGISTER_HOST = status.hostIP      (or DUBBO_IP_TO_REGISTRY)
//	REGKIT_REGISTER_PORT = the Service's nodePort (or DUBBO_PORT_TO_REGISTRY)
//	POD_PORT             = the containerPort the program binds (default 8080)
//	POD_NAME             = metadata.name, the instance ID
//
// The environment overrides the configured host and port, each on its own, with
// Dubbo's precedence (REGKIT_REGISTER_* first, then DUBBO_*): package
// registry/address does it inside Register. The program serves until SIGTERM,
// then deregisters before it stops serving.
//
//	REGKIT_REGISTER_HOST=10.1.2.3 REGKIT_REGISTER_PORT=30080 POD_PORT=0 go run ./examples/kubernetes
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded"
	_ "github.com/regkit/regkit/mem"
	_ "github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/registry"
	_ "github.com/regkit/regkit/zk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, nil); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx ends. registered, if not nil, receives the registration
// once it is on the backend (for tests).
func run(ctx context.Context, out io.Writer, registered chan<- registry.Instance) error {
	url := os.Getenv("REGKIT_URL")
	if url == "" {
		e, err := embedded.Start(ctx)
		if err != nil {
			return err
		}
		defer e.Close()
		url = e.URL("kubernetes-example")
		fmt.Fprintln(out, "started an embedded etcd at", e.Endpoint())
	}
	podPort := 8080
	if p := os.Getenv("POD_PORT"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("POD_PORT=%q: %w", p, err)
		}
		podPort = n
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(podPort)) // all interfaces: the pod's IP
	if err != nil {
		return err
	}
	bound := ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from", os.Getenv("POD_NAME"))
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer srv.Close()
	fmt.Fprintf(out, "listening on :%d\n", bound)

	c, err := registry.Open(ctx, url, registry.WithLogger(slog.New(slog.NewTextHandler(out, nil))))
	if err != nil {
		return err
	}
	defer c.Close()
	// Host empty: the environment or the preferred network decides; Port: the
	// port bound, unless the environment says which one callers dial.
	reg, err := c.Register(ctx, registry.Instance{Service: "greeter", ID: os.Getenv("POD_NAME"), Port: bound,
		Metadata: map[string]string{"pod.port": strconv.Itoa(bound)}})
	if err != nil {
		return err
	}
	in := reg.Instance()
	fmt.Fprintf(out, "registered greeter %s at %s (bound :%d)\n", in.ID, in.Addr(), bound)
	if registered != nil {
		registered <- in
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		reg.Close()
		return err
	}
	// SIGTERM: out of the registry first, then stop serving.
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Deregister(dctx); err != nil && !errors.Is(err, registry.ErrClosed) {
		return err
	}
	fmt.Fprintln(out, "deregistered", in.ID)
	sctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	return srv.Shutdown(sctx)
}
