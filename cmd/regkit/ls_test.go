package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// TestLsServices: ls without SERVICE lists the services with an instance (table
// and JSON), none is exit status 3, and a backend that cannot list services is
// exit status 1 with a message saying to name one.
func TestLsServices(t *testing.T) {
	for name, urlFor := range backends(t) {
		t.Run(name, func(t *testing.T) {
			url := urlFor(t)
			r := regkit(t, url, "ls")
			r.want(t, exitNotFound)
			if !strings.Contains(r.stderr, "no service has an instance") {
				t.Fatalf("stderr: %q", r.stderr)
			}
			regkit(t, url, "ls", "-o", "json").want(t, exitNotFound, "[]")

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := registry.Open(ctx, url, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true}),
				registry.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, in := range []registry.Instance{
				{Service: "greeter", ID: "g1", Host: "127.0.0.1", Port: 8081},
				{Service: "greeter", ID: "g2", Host: "127.0.0.1", Port: 8082},
				{Service: "billing", ID: "b1", Host: "127.0.0.1", Port: 9090},
			} {
				if _, err := c.Register(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			r = regkitUntil(t, url, exitOK, []string{"ls"}, "billing", "greeter")
			if r.stdout != "SERVICE\nbilling\ngreeter\n" {
				t.Fatalf("ls:\n%s", r.stdout)
			}
			var names []string
			r = regkit(t, url, "ls", "-o", "json")
			r.want(t, exitOK)
			if err := json.Unmarshal([]byte(r.stdout), &names); err != nil || strings.Join(names, ",") != "billing,greeter" {
				t.Fatalf("ls -o json: %v %q", err, r.stdout)
			}
			regkitUntil(t, url, exitOK, []string{"ls", "greeter"}, "g1", "g2") // with a service: its instances, as before
		})
	}
	t.Run("NotSupported", func(t *testing.T) {
		// etcd's own naming layout without a target prefix: services cannot be told
		// from the other keys.
		r := regkit(t, "etcd://"+etcd.Endpoint()+"?layout=naming", "ls")
		r.want(t, exitError)
		if !strings.Contains(r.stderr, "cannot list its services; name one: regkit ls SERVICE") ||
			!strings.Contains(r.stderr, "not supported") {
			t.Fatalf("stderr: %q", r.stderr)
		}
	})
}
