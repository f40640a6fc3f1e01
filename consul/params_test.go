package consul_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
)

// TestDurationBoundsBeforeIO: durations outside Consul's bounds are FieldErrors
// naming the parameter, returned before Open dials (nothing listens on port 1).
// deregister_after under Consul's one-minute minimum was accepted, and the agent
// raised it silently.
func TestDurationBoundsBeforeIO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ query, field, reason string }{
		{"deregister_after=30s", "deregister_after", "at least 1m"},
		{"deregister_after=59s", "deregister_after", "at least 1m"},
		{"deregister_after=1s", "deregister_after", "at least 1m"},
		{"check_ttl=500ms", "check_ttl", "at least 1s"},
		{"lock_delay=2m", "lock_delay", "at most 60s"},
		{"wait=0s", "wait", "between 1s and 10m"},
	} {
		_, err := registry.Open(ctx, "consul://127.0.0.1:1?timeout=1s&"+tc.query)
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errContains(err, tc.reason) {
			t.Errorf("%s: Open = %v, want a FieldError for %s saying %q", tc.query, err, tc.field, tc.reason)
		}
	}
}
