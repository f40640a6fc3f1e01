package etcdtest_test

import (
	"testing"
	"time"

	"github.com/regkit/regkit/recipes/recipestest"
)

func TestRecipesConformance(t *testing.T) {
	recipestest.Run(t, newEnv(t).harness(), recipestest.Config{LongCut: 5 * time.Second})
}
