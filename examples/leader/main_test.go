package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestLeader runs it as `go run ./examples/leader` does on a fresh machine: on an
// embedded etcd of its own. Three terms, the dead leader's late write rejected,
// tokens growing.
func TestLeader(t *testing.T) {
	t.Setenv("REGKIT_URL", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatalf("leader: %v\n%s", err, out.String())
	}
	for _, want := range []string{"died without resigning", "late write: rejected: stale fencing token", "resigned", "tokens grew: true"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), " leads, fencing token "); n != 3 {
		t.Errorf("%d terms, want 3:\n%s", n, out.String())
	}
}
