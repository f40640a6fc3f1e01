package zk_test

import (
	"testing"
	"time"

	"github.com/regkit/regkit/recipes/recipestest"
)

// The recipes run on every layout: their nodes live in the store, which the
// layout does not change, but the URL does. The fenced safety tests, the
// longest, run on the default layout only.
//
// The window (recipes doc): a session expired while connected is learnt about a
// round trip plus a reconnect later (a cut-off holder is told before the server
// can expire its session); under LostOnly the driver declares a session lost up
// to 2T/3 after the server expired it. Plus a margin for a loaded machine.
func TestRecipesConformance(t *testing.T) {
	const ttl = 3 * time.Second
	e := newEnv(t)
	for _, layout := range []string{"", "&layout=curator", "&layout=dubbo"} {
		name := layout
		if name == "" {
			name = "&layout=default"
		}
		t.Run(name[len("&layout="):], func(t *testing.T) {
			e.query = layout
			recipestest.Run(t, e.harness(), recipestest.Config{
				SessionTTL: ttl, LongCut: 6 * time.Second,
				Window: time.Second, LostOnlyWindow: 2*ttl/3 + 500*time.Millisecond,
				SkipFencedSafety: layout != "",
			})
		})
	}
}
