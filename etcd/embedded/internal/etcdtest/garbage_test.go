package etcdtest_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// Keys other clients wrote under a service's directory that are not instances (a
// 1 MB value, non-JSON, a record naming another ID or service, an invalid record,
// nested keys) are skipped and logged once, and never break a list or a watch.
func TestGarbageSkipped(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := "/g/services/orders/"
	for k, v := range map[string]string{
		dir + "garbage-big":      strings.Repeat("x", 1<<20),
		dir + "garbage-notjson":  "not json {",
		dir + "garbage-empty":    "",
		dir + "garbage-otherid":  `{"id":"o9","service":"orders","host":"10.0.0.9","port":80,"weight":1}`,
		dir + "garbage-othersvc": `{"id":"garbage-othersvc","service":"payments","host":"10.0.0.9","port":80,"weight":1}`,
		dir + "garbage-port0":    `{"id":"garbage-port0","service":"orders","host":"10.0.0.9","port":0,"weight":1}`,
		dir + "garbage-nested/x": `{"id":"garbage-nested/x","service":"orders","host":"10.0.0.9","port":80,"weight":1}`,
		dir + "garbage-nul\x00":  `{"id":"garbage-nul\u0000","service":"orders","host":"10.0.0.9","port":80,"weight":1}`,
		"/g/services/orders":     `{"garbage-dirkey":true}`,
	} {
		if _, err := e.admin.Put(ctx, k, v); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	logs := testenv.NewLogCapture(slog.LevelDebug)
	c, err := registry.Open(ctx, "etcd://"+e.srv.Endpoint()+"/g?dial_timeout=10s", registry.WithLogger(logs.Logger()),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "o1", Host: "10.0.0.1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckGarbageSkipped(t, c, "orders", []string{"o1"}, []string{
		"garbage-big", "garbage-notjson", "garbage-empty", "garbage-otherid", "garbage-othersvc",
		"garbage-port0", "garbage-nested", "garbage-nul"}, logs)
}
