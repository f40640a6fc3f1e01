package mem_test

import (
	"testing"
	"time"

	"github.com/regkit/regkit/recipes/recipestest"
)

// Session loss and its keys' deletion are one step on mem, and a Hold learns of
// it as soon as its goroutine runs: the window is scheduling only.
func TestRecipesConformance(t *testing.T) {
	recipestest.Run(t, harness(), recipestest.Config{Window: 50 * time.Millisecond})
}
