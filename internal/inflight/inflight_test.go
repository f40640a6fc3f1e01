package inflight

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func spawn(f func()) bool { go f(); return true }

// A write whose caller gave up keeps running, and Wait returns only once it ended.
func TestRunOutlivesCallerAndWaitWaits(t *testing.T) {
	var s Set
	release := make(chan struct{})
	ended := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := Run(ctx, &s, "k", spawn, errors.New("closed"), func() (int, error) {
			defer close(ended)
			<-release
			return 1, nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want ctx's error", err)
		}
	}()
	poll.Until(t, 5*time.Second, "write counted", func() error {
		wctx, wcancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer wcancel()
		if s.Wait(wctx, "k") == nil {
			return errors.New("Wait returned with the write running or not yet counted")
		}
		return nil
	})
	cancel()
	if err := s.Wait(context.Background(), "other"); err != nil {
		t.Errorf("Wait on another key = %v", err)
	}
	close(release)
	if err := s.Wait(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	default:
		t.Error("Wait returned before the write ended")
	}
}

// Run does not run f on a closed connection and leaves nothing counted.
func TestRunClosed(t *testing.T) {
	var s Set
	closed := errors.New("closed")
	_, err := Run(context.Background(), &s, "k", func(func()) bool { return false }, closed, func() (int, error) {
		t.Error("f ran")
		return 0, nil
	})
	if !errors.Is(err, closed) {
		t.Errorf("Run = %v, want errClosed", err)
	}
	if err := s.Wait(context.Background(), "k"); err != nil {
		t.Error(err)
	}
}

// The detached context ignores its parent's end for grace, and ends with life.
func TestDetach(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	life, stop := context.WithCancel(context.Background())
	d, release := Detach(ctx, life, time.Hour)
	defer release()
	cancel()
	if d.Err() != nil {
		t.Fatalf("detached ctx ended with its parent: %v", d.Err())
	}
	stop()
	<-d.Done()

	ctx2, cancel2 := context.WithCancel(context.Background())
	d2, release2 := Detach(ctx2, context.Background(), 10*time.Millisecond)
	defer release2()
	cancel2()
	<-d2.Done()
	if !errors.Is(context.Cause(d2), context.DeadlineExceeded) {
		t.Errorf("cause = %v, want DeadlineExceeded after the grace", context.Cause(d2))
	}
}
