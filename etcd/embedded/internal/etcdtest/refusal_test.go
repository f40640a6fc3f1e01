package etcdtest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/registry"
	"go.etcd.io/etcd/server/v3/embed"
)

// Issue 14 item 1, the server's side: a server configured with a smaller request
// limit (--max-request-bytes) than the client's check refuses the put itself, and
// that refusal is ErrInvalid, returned at once: no retry can change it. Register
// and Store.Create used to see such a refusal as ErrUnavailable and retry it
// until the context ended.
func TestServerRefusalIsPermanent(t *testing.T) {
	e := newEnv(t, etcdtest.WithConfig(func(c *embed.Config) { c.MaxRequestBytes = 32 << 10 }))
	c := e.open(t, "refusal")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	blob := strings.Repeat("x", 64<<10) // under the client's checks, over this server's limit
	_, err := c.Register(ctx, registry.Instance{Service: "big", ID: "b1", Host: "10.0.0.1", Port: 80,
		Metadata: map[string]string{"blob": blob}})
	if ctx.Err() != nil {
		t.Fatalf("Register returned only when its context ended: %v", err)
	}
	if !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("Register refused by the server = %v, want ErrInvalid", err)
	}
	_, err = c.Store().Create(ctx, "/big", []byte(blob))
	if ctx.Err() != nil {
		t.Fatalf("Store.Create returned only when its context ended: %v", err)
	}
	if !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("Store.Create refused by the server = %v, want ErrInvalid", err)
	}
	// The refused calls left nothing, and the connection still works.
	if l, err := c.Instances(ctx, "big"); err != nil || len(l) != 0 {
		t.Errorf("Instances after the refusal = %v, %v; want none", l, err)
	}
	if _, err := c.Register(ctx, registry.Instance{Service: "big", ID: "b2", Host: "10.0.0.1", Port: 81}); err != nil {
		t.Errorf("a small Register after the refusal: %v", err)
	}
}
