package consul_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// Services other clients registered under our service's name that are not valid
// instances (odd tags and meta, an ID naming another instance, port 0, an invalid
// ID) are skipped and logged once, and never break a list or a watch.
func TestGarbageSkipped(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "g-orders" // service orders in namespace g
	for _, r := range []*api.AgentServiceRegistration{
		{ID: name + "@garbage-tags", Name: name, Address: "10.0.0.9", Port: 80,
			Tags: []string{"regkit", "regkit-meta=not json", `regkit-meta={"":"empty key"}`, "", "regkit-meta="},
			Meta: map[string]string{"regkit-id": "garbage-tags"}},
		{ID: name + "@garbage-badid", Name: name, Address: "10.0.0.9", Port: 81,
			Meta: map[string]string{"regkit-id": "garbage/bad@id"}},
		{ID: name + "@garbage-claims-o1", Name: name, Address: "10.0.0.9", Port: 82,
			Meta: map[string]string{"regkit-id": "o1"}},
		{ID: name + "@garbage-port0", Name: name, Address: "10.0.0.9", Port: 0,
			Meta: map[string]string{"regkit-id": "garbage-port0"}},
		{ID: name + "@garbage-zone", Name: name, Address: "10.0.0.9", Port: 83,
			Meta: map[string]string{"regkit-id": "garbage-zone", "zone": "not a zone!"}},
		{ID: "garbage-noat", Name: name, Address: "", Port: 84},
	} {
		if err := s.admin.Agent().ServiceRegister(r); err != nil {
			t.Fatalf("register %s: %v", r.ID, err)
		}
	}
	logs := testenv.NewLogCapture(slog.LevelDebug)
	c := s.open(t, "g", "", registry.WithLogger(logs.Logger()),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "o1", Host: "10.0.0.1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckGarbageSkipped(t, c, "orders", []string{"o1"}, []string{
		"garbage-tags", "garbage-badid", "garbage-claims-o1", "garbage-port0", "garbage-zone", "garbage-noat"}, logs)
	// o1 is ours, not the foreign entry claiming its ID.
	got, err := c.Instances(ctx, "orders")
	if err != nil || len(got) != 1 || got[0].Port != 8080 {
		t.Errorf("Instances = %+v, %v; want o1 on port 8080", got, err)
	}
}
