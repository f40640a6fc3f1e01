package poll_test

import (
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
)

func TestUntilReturnsOnceTrue(t *testing.T) {
	n := 0
	poll.Until(t, 5*time.Second, "third call", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

// fakeTB records a Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = format
}

func TestUntilFailsAfterTimeout(t *testing.T) {
	f := &fakeTB{TB: t}
	poll.Until(f, 50*time.Millisecond, "never", func() error { return errors.New("no") })
	if f.failed == "" {
		t.Fatal("Until returned without failing the test although cond never held")
	}
}
