// Package poll waits for a condition in tests by polling it with a deadline, the
// one way tests in this module wait (never a bare time.Sleep). It has no
// dependencies, so any test package may import it.
package poll

import (
	"context"
	"testing"
	"time"
)

// Interval is how often Until checks its condition.
const Interval = 10 * time.Millisecond

// Until calls cond every Interval until it returns nil, then returns. If timeout
// passes first, it fails the test with what and cond's last error.
func Until(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Wait(timeout, cond); err != nil {
		t.Fatalf("%s: still not true after %v: %v", what, timeout, err)
	}
}

// Wait calls cond every Interval until it returns nil (then Wait returns nil) or
// timeout passes (then Wait returns cond's last error), for code without a test
// to fail, such as a fault injector on a connection.
func Wait(timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}
