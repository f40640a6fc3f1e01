// Package owned runs goroutines that belong to one owner (a driver connection),
// which stops accepting new ones and waits for the running ones when it closes.
package owned

import "sync"

// Group is a set of owned goroutines. The zero value is ready to use.
type Group struct {
	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup
}

// Go runs f on a goroutine of g, or returns false without running f once Wait has
// been called.
func (g *Group) Go(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// Wait refuses new goroutines and waits until the running ones have returned.
func (g *Group) Wait() {
	g.mu.Lock()
	g.closing = true
	g.mu.Unlock()
	g.wg.Wait()
}
