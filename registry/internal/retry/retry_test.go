package retry_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/regkit/regkit/registry/internal/retry"
)

func TestBackoffResetsOnlyAfterStablePeriod(t *testing.T) {
	fc := clockwork.NewFakeClock()
	b := retry.NewBackoff(fc, 100*time.Millisecond, 10*time.Second)
	d1, first := b.Fail()
	if !first || d1 > 150*time.Millisecond {
		t.Fatalf("first failure: %v %v", d1, first)
	}
	// Up for a moment, then broken again: no reset, no new streak.
	var last time.Duration
	for i := 0; i < 8; i++ {
		b.Up()
		fc.Advance(time.Second)
		var first bool
		last, first = b.Fail()
		if first {
			t.Fatalf("failure %d after a short up period started a new streak", i+2)
		}
	}
	if last < time.Second {
		t.Fatalf("after 9 failures the delay is %v, want it grown well above the minimum", last)
	}
	// Up for Stable: the next failure starts over, and is reported.
	b.Up()
	fc.Advance(b.Stable())
	d, first := b.Fail()
	if !first || d > 150*time.Millisecond {
		t.Fatalf("after a stable period: %v %v, want a new streak from the minimum", d, first)
	}
}

func TestSleep(t *testing.T) {
	fc := clockwork.NewFakeClock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- retry.Sleep(ctx, fc, time.Hour) }()
	if err := fc.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	fc.Advance(time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if err := retry.Sleep(cctx, fc, time.Hour); err == nil {
		t.Fatal("Sleep ignored a done context")
	}
}
