package registrytest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// testLazyConnect: starting during an outage. With registry.WithLazyConnect, Open
// succeeds while the server does not answer (without it, Open fails with
// ErrUnavailable: testConnectFailure), Health says so where the backend reports
// health, and the Client works once the server answers.
func testLazyConnect(t *testing.T, h *Harness) {
	if h.Cut == nil {
		t.Skipf("%s: no Cut hook", h.Name)
	}
	if h.NewLazyClient == nil {
		t.Skipf("%s: no Harness.NewLazyClient (the backend cannot open lazily during an outage)", h.Name)
	}
	ns := namespace(t)
	ctx := ctxT(t, 2*h.timeout())
	heal := h.Cut(t)
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	c := h.NewLazyClient(t, ns)
	t.Cleanup(func() { _ = c.Close() })
	_, reportsHealth := c.Conn().(driver.Health)
	if err := c.Health(); reportsHealth && !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Health during the outage = %v, want ErrUnavailable", err)
	}
	heal()
	healed = true
	h.eventually(t, "Health nil once the server answers", c.Health)
	r, err := c.Register(ctx, inst("lazy", "l1", 7401))
	if err != nil {
		t.Fatalf("Register once the server answers: %v", err)
	}
	defer r.Close()
	h.eventually(t, "the instance listed", func() error {
		got, err := c.Instances(ctx, "lazy")
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0].ID != "l1" {
			return fmt.Errorf("got %v, want l1", ids(got))
		}
		return nil
	})
}
