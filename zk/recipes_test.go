package zk_test

import (
	"testing"
	"time"

	"github.com/regkit/regkit/recipes/recipestest"
)

// The recipes run on every layout: their nodes live in the store, which the
// layout does not change, but the URL does.
func TestRecipesConformance(t *testing.T) {
	e := newEnv(t)
	for _, layout := range []string{"", "&layout=curator", "&layout=dubbo"} {
		name := layout
		if name == "" {
			name = "&layout=default"
		}
		t.Run(name[len("&layout="):], func(t *testing.T) {
			e.query = layout
			recipestest.Run(t, e.harness(), recipestest.Config{LongCut: 6 * time.Second})
		})
	}
}
