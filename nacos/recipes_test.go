package nacos_test

import (
	"testing"

	"github.com/regkit/regkit/recipes/recipestest"
)

// Nacos has no sessions: every recipe must answer ErrNotSupported.
func TestRecipesConformance(t *testing.T) {
	recipestest.Run(t, newFake(t, "").harness("nacos/test"), recipestest.Config{})
}
