package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/internal/testenv"
)

func runExample(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatalf("grpc example: %v\n%s", err, out.String())
	}
	for _, want := range []string{"serving and registered greeter-2", "5 calls: hello regkit from greeter-1",
		"5 calls: hello regkit from greeter-2", "failed calls: 0", "after the stop, 4 of 4 calls: hello regkit from greeter-2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	return out.String()
}

// As `go run ./examples/grpc`: an embedded etcd of its own.
func TestGRPCExample(t *testing.T) {
	t.Setenv("REGKIT_URL", "")
	if out := runExample(t); !strings.Contains(out, "started an embedded etcd") {
		t.Errorf("without REGKIT_URL the example should start an embedded etcd:\n%s", out)
	}
}

// On an etcd given by REGKIT_URL, and on ZooKeeper.
func TestGRPCExampleOnBackends(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Run("etcd", func(t *testing.T) {
		t.Setenv("REGKIT_URL", "etcd://"+srv.Endpoint()+"/grpc-example")
		runExample(t)
	})
	t.Run("zk", func(t *testing.T) {
		zk := testenv.StartZooKeeper(t)
		t.Setenv("REGKIT_URL", "zk://"+zk.Addr()+"/grpc-example")
		runExample(t)
	})
}
