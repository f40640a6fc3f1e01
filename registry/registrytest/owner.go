package registrytest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// ownedBy accepts a snapshot (or listing) holding exactly one instance, id, with
// metadata "owner" equal to owner.
func ownedBy(id, owner string) func(registry.Snapshot) error {
	return func(s registry.Snapshot) error {
		if len(s.Instances) != 1 || s.Instances[0].ID != id || s.Instances[0].Metadata["owner"] != owner || s.Stale {
			return fmt.Errorf("got %+v stale=%v, want only %s of owner %s", s.Instances, s.Stale, id, owner)
		}
		return nil
	}
}

// testOneOwner: a live registration owns its instance ID. A second Register of
// the ID from another client fails with ErrExists at once and changes nothing;
// closing the owner frees the ID; a re-put after the owner's session was lost
// does not overwrite the entry a second client registered meanwhile (the first
// Registration reports the conflict and takes the ID back only once the second is
// gone); and watchers see the ID once.
func testOneOwner(t *testing.T, h *Harness) {
	if h.ExpireSession == nil {
		t.Fatalf("%s: Harness.ExpireSession is nil", h.Name)
	}
	ns := namespace(t)
	a, b, c := h.open(t, ns), h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 8*h.timeout())
	ina, inb := inst("own", "o1", 7701), inst("own", "o1", 7702)
	ina.Metadata["owner"], inb.Metadata["owner"] = "a", "b"
	ra, err := a.Register(ctx, ina)
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "a registered", ownedBy("o1", "a"))

	// 1. Another client's Register of the ID fails at once, and changes nothing.
	rctx := ctxT(t, h.timeout())
	if rb, err := b.Register(rctx, inb); !errors.Is(err, driver.ErrExists) || rctx.Err() != nil {
		if rb != nil {
			_ = rb.Close()
		}
		t.Fatalf("second Register of a live ID = %v (ctx %v), want ErrExists at once", err, rctx.Err())
	}
	got, err := c.Conn().List(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	if err := ownedBy("o1", "a")(registry.Snapshot{Instances: got.Instances}); err != nil {
		t.Fatalf("after the refused Register: %v", err)
	}
	if ra.State() != registry.Registered {
		t.Fatalf("owner's state %v (%v)", ra.State(), ra.Err())
	}
	// The owner's own Client too: a second Register of an ID it holds fails, even
	// with other data (an Update is the way to change it).
	same := ina.Clone()
	same.Port = 7703
	if r2, err := a.Register(rctx, same); !errors.Is(err, driver.ErrExists) || rctx.Err() != nil {
		if r2 != nil {
			_ = r2.Close()
		}
		t.Fatalf("the owner Client's second Register of its live ID = %v (ctx %v), want ErrExists at once", err, rctx.Err())
	}
	got, err = c.Conn().List(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	if err := ownedBy("o1", "a")(registry.Snapshot{Instances: got.Instances}); err != nil || got.Instances[0].Port != 7701 {
		t.Fatalf("after the owner Client's refused Register: %v (%+v)", err, got.Instances)
	}

	// 2. Closing the owner frees the ID.
	if err := ra.Close(); err != nil {
		t.Fatal(err)
	}
	var rb registry.Registration
	h.eventually(t, "b registers the freed ID", func() error {
		r, err := b.Register(ctx, inb)
		if err != nil {
			return err
		}
		rb = r
		return nil
	})
	h.nextUntil(t, w, "b holds the ID", ownedBy("o1", "b"))

	// 3. b's session is lost and a registers meanwhile: b's re-put must not
	// overwrite a's entry. a keeps trying from before the loss (each try fails at
	// once while b holds the ID); b's keeper may still win the race, and then b's
	// session is expired again.
	won := make(chan registry.Registration, 1)
	stop := make(chan struct{})
	tries := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := a.Register(ctx, ina)
			if err == nil {
				won <- r
				return
			}
			if !errors.Is(err, driver.ErrExists) {
				tries <- err
				return
			}
		}
	}()
	var ra2 registry.Registration
	for attempt := 0; ra2 == nil; attempt++ {
		if attempt == 100 {
			close(stop)
			t.Fatalf("b's re-put won the race for the ID %d times in a row", attempt)
		}
		changed := rb.Changed()
		h.ExpireSession(t, b)
		select {
		case <-changed:
		case <-ctx.Done():
			close(stop)
			t.Fatalf("b never noticed its session loss (state %v)", rb.State())
		}
		h.eventually(t, "a registered, or b again", func() error {
			select {
			case ra2 = <-won:
				return nil
			case err := <-tries:
				t.Fatalf("a's Register: %v", err)
			default:
			}
			if rb.State() == registry.Registered {
				return nil
			}
			return fmt.Errorf("b is %v (%v), a not registered yet", rb.State(), rb.Err())
		})
	}
	h.eventually(t, "b reports the conflict", func() error {
		if st, err := rb.State(), rb.Err(); st != registry.Reregistering || !errors.Is(err, driver.ErrExists) {
			return fmt.Errorf("state %v, err %v; want re-registering with ErrExists", st, err)
		}
		return nil
	})
	h.nextUntil(t, w, "a holds the ID, once", ownedBy("o1", "a"))
	// b keeps retrying and never overwrites: a fresh read shows a's entry alone.
	got, err = c.Conn().List(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	if err := ownedBy("o1", "a")(registry.Snapshot{Instances: got.Instances}); err != nil {
		t.Fatalf("b's re-put overwrote a's entry: %v", err)
	}
	if ra2.State() != registry.Registered {
		t.Fatalf("a's state %v (%v)", ra2.State(), ra2.Err())
	}

	// 4. a leaves: b, still retrying, takes the ID back.
	if err := ra2.Close(); err != nil {
		t.Fatal(err)
	}
	h.eventually(t, "b registered once a left", func() error {
		if st := rb.State(); st != registry.Registered {
			return fmt.Errorf("state %v (%v)", st, rb.Err())
		}
		return nil
	})
	h.nextUntil(t, w, "b holds the ID again", ownedBy("o1", "b"))
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.nextUntil(t, w, "the ID is free", hasIDs(true))
}

