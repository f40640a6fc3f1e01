package etcdtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// Starting during an outage: with WithLazyConnect, Open succeeds while the server
// does not answer (without it, Open fails with ErrUnavailable after the dial
// timeout), Health says so, and the Client works once the server answers.
func TestLazyConnectDuringOutage(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.proxy.Cut()
	c, err := registry.Open(ctx, "etcd://"+e.proxy.Addr()+"/lazy?lease_ttl=3s&dial_timeout=2s",
		registry.WithLazyConnect(), registry.WithRetryBackoff(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatalf("lazy Open during an outage: %v", err)
	}
	defer c.Close()
	if err := c.Health(); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Health during the outage = %v, want ErrUnavailable", err)
	}
	e.proxy.Heal()
	testenv.Eventually(t, 20*time.Second, "Health nil once the server answers", c.Health)
	r, err := c.Register(ctx, registry.Instance{Service: "lazy", ID: "l1", Host: "127.0.0.1", Port: 7401})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := c.Instances(ctx, "lazy"); err != nil || len(got) != 1 {
		t.Fatalf("Instances after the outage = %v, %v; want l1", got, err)
	}
}
