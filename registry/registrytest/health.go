package registrytest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
)

// healthInterval is how often the suite's health checks run.
const healthInterval = 100 * time.Millisecond

// switchCheck is a health check that passes while ok is true.
func switchCheck(ok *atomic.Bool) func(context.Context) error {
	return func(context.Context) error {
		if ok.Load() {
			return nil
		}
		return errors.New("dependency down")
	}
}

// health accepts a snapshot where instance id is listed with Healthy equal to
// want, and Snapshot.Healthy agrees.
func health(id string, want bool) func(registry.Snapshot) error {
	return func(s registry.Snapshot) error {
		if s.Stale {
			return fmt.Errorf("stale")
		}
		listed, healthy := false, false
		for _, in := range s.Instances {
			if in.ID == id {
				listed, healthy = true, in.Healthy
			}
		}
		inHealthy := hasID(s.Healthy(), id)
		if !listed || healthy != want || inHealthy != want {
			return fmt.Errorf("listed %v healthy %v (in Snapshot.Healthy: %v), want listed and healthy %v", listed, healthy, inHealthy, want)
		}
		return nil
	}
}

func hasID(list []registry.Instance, id string) bool {
	for _, in := range list {
		if in.ID == id {
			return true
		}
	}
	return false
}

// testHealthMark: with WithHealthCheck(MarkUnhealthy), a watcher on another
// client sees the instance turn unhealthy while the check fails, and healthy
// again once it passes; it stays listed throughout. A backend that cannot
// express health withdraws it instead, and the case says so.
func testHealthMark(t *testing.T, h *Harness) {
	ns := namespace(t)
	ctx := ctxT(t, 3*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	var ok atomic.Bool
	ok.Store(true)
	r, err := a.Register(ctx, inst("health", "h1", 7501),
		registry.WithHealthCheck(switchCheck(&ok), healthInterval, registry.MarkUnhealthy))
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "health")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "registered healthy", health("h1", true))
	ok.Store(false)
	if a.Capabilities().Health && h.HidesUnhealthy {
		h.nextUntil(t, w, "marked unhealthy, hidden by the listing", hasIDs(true))
		t.Logf("%s: this client lists only healthy instances; the unhealthy instance left the view", h.Name)
	} else if !a.Capabilities().Health {
		h.nextUntil(t, w, "withdrawn (no native health)", hasIDs(true))
		t.Logf("%s: cannot mark an instance unhealthy in place (Capabilities.Health false); MarkUnhealthy withdrew it", h.Name)
	} else {
		h.nextUntil(t, w, "marked unhealthy", health("h1", false))
		h.eventually(t, "Registration.Healthy false", func() error {
			if r.Healthy() || r.State() != registry.Registered {
				return fmt.Errorf("Healthy %v, state %v", r.Healthy(), r.State())
			}
			return nil
		})
	}
	ok.Store(true)
	h.nextUntil(t, w, "healthy again", health("h1", true))
	h.eventually(t, "Registration.Healthy true", func() error {
		if !r.Healthy() || r.State() != registry.Registered {
			return fmt.Errorf("Healthy %v, state %v", r.Healthy(), r.State())
		}
		return nil
	})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "deregistered", hasIDs(true))
}

// testHealthWithdraw: with WithHealthCheck(Withdraw) the instance disappears
// while the check fails (the Registration is Withdrawn) and reappears once it
// passes; Close while withdrawn succeeds.
func testHealthWithdraw(t *testing.T, h *Harness) {
	ns := namespace(t)
	ctx := ctxT(t, 3*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	var ok atomic.Bool
	ok.Store(true)
	r, err := a.Register(ctx, inst("withdraw", "w1", 7502),
		registry.WithHealthCheck(switchCheck(&ok), healthInterval, registry.Withdraw))
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "withdraw")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "registered", hasIDs(true, "w1"))
	for round := range 2 {
		ok.Store(false)
		h.nextUntil(t, w, fmt.Sprintf("withdrawn (round %d)", round), hasIDs(true))
		h.eventually(t, "Registration Withdrawn", func() error {
			if r.State() != registry.Withdrawn || r.Healthy() {
				return fmt.Errorf("state %v, Healthy %v", r.State(), r.Healthy())
			}
			return nil
		})
		ok.Store(true)
		h.nextUntil(t, w, fmt.Sprintf("back (round %d)", round), health("w1", true))
		h.eventually(t, "Registration Registered", func() error {
			if r.State() != registry.Registered || !r.Healthy() {
				return fmt.Errorf("state %v, Healthy %v", r.State(), r.Healthy())
			}
			return nil
		})
	}
	ok.Store(false)
	h.nextUntil(t, w, "withdrawn before Close", hasIDs(true))
	h.eventually(t, "Registration Withdrawn", func() error {
		if r.State() != registry.Withdrawn {
			return fmt.Errorf("state %v", r.State())
		}
		return nil
	})
	if err := r.Close(); err != nil {
		t.Fatalf("Close while withdrawn: %v", err)
	}
	// Passing again after Close puts nothing back.
	ok.Store(true)
	r2, err := a.Register(ctx, inst("withdraw", "w2", 7503))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	h.nextUntil(t, w, "only the new instance", hasIDs(true, "w2"))
}

