package registrytest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// testOversized: an instance or store value over the backend's limits fails at
// once with a FieldError naming the field, and is never sent (a ZooKeeper server
// drops the connection on a packet over jute.maxbuffer; retrying that forever
// used to stall Register and make every watch of the client resync).
func testOversized(t *testing.T, h *Harness) {
	ns := namespace(t)
	c := h.open(t, ns)
	_, checks := c.Conn().(driver.InstanceChecker)
	lim := c.Capabilities().Limits
	if !checks && lim == (driver.Limits{}) {
		t.Skipf("%s declares no size limit", h.Name)
	}
	// A watch of another service on the same client: it must not go stale.
	ctx := ctxT(t, h.timeout())
	w, err := c.Watch(ctx, "bystander")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "bystander's first view", hasIDs(true))

	// 1 MiB is the example: over ZooKeeper's packet limit but under its
	// client's buffer, so it used to be sent, refused by the server dropping the
	// connection, and retried until the context ended. Backends with a higher
	// limit may accept it; none may retry it. 2 MiB is over every backend's limit.
	rctx := ctxT(t, h.timeout())
	var fe *driver.FieldError
	for _, size := range []int{1 << 20, 2 << 20} {
		big := driver.Instance{Service: "big", ID: "b1", Host: "127.0.0.1", Port: 80,
			Metadata: map[string]string{"small": "x", "blob": strings.Repeat("x", size)}}
		r, err := c.Register(rctx, big)
		if rctx.Err() != nil {
			t.Fatalf("Register of a %d-byte metadata value returned only when its context ended: %v", size, err)
		}
		if err == nil && size < 2<<20 {
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, driver.ErrInvalid) || !errors.As(err, &fe) || fe.Field != "Metadata" {
			t.Fatalf("Register of a %d-byte metadata value = %v, want a FieldError for Metadata (at once, not retried)", size, err)
		}
	}
	if lim.StoreBytes > 0 && c.Capabilities().Store {
		_, err := c.Store().Create(rctx, "/big/value", make([]byte, lim.StoreBytes+1))
		if !errors.Is(err, driver.ErrInvalid) || !errors.As(err, &fe) || fe.Field != "value" {
			t.Errorf("Store.Create of %d bytes = %v, want a FieldError for value", lim.StoreBytes+1, err)
		}
	}
	// The bystander's view stayed fresh: nothing broke the client's connection.
	nctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	for {
		s, err := w.Next(nctx)
		if err != nil {
			break // no newer snapshot: nothing happened
		}
		if s.Stale || s.Resynced {
			t.Fatalf("the bystander's watch went stale or resynced (stale=%v resynced=%v err=%v)", s.Stale, s.Resynced, s.Err)
		}
	}
}

// testConnectFailure: a backend that does not answer is ErrUnavailable from Open,
// on every backend (etcd's connect timeout used to be a bare deadline error).
func testConnectFailure(t *testing.T, h *Harness) {
	if h.UnreachableURL == nil {
		t.Skipf("%s: no Harness.UnreachableURL", h.Name)
	}
	u := h.UnreachableURL(t)
	ctx := ctxT(t, h.timeout())
	c, err := registry.Open(ctx, u)
	if err == nil {
		c.Close()
		t.Fatalf("Open(%s) of an unreachable server succeeded", u)
	}
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("Open(%s) = %v, want ErrUnavailable", u, err)
	}
	// An already cancelled context is the context's error, before anything else.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := registry.Open(cctx, u); !errors.Is(err, context.Canceled) {
		if c != nil {
			c.Close()
		}
		t.Errorf("Open(%s) with a cancelled context = %v, want context.Canceled", u, err)
	}
}

// testContextErrors: a cancelled or expired context is the context's error under
// errors.Is from every call that takes one, and Watch fails instead of returning
// a watcher whose Next says "closed".
func testContextErrors(t *testing.T, h *Harness) {
	ns := namespace(t)
	c := h.open(t, ns)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelled, context.Canceled}, {"expired", expired, context.DeadlineExceeded}} {
		if _, err := c.Register(tc.ctx, inst("ctxsvc", "i1", 81)); !errors.Is(err, tc.want) {
			t.Errorf("Register with a %s context = %v, want %v", tc.name, err, tc.want)
		}
		if _, err := c.Instances(tc.ctx, "ctxsvc"); !errors.Is(err, tc.want) {
			t.Errorf("Instances with a %s context = %v, want %v", tc.name, err, tc.want)
		}
		if w, err := c.Watch(tc.ctx, "ctxsvc"); !errors.Is(err, tc.want) {
			if w != nil {
				w.Close()
			}
			t.Errorf("Watch with a %s context = %v, want %v", tc.name, err, tc.want)
		}
		if _, err := c.Services(tc.ctx); !errors.Is(err, tc.want) && !errors.Is(err, driver.ErrNotSupported) {
			t.Errorf("Services with a %s context = %v, want %v", tc.name, err, tc.want)
		}
	}
	// Nothing was registered by the refused calls.
	ctx := ctxT(t, h.timeout())
	if got, err := c.Instances(ctx, "ctxsvc"); err != nil || len(got) != 0 {
		t.Errorf("after refused calls: Instances = %v, %v; want none", ids(got), err)
	}
}

// testServices: Services lists the services with instances, sorted, and
// WatchServices follows the set as services appear and go.
func testServices(t *testing.T, h *Harness) {
	ns := namespace(t)
	a, b := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, h.timeout())
	if _, err := b.Services(ctx); errors.Is(err, driver.ErrNotSupported) {
		t.Skipf("%s cannot list services: %v", h.Name, err)
	}
	w, err := b.WatchServices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	set := func(want ...string) func() error {
		return func() error {
			got, err := b.Services(ctx)
			if err != nil {
				return err
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return errors.New("Services = [" + strings.Join(got, ",") + "], want [" + strings.Join(want, ",") + "]")
			}
			return nil
		}
	}
	nextSet := func(what string, want ...string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, h.timeout())
		defer cancel()
		var last []string
		for {
			s, err := w.Next(wctx)
			if err != nil {
				t.Fatalf("%s: %s: WatchServices Next: %v (last %v, want %v)", h.Name, what, err, last, want)
			}
			if last = s.Services; !s.Stale && strings.Join(last, ",") == strings.Join(want, ",") {
				return
			}
		}
	}
	nextSet("empty at first")
	r1, err := a.Register(ctx, inst("svc-b", "b1", 9001))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(ctx, inst("svc-b", "b2", 9002)); err != nil {
		t.Fatal(err)
	}
	r3, err := a.Register(ctx, inst("svc-a", "a1", 9003))
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(t, "both services listed", set("svc-a", "svc-b"))
	nextSet("both services watched", "svc-a", "svc-b")
	if err := r3.Close(); err != nil {
		t.Fatal(err)
	}
	_ = r1.Close()
	h.eventually(t, "svc-a gone once its last instance left", set("svc-b"))
	nextSet("svc-a gone from the watch", "svc-b")
}
