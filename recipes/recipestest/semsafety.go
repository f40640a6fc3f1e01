package recipestest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

// testSemaphoreSafety: more clients than leases contend for a semaphore of two
// leases for many rounds, on separate connections, while faults are injected in
// the middle of sections; every holder enters a Slots resource of two slots with
// its lease while it works. A refused entry (three holders at once) must be
// explained by a fault near one of the holders involved; see CheckSlots.
func (s *suite) testSemaphoreSafety(t *testing.T) {
	s.fencedSafety(t)
	const leases = 2
	res := &Slots{N: leases}
	hist := &history{window: s.window(t, recipes.SuspendedIsLost)}
	s.contend(t, hist, contention{
		key:       "/fenced/sem",
		workers:   4,
		rounds:    int64(max(s.cfg.Rounds/2, 30)),
		acquireOp: "Acquire", releaseOp: "Release",
		newContender: func(h *holder) contender {
			var sem *lock.Semaphore
			var semSess *registry.Session
			return contender{
				prepare: func() error {
					if sem == nil || semSess != h.sess {
						var err error
						if sem, err = lock.NewSemaphore(h.c, h.sess, "/fenced/sem", leases); err != nil {
							return err
						}
						semSess = h.sess
					}
					return nil
				},
				acquire: func(ctx context.Context) (*recipes.Hold, error) { return sem.Acquire(ctx) },
				release: func(ctx context.Context, hd *recipes.Hold) error { return sem.Release(ctx, hd) },
			}
		},
		section: func(h *holder, hd *recipes.Hold, f *faults, fault bool) {
			s.slotSection(hd, h.name, res, f, fault, h.c, hist)
		},
	})
	hist.checkSlots(t, fmt.Sprintf("%s semaphore of %d", s.h.Name, leases))
}

// slotSection runs one section with lease hd on the Slots resource: it enters
// (unless the lease already ended: a careful holder does not start), works a
// little, injecting a fault mid-way when fault is set, and leaves, early if its
// lease ends meanwhile (a careful holder stops when told).
func (s *suite) slotSection(hd *recipes.Hold, who string, res *Slots, f *faults, fault bool, c *registry.Client, hist *history) {
	sec := Section{Holder: who, Token: hd.Token(), Start: time.Now()}
	var ended atomic.Pointer[time.Time]
	stop := context.AfterFunc(hd.Context(), func() {
		now := time.Now()
		ended.Store(&now)
	})
	defer stop()
	defer func() {
		if err := hd.Err(); err != nil {
			sec.Cause = err.Error()
			sec.Lost = !errors.Is(err, recipes.ErrReleased)
			if p := ended.Load(); p != nil {
				sec.Ended = *p
			}
		}
		hist.add(sec)
	}()
	if hd.Err() != nil {
		sec.End = time.Now()
		return
	}
	seq, ok, occupants := res.Enter(hd.Token())
	sec.Writes = append(sec.Writes, Write{Seq: seq, OK: ok, At: time.Now()})
	sec.Occupants = occupants
	if !ok {
		sec.End = time.Now()
		return
	}
	// Work long next to an acquisition's round trips (tens of milliseconds on
	// a loaded machine), so that a semaphore admitting one holder too many has
	// that many inside at once most of the time, and entries are refused well
	// away from the windows of faults.
	work := time.Duration(20+rand.IntN(40)) * time.Millisecond
	if fault {
		if sec.Fault = f.inject(c, who); sec.Fault != "" {
			f.t.Logf("%s: %s token %d: fault %s", time.Now().Format("15:04:05.000"), who, hd.Token(), sec.Fault)
			// Stay a while, as a holder that has not yet noticed would: the
			// others may take the lease over meanwhile.
			work = time.Duration(rand.IntN(300)) * time.Millisecond
		}
	}
	select {
	case <-time.After(work):
	case <-hd.Done():
	}
	res.Leave(hd.Token())
	sec.End = time.Now()
	if sec.Fault == "expire" {
		// Our session was expired: the lease must end, and soon. No fault
		// starts meanwhile (see faults.waiting).
		f.waiting.Add(1)
		select {
		case <-hd.Done():
		case <-time.After(f.endWait()):
		}
		f.waiting.Add(-1)
	}
}
