package registry_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// refusingConn is a mem connection whose Put fails with putErr and which records
// the Remove calls.
type refusingConn struct {
	*mem.Conn
	putErr error

	mu      sync.Mutex
	removed []string
}

func (c *refusingConn) Put(ctx context.Context, inst registry.Instance) (driver.Lease, error) {
	return nil, c.putErr
}

func (c *refusingConn) Remove(ctx context.Context, inst registry.Instance) error {
	c.mu.Lock()
	c.removed = append(c.removed, inst.ID)
	c.mu.Unlock()
	return c.Conn.Remove(ctx, inst)
}

func (c *refusingConn) removals() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.removed...)
}

func openRefusing(t *testing.T, putErr error) (*registry.Client, *refusingConn) {
	t.Helper()
	mc, err := registry.Open(context.Background(), "mem://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Close() })
	rc := &refusingConn{Conn: mc.Conn().(*mem.Conn), putErr: putErr}
	c, err := registry.NewClient(func(driver.Config) (driver.Conn, error) { return rc, nil },
		registry.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, rc
}

// A Register that times out while the backend keeps failing the put transiently
// returns an error matching both ctx's error and the put's own error, and the
// Client removes what the put may have left.
func TestRegisterTimeoutKeepsTheCause(t *testing.T) {
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	cause := errors.Join(registry.ErrUnavailable, opErr)
	c, rc := openRefusing(t, cause)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "a", Host: "10.0.0.1", Port: 80})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Register = %v, want it to match context.DeadlineExceeded", err)
	}
	var ne *net.OpError
	if !errors.Is(err, registry.ErrUnavailable) || !errors.As(err, &ne) || ne != opErr {
		t.Errorf("Register = %v, want it to carry the put's error (ErrUnavailable and the *net.OpError)", err)
	}
	poll.Until(t, 5*time.Second, "failed Register's instance removed", func() error {
		if len(rc.removals()) == 0 {
			return errors.New("no Remove call")
		}
		return nil
	})
}

// A permanent refusal fails Register at once with the driver's error, and nothing
// is removed: nothing was written.
func TestRegisterPermanentRefusal(t *testing.T) {
	denied := errors.Join(registry.ErrPermission, errors.New("ACL denied"))
	c, rc := openRefusing(t, denied)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "a", Host: "10.0.0.1", Port: 80})
	if !errors.Is(err, registry.ErrPermission) || !errors.Is(err, denied) {
		t.Errorf("Register = %v, want the refusal itself", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Register returned only when its context ended: a permanent refusal must not be retried")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rc.removals(); len(got) != 0 {
		t.Errorf("Remove called for %v after a refusal", got)
	}
}

// A Register of an instance whose failed registration is still being removed waits
// for that removal, so the removal cannot delete the new registration.
func TestRegisterAfterFailedRegisterStays(t *testing.T) {
	c, err := registry.Open(context.Background(), "mem://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in := registry.Instance{Service: "svc", ID: "a", Host: "10.0.0.1", Port: 80}
	for range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Register(ctx, in); err == nil {
			t.Fatal("Register with a cancelled ctx succeeded")
		}
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		r, err := c.Register(ctx, in)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Conn().List(context.Background(), "svc")
		if err != nil || len(got.Instances) != 1 {
			t.Fatalf("after a failed then a successful Register: %v, %v; want the instance", got.Instances, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
