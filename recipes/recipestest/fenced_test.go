package recipestest

import (
	"strings"
	"testing"
	"time"
)

func TestCheckHistory(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := func(seq int64, ok bool) Write { return Write{Seq: seq, OK: ok} }
	for _, tc := range []struct {
		name string
		h    []Section
		want string // substring of a violation; "" for none
	}{
		{"clean handover", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(10), Writes: []Write{w(1, true), w(2, true)}, Cause: "recipes: released"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(3, true), w(4, true)}, Cause: "recipes: released"},
		}, ""},
		{"fenced off after an expiry", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Fault: "expire", Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, ""},
		{"two holders without a fault", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Cause: "recipes: released"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, "yet no fault"},
		{"lost but never told", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Fault: "expire"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, "not lost"},
		{"a resource that does not fence", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, true)}, Fault: "expire", Lost: true, Ended: at(40)},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, "interleave"},
		{"tokens going down", []Section{
			{Holder: "a", Token: 7, Start: at(0), End: at(10), Writes: []Write{w(1, true)}},
			{Holder: "b", Token: 5, Start: at(11), End: at(20), Writes: []Write{w(2, true)}},
		}, "do not increase"},
	} {
		v, _ := CheckHistory(tc.h)
		got := strings.Join(v, "\n")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: violations %q, want one containing %q", tc.name, got, tc.want)
		}
	}
}

func TestResourceFences(t *testing.T) {
	var r Resource
	if _, ok := r.Write(5); !ok {
		t.Fatal("first write rejected")
	}
	if _, ok := r.Write(5); !ok {
		t.Fatal("same token rejected")
	}
	if _, ok := r.Write(7); !ok {
		t.Fatal("higher token rejected")
	}
	if seq, ok := r.Write(5); ok || seq != 4 {
		t.Fatalf("lower token: seq %d ok %v", seq, ok)
	}
}
