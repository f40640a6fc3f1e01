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
		faults []int    // start times, ms; each touches every holder and ends at once
		only   []string // if set, the holders the faults touched
		want   string   // substring of a violation; "" for none
	}{
		{"clean handover", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(10), Writes: []Write{w(1, true), w(2, true)}, Cause: "recipes: released"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(3, true), w(4, true)}, Cause: "recipes: released"},
		}, nil, nil, ""},
		{"fenced off after an expiry", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Fault: "expire", Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, nil, ""},
		{"fenced off after the holder's expiry", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Fault: "expire", Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, []string{"a"}, ""},
		{"the expiry touched another holder", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, []string{"c"}, "no fault that touched"},
		{"overlap without a fault, nothing rejected", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(2, true)}},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(3, true)}},
		}, nil, nil, "neither holder"},
		{"overlap past the window", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(3000), Writes: []Write{w(1, true), w(4, false)}, Lost: true, Ended: at(3100)},
			{Holder: "b", Token: 7, Start: at(2000), End: at(2100), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, nil, "neither holder"},
		{"overlap after the holder was told", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true)}, Lost: true, Ended: at(10)},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, nil, nil, ""},
		{"two holders without a fault", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Cause: "recipes: released"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, nil, nil, "yet no fault"},
		{"lost, but the fault came long before", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{-5000}, nil, "yet no fault"},
		{"lost, but the fault came after the section", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Lost: true, Ended: at(40), Cause: "session lost"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{35}, nil, "yet no fault"},
		{"lost but never told", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, false)}, Fault: "expire"},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, nil, "not lost"},
		{"a resource that does not fence", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: []Write{w(1, true), w(4, true)}, Fault: "expire", Lost: true, Ended: at(40)},
			{Holder: "b", Token: 7, Start: at(11), End: at(20), Writes: []Write{w(2, true), w(3, true)}},
		}, []int{5}, nil, "interleave"},
		{"tokens going down", []Section{
			{Holder: "a", Token: 7, Start: at(0), End: at(10), Writes: []Write{w(1, true)}},
			{Holder: "b", Token: 5, Start: at(11), End: at(20), Writes: []Write{w(2, true)}},
		}, nil, nil, "do not increase"},
	} {
		var fs []Fault
		for _, ms := range tc.faults {
			fs = append(fs, Fault{Kind: "expire", Start: at(ms), End: at(ms), Holders: tc.only})
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

func TestSlots(t *testing.T) {
	r := Slots{N: 2}
	if _, ok, _ := r.Enter(5); !ok {
		t.Fatal("first entry refused")
	}
	if _, ok, _ := r.Enter(7); !ok {
		t.Fatal("second entry refused")
	}
	if seq, ok, occ := r.Enter(9); ok || seq != 3 || len(occ) != 2 || occ[0] != 5 || occ[1] != 7 {
		t.Fatalf("third entry: seq %d ok %v occupants %v", seq, ok, occ)
	}
	r.Leave(5)
	if _, ok, _ := r.Enter(9); !ok {
		t.Fatal("entry after a leave refused")
	}
}

func TestCheckSlots(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	in := func(seq int64, ms int) []Write { return []Write{{Seq: seq, OK: true, At: at(ms)}} }
	refused := func(seq int64, ms int) []Write { return []Write{{Seq: seq, OK: false, At: at(ms)}} }
	for _, tc := range []struct {
		name   string
		h      []Section
		faults []int    // start times, ms; each touches every holder and ends at once
		only   []string // if set, the holders the faults touched
		want   string   // substring of a violation; "" for none
	}{
		{"never full", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(10), Writes: in(1, 1)},
			{Holder: "b", Token: 7, Start: at(2), End: at(12), Writes: in(2, 3)},
		}, nil, nil, ""},
		{"refused without a fault", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(30), Writes: in(1, 1)},
			{Holder: "b", Token: 7, Start: at(2), End: at(30), Writes: in(2, 3)},
			{Holder: "c", Token: 9, Start: at(4), End: at(5), Writes: refused(3, 4), Occupants: []int64{5, 7}},
		}, nil, nil, "more holders than leases"},
		{"refused after an occupant's expiry", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(300), Writes: in(1, 1), Fault: "expire", Lost: true},
			{Holder: "b", Token: 7, Start: at(2), End: at(30), Writes: in(2, 3)},
			{Holder: "c", Token: 9, Start: at(40), End: at(41), Writes: refused(3, 40), Occupants: []int64{5, 7}},
		}, []int{20}, nil, ""},
		{"the fault came after the refusal", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(300), Writes: in(1, 1), Fault: "expire", Lost: true},
			{Holder: "b", Token: 7, Start: at(2), End: at(30), Writes: in(2, 3)},
			{Holder: "c", Token: 9, Start: at(40), End: at(41), Writes: refused(3, 40), Occupants: []int64{5, 7}},
		}, []int{100}, nil, "more holders than leases"},
		{"the fault came long before", []Section{
			{Holder: "a", Token: 5, Start: at(5000), End: at(5300), Writes: in(1, 5001)},
			{Holder: "b", Token: 7, Start: at(5002), End: at(5030), Writes: in(2, 5003)},
			{Holder: "c", Token: 9, Start: at(5010), End: at(5011), Writes: refused(3, 5010), Occupants: []int64{5, 7}},
		}, []int{0}, nil, "more holders than leases"},
		{"the fault touched another holder", []Section{
			{Holder: "a", Token: 5, Start: at(0), End: at(300), Writes: in(1, 1)},
			{Holder: "b", Token: 7, Start: at(2), End: at(30), Writes: in(2, 3)},
			{Holder: "c", Token: 9, Start: at(40), End: at(41), Writes: refused(3, 40), Occupants: []int64{5, 7}},
			{Holder: "d", Token: 11, Start: at(10), End: at(20), Writes: in(4, 11)},
		}, []int{20}, []string{"d"}, "more holders than leases"},
	} {
		var fs []Fault
		for _, ms := range tc.faults {
			fs = append(fs, Fault{Kind: "expire", Start: at(ms), End: at(ms), Holders: tc.only})
		}
		got := strings.Join(CheckSlots(tc.h, fs, time.Second), "\n")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: violations %q, want one containing %q", tc.name, got, tc.want)
		}
	}
}
