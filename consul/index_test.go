package consul

import "testing"

// TestNextIndex checks the blocking-query index rules of Consul's documentation.
func TestNextIndex(t *testing.T) {
	for _, tc := range []struct {
		prev, got, next   uint64
		changed, throttle bool
	}{
		{0, 5, 5, true, false}, // first query: armed, block on 5 next
		{5, 5, 5, false, true}, // wait timed out: nothing changed, no spin
		{5, 9, 9, true, false}, // a change: re-arm at once
		{9, 3, 0, true, true},  // went backwards: reset to 0
		{0, 0, 1, false, true}, // never block on 0
		{1, 0, 0, true, true},  // backwards to 0: reset, then 1 again, throttled
		{1, 1, 1, false, true}, // stuck at 1: throttled
		{3, 4, 4, true, false}, // advanced by one
	} {
		next, changed, throttle := nextIndex(tc.prev, tc.got)
		if next != tc.next || changed != tc.changed || throttle != tc.throttle {
			t.Errorf("nextIndex(%d, %d) = %d, %v, %v; want %d, %v, %v", tc.prev, tc.got, next, changed, throttle,
				tc.next, tc.changed, tc.throttle)
		}
	}
}
