package recipestest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
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
	ns := namespace(t)
	ctx := s.ctx(t, 20)
	if *soak {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Hour)
		defer cancel()
	}
	const leases, workers = 2, 4
	res := &Slots{N: leases}
	hist := &history{window: s.window(t, recipes.SuspendedIsLost)}
	f := s.newFaults(t, hist)
	defer f.wg.Wait()
	var round atomic.Int64
	total := int64(max(s.cfg.Rounds/2, 30))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	holders := make([]*holder, workers)
	for i := range workers {
		h := &holder{name: fmt.Sprintf("client%d", i), c: s.open(t, ns)}
		holders[i] = h
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sem *lock.Semaphore
			var semSess *registry.Session
			for {
				r := round.Load()
				if r >= total && f.enough(total) {
					return
				}
				if err := s.renew(ctx, h); err != nil {
					errs <- err
					return
				}
				if sem == nil || semSess != h.sess {
					var err error
					if sem, err = lock.NewSemaphore(h.c, h.sess, "/fenced/sem", leases); err != nil {
						errs <- err
						return
					}
					semSess = h.sess
				}
				actx, cancel := context.WithTimeout(ctx, 2*s.timeout())
				hd, err := sem.Acquire(actx)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						errs <- fmt.Errorf("%s: Acquire: %w (after %d of %d rounds; goroutines dumped to %s; nodes: %s; holders' sessions: %s)",
							h.name, err, round.Load(), total, dumpGoroutines(t), s.treeOf(t, ns, "/fenced/sem"), sessionsOf(holders))
						return
					}
					continue // session lost, cut: try again
				}
				r = round.Add(1)
				s.slotSection(hd, h.name, res, f, f.due(r), h.c, hist)
				rctx, cancel := context.WithTimeout(ctx, s.timeout())
				if err := sem.Release(rctx, hd); err != nil {
					t.Logf("%s: Release: %v", h.name, err)
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
