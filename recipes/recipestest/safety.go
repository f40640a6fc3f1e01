package recipestest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/registry"
)

// faults injects the harness's faults one at a time, on request of a holder in
// the middle of its section.
type faults struct {
	s    *suite
	t    *testing.T
	busy atomic.Bool
	// waiting counts holders waiting to learn whether their hold ended; no fault
	// starts meanwhile (see CheckHistory), it is owed for later instead.
	waiting atomic.Int32
	// owed: a fault is due as soon as the last one is far enough behind (at
	// most one is owed at a time).
	owed atomic.Bool
	// lastEnd is when the last fault ended (UnixNano; before the first, when
	// the test started): see due.
	lastEnd atomic.Int64
	hist    *history
	n       atomic.Int64
	longs   atomic.Int64
	wg      sync.WaitGroup
}

// kinds lists the faults the harness offers, in the order they are cycled.
func (f *faults) kinds() []string {
	var k []string
	if f.s.h.ExpireSession != nil {
		k = append(k, "expire")
	}
	if f.s.h.Cut != nil {
		k = append(k, "cut")
	}
	if f.s.h.ExpireSession != nil {
		k = append(k, "expire")
	}
	if f.s.h.Restart != nil {
		k = append(k, "restart")
	}
	if f.s.h.Cut != nil && f.s.cfg.LongCut > 0 {
		k = append(k, "longcut")
	}
	return k
}

// inject starts the next fault against client c of holder who unless one is
// running, and returns its name ("" for none). A cut heals by itself after a
// while.
func (f *faults) inject(c *registry.Client, who string) string {
	kinds := f.kinds()
	if len(kinds) == 0 {
		return ""
	}
	if f.waiting.Load() > 0 || !f.busy.CompareAndSwap(false, true) {
		f.owed.Store(true)
		return ""
	}
	if f.waiting.Load() > 0 {
		f.busy.Store(false)
		f.owed.Store(true)
		return ""
	}
	kind := kinds[int(f.n.Add(1)-1)%len(kinds)]
	var touched []string // nil: every holder
	if kind == "expire" && !f.s.cfg.ExpireTouchesAll {
		touched = []string{who}
	}
	i := f.hist.fault(kind, time.Now(), touched)
	if kind == "longcut" && f.longs.Add(1) > 2 {
		kind = "cut" // at most two long cuts per run
	}
	switch kind {
	case "expire":
		f.s.h.ExpireSession(f.t, c)
		f.ended(i)
	case "restart":
		f.s.h.Restart(f.t)
		f.ended(i)
	case "cut", "longcut":
		d := time.Duration(50+rand.IntN(1500)) * time.Millisecond
		if kind == "longcut" {
			d = f.s.cfg.LongCut
		}
		heal := f.s.h.Cut(f.t)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			time.Sleep(d)
			heal()
			f.ended(i)
		}()
		kind = fmt.Sprintf("%s %v", kind, d)
	}
	return kind
}

// holder is one contender: a client of its own and its current session.
type holder struct {
	name string
	c    *registry.Client
	sess *registry.Session
}

// renew opens a new session if the current one ended, retrying until ctx ends.
func (s *suite) renew(ctx context.Context, h *holder) error {
	if h.sess != nil && h.sess.Err() == nil {
		return nil
	}
	if h.sess != nil {
		_ = h.sess.Close()
		h.sess = nil
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sess, err := h.c.NewSession(rctx, registry.WithTTL(s.cfg.SessionTTL))
		cancel()
		if err == nil {
			h.sess = sess
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: new session: %w (last error: %v)", h.name, ctx.Err(), err)
		}
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
	}
}

// fencedSafety skips t if Config.SkipFencedSafety says so.
func (s *suite) fencedSafety(t *testing.T) {
	t.Helper()
	if s.cfg.SkipFencedSafety {
		t.Skip("recipestest: Config.SkipFencedSafety: covered by another run on this backend")
	}
}

// window is Config.Window, or under LostOnly Config.LostOnlyWindow if set; a
// safety test without it fails, naming the field.
func (s *suite) window(t *testing.T, p recipes.Policy) time.Duration {
	t.Helper()
	if s.cfg.Window <= 0 {
		t.Fatalf("recipestest: Config.Window must be positive for the fenced safety tests, got %v: set it to the %s backend's bound from the recipes package doc", s.cfg.Window, s.h.Name)
	}
	if p == recipes.LostOnly && s.cfg.LostOnlyWindow > 0 {
		return s.cfg.LostOnlyWindow
	}
	return s.cfg.Window
}

// endWait bounds how long a holder waits for its hold to end after it saw a
// rejected write or injected a session expiry: the driver must notice within
// the window (Config.Window), and a hold still not lost after twice that and a
// second counts as never told (see CheckHistory). A broken recipe's holders
// therefore stall the others only briefly.
func (f *faults) endWait() time.Duration {
	return 2*f.hist.window + time.Second
}

