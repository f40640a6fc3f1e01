package recipestest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/recipes/barrier"
	"github.com/regkit/regkit/recipes/counter"
	"github.com/regkit/regkit/recipes/group"
	"github.com/regkit/regkit/registry"
)

// testCount: concurrent Adds on separate clients lose no update; TrySet is a CAS;
// a watcher sees the final value.
func (s *suite) testCount(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	c0 := s.open(t, ns)
	n0, err := counter.NewCount(ctx, c0, "/counters/x", 10)
	if err != nil {
		t.Fatal(err)
	}
	w, err := n0.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if v, err := w.Next(ctx); err != nil || v.Value != 10 {
		t.Fatalf("first Next = %+v, %v", v, err)
	}
	const workers, each = 3, 5
	var wg sync.WaitGroup
	for range workers {
		c := s.open(t, ns)
		n, err := counter.NewCount(ctx, c, "/counters/x", 999) // exists: kept
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := n.Add(ctx, 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := int64(10 + workers*each)
	cur, err := n0.Get(ctx)
	if err != nil || cur.Value != want {
		t.Fatalf("count = %+v, %v; want %d (a lost update means the CAS is broken)", cur, err, want)
	}
	for {
		v, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watcher: %v", err)
		}
		if v.Value == want {
			break
		}
	}
	if _, ok, err := n0.TrySet(ctx, counter.Versioned{Value: cur.Value, Version: cur.Version + 12345}, 0); ok || err != nil {
		t.Errorf("TrySet at a stale version = %v, %v; want false, nil", ok, err)
	}
	if now, ok, err := n0.TrySet(ctx, cur, 7); !ok || err != nil || now.Value != 7 {
		t.Errorf("TrySet at the current version = %+v, %v, %v", now, ok, err)
	}
}

// testBarrier: waiters block while the barrier is set and all return when it is
// removed.
func (s *suite) testBarrier(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 2)
	b0, err := barrier.New(s.open(t, ns), "/barriers/b")
	if err != nil {
		t.Fatal(err)
	}
	if err := b0.Set(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b0.Set(ctx); err != nil {
		t.Errorf("second Set = %v", err)
	}
	done := make(chan error, 3)
	for range 3 {
		b, err := barrier.New(s.open(t, ns), "/barriers/b")
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- b.Wait(ctx) }()
	}
	select {
	case err := <-done:
		t.Fatalf("Wait returned while the barrier is set: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := b0.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := b0.Remove(ctx); err != nil {
		t.Errorf("second Remove = %v", err)
	}
}

// testDoubleBarrier: no one gets past Enter until n have entered, nor past Leave
// until all have left.
func (s *suite) testDoubleBarrier(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 3)
	const n = 3
	var mu sync.Mutex
	var events []string
	var wg sync.WaitGroup
	for i := range n {
		c := s.open(t, ns)
		d, err := barrier.NewDouble(c, s.session(t, c), "/barriers/double", n)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 50 * time.Millisecond)
			mu.Lock()
			events = append(events, "enter")
			mu.Unlock()
			if err := d.Enter(ctx); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			events = append(events, "entered")
			mu.Unlock()
			time.Sleep(time.Duration(i) * 50 * time.Millisecond)
			mu.Lock()
			events = append(events, "leave")
			mu.Unlock()
			if err := d.Leave(ctx); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			events = append(events, "left")
			mu.Unlock()
		}()
	}
	wg.Wait()
	// No one is past Enter before all have called it, nor past Leave before all
	// have called it.
	last := func(e string) int {
		i := -1
		for j, x := range events {
			if x == e {
				i = j
			}
		}
		return i
	}
	if len(events) != 4*n || last("enter") > slices.Index(events, "entered") || last("leave") > slices.Index(events, "left") {
		t.Errorf("events %v: someone passed the barrier early", events)
	}
}

// testDoubleBarrierRounds: participants go round after round through one
// double barrier; one that left a round and entered the next holds no one back,
// and no one leaves a round before all have entered it.
func (s *suite) testDoubleBarrierRounds(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 6)
	const n, rounds = 3, 8
	var mu sync.Mutex
	entered := make([]int, rounds)
	var wg sync.WaitGroup
	for i := range n {
		c := s.open(t, ns)
		d, err := barrier.NewDouble(c, s.session(t, c), "/barriers/rounds", n)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if err := d.Enter(ctx); err != nil {
					t.Errorf("participant %d, round %d: %v", i, r, err)
					return
				}
				mu.Lock()
				entered[r]++
				mu.Unlock()
				if err := d.Leave(ctx); err != nil {
					t.Errorf("participant %d, round %d: %v", i, r, err)
					return
				}
				mu.Lock()
				if entered[r] != n {
					t.Errorf("participant %d left round %d when %d of %d had entered", i, r, entered[r], n)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// testGroup: members appear, come back after a session loss, and leave on Close.
func (s *suite) testGroup(t *testing.T) {
	if s.h.ExpireSession == nil {
		t.Fatalf("%s: Harness.ExpireSession is nil", s.h.Name)
	}
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	obs := s.open(t, ns)
	w, err := group.Watch(ctx, obs, "/groups/g")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	until := func(what string, ok func(map[string][]byte) bool) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, s.timeout())
		defer cancel()
		for {
			m, err := w.Next(wctx)
			if err != nil {
				t.Fatalf("%s: %s: %v", s.h.Name, what, err)
			}
			if ok(m) {
				return
			}
		}
	}
	ca, cb := s.open(t, ns), s.open(t, ns)
	a, err := group.NewMember(ca, "/groups/g", "a", []byte("1"), recipesTTL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := group.NewMember(cb, "/groups/g", "b", []byte("2"), recipesTTL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	same := func(want map[string]string) func(map[string][]byte) bool {
		return func(m map[string][]byte) bool {
			got := map[string]string{}
			for k, v := range m {
				got[k] = string(v)
			}
			return maps.Equal(got, want)
		}
	}
	until("both members", same(map[string]string{"a": "1", "b": "2"}))
	s.h.ExpireSession(t, ca)
	s.eventually(t, "member a back after its session was lost", func() error {
		m, err := group.Members(ctx, obs, "/groups/g")
		if err != nil || string(m["a"]) != "1" || string(m["b"]) != "2" {
			return fmt.Errorf("members %v, %v", m, err)
		}
		return nil
	})
	a.SetValue([]byte("1b"))
	until("new value", same(map[string]string{"a": "1b", "b": "2"}))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	until("b left", same(map[string]string{"a": "1b"}))
	if _, err := group.NewMember(ca, "/groups/g", "x/y", nil); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("NewMember with a bad id = %v, want ErrInvalid", err)
	}
}
