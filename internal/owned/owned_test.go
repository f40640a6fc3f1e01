package owned_test

import (
	"sync/atomic"
	"testing"

	"github.com/regkit/regkit/internal/owned"
)

func TestGroup(t *testing.T) {
	var g owned.Group
	var ran atomic.Int32
	release := make(chan struct{})
	if !g.Go(func() { <-release; ran.Add(1) }) {
		t.Fatal("Go refused before Wait")
	}
	close(release)
	g.Wait()
	if ran.Load() != 1 {
		t.Fatal("Wait returned before the goroutine did")
	}
	if g.Go(func() { ran.Add(1) }) {
		t.Fatal("Go ran f after Wait")
	}
	if ran.Load() != 1 {
		t.Fatal("f ran after Wait")
	}
}
