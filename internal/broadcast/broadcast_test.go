package broadcast_test

import (
	"testing"

	"github.com/regkit/regkit/internal/broadcast"
)

func TestSignal(t *testing.T) {
	var s broadcast.Signal
	s.Notify() // nobody waits: a no-op
	a, b := s.C(), s.C()
	if a != b {
		t.Fatal("two C calls before a Notify returned different channels")
	}
	select {
	case <-a:
		t.Fatal("closed before Notify")
	default:
	}
	s.Notify()
	select {
	case <-a:
	default:
		t.Fatal("not closed by Notify")
	}
	c := s.C()
	select {
	case <-c:
		t.Fatal("the channel after Notify is already closed")
	default:
	}
}
