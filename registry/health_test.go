package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/registry"
)

// A health check that ignores its context and never returns fails at its
// timeout (the instance is marked unhealthy, as the doc of WithHealthCheck
// says), starts no second run while it hangs, and does not hold up Close: it
// used to leave the registration healthy and make Registration.Close and
// Client.Close wait for it for ever.
func TestHealthCheckHangingFailsAndCloses(t *testing.T) {
	c, _ := openMem(t)
	ctx := ctxT(t)
	release := make(chan struct{})
	defer close(release)
	runs := make(chan struct{}, 100)
	hang := false
	check := func(context.Context) error {
		runs <- struct{}{}
		if hang {
			<-release // ignores its context
		}
		hang = true // the first run passes, the second hangs
		return nil
	}
	r, err := c.Register(ctx, registry.Instance{Service: "hang", ID: "a", Host: "10.0.0.1", Port: 80},
		registry.WithHealthCheck(check, 10*time.Millisecond, registry.MarkUnhealthy), registry.WithHealthTimeout(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the hanging check marks the instance unhealthy", func() error {
		if r.Healthy() {
			return errors.New("still healthy")
		}
		return nil
	})
	if n := len(runs); n != 2 {
		t.Errorf("%d runs started, want 2 (none while one hangs)", n)
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	poll.Until(t, 10*time.Second, "Registration.Close with a hanging check", func() error {
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
			return nil
		default:
			return errors.New("Close has not returned")
		}
	})
}
