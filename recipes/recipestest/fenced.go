package recipestest

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Resource is a fenced resource: it accepts a write only if its token is at least
// the highest token it has accepted, and numbers accepted and rejected writes on
// one logical clock. It is what a holder's fencing token is for: a storage
// service, a database row with a token column, a file with a token in its header.
type Resource struct {
	mu      sync.Mutex
	highest int64
	clock   int64
}

// Write offers a write with token; ok says whether it was accepted, seq is its
// place in the resource's order.
func (r *Resource) Write(token int64) (seq int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock++
	if token < r.highest {
		return r.clock, false
	}
	r.highest = token
	return r.clock, true
}

// Slots is the resource a semaphore of N leases guards: it admits at most N
// holders at once (a pool of N connections, N licences), and numbers entries on
// one logical clock. A holder enters with its lease's token before its work and
// leaves after it; an entry that finds N holders inside is refused, and says
// which tokens were inside. A refusal is the resource catching N+1 holders at
// once: a lease handed out while N others were still in use.
type Slots struct {
	N      int
	mu     sync.Mutex
	inside map[int64]bool
	clock  int64
}

// Enter admits token if fewer than N are inside; otherwise ok is false and
// occupants lists the tokens inside. seq is the entry's place in the resource's
// order.
func (r *Slots) Enter(token int64) (seq int64, ok bool, occupants []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock++
	if r.inside == nil {
		r.inside = map[int64]bool{}
	}
	if len(r.inside) >= r.N {
		for t := range r.inside {
			occupants = append(occupants, t)
		}
		slices.Sort(occupants)
		return r.clock, false, occupants
	}
	r.inside[token] = true
	return r.clock, true, nil
}

// Leave lets token out.
func (r *Slots) Leave(token int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inside, token)
}

// CheckSlots checks a history of sections on a Slots resource (each section's
// one Write is its entry; Occupants, for a refused entry, the tokens inside),
// with the faults injected meanwhile, and returns the violations (none: nil). A
// refused entry means N+1 holders at once; it is excused only when, at the
// refusal, the refused holder or one of the occupants was within window of a
// fault that touched it (see Fault.Covers): a holder whose session the fault
// killed may not yet know it lost its lease.
func CheckSlots(h []Section, faults []Fault, window time.Duration) []string {
	byToken := map[int64]*Section{}
	for i := range h {
		byToken[h[i].Token] = &h[i]
	}
	var v []string
	for i := range h {
		s := &h[i]
		if len(s.Writes) == 0 || s.Writes[0].OK {
			continue
		}
		at := s.Writes[0].At
		excused := covered(faults, s.Holder, at, window)
		for _, o := range s.Occupants {
			if os, ok := byToken[o]; ok && covered(faults, os.Holder, at, window) {
				excused = true
			}
		}
		if !excused {
			var who []string
			for _, o := range s.Occupants {
				if os, ok := byToken[o]; ok {
					who = append(who, fmt.Sprintf("%s token %d", os.Holder, o))
				} else {
					who = append(who, fmt.Sprintf("token %d", o))
				}
			}
			v = append(v, fmt.Sprintf("%s token %d refused entry (seq %d): %s were inside, and none of them was within %v of a fault that touched it: more holders than leases",
				s.Holder, s.Token, s.Writes[0].Seq, strings.Join(who, ", "), window))
		}
	}
	return v
}

// Write is one write of a section.
type Write struct {
	Seq int64     `json:"seq"` // place on the resource's clock
	OK  bool      `json:"ok"`  // accepted
	At  time.Time `json:"at"`  // when the answer came
}

// Section is one critical section (a lock acquisition, a term of leadership) as
// its holder lived it.
type Section struct {
	Holder string    `json:"holder"` // which client
	Token  int64     `json:"token"`  // the Hold's fencing token
	Start  time.Time `json:"start"`  // the acquisition returned
	End    time.Time `json:"end"`    // the last write returned
	Writes []Write   `json:"writes"` // in order
	// Fault is the fault the holder injected in the middle of the section, if
	// any (the safety tests inject faults only there).
	Fault string `json:"fault,omitempty"`
	// Ended is when the hold's context was cancelled (zero if it was not by the
	// time the holder released); Cause says why.
	Ended time.Time `json:"ended"`
	Cause string    `json:"cause,omitempty"`
	// Lost: the hold ended by a session loss or suspension, not by the release.
	Lost bool `json:"lost"`
	// Occupants are the tokens inside a Slots resource that refused the
	// section's entry.
	Occupants []int64 `json:"occupants,omitempty"`
}

func (s *Section) rejected() bool {
	return slices.ContainsFunc(s.Writes, func(w Write) bool { return !w.OK })
}

func (s *Section) accepted() bool {
	return len(s.Writes) > 0 && !s.rejected()
}

