package nacos_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// Instances other clients put under our service that are not valid instances
// (missing ip or port, an invalid or claimed regkit.id, a weight out of range, a
// cluster that cannot be a zone) are skipped and logged once, and never break a
// list or a watch. (The test server stores what it is given, as a Nacos server
// fed by a buggy client or an old version does.)
func TestGarbageSkipped(t *testing.T) {
	e := newFake(t, "")
	ns := "g"
	add := func(in nacostest.Instance) {
		in.Namespace, in.Group, in.Service = ns, "DEFAULT_GROUP", "orders"
		if in.Cluster == "" {
			in.Cluster = "DEFAULT"
		}
		in.Healthy, in.Enabled = true, true
		e.srv.AddInstance(in)
	}
	for _, in := range []nacostest.Instance{
		{IP: "", Port: 80, Metadata: map[string]string{"regkit.id": "garbage-noip"}},
		{IP: "10.0.0.9", Port: 0, Metadata: map[string]string{"regkit.id": "garbage-noport"}},
		{IP: "10.0.0.9", Port: 81, Metadata: map[string]string{"regkit.id": "garbage/bad@id"}},
		{IP: "10.0.0.9", Port: 83, Weight: 1e300, Metadata: map[string]string{"regkit.id": "garbage-weight"}},
		{IP: "10.0.0.9", Port: 84, Cluster: "not a zone!", Metadata: map[string]string{"regkit.id": "garbage-cluster"}},
		{IP: "10.0.0.9", Port: 85, Metadata: map[string]string{"regkit.id": "garbage-mdkey", "": "empty key"}},
	} {
		add(in)
	}
	logs := testenv.NewLogCapture(slog.LevelDebug)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "nacos://"+e.srv.Addr()+"?namespace="+ns+"&"+fastParams, registry.WithLogger(logs.Logger()),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "o1", Host: "10.0.0.1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	// Another client's entry claiming o1 after it was registered (a live claimant
	// before it would make Register fail with ErrExists): listings keep ours.
	add(nacostest.Instance{IP: "10.0.0.9", Port: 82, Metadata: map[string]string{"regkit.id": "o1", "mark": "garbage-claims-o1"}})
	testenv.CheckGarbageSkipped(t, c, "orders", []string{"o1"}, []string{
		"garbage-noip", "garbage-noport", "garbage/bad@id", "garbage-claims-o1", "garbage-weight",
		"garbage-cluster", "garbage-mdkey"}, logs)
}
