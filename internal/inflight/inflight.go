// Package inflight lets a driver keep a write running after the call that started it
// gave up (its ctx ended), and lets a later write that must come after it (the delete
// undoing an abandoned put) wait until the backend has answered it. A write the
// backend answered has been applied or refused; one cut off mid-flight could be
// applied at any later time, so drivers let it finish instead, within a bound.
package inflight

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Set counts the running writes per key (an instance). The zero value is ready.
type Set struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	n    int
	idle chan struct{} // closed when n drops to 0
}

// begin counts one write of key and returns the func that ends it (idempotent).
func (s *Set) begin(key string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*entry{}
	}
	e := s.m[key]
	if e == nil {
		e = &entry{idle: make(chan struct{})}
		s.m[key] = e
	}
	e.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if e.n--; e.n == 0 {
				close(e.idle)
				delete(s.m, key)
			}
		})
	}
}

// Wait returns nil once no write of key that began before the call is running, or
// ctx's error when ctx ends first.
func (s *Set) Wait(ctx context.Context, key string) error {
	s.mu.Lock()
	e := s.m[key]
	s.mu.Unlock()
	if e == nil {
		return nil
	}
	select {
	case <-e.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run runs f, a write of key, on a goroutine that spawn starts (one the driver's
// connection owns and waits for), and returns its result, or ctx's error when ctx
// ends first; f then keeps running, counted in s until it returns. spawn reports
// false when the connection is closed; Run then returns errClosed without running f.
func Run[T any](ctx context.Context, s *Set, key string, spawn func(func()) bool, errClosed error, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	end := s.begin(key)
	ch := make(chan result, 1)
	if !spawn(func() {
		defer end()
		v, err := f()
		ch <- result{v, err}
	}) {
		end()
		var zero T
		return zero, errClosed
	}
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Grace is how long drivers let a write run on after its caller gave up.
const Grace = 10 * time.Second

// Detach returns a context for a write that may outlive ctx: it carries ctx's
// values and, while ctx lives, is cancelled by nothing; once ctx ends it ends grace
// later, and at once when life ends (the connection closed). The returned func
// releases it.
func Detach(ctx, life context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	var (
		mu    sync.Mutex
		timer *time.Timer
	)
	stopCtx := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		timer = time.AfterFunc(grace, func() {
			cancel(fmt.Errorf("write unanswered %v after its caller gave up: %w", grace, context.DeadlineExceeded))
		})
	})
	stopLife := context.AfterFunc(life, func() { cancel(context.Cause(life)) })
	return dctx, func() {
		stopCtx()
		stopLife()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel(context.Canceled)
	}
}