// enough reports whether a run of rounds rounds has seen enough faults to stop:
// one per ten rounds, at most ten (a backend slow to notice an expiry defers the
// next fault, see waiting, so a run goes on until they were injected).
func (f *faults) enough(rounds int64) bool {
	return len(f.kinds()) == 0 || f.n.Load() >= min(10, rounds/10)
}

// newFaults returns the fault injector of one safety test, recording in hist.
func (s *suite) newFaults(t *testing.T, hist *history) *faults {
	f := &faults{s: s, t: t, hist: hist}
	f.lastEnd.Store(time.Now().UnixNano())
	return f
}

// ended records that fault i ended and lets the next one start.
func (f *faults) ended(i int) {
	now := time.Now()
	f.hist.ended(i, now)
	f.lastEnd.Store(now.UnixNano())
	f.busy.Store(false)
}

// due reports whether the section of round r should inject a fault: every tenth
// round, or later when one is owed, but not before the last fault ended (or
// the test started) the window (Config.Window) and a quiet time ago, the quiet
// time being the window again, at most a second. So the time between faults
// has a part outside the windows in which the checker excuses the holders a
// fault touched (at least half of it on a backend whose window is a second or
// less), and a recipe that lets one holder too many in is caught there.
func (f *faults) due(r int64) bool {
	if r%10 == 5 {
		f.owed.Store(true)
	}
	w := f.hist.window
	if time.Since(time.Unix(0, f.lastEnd.Load())) < w+min(w, time.Second) {
		return false
	}
	return f.owed.CompareAndSwap(true, false)
}

// section runs one critical section with hold hd: writes the token to res three
// times, stopping as soon as the hold ends, and injects a fault mid-way when
// fault is set. It records the section in hist.
func (s *suite) section(hd *recipes.Hold, who string, res *Resource, f *faults, fault bool, c *registry.Client, hist *history) {
	var ended atomic.Pointer[time.Time]
	stop := context.AfterFunc(hd.Context(), func() {
		now := time.Now()
		ended.Store(&now)
	})
	defer stop()
	sec := Section{Holder: who, Token: hd.Token(), Start: time.Now()}
	for w := range 3 {
		if hd.Err() != nil {
			break // noticed: a careful holder stops
		}
		seq, ok := res.Write(hd.Token())
		sec.Writes = append(sec.Writes, Write{Seq: seq, OK: ok, At: time.Now()})
		if w == 1 && fault {
			sec.Fault = f.inject(c, who)
			if sec.Fault != "" {
				f.t.Logf("%s: %s token %d: fault %s", time.Now().Format("15:04:05.000"), who, hd.Token(), sec.Fault)
			}
			if sec.Fault != "" {
				// Give the others time to take over before our next write.
				time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
				continue
			}
		}
		// Work between writes: long enough next to a handover's round trips
		// that a recipe letting two hold at once has them overlap in most
		// sections, short enough to keep the rounds quick.
		time.Sleep(time.Duration(2000+rand.IntN(10000)) * time.Microsecond)
	}
	sec.End = time.Now()
	if sec.Fault == "expire" || sec.rejected() && hist.touchedNear(who, sec.Start, sec.End) {
		// Our write was refused (someone with a higher token wrote) after a
		// fault that touched us, or our session was expired: the hold must
		// end, and soon. No fault starts meanwhile, so it is ended by what
		// came before, if anything. (A write refused with no such fault near
		// is a violation however the hold ends: no need to wait, and the
		// holders of a broken recipe go on contending.)
		f.waiting.Add(1)
		select {
		case <-hd.Done():
		case <-time.After(f.endWait()):
		}
		f.waiting.Add(-1)
	}
	if err := hd.Err(); err != nil {
		sec.Cause = err.Error()
		sec.Lost = !errors.Is(err, recipes.ErrReleased)
		if p := ended.Load(); p != nil {
			sec.Ended = *p
		}
	}
	hist.add(sec)
}

// testMutexSafety: at least three clients on separate connections contend for one
// mutex for many rounds while faults are injected mid-section; see CheckHistory.
func (s *suite) testMutexSafety(t *testing.T) {
	s.fencedSafety(t)
	s.mutexSafety(t, recipes.SuspendedIsLost, s.cfg.Rounds)
}

// testMutexSafetyLostOnly: the same under the LostOnly policy, a sixth of the
// rounds (its window is the longest, and so is the quiet time between faults).
func (s *suite) testMutexSafetyLostOnly(t *testing.T) {
	s.fencedSafety(t)
	s.mutexSafety(t, recipes.LostOnly, max(s.cfg.Rounds/6, 30))
}

