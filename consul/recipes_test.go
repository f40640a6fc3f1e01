package consul_test

import (
	"context"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/recipes/recipestest"
	"github.com/regkit/regkit/registry"
)

// On a persistent server, as the store suite: fencing tokens (CreateIndex) grow
// only while the server keeps its data, which a dev agent loses on restart.
//
// The clients use 2s blocking queries instead of the other suites' 10s: every
// wait for a predecessor is a blocking query, and Consul keeps counting a
// cancelled one against http_max_conns_per_client (200 per IP) until its wait
// runs out, so the lock churn of the safety tests (tens of handovers a second,
// all from 127.0.0.1) otherwise ends in "429 Too Many Requests".
func TestRecipesConformance(t *testing.T) {
	s := startServer(t, testenv.WithConsulPersistent())
	h := s.harness()
	h.NewClient = func(t testing.TB, ns string) *registry.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := registry.Open(ctx, "consul://"+s.proxy.Addr()+"/"+ns+"?check_ttl=4s&wait=2s&timeout=10s",
			registry.WithRetryBackoff(50*time.Millisecond, time.Second), registry.WithRequestTimeout(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The window (recipes doc): a destroyed session is learnt at the next
	// renewal, up to T/3 later, T being the suite's TTL clamped to Consul's 10s;
	// under LostOnly a holder is told after T without a successful renewal,
	// checked every second, while the server invalidates no sooner than T. Plus
	// a margin for a loaded machine. The harness's expiry destroys every
	// session. Faults come at least a window apart, so the fenced safety tests
	// run fewer rounds (and so faults) than on the backends with a shorter
	// window; -soak still runs many.
	const ttl = 10 * time.Second
	recipestest.Run(t, h, recipestest.Config{
		SessionTTL: ttl, Window: ttl/3 + 500*time.Millisecond, ExpireTouchesAll: true,
		Rounds: 60,
	})
}
