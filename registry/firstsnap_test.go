package registry_test

import (
	"fmt"
	"testing"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// A Watch opened after Register returned sees the instance in its first
// snapshot: the shared loop (started by the first registration's guard) may hold
// a view from before the second put, its event still in flight, and 6-42 of 200
// first snapshots lacked it (a gRPC client dialed right after registering saw "no
// instances"). The first Next now waits for the Client's returned registrations.
func TestFirstSnapshotHasReturnedRegisters(t *testing.T) {
	c, _ := openMem(t, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	ctx := ctxT(t)
	bad := 0
	for i := range 200 {
		svc := fmt.Sprintf("fs%d", i)
		for j := range 2 {
			r, err := c.Register(ctx, registry.Instance{Service: svc, ID: fmt.Sprintf("i%d", j), Host: "10.0.0.1", Port: 8000 + j})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
		}
		w, err := c.Watch(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Instances) != 2 {
			bad++
			t.Logf("%s: first snapshot %v", svc, s.Instances)
		}
		w.Close()
	}
	if bad > 0 {
		t.Fatalf("%d of 200 first snapshots lack a returned Register", bad)
	}
}
