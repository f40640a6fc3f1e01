package nacos_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
)

// listed returns the IDs c's connection lists for service, sorted.
func listed(ctx context.Context, c *registry.Client, service string) ([]string, error) {
	l, err := c.Conn().List(ctx, service)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range l.Instances {
		out = append(out, in.ID)
	}
	slices.Sort(out)
	return out, nil
}

// addressTaken: two registrations with different IDs at one ip:port#cluster are
// one Nacos instance. The later Register takes the address; the earlier one's
// keep-alive steps back (Reregistering, Err wrapping ErrExists) and its put back
// never takes the address again while the other lives (it used to put it back at
// every presence check, so the two took turns); once the other closes, it takes
// the address back. With clustersApart (Nacos, not Polaris, which names an
// instance by ip:port alone), a registration at the same ip:port in another
// cluster is another instance and disturbs neither.
func addressTaken(t *testing.T, open func(t testing.TB, ns string) *registry.Client, clustersApart bool) {
	ns := newNS(t)
	ctx := ctxFor(t)
	a, b, c := open(t, ns), open(t, ns), open(t, ns)
	defer a.Close()
	defer b.Close()
	defer c.Close()
	ra, err := a.Register(ctx, inst("addr", "a1", 7901))
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	want := func(ids ...string) func() error {
		return func() error {
			got, err := listed(ctx, c, "addr")
			if err != nil {
				return err
			}
			if !slices.Equal(got, ids) {
				return fmt.Errorf("listed %v, want %v", got, ids)
			}
			return nil
		}
	}
	testenv.Eventually(t, faultTimeout, "a1 listed", want("a1"))

	rb, err := b.Register(ctx, inst("addr", "b1", 7901))
	if err != nil {
		t.Fatalf("Register of another ID at a held address: %v", err)
	}
	testenv.Eventually(t, faultTimeout, "a1 steps back, b1 holds the address", func() error {
		if st, err := ra.State(), ra.Err(); st != registry.Reregistering || !errors.Is(err, registry.ErrExists) {
			return fmt.Errorf("a1 is %v (%v), want re-registering with ErrExists", st, err)
		}
		if st := rb.State(); st != registry.Registered {
			return fmt.Errorf("b1 is %v (%v)", st, rb.Err())
		}
		return want("b1")()
	})
	// a1 keeps retrying and is refused: the address is still b1's.
	if err := want("b1")(); err != nil {
		t.Fatal(err)
	}
	if st, err := ra.State(), ra.Err(); st != registry.Reregistering || !errors.Is(err, registry.ErrExists) {
		t.Fatalf("a1 is %v (%v), want re-registering with ErrExists", st, err)
	}

	// Another cluster at the same ip:port is another instance.
	var rz registry.Registration
	others := []string{}
	if clustersApart {
		other := inst("addr", "z1", 7901)
		other.Zone = "z9"
		if rz, err = b.Register(ctx, other); err != nil {
			t.Fatal(err)
		}
		defer rz.Close()
		others = append(others, "z1")
		testenv.Eventually(t, faultTimeout, "b1 and z1 listed", want(append([]string{"b1"}, others...)...))
	}

	// b1 leaves: a1 takes the address back.
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, faultTimeout, "a1 back once b1 left", func() error {
		if st := ra.State(); st != registry.Registered {
			return fmt.Errorf("a1 is %v (%v)", st, ra.Err())
		}
		return want(append([]string{"a1"}, others...)...)()
	})
	if rz != nil && rz.State() != registry.Registered {
		t.Errorf("z1 (another cluster) is %v (%v)", rz.State(), rz.Err())
	}
}

func TestAddressTakenTestServer(t *testing.T) {
	e := newFake(t, "", nacostest.WithMode(nacostest.Mode30))
	addressTaken(t, e.open, true)
}

// TestAddressTakenSameClient: one Client registering a second ID at an address
// it holds under another ID (regkit sync replacing the copy of a source instance
// whose ID changed, the new copy first) keeps the entry when the first
// registration is deregistered: the entry is the second's now. Deregister used to
// delete it (the owner token is the Client's, the same for both), so the second
// was missing until its keep-alive put it back.
func TestAddressTakenSameClient(t *testing.T) {
	e := newFake(t, "", nacostest.WithMode(nacostest.Mode30))
	ns := newNS(t)
	ctx := ctxFor(t)
	c := e.open(t, ns)
	defer c.Close()
	r1, err := c.Register(ctx, inst("same", "s1", 7902))
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := c.Register(ctx, inst("same", "s2", 7902))
	if err != nil {
		t.Fatalf("Register of another ID at an address the Client holds: %v", err)
	}
	defer r2.Close()
	if err := r1.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, h := range e.srv.Instances(ns, nacos.DefaultGroup, "same") {
		ids = append(ids, h.Metadata[nacos.MetaID])
	}
	if !slices.Equal(ids, []string{"s2"}) {
		t.Fatalf("after s1's Deregister the server holds %v, want [s2]", ids)
	}
	if err := r2.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if hs := e.srv.Instances(ns, nacos.DefaultGroup, "same"); len(hs) != 0 {
		t.Fatalf("after s2's Deregister the server holds %v", hs)
	}
}
