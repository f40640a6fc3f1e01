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
// refused entry means N+1 holders at once; it is excused only when a fault
// started, no later than the refusal, within reach before the start of the
// refused section or of one of the occupants' sections and no later than that
// section's end: a holder whose session the fault killed may not yet know it
// lost its lease (see CheckHistory).
func CheckSlots(h []Section, faults []Fault, reach time.Duration) []string {
	byToken := map[int64]*Section{}
	for i := range h {
		byToken[h[i].Token] = &h[i]
	}
	near := func(s *Section, before time.Time) bool {
		for _, f := range faults {
			if !f.Start.After(s.End) && !f.Start.After(before) && !f.Start.Before(s.Start.Add(-reach)) {
				return true
			}
		}
		return false
	}
	var v []string
	for i := range h {
		s := &h[i]
		if len(s.Writes) == 0 || s.Writes[0].OK {
			continue
		}
		at := s.Writes[0].At
		excused := near(s, at)
		for _, o := range s.Occupants {
			if os, ok := byToken[o]; ok && near(os, at) {
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
			v = append(v, fmt.Sprintf("%s token %d refused entry (seq %d): %s were inside, and no fault came near any of them: more holders than leases",
				s.Holder, s.Token, s.Writes[0].Seq, strings.Join(who, ", ")))
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

// Fault is one injected fault: its kind and when it started.
type Fault struct {
	Kind  string    `json:"kind"`
	Start time.Time `json:"start"`
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
// A section is excused (its holder may have lost the lock without knowing) when
// its hold ended by a loss (session lost or suspended, not released) and a fault
// started no later than the section's end and no earlier than reach before its
// start (a fault hits holders acquiring within reach of it: a session the server
// dropped can still acquire until its client notices). The rules:
//   - accepted sections (every write accepted) never interleave on the
//     resource's clock, and their tokens strictly increase in that order;
//   - a section with a rejected write is excused: a rejected write means another
//     holder with a higher token wrote in between, which a working lock allows
//     only after the first one's session was lost;
//   - a section that overlapped, in real time, a later holder's section had a
//     fault within reach, and either its holder was told before the later
//     section began, or every write it made after the later holder's first write
//     was rejected by the resource. (Its hold need not have ended by a loss: a
//     session revoked on the server is learnt only at the client's next contact,
//     and a short section may end and release before that.)
//
// The safety tests start no fault while a holder waits to learn whether its hold
// ended, so a later, unrelated fault cannot end a hold that a broken lock let
// overlap and so excuse it.
func CheckHistory(h []Section, faults []Fault, reach time.Duration) ([]string, Report) {
	near := func(s *Section) bool {
		for _, f := range faults {
			if !f.Start.After(s.End) && !f.Start.Before(s.Start.Add(-reach)) {
				return true
			}
		}
		return false
	}
	excused := func(s *Section) bool { return s.Lost && near(s) }
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
			if !excused(s) {
				v = append(v, fmt.Sprintf("%s token %d: the resource rejected a write, yet no fault came near the section or the hold was not lost (cause %q): two holders at once",
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
			if !near(a) {
				v = append(v, fmt.Sprintf("%s token %d overlapped %s token %d (began %v before it ended), yet no fault came near the section (cause %q)",
					a.Holder, a.Token, b.Holder, b.Token, a.End.Sub(b.Start), a.Cause))
				continue
			}
			if !a.Ended.IsZero() && !a.Ended.After(b.Start) {
				rep.TimelyEnds++
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
	reach    time.Duration
}

func (h *history) fault(kind string, at time.Time) {
	h.mu.Lock()
	h.faults = append(h.faults, Fault{Kind: kind, Start: at})
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
	v, rep := CheckHistory(secs, faults, h.reach)
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
	v := CheckSlots(secs, faults, h.reach)
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
	if len(v) > 20 {
		v = append(v[:20], fmt.Sprintf("... and %d more", len(v)-20))
	}
	t.Errorf("%s: %d safety violations; history written to %s:\n%s", what, len(v), name, strings.Join(v, "\n"))
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