// version accepts a snapshot where instance id is listed with metadata version
// v and Healthy equal to healthy.
func version(id, v string, healthy bool) func(registry.Snapshot) error {
	check := health(id, healthy)
	return func(s registry.Snapshot) error {
		if err := check(s); err != nil {
			return err
		}
		for _, in := range s.Instances {
			if in.ID == id && in.Metadata["version"] != v {
				return fmt.Errorf("version %q, want %q", in.Metadata["version"], v)
			}
		}
		return nil
	}
}

// testHealthUpdate: Registration.Update of an instance marked unhealthy
// (MarkUnhealthy) keeps it unhealthy with the new data; an Update while
// Withdrawn only records the data, which the put back carries once the check
// passes.
func testHealthUpdate(t *testing.T, h *Harness) {
	ns := namespace(t)
	ctx := ctxT(t, 4*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	w, err := b.Watch(ctx, "healthupd")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	var ok atomic.Bool
	ok.Store(true)
	in := inst("healthupd", "u1", 7504)
	r, err := a.Register(ctx, in, registry.WithHealthCheck(switchCheck(&ok), healthInterval, registry.MarkUnhealthy))
	if err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "registered healthy", version("u1", "v1", true))
	if !a.Capabilities().Health || h.HidesUnhealthy {
		t.Logf("%s: no unhealthy instance to see in the listing (Capabilities.Health %v, HidesUnhealthy %v); the mark part is skipped",
			h.Name, a.Capabilities().Health, h.HidesUnhealthy)
	} else {
		ok.Store(false)
		h.nextUntil(t, w, "marked unhealthy", version("u1", "v1", false))
		h.eventually(t, "Registration.Healthy false", func() error {
			if r.Healthy() {
				return fmt.Errorf("Healthy true")
			}
			return nil
		})
		in.Metadata = map[string]string{"version": "v2", "id": "u1"}
		if err := r.Update(ctx, in); err != nil {
			t.Fatalf("Update while marked unhealthy: %v", err)
		}
		h.nextUntil(t, w, "updated, still unhealthy", version("u1", "v2", false))
		// It stays unhealthy: no later write restores it while the check fails.
		time.Sleep(5 * healthInterval)
		list, err := b.Instances(ctx, "healthupd")
		if err != nil {
			t.Fatal(err)
		}
		if err := version("u1", "v2", false)(registry.Snapshot{Instances: list}); err != nil {
			t.Fatalf("after the Update: %v", err)
		}
		if r.Healthy() || r.State() != registry.Registered {
			t.Fatalf("after the Update: Healthy %v, state %v", r.Healthy(), r.State())
		}
		ok.Store(true)
		h.nextUntil(t, w, "healthy again with the new data", version("u1", "v2", true))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "deregistered", hasIDs(true))

	ok.Store(true)
	in = inst("healthupd", "u2", 7505)
	r, err = a.Register(ctx, in, registry.WithHealthCheck(switchCheck(&ok), healthInterval, registry.Withdraw))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h.nextUntil(t, w, "registered", version("u2", "v1", true))
	ok.Store(false)
	h.nextUntil(t, w, "withdrawn", hasIDs(true))
	h.eventually(t, "Registration Withdrawn", func() error {
		if r.State() != registry.Withdrawn {
			return fmt.Errorf("state %v", r.State())
		}
		return nil
	})
	in.Metadata = map[string]string{"version": "v3", "id": "u2"}
	if err := r.Update(ctx, in); err != nil {
		t.Fatalf("Update while withdrawn: %v", err)
	}
	if got := r.Instance().Metadata["version"]; got != "v3" || r.State() != registry.Withdrawn {
		t.Fatalf("after the Update while withdrawn: version %q, state %v; want v3, withdrawn", got, r.State())
	}
	ok.Store(true)
	h.nextUntil(t, w, "put back with the updated data", version("u2", "v3", true))
	h.eventually(t, "Registration Registered", func() error {
		if r.State() != registry.Registered || !r.Healthy() {
			return fmt.Errorf("state %v, Healthy %v", r.State(), r.Healthy())
		}
		return nil
	})
}
