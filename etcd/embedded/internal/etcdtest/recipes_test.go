package etcdtest_test

import (
	"testing"
	"time"

	"github.com/regkit/regkit/recipes/recipestest"
)

func TestRecipesConformance(t *testing.T) {
	// The window (recipes doc): a revoked lease is learnt at the next keep-alive,
	// up to T/3 later under either policy; under LostOnly a lease the server
	// expired is learnt up to 500ms plus a round trip later. With the suite's
	// T of 3s: 1s, plus a margin for a loaded machine. The harness's expiry
	// revokes every lease.
	const ttl = 3 * time.Second
	recipestest.Run(t, newEnv(t).harness(), recipestest.Config{
		SessionTTL: ttl, LongCut: 5 * time.Second,
		Window: ttl/3 + 500*time.Millisecond, ExpireTouchesAll: true,
	})
}
