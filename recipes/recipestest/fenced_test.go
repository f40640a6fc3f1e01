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
		name   string
		h      []Section
		faults []int  // start times, ms
		want   string // substring of a violation; "" for none
	}{
		{"clean handover", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(10), Writes: []Write{w(1, true), w(2, true)}, Cause: "recipes: released"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(3, true), w(4, true)}, Cause: "recipes: released"},
		}, nil, ""},
		{"fenced off after an expiry", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Fault: "expire", Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, ""},
		{"two holders without a fault", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Cause: "recipes: released"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, nil, "yet no fault"},
		{"lost, but the fault came long before", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{-5000}, "yet no fault"},
		{"lost, but the fault came after the section", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{35}, "yet no fault"},
		{"lost but never told", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Fault: "expire"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, "not lost"},
		{"a resource that does not fence", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, true)}, Fault: "expire", Lost: true, Ended: at(40)},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, "interleave"},
		{"tokens going down", []Section{
			{Holder: "a", Token: 7, Start: at(0), End: at(10), Writes: []Write{w(1, true)}},
			{Holder: "b", Token: 5, Start: at(11), End: at(20), Writes: []Write{w(2, true)}},
		}, nil, "do not increase"},
	} {
		var fs []Fault
		for _, ms := range tc.faults {
			fs = append(fs, Fault{Kind: "expire", Start: at(ms)})
		}
		v, _ := CheckHistory(tc.h, fs, time.Second)
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
