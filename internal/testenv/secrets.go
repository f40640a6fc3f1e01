package testenv

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// SecretWitness keeps what a run with credentials shows its user, every log line
// (captured at Debug) and every error, for the backends' credentials-never-leak
// tests: each drives its own client through a wrong credential, faults and a
// closed port with Options, records errors with Keep, and ends with Check.
// Safe for concurrent use.
type SecretWitness struct {
	logs *LogCapture
	mu   sync.Mutex
	errs []string
}

// NewSecretWitness returns an empty witness.
func NewSecretWitness() *SecretWitness {
	return &SecretWitness{logs: NewLogCapture(slog.LevelDebug)}
}

// Options are the Client options of such a run: the witness's logger, short
// retries (50 ms to 500 ms) and requests (2 s), and addresses that ignore the
// environment; extra come after them.
func (w *SecretWitness) Options(extra ...registry.Option) []registry.Option {
	return append([]registry.Option{registry.WithLogger(w.logs.Logger()),
		registry.WithRetryBackoff(50*time.Millisecond, 500*time.Millisecond),
		registry.WithRequestTimeout(2 * time.Second),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true})}, extra...)
}

// Keep records err's text (nil is ignored) and returns err.
func (w *SecretWitness) Keep(err error) error {
	if err != nil {
		w.mu.Lock()
		w.errs = append(w.errs, err.Error())
		w.mu.Unlock()
	}
	return err
}

// Refused runs call, which must fail with registry.ErrPermission within limit: a
// wrong credential is refused at once, never retried.
func (w *SecretWitness) Refused(t testing.TB, what string, limit time.Duration, call func() error) {
	t.Helper()
	start := time.Now()
	err := w.Keep(call())
	if !errors.Is(err, registry.ErrPermission) {
		t.Errorf("%s = %v, want ErrPermission", what, err)
	}
	if d := time.Since(start); d > limit {
		t.Errorf("%s took %v (more than %v): retried", what, d, limit)
	}
}

// ThroughCut arms a watch of service on c, cuts c's connections with cut, reads
// with read and follows the watch until it is stale (at most 4 s), heals, runs
// restart (a server restart; may be nil) and waits until read succeeds again,
// keeping every error on the way.
func (w *SecretWitness) ThroughCut(t testing.TB, ctx context.Context, c *registry.Client, service string,
	cut, heal, restart func(), read func(context.Context) error) {
	t.Helper()
	wt, err := c.Watch(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	_, err = wt.Next(ctx)
	w.Keep(err)
	cut()
	sctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	w.Keep(read(sctx))
	for {
		s, err := wt.Next(sctx)
		w.Keep(err)
		if err != nil || s.Stale {
			w.Keep(s.Err)
			break
		}
	}
	cancel()
	heal()
	if restart != nil {
		restart()
	}
	Eventually(t, 30*time.Second, "reads again after the faults", func() error { return w.Keep(read(ctx)) })
}

// Check fails t when nothing was captured (the run proved nothing) and for every
// captured line or error that contains one of secrets or matches one of patterns.
func (w *SecretWitness) Check(t testing.TB, secrets []string, patterns ...*regexp.Regexp) {
	t.Helper()
	lines := w.logs.Lines()
	w.mu.Lock()
	errs := append([]string(nil), w.errs...)
	w.mu.Unlock()
	if len(lines)+len(errs) == 0 {
		t.Fatal("no log line or error captured: the test proves nothing")
	}
	NoSecrets(t, "a log line", secrets, lines...)
	NoSecrets(t, "an error", secrets, errs...)
	for _, re := range patterns {
		for _, x := range append(lines, errs...) {
			if re.MatchString(x) {
				t.Errorf("a secret (%s) shows in: %s", re, x)
			}
		}
	}
	t.Logf("%d log lines and %d errors checked", len(lines), len(errs))
}
