// Command dubbo is a Go consumer of Java Dubbo providers registered in
// ZooKeeper: it opens the registry with layout=dubbo, follows the providers of a
// Java interface through the shared cache, keeps the ones of the version it
// consumes (Dubbo matches interface, group and version) and balances over them
// with lb's smooth weighted round-robin, honouring the providers' weight
// parameter.
//
// It needs a ZooKeeper (there is no embedded one); -fixture writes provider URLs
// as Java Dubbo 3.2 does, for a try without Java:
//
//	REGKIT_URL='zk://127.0.0.1:2181/?layout=dubbo' go run ./examples/dubbo -fixture
//
// Calling the providers needs a Dubbo or Triple protocol client (dubbo-go);
// here the consumer only picks the address it would call.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	_ "github.com/regkit/regkit/zk"
)

// DefaultURL is the registry used without REGKIT_URL: a local ZooKeeper, at
// Dubbo's paths (/dubbo/<interface>/providers).
const DefaultURL = "zk://127.0.0.1:2181/?layout=dubbo"

func main() {
	fixture := flag.Bool("fixture", false, "register Java Dubbo provider URLs first (no Java needed)")
	version := flag.String("version", "1.0.0", "the provider version to consume")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, *fixture, *version); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer, fixture bool, version string) error {
	url := os.Getenv("REGKIT_URL")
	if url == "" {
		url = DefaultURL
	}
	if !strings.Contains(url, "layout=dubbo") {
		return fmt.Errorf("REGKIT_URL %s: the Dubbo consumer needs a zk:// URL with layout=dubbo", url)
	}
	if fixture {
		conn, err := writeFixture(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close()
		fmt.Fprintf(out, "fixture: %d Java Dubbo providers of %s registered\n", len(javaProviders), Interface)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := registry.Open(ctx, url, registry.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer c.Close()
	view, err := cache.New(c, cache.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer view.Close()

	// Follow the interface; a Pool over the providers of our version.
	pool, err := lb.NewPool(lb.WeightedRoundRobin(), lb.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer pool.Close()
	w, err := view.Watch(ctx, Interface)
	if err != nil {
		return err
	}
	defer w.Close()
	var snap registry.Snapshot
	for len(snap.Instances) == 0 {
		if snap, err = w.Next(ctx); err != nil {
			return fmt.Errorf("waiting for providers of %s: %w", Interface, err)
		}
	}
	var ours []registry.Instance
	for _, in := range snap.Instances {
		md := in.Metadata
		proto := md["protocol"]
		if proto == "" {
			proto = "dubbo"
		}
		fmt.Fprintf(out, "provider %s://%s application=%s version=%s weight=%d methods=%s\n",
			proto, in.Addr(), md["application"], md["version"], in.Weight, md["methods"])
		if md["version"] == version && md["group"] == "" {
			ours = append(ours, in)
		}
	}
	pool.Update(ours)
	fmt.Fprintf(out, "consuming %s version %s: %d providers\n", Interface, version, len(ours))

	count := map[string]int{}
	for range 30 {
		r, err := pool.Pick(lb.PickInfo{})
		if err != nil {
			return err
		}
		count[r.Endpoint.Addr]++
		r.Done(nil) // a real consumer reports the call's outcome here
	}
	addrs := make([]string, 0, len(count))
	for a := range count {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		fmt.Fprintf(out, "%d of 30 calls to %s\n", count[a], a)
	}
	return nil
}