// testUpdate: Update changes a live instance in place: a watcher never sees it
// missing while Update runs n times, sees the final data, and the re-put after a
// session loss carries the updated data. A changed ID or Service is a FieldError.
func testUpdate(t *testing.T, h *Harness) {
	if h.ExpireSession == nil {
		t.Fatalf("%s: Harness.ExpireSession is nil", h.Name)
	}
	ns := namespace(t)
	a, c := h.open(t, ns), h.open(t, ns)
	ctx := ctxT(t, 4*h.timeout())
	in := inst("upd", "u1", 7801)
	in.Metadata["n"] = "0"
	r, err := a.Register(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := c.Watch(ctx, "upd")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h.nextUntil(t, w, "registered", hasIDs(true, "u1"))

	for _, bad := range []struct {
		field string
		in    driver.Instance
	}{{"ID", inst("upd", "u2", 7801)}, {"Service", inst("other", "u1", 7801)}} {
		var fe *driver.FieldError
		if err := r.Update(ctx, bad.in); !errors.As(err, &fe) || fe.Field != bad.field {
			t.Errorf("Update with another %s = %v, want a FieldError naming it", bad.field, err)
		}
	}

	// Every snapshot while Update runs has the instance.
	const n = 10
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			up := inst("upd", "u1", 7801)
			up.Metadata["n"] = fmt.Sprint(i)
			up.Weight = 10 + i
			if err := r.Update(ctx, up); err != nil {
				done <- fmt.Errorf("Update %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	last := fmt.Sprint(n)
	h.nextUntil(t, w, "final data, never a gap", func(s registry.Snapshot) error {
		if len(s.Instances) != 1 || s.Instances[0].ID != "u1" {
			t.Fatalf("a snapshot during Update lacks u1: %v (stale=%v)", ids(s.Instances), s.Stale)
		}
		if g := s.Instances[0]; g.Metadata["n"] != last || g.Weight != 10+n {
			return fmt.Errorf("n=%s weight=%d", g.Metadata["n"], g.Weight)
		}
		return nil
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := r.Instance(); got.Metadata["n"] != last {
		t.Errorf("Instance() after Update = %+v", got)
	}

	// The re-put after a session loss carries the updated data.
	changed := r.Changed()
	h.ExpireSession(t, a)
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatalf("the registration never noticed the session loss (state %v)", r.State())
	}
	h.eventually(t, "re-put with the updated data", func() error {
		if st := r.State(); st != registry.Registered {
			return fmt.Errorf("state %v (%v)", st, r.Err())
		}
		got, err := c.Conn().List(ctx, "upd")
		if err != nil {
			return err
		}
		if len(got.Instances) != 1 || got.Instances[0].Metadata["n"] != last {
			return fmt.Errorf("server has %+v", got.Instances)
		}
		return nil
	})
}
