package consul_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// Issue 14 item 1, the server's side: an agent configured with a smaller
// kv_max_value_size than the client's check refuses a value itself (HTTP 413),
// and that refusal is ErrInvalid, a permanent answer, not ErrUnavailable.
func TestServerRefusalIsPermanent(t *testing.T) {
	s := startServer(t, testenv.WithConsulKVMaxValueSize(16<<10))
	c := s.open(t, "refusal", "")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	value := make([]byte, 64<<10) // under the client's check, over this agent's limit
	_, err := c.Store().Create(ctx, "/big", value)
	if ctx.Err() != nil {
		t.Fatalf("Store.Create returned only when its context ended: %v", err)
	}
	if !errors.Is(err, registry.ErrInvalid) || errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Store.Create refused by the agent = %v, want ErrInvalid", err)
	}
	if _, err := c.Store().Create(ctx, "/small", []byte("x")); err != nil {
		t.Errorf("a small Store.Create after the refusal: %v", err)
	}
}
