package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded"
)

func runQuickstart(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatalf("quickstart: %v\n%s", err, out.String())
	}
	for _, want := range []string{"call 4 -> ", "stopped greeter-1", "client now sees: greeter-2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	return out.String()
}

// TestQuickstart runs it as `go run ./examples/quickstart` does on a fresh machine:
// no REGKIT_URL, so it starts an embedded etcd of its own.
func TestQuickstart(t *testing.T) {
	t.Setenv("REGKIT_URL", "")
	if out := runQuickstart(t); !strings.Contains(out, "started an embedded etcd") || !strings.Contains(out, "backend: etcd://") {
		t.Errorf("without REGKIT_URL the quickstart should run on an embedded etcd:\n%s", out)
	}
}

// TestQuickstartOnEtcd runs it against a real etcd server given by REGKIT_URL (one
// the test starts with package embedded, not one the quickstart starts itself).
func TestQuickstartOnEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Setenv("REGKIT_URL", "etcd://"+srv.Endpoint()+"/quickstart")
	if out := runQuickstart(t); strings.Contains(out, "embedded") {
		t.Errorf("with REGKIT_URL set the quickstart must not start its own etcd:\n%s", out)
	}
}
