package consul_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/consul"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// Consul service IDs are per node: another node's catalog entry may carry the ID
// of a live regkit instance. A Register of an ID such an entry holds fails with
// ErrExists, and a listing has each ID once, the older entry (the live
// registration), never two instances of one ID.
func TestOneIDAcrossNodes(t *testing.T) {
	s := startServer(t)
	c := s.open(t, "nodes", "")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := c.Conn().(*consul.Conn)
	other := func(id string, port int) {
		t.Helper()
		reg := &api.CatalogRegistration{Node: "other-node", Address: "10.9.9.8",
			Service: &api.AgentService{ID: conn.ServiceID("svc", id), Service: conn.ServiceName("svc"), Address: "10.9.9.8", Port: port,
				Tags: []string{"regkit", "regkit-owner=someone-else"}, Meta: map[string]string{"regkit-id": id}}}
		if _, err := s.admin.Catalog().Register(reg, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = s.admin.Catalog().Deregister(&api.CatalogDeregistration{Node: "other-node", ServiceID: conn.ServiceID("svc", id)}, nil)
		})
	}

	// An ID another node's entry holds is refused.
	other("held", 9990)
	testenv.Eventually(t, 20*time.Second, "the other node's entry listed", func() error {
		got, err := c.Instances(ctx, "svc")
		if err != nil || len(got) != 1 || got[0].ID != "held" {
			return fmt.Errorf("Instances = %v, %v", got, err)
		}
		return nil
	})
	if r, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "held", Host: "127.0.0.1", Port: 7990}); !errors.Is(err, registry.ErrExists) {
		if r != nil {
			_ = r.Close()
		}
		t.Fatalf("Register of an ID another node's entry holds = %v, want ErrExists", err)
	}

	// A later entry of a live ID on another node: the ID is listed once, ours.
	r, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "mine", Host: "127.0.0.1", Port: 7991})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	other("mine", 9991)
	w, err := c.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		snap, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ports := map[string][]int{}
		for _, in := range snap.Instances {
			ports[in.ID] = append(ports[in.ID], in.Port)
		}
		if len(ports["mine"]) > 1 {
			t.Fatalf("a snapshot has ID mine %d times: ports %v", len(ports["mine"]), ports["mine"])
		}
		got, err := c.Conn().List(ctx, "svc")
		if err != nil {
			t.Fatal(err)
		}
		n, port := 0, 0
		for _, in := range got.Instances {
			if in.ID == "mine" {
				n, port = n+1, in.Port
			}
		}
		if n == 1 && port == 7991 && len(got.Instances) == 2 {
			break
		}
		if n > 1 {
			t.Fatalf("List has ID mine %d times", n)
		}
	}
}