// Fault is one injected fault: its kind, when it started and ended (a cut when
// it healed, a restart when the server was back, an expiry when it was done), and
// the holders it touched: the client whose session was expired; nil for every
// holder (a cut or a restart touches all connections; so does an expiry on a
// harness whose ExpireSession ends every client's sessions).
type Fault struct {
	Kind    string    `json:"kind"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Holders []string  `json:"holders,omitempty"`
}

// Touches reports whether the fault touched holder.
func (f *Fault) Touches(holder string) bool {
	return f.Holders == nil || slices.Contains(f.Holders, holder)
}

// Covers reports whether holder, touched by the fault, may at time at still
// believe it holds what the fault took from it: at is no earlier than the
// fault's start and no later than window after its end (Config.Window, the
// backend's bound). A zero End counts as the start.
func (f *Fault) Covers(holder string, at time.Time, window time.Duration) bool {
	end := f.End
	if end.IsZero() {
		end = f.Start
	}
	return f.Touches(holder) && !at.Before(f.Start) && !at.After(end.Add(window))
}

// touchedNear reports whether a fault that touched holder started no later than
// end and ended no earlier than window before start.
func touchedNear(faults []Fault, holder string, start, end time.Time, window time.Duration) bool {
	return slices.ContainsFunc(faults, func(f Fault) bool {
		fend := f.End
		if fend.IsZero() {
			fend = f.Start
		}
		return f.Touches(holder) && !f.Start.After(end) && !fend.Add(window).Before(start)
	})
}

// covered reports whether some fault covers holder at time at.
func covered(faults []Fault, holder string, at time.Time, window time.Duration) bool {
	return slices.ContainsFunc(faults, func(f Fault) bool { return f.Covers(holder, at, window) })
}

// Report counts what a history shows.
type Report struct {
	// Sections in the history; Accepted: every write accepted; Fenced: some
	// write rejected.
	Sections, Accepted, Fenced int
	// Overlaps: sections that overlapped the next holder's in real time (their
	// holder's lock was lost before it noticed or released). TimelyEnds: of
	// those, how many holders were told (context cancelled) before the next
	// holder's section began.
	Overlaps, TimelyEnds int
	// Faults injected.
	Faults int
}

// CheckHistory checks a history of sections on one fenced resource, with the
// faults injected meanwhile, and returns the violations (none: nil) and counts.
// window is the backend's bound (Config.Window): how long after a fault a holder
// it touched may still believe it holds. The rules:
//   - accepted sections (every write accepted) never interleave on the
//     resource's clock, and their tokens strictly increase in that order;
//   - a section with a rejected write (another holder with a higher token wrote
//     in between) had its hold end by a loss (session lost or suspended, not
//     released), and a fault that touched its holder started no later than the
//     section's end and ended no earlier than window before its start;
//   - a section that overlapped, in real time, a later holder's section either
//     had its hold end by a loss before the later section began, or, when the
//     later section began, one of the two holders was within window of a fault
//     that touched it (see Fault.Covers: a session the server dropped, whose
//     client has not noticed yet) and every write the earlier holder made after
//     the later holder's first accepted write was rejected by the resource.
//
// The safety tests start no fault while a holder waits to learn whether its hold
// ended, so a later, unrelated fault cannot end a hold that a broken lock let
// overlap and so excuse it.
func CheckHistory(h []Section, faults []Fault, window time.Duration) ([]string, Report) {
	var v []string
	rep := Report{Sections: len(h), Faults: len(faults)}
	var acc []*Section
	for i := range h {
		s := &h[i]
		if s.accepted() {
			acc = append(acc, s)
		}
		if s.rejected() {
			rep.Fenced++
			switch {
			case !touchedNear(faults, s.Holder, s.Start, s.End, window):
				v = append(v, fmt.Sprintf("%s token %d: the resource rejected a write, yet no fault that touched the holder came within %v of the section (cause %q): two holders at once",
					s.Holder, s.Token, window, s.Cause))
			case !s.Lost:
				v = append(v, fmt.Sprintf("%s token %d: the resource rejected a write, yet the hold was not lost (cause %q): two holders at once",
					s.Holder, s.Token, s.Cause))
			}
		}
	}
	rep.Accepted = len(acc)
	slices.SortFunc(acc, func(a, b *Section) int { return int(a.Writes[0].Seq - b.Writes[0].Seq) })
	for i := 1; i < len(acc); i++ {
		a, b := acc[i-1], acc[i]
		if a.Writes[len(a.Writes)-1].Seq > b.Writes[0].Seq {
			v = append(v, fmt.Sprintf("accepted sections interleave: %s token %d and %s token %d", a.Holder, a.Token, b.Holder, b.Token))
		}
		if b.Token <= a.Token {
			v = append(v, fmt.Sprintf("accepted tokens do not increase: %s token %d, then %s token %d", a.Holder, a.Token, b.Holder, b.Token))
		}
	}
	byStart := make([]*Section, len(h))
	for i := range h {
		byStart[i] = &h[i]
	}
	slices.SortFunc(byStart, func(a, b *Section) int { return a.Start.Compare(b.Start) })
	for i, a := range byStart {
		for _, b := range byStart[i+1:] {
			if !b.Start.Before(a.End) {
				break
			}
			if b.Token == a.Token {
				continue
			}
			rep.Overlaps++
			if a.Lost && !a.Ended.IsZero() && !a.Ended.After(b.Start) {
				rep.TimelyEnds++
				continue
			}
			if !covered(faults, a.Holder, b.Start, window) && !covered(faults, b.Holder, b.Start, window) {
				v = append(v, fmt.Sprintf("%s token %d overlapped %s token %d (began %v before it ended) and was not told before, yet neither holder was within %v of a fault that touched it (cause %q)",
					a.Holder, a.Token, b.Holder, b.Token, a.End.Sub(b.Start), window, a.Cause))
				continue
			}
			var first int64 = -1
			for _, w := range b.Writes {
				if w.OK {
					first = w.Seq
					break
				}
			}
			for _, w := range a.Writes {
				if w.OK && first >= 0 && w.Seq > first {
					v = append(v, fmt.Sprintf("%s token %d wrote (accepted, seq %d) after %s token %d began writing (seq %d), before it was told",
						a.Holder, a.Token, w.Seq, b.Holder, b.Token, first))
				}
			}
		}
	}
	return v, rep
}

// history collects sections from concurrent holders.
type history struct {
	mu       sync.Mutex
	sections []Section
	faults   []Fault
	window   time.Duration
}

// fault records a fault that started at start and touched holders (nil: all),
// and returns its index for ended.
func (h *history) fault(kind string, start time.Time, holders []string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, Fault{Kind: kind, Start: start, Holders: holders})
	return len(h.faults) - 1
}

// touchedNear reports whether a fault recorded so far touched holder within the
// window of [start, end].
func (h *history) touchedNear(holder string, start, end time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return touchedNear(h.faults, holder, start, end, h.window)
}

// ended records when fault i ended.
func (h *history) ended(i int, at time.Time) {
	h.mu.Lock()
	h.faults[i].End = at
	h.mu.Unlock()
}

func (h *history) add(s Section) {
	h.mu.Lock()
	h.sections = append(h.sections, s)
	h.mu.Unlock()
}

// check runs CheckHistory and, on violations, writes the history to a file the
// failure message names.
func (h *history) check(t *testing.T, what string) Report {
	t.Helper()
	h.mu.Lock()
	secs := slices.Clone(h.sections)
	faults := slices.Clone(h.faults)
	h.mu.Unlock()
	v, rep := CheckHistory(secs, faults, h.window)
	t.Logf("%s: %d sections (%d accepted, %d fenced off), %d faults, %d real-time overlaps (%d holders told before the next began)",
		what, rep.Sections, rep.Accepted, rep.Fenced, rep.Faults, rep.Overlaps, rep.TimelyEnds)
	h.report(t, what, v, rep, secs, faults)
	return rep
}

// checkSlots runs CheckSlots, as check does CheckHistory.
func (h *history) checkSlots(t *testing.T, what string) {
	t.Helper()
	h.mu.Lock()
	secs := slices.Clone(h.sections)
	faults := slices.Clone(h.faults)
	h.mu.Unlock()
	v := CheckSlots(secs, faults, h.window)
	refused := 0
	for _, s := range secs {
		if len(s.Writes) > 0 && !s.Writes[0].OK {
			refused++
		}
	}
	t.Logf("%s: %d sections (%d entries refused), %d faults", what, len(secs), refused, len(faults))
	h.report(t, what, v, Report{Sections: len(secs), Faults: len(faults)}, secs, faults)
}

// report fails t with violations v, writing the history to a file the failure
// message names.
func (h *history) report(t *testing.T, what string, v []string, rep Report, secs []Section, faults []Fault) {
	t.Helper()
	if len(v) == 0 {
		return
	}
	f, err := os.CreateTemp("", "regkit-"+strings.ReplaceAll(t.Name(), "/", "_")+"-*.json")
	name := "(could not write history)"
	if err == nil {
		enc := json.NewEncoder(f)
		enc.SetIndent("", " ")
		_ = enc.Encode(map[string]any{"violations": v, "report": rep, "faults": faults, "sections": secs})
		_ = f.Close()
		name = f.Name()
	}
	n := len(v)
	if n > 20 {
		v = append(v[:20:20], fmt.Sprintf("... and %d more", n-20))
	}
	t.Errorf("%s: %d safety violations; history written to %s:\n%s", what, n, name, strings.Join(v, "\n"))
}

// dumpGoroutines writes every goroutine's stack to a file and returns its name,
// for a test that stopped making progress.
func dumpGoroutines(t *testing.T) string {
	f, err := os.CreateTemp("", "regkit-"+strings.ReplaceAll(t.Name(), "/", "_")+"-goroutines-*.txt")
	if err != nil {
		return "(could not write: " + err.Error() + ")"
	}
	defer f.Close()
	_ = pprof.Lookup("goroutine").WriteTo(f, 2)
	return f.Name()
}
