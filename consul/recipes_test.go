package consul_test

import (
	"testing"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/recipes/recipestest"
)

// On a persistent server, as the store suite: fencing tokens (CreateIndex) grow
// only while the server keeps its data, which a dev agent loses on restart.
func TestRecipesConformance(t *testing.T) {
	recipestest.Run(t, startServer(t, testenv.WithConsulPersistent()).harness(), recipestest.Config{})
}
