package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
)

// CheckGarbageSkipped asserts what a list and a watch of service must do beside
// entries other clients wrote under the backend's paths that are not instances
// (garbage): Client.Instances, asked many times, and a Watch both answer exactly
// the instances wantIDs (the legitimate ones beside the garbage), and logs, which
// must be c's logger, has at most one line at Info or above naming each of
// garbage (a distinctive part of each garbage entry's key or name) over all those
// lists.
func CheckGarbageSkipped(t *testing.T, c *registry.Client, service string, wantIDs []string, garbage []string, logs *LogCapture) {
	t.Helper()
	ids := func(l []registry.Instance) []string {
		out := make([]string, 0, len(l))
		for _, in := range l {
			out = append(out, in.ID)
		}
		return out
	}
	want := slices.Clone(wantIDs)
	slices.Sort(want)
	Eventually(t, 20*time.Second, "the legitimate instances of "+service, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := c.Instances(ctx, service)
		if err != nil {
			return err
		}
		if !slices.Equal(ids(got), want) {
			return fmt.Errorf("Instances = %q, want %q", ids(got), want)
		}
		return nil
	})
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := c.Instances(ctx, service)
		cancel()
		if err != nil {
			t.Fatalf("list %d of %s beside garbage: %v", i, service, err)
		}
		if !slices.Equal(ids(got), want) {
			t.Fatalf("list %d of %s = %q, want %q", i, service, ids(got), want)
		}
		for _, in := range got {
			if err := in.Validate(); err != nil {
				t.Errorf("list %d of %s has an invalid instance %+v: %v", i, service, in, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, service)
	if err != nil {
		t.Fatalf("watch %s beside garbage: %v", service, err)
	}
	defer w.Close()
	s, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("watch %s beside garbage: Next: %v", service, err)
	}
	if s.Stale {
		t.Errorf("watch %s beside garbage: stale snapshot: %v", service, s.Err)
	}
	if !slices.Equal(ids(s.Instances), want) {
		t.Errorf("watch %s beside garbage = %q, want %q", service, ids(s.Instances), want)
	}
	for _, g := range garbage {
		if n := logs.Count(g, slog.LevelInfo); n > 1 {
			var lines []string
			for _, l := range logs.Lines() {
				if strings.Contains(l, g) {
					lines = append(lines, l)
				}
			}
			t.Errorf("garbage %q logged %d times over 10 lists and a watch, want at most once:\n%s", g, n, strings.Join(lines, "\n"))
		}
	}
}

// NoSecrets fails the test for every text (a log line, an error string) that
// contains one of secrets.
func NoSecrets(t testing.TB, what string, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for _, x := range texts {
			if strings.Contains(x, s) {
				t.Errorf("%s shows a secret %q: %s", what, s, x)
			}
		}
	}
}
