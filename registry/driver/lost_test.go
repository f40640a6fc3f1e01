package driver_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/regkit/regkit/registry/driver"
)

func TestLostSignal(t *testing.T) {
	var s driver.LostSignal
	if s.Err() != nil {
		t.Fatal("Err before Lose")
	}
	ch := s.Lost()
	select {
	case <-ch:
		t.Fatal("closed before Lose")
	default:
	}
	first := errors.New("first")
	var wg sync.WaitGroup
	wins := make(chan bool, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := first
			if i > 0 {
				err = errors.New("later")
			}
			wins <- s.Lose(err)
		}()
	}
	wg.Wait()
	close(wins)
	n := 0
	for w := range wins {
		if w {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d calls closed it, want 1", n)
	}
	<-ch
	if s.Err() == nil {
		t.Fatal("Err nil after Lose")
	}
	if s.Lost() != ch {
		t.Fatal("Lost returned another channel")
	}
	var z driver.LostSignal
	z.Lose(nil)
	if !errors.Is(z.Err(), driver.ErrSessionLost) {
		t.Fatalf("Lose(nil): Err = %v", z.Err())
	}
}
