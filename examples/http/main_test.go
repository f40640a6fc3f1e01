package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded"
)

func runExample(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatalf("http example: %v\n%s", err, out.String())
	}
	for _, want := range []string{"2 calls: hello from greeter-1 (Host: greeter)", "2 calls: hello from greeter-2 (Host: greeter)",
		"4 calls, 4 answered by greeter-2, 0 failed", "greeter-1 ejected: true", "greeter-2 ejected: false",
		"the balancer has greeter-2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	return out.String()
}

func TestHTTPExample(t *testing.T) {
	t.Setenv("REGKIT_URL", "")
	if out := runExample(t); !strings.Contains(out, "started an embedded etcd") {
		t.Errorf("without REGKIT_URL the example should start an embedded etcd:\n%s", out)
	}
}

func TestHTTPExampleOnEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Setenv("REGKIT_URL", "etcd://"+srv.Endpoint()+"/http-example")
	runExample(t)
}
