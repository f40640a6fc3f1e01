package recipestest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/registry"
)

func (s *suite) election(t testing.TB, c *registry.Client, key string, opts ...recipes.Option) *leader.Election {
	t.Helper()
	e, err := leader.NewElection(c, s.session(t, c), key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// testElection: candidates lead in the order they campaigned, tokens grow,
// Leader reads the leader's value, Proclaim changes it, Resign hands over.
func (s *suite) testElection(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	obs := s.open(t, ns)
	if _, err := leader.LeaderOf(ctx, obs, "/elect/x"); !errors.Is(err, leader.ErrNoLeader) {
		t.Errorf("LeaderOf an empty election = %v, want ErrNoLeader", err)
	}
	es := make([]*leader.Election, 3)
	for i := range es {
		es[i] = s.election(t, s.open(t, ns), "/elect/x")
	}
	t0, err := es[0].Campaign(ctx, []byte("e0"))
	if err != nil {
		t.Fatal(err)
	}
	terms := make(chan *recipes.Hold, 2)
	for i := 1; i < 3; i++ {
		go func() {
			h, err := es[i].Campaign(ctx, []byte(fmt.Sprintf("e%d", i)))
			if err != nil {
				t.Error(err)
			}
			terms <- h
		}()
		s.eventually(t, "candidate queued", func() error {
			names, err := lockNodes(ctx, obs, "/elect/x")
			if err != nil || len(names) != i+1 {
				return fmt.Errorf("%d nodes, %v", len(names), err)
			}
			return nil
		})
	}
	l, err := leader.LeaderOf(ctx, obs, "/elect/x")
	if err != nil || string(l.Value) != "e0" || l.Token != t0.Token() || l.Key != t0.Key() {
		t.Fatalf("LeaderOf = %+v, %v; want e0 with token %d", l, err, t0.Token())
	}
	if err := es[0].Proclaim(ctx, []byte("e0-new")); err != nil {
		t.Fatal(err)
	}
	if l, err := es[0].Leader(ctx); err != nil || string(l.Value) != "e0-new" {
		t.Errorf("Leader after Proclaim = %+v, %v", l, err)
	}
	if err := es[1].Proclaim(ctx, []byte("x")); !errors.Is(err, leader.ErrNotLeader) {
		t.Errorf("Proclaim by a follower = %v, want ErrNotLeader", err)
	}
	prev := t0.Token()
	for i := range 2 {
		if err := es[i].Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if i == 0 && !errors.Is(t0.Err(), recipes.ErrReleased) {
			t.Errorf("resigned term's Err = %v, want ErrReleased", t0.Err())
		}
		h := <-terms
		if h == nil {
			t.FailNow()
		}
		l, err := leader.LeaderOf(ctx, obs, "/elect/x")
		if err != nil || l.Token != h.Token() || string(l.Value) != fmt.Sprintf("e%d", i+1) {
			t.Errorf("after resign %d: leader %+v, %v; want e%d with token %d", i, l, err, i+1, h.Token())
		}
		if h.Token() <= prev {
			t.Errorf("term tokens %d then %d: must grow", prev, h.Token())
		}
		prev = h.Token()
	}
	if err := es[0].Resign(ctx); err != nil {
		t.Errorf("second Resign = %v, want nil", err)
	}
}

// testObserve: an observer sees each leader in turn, and "no leader" at the end.
func (s *suite) testObserve(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	o, err := leader.Observe(ctx, s.open(t, ns), "/elect/obs")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	next := func(want string) leader.Leader {
		t.Helper()
		nctx, cancel := context.WithTimeout(ctx, s.timeout())
		defer cancel()
		l, err := o.Next(nctx)
		if err != nil || string(l.Value) != want || (want == "") != (l.Key == "") {
			t.Fatalf("Observe: %+v, %v; want leader %q", l, err, want)
		}
		return l
	}
	next("")
	a := s.election(t, s.open(t, ns), "/elect/obs")
	bc := s.open(t, ns)
	bs := s.session(t, bc)
	b, err := leader.NewElection(bc, bs, "/elect/obs")
	if err != nil {
		t.Fatal(err)
	}
	ta, err := a.Campaign(ctx, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if l := next("a"); l.Token != ta.Token() {
		t.Errorf("observed token %d, want %d", l.Token, ta.Token())
	}
	got := make(chan error, 1)
	go func() {
		_, err := b.Campaign(ctx, []byte("b"))
		got <- err
	}()
	s.eventually(t, "b queued", func() error {
		names, err := lockNodes(ctx, bc, "/elect/obs")
		if err != nil || len(names) != 2 {
			return fmt.Errorf("%d nodes, %v", len(names), err)
		}
		return nil
	})
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	next("b")
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil { // leader's session ends: no leader
		t.Fatal(err)
	}
	next("")
	if err := b.Resign(ctx); err != nil {
		t.Errorf("Resign after the session closed = %v, want nil", err)
	}
	o.Close()
	if _, err := o.Next(ctx); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
}

func (s *suite) latches(t *testing.T, ns, key string, n int) ([]*leader.Latch, []*registry.Client) {
	ls := make([]*leader.Latch, n)
	cs := make([]*registry.Client, n)
	for i := range ls {
		cs[i] = s.open(t, ns)
		l, err := leader.NewLatch(cs[i], key, recipes.WithValue([]byte(fmt.Sprintf("l%d", i))),
			recipes.WithSessionTTL(s.cfg.SessionTTL))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		ls[i] = l
	}
	return ls, cs
}

// oneLeader waits until exactly one latch leads and returns its index.
func (s *suite) oneLeader(t *testing.T, ls []*leader.Latch, not int) int {
	t.Helper()
	idx := -1
	s.eventually(t, "exactly one latch leads", func() error {
		idx = -1
		for i, l := range ls {
			if l != nil && l.IsLeader() {
				if idx >= 0 {
					return fmt.Errorf("latches %d and %d both lead", idx, i)
				}
				idx = i
			}
		}
		if idx < 0 || idx == not {
			return fmt.Errorf("leader %d", idx)
		}
		return nil
	})
	return idx
}

func (s *suite) testLatch(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	ls, _ := s.latches(t, ns, "/elect/latch", 3)
	first := s.oneLeader(t, ls, -1)
	term, err := ls[first].Await(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := leader.LeaderOf(ctx, s.open(t, ns), "/elect/latch")
	if err != nil || l.Token != term.Token() || string(l.Value) != fmt.Sprintf("l%d", first) {
		t.Errorf("LeaderOf = %+v, %v; want l%d with token %d", l, err, first, term.Token())
	}
	if err := ls[first].Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(term.Err(), recipes.ErrReleased) {
		t.Errorf("closed latch's term Err = %v, want ErrReleased", term.Err())
	}
	if ls[first].IsLeader() {
		t.Error("closed latch still leads")
	}
	if _, err := ls[first].Await(ctx); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Await on a closed latch = %v, want ErrClosed", err)
	}
	ls[first] = nil
	second := s.oneLeader(t, ls, first)
	t2, err := ls[second].Await(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if t2.Token() <= term.Token() {
		t.Errorf("next term's token %d <= %d", t2.Token(), term.Token())
	}
}

// testLatchLost: the leader's session is lost; its term ends and a leader with a
// larger token follows (the latch itself may lead again, on a new session).
func (s *suite) testLatchLost(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	ls, cs := s.latches(t, ns, "/elect/lost", 2)
	i := s.oneLeader(t, ls, -1)
	term, err := ls[i].Await(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.h.ExpireSession(t, cs[i])
	s.ended(t, term.Done(), "leader's term ended after its session expired")
	if !errors.Is(term.Err(), registry.ErrSessionLost) && !errors.Is(term.Err(), recipes.ErrSuspended) {
		t.Errorf("term's cause = %v, want ErrSessionLost", term.Err())
	}
	j := s.oneLeader(t, ls, -1)
	t2, err := ls[j].Await(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if t2.Token() <= term.Token() {
		t.Errorf("term after a loss has token %d <= %d", t2.Token(), term.Token())
	}
}

// testSelector: callbacks of auto-requeued selectors never overlap and each
// participant leads in turn; a selector without requeue leads once and stops.
func (s *suite) testSelector(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	var inside, max atomic.Int32
	var mu sync.Mutex
	counts := map[int]int{}
	var tokens []int64
	sels := make([]*leader.Selector, 3)
	for i := range sels {
		sel, err := leader.NewSelector(s.open(t, ns), "/elect/sel", func(ctx context.Context, term *recipes.Hold) error {
			n := inside.Add(1)
			defer inside.Add(-1)
			if n > max.Load() {
				max.Store(n)
			}
			mu.Lock()
			counts[i]++
			tokens = append(tokens, term.Token())
			mu.Unlock()
			select {
			case <-time.After(30 * time.Millisecond):
			case <-ctx.Done():
			}
			return nil
		}, recipes.WithAutoRequeue(), recipes.WithSessionTTL(s.cfg.SessionTTL))
		if err != nil {
			t.Fatal(err)
		}
		sels[i] = sel
	}
	s.eventually(t, "every selector led twice", func() error {
		mu.Lock()
		defer mu.Unlock()
		for i := range sels {
			if counts[i] < 2 {
				return fmt.Errorf("counts %v", counts)
			}
		}
		return nil
	})
	for _, sel := range sels {
		if err := sel.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if max.Load() != 1 {
		t.Errorf("%d callbacks at once", max.Load())
	}
	mu.Lock()
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Errorf("term tokens %v do not grow", tokens)
			break
		}
	}
	mu.Unlock()
	// Without requeue: lead once, then stop.
	ran := make(chan struct{}, 2)
	once, err := leader.NewSelector(s.open(t, ns), "/elect/sel", func(ctx context.Context, term *recipes.Hold) error {
		ran <- struct{}{}
		return errors.New("done leading")
	})
	if err != nil {
		t.Fatal(err)
	}
	s.ended(t, once.Done(), "selector without requeue stopped after leading")
	if len(ran) != 1 || len(once.Errs()) != 1 {
		t.Errorf("callback ran %d times, errors %v", len(ran), once.Errs())
	}
	if err := once.Close(ctx); err != nil {
		t.Error(err)
	}
	// A callback that fails at once, requeued: Errs keeps the latest 32.
	var terms atomic.Int64
	failing, err := leader.NewSelector(s.open(t, ns), "/elect/sel", func(ctx context.Context, term *recipes.Hold) error {
		return fmt.Errorf("term %d failed", terms.Add(1))
	}, recipes.WithAutoRequeue(), recipes.WithRetryBackoff(time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s.eventually(t, "40 failed terms", func() error {
		if n := terms.Load(); n < 40 {
			return fmt.Errorf("%d terms", n)
		}
		return nil
	})
	if err := failing.Close(ctx); err != nil {
		t.Fatal(err)
	}
	errs := failing.Errs()
	if len(errs) != 32 || errs[31].Error() != fmt.Sprintf("term %d failed", terms.Load()) {
		t.Errorf("Errs after %d failed terms: %d errors, the last %v; want the latest 32", terms.Load(), len(errs), errs[len(errs)-1])
	}
}

// testLeaderMixed: a Latch, a Selector and an Election on one key take part in
// one election, the one Observe and LeaderOf report: none leads while another
// does, and tokens grow from term to term whichever kind leads.
func (s *suite) testLeaderMixed(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 4)
	const key = "/elect/mixed"
	obs := s.open(t, ns)
	latch, err := leader.NewLatch(s.open(t, ns), key, recipes.WithValue([]byte("latch")), recipesTTL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer latch.Close(ctx)
	t1, err := latch.Await(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type led struct {
		term        *recipes.Hold
		latchLeads  bool // the latch's term was current when the selector led
		electionRan bool
	}
	leds := make(chan led, 1)
	var camp atomic.Bool // the election's candidate returned from Campaign
	sel, err := leader.NewSelector(s.open(t, ns), key, func(lctx context.Context, term *recipes.Hold) error {
		leds <- led{term: term, latchLeads: t1.Err() == nil, electionRan: camp.Load()}
		<-lctx.Done()
		return nil
	}, recipes.WithValue([]byte("selector")), recipesTTL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer sel.Close(ctx)
	s.eventually(t, "selector queued", func() error {
		names, err := lockNodes(ctx, obs, key)
		if err != nil || len(names) != 2 {
			return fmt.Errorf("%d nodes, %v", len(names), err)
		}
		return nil
	})
	e := s.election(t, s.open(t, ns), key)
	terms := make(chan *recipes.Hold, 1)
	go func() {
		h, err := e.Campaign(ctx, []byte("election"))
		if err != nil {
			t.Error(err)
		}
		camp.Store(true)
		terms <- h
	}()
	s.eventually(t, "election candidate queued", func() error {
		names, err := lockNodes(ctx, obs, key)
		if err != nil || len(names) != 3 {
			return fmt.Errorf("%d nodes, %v", len(names), err)
		}
		return nil
	})
	if l, err := leader.LeaderOf(ctx, obs, key); err != nil || string(l.Value) != "latch" {
		t.Errorf("LeaderOf = %+v, %v; want the latch", l, err)
	}
	if err := latch.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got := <-leds
	if got.latchLeads || got.electionRan {
		t.Errorf("the selector led while the latch led (%v) or the election's candidate had returned (%v)", got.latchLeads, got.electionRan)
	}
	if got.term.Token() <= t1.Token() {
		t.Errorf("tokens %d (latch) then %d (selector): must grow", t1.Token(), got.term.Token())
	}
	if l, err := leader.LeaderOf(ctx, obs, key); err != nil || string(l.Value) != "selector" {
		t.Errorf("LeaderOf = %+v, %v; want the selector", l, err)
	}
	if err := sel.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h := <-terms
	if h == nil {
		t.FailNow()
	}
	if got.term.Err() == nil {
		t.Errorf("the election's candidate leads while the selector's term %v is current", got.term)
	}
	if h.Token() <= got.term.Token() {
		t.Errorf("tokens %d (selector) then %d (election): must grow", got.term.Token(), h.Token())
	}
	if err := e.Resign(ctx); err != nil {
		t.Error(err)
	}
}

// testLeaderSafety: three auto-requeued selectors on separate clients lead in turn
// for many terms while faults are injected mid-term; see CheckHistory.
func (s *suite) testLeaderSafety(t *testing.T) {
	s.fencedSafety(t)
	ns := namespace(t)
	ctx := s.ctx(t, 20)
	res := &Resource{}
	hist := &history{window: s.window(t, recipes.SuspendedIsLost)}
	f := s.newFaults(t, hist)
	defer f.wg.Wait()
	var round atomic.Int64
	total := int64(s.cfg.Rounds / 2)
	enough := make(chan struct{})
	var once sync.Once
	sels := make([]*leader.Selector, 3)
	for i := range sels {
		c := s.open(t, ns)
		name := fmt.Sprintf("client%d", i)
		sel, err := leader.NewSelector(c, "/fenced/leader", func(lctx context.Context, term *recipes.Hold) error {
			r := round.Add(1)
			if r > total && f.enough(total) {
				once.Do(func() { close(enough) })
				<-lctx.Done()
				return nil
			}
			s.section(term, name, res, f, f.due(r), c, hist)
			return nil
		}, recipes.WithAutoRequeue(), recipes.WithSessionTTL(s.cfg.SessionTTL), recipes.WithValue([]byte(name)))
		if err != nil {
			t.Fatal(err)
		}
		sels[i] = sel
	}
	select {
	case <-enough:
	case <-ctx.Done():
		t.Errorf("%s: only %d of %d terms before the deadline; goroutines dumped to %s", s.h.Name, round.Load(), total, dumpGoroutines(t))
	}
	for _, sel := range sels {
		cctx, cancel := context.WithTimeout(context.Background(), s.timeout())
		if err := sel.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		cancel()
	}
	f.wg.Wait()
	hist.check(t, s.h.Name+" leader")
}
