package mem_test

import (
	"testing"

	"github.com/regkit/regkit/recipes/recipestest"
)

func TestRecipesConformance(t *testing.T) { recipestest.Run(t, harness(), recipestest.Config{}) }