func (s *suite) mutexSafety(t *testing.T, p recipes.Policy, rounds int) {
	res := &Resource{}
	hist := &history{window: s.window(t, p)}
	s.contend(t, hist, contention{
		key:       "/fenced/lock",
		workers:   3,
		rounds:    int64(rounds),
		acquireOp: "Lock", releaseOp: "Unlock",
		newContender: func(h *holder) contender {
			var m *lockMutex
			return contender{
				prepare: func() error {
					if m == nil || m.sess != h.sess {
						m = newLockMutex(h, "/fenced/lock", recipes.WithPolicy(p))
					}
					return nil
				},
				acquire: func(ctx context.Context) (*recipes.Hold, error) { return m.m.Lock(ctx) },
				release: func(ctx context.Context, _ *recipes.Hold) error { return m.m.Unlock(ctx) },
			}
		},
		section: func(h *holder, hd *recipes.Hold, f *faults, fault bool) {
			s.section(hd, h.name, res, f, fault, h.c, hist)
		},
	})
	hist.check(t, fmt.Sprintf("%s mutex (%v)", s.h.Name, p))
}

// contention describes what the holders of a fenced safety test contend for
// and what each does while it holds it; see contend.
type contention struct {
	key                  string // the recipe's key, for failure messages
	workers              int    // how many holders contend, each on a client of its own
	rounds               int64  // how many sections at least (see faults.enough)
	acquireOp, releaseOp string // the recipe's method names, for messages
	// newContender returns holder h's way to the recipe; it is called once,
	// on the holder's goroutine.
	newContender func(h *holder) contender
	// section runs one critical section of h with hold hd, injecting a fault
	// mid-way when fault is set.
	section func(h *holder, hd *recipes.Hold, f *faults, fault bool)
}

// contender is one holder's way to the recipe under test.
type contender struct {
	// prepare readies the recipe for the holder's current session, which may
	// have been renewed since the last round; an error ends the holder's run.
	prepare func() error
	acquire func(ctx context.Context) (*recipes.Hold, error)
	release func(ctx context.Context, hd *recipes.Hold) error
}

// contend runs one fenced safety test's contention: c.workers holders, each on
// a client of its own in a new namespace, take the recipe in turn (renewing
// their session when it ended), run a section and give it back, until
// c.rounds sections have run and enough faults were injected (see faults).
// Errors that end a holder's run fail t; a failed release is only logged.
// The caller checks hist afterwards.
func (s *suite) contend(t *testing.T, hist *history, c contention) {
	ns := namespace(t)
	ctx := s.ctx(t, 20)
	if *soak {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Hour)
		defer cancel()
	}
	f := s.newFaults(t, hist)
	defer f.wg.Wait()
	var round atomic.Int64
	total := c.rounds
	var wg sync.WaitGroup
	errs := make(chan error, c.workers)
	holders := make([]*holder, c.workers)
	for i := range c.workers {
		h := &holder{name: fmt.Sprintf("client%d", i), c: s.open(t, ns)}
		holders[i] = h
		wg.Add(1)
		go func() {
			defer wg.Done()
			ct := c.newContender(h)
			for {
				r := round.Load()
				if r >= total && f.enough(total) {
					return
				}
				if err := s.renew(ctx, h); err != nil {
					errs <- err
					return
				}
				if err := ct.prepare(); err != nil {
					errs <- err
					return
				}
				actx, cancel := context.WithTimeout(ctx, 2*s.timeout())
				hd, err := ct.acquire(actx)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						errs <- fmt.Errorf("%s: %s: %w (after %d of %d rounds; goroutines dumped to %s; nodes under %s: %s; holders' sessions: %s)",
							h.name, c.acquireOp, err, round.Load(), total, dumpGoroutines(t), c.key, s.treeOf(t, ns, c.key), sessionsOf(holders))
						return
					}
					continue // session lost, cut: try again
				}
				r = round.Add(1)
				c.section(h, hd, f, f.due(r))
				rctx, cancel := context.WithTimeout(ctx, s.timeout())
				if err := ct.release(rctx, hd); err != nil {
					t.Logf("%s: %s: %v", h.name, c.releaseOp, err)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	f.wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// treeOf describes the nodes under key, for a failure message.
func (s *suite) treeOf(t *testing.T, ns, key string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := s.h.NewClient(t, ns)
	defer c.Close()
	nodes, err := c.Store().Tree(ctx, key)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "[%s rev %d session %q] ", n.Key, n.CreateRevision, n.Session)
	}
	return b.String()
}

// sessionsOf lists the holders' current sessions (racy: for failure messages).
func sessionsOf(hs []*holder) string {
	var out []string
	for _, h := range hs {
		if h != nil && h.sess != nil {
			out = append(out, fmt.Sprintf("%s=%s(%v)", h.name, h.sess.ID(), h.sess.State()))
		}
	}
	return strings.Join(out, " ")
}
