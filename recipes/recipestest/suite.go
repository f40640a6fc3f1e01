// Package recipestest is the conformance suite of the coordination recipes
// (package recipes and its sub-packages), run by every backend against a real
// server with the fault hooks of registrytest.Harness, as registrytest's suites
// are. Besides per-recipe cases it runs fenced-resource safety tests: several
// clients contend for one mutex (or one leadership) for many rounds while faults
// are injected, every critical section writes its fencing token to a resource that
// rejects tokens lower than the highest it accepted, and a checker verifies the
// history (see CheckHistory); a semaphore's holders share a resource of as many
// slots as leases, which must never be asked to admit one more (see CheckSlots).
// Two holders at once are excused only within the backend's window
// (Config.Window) of a fault that touched one of them, and faults are spaced so
// that part of the time between them lies outside those windows. Pass -soak for
// many more rounds.
package recipestest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
)

var soak = flag.Bool("soak", false, "recipestest: run the fenced safety tests for many more rounds")

// Config are settings of Run beyond the harness.
type Config struct {
	// SessionTTL is the TTL of the sessions the suite opens (default 3s; a backend
	// may clamp it, Consul to at least 10s).
	SessionTTL time.Duration
	// LongCut is how long a cut lasts that is meant to outlive the sessions (a
	// little more than the effective TTL). 0: the safety tests inject no long cut.
	LongCut time.Duration
	// Rounds is the number of critical sections the fenced safety tests run
	// (default 300; with -soak at least 5000). They inject a fault every tenth
	// round, at most ten and at least a window apart (see Window).
	Rounds int
	// Window is the backend's bound on how long after a fault ends (an expiry
	// is done, a cut heals, a restarted server is back) a holder the fault
	// touched may still believe it holds what the fault took from it: the
	// per-backend window of the recipes package doc ("The window a fenced
	// resource closes") for SessionTTL, plus a margin for scheduling. The safety tests excuse an overlap of two holders, or N+1
	// holders of a semaphore, only while one of them is that close to a fault
	// that touched it (see CheckHistory, CheckSlots). Required by the fenced
	// safety tests, which fail without it. It is the window under the default
	// policy, SuspendedIsLost; see LostOnlyWindow.
	Window time.Duration
	// LostOnlyWindow is Window under the LostOnly policy, where a holder cut
	// off is told only when its client gives the session up, which on some
	// backends comes after the server expired it (ZooKeeper: up to 2T/3).
	// 0: Window.
	LostOnlyWindow time.Duration
	// ExpireTouchesAll says that the harness's ExpireSession ends the sessions
	// of every client, not only of the one it is given (etcd's revokes every
	// lease, Consul's destroys every session): an expiry then touches every
	// holder.
	ExpireTouchesAll bool
	// SkipFencedSafety skips the fenced safety tests (they are the suite's
	// longest): for a further run of the suite on a backend whose store an
	// earlier run already covered, such as ZooKeeper's other layouts, which do
	// not change where the recipes keep their nodes.
	SkipFencedSafety bool
}

// Run runs the recipes suite on the backend h describes. On a backend without
// sessions every recipe must fail with registry.ErrNotSupported, which is all
// that is checked there.
func Run(t *testing.T, h registrytest.Harness, cfg Config) {
	if h.NewClient == nil {
		t.Fatal("recipestest: Harness.NewClient is required")
	}
	s := &suite{h: h, cfg: cfg}
	if s.cfg.SessionTTL == 0 {
		s.cfg.SessionTTL = 3 * time.Second
	}
	if s.cfg.Rounds == 0 {
		s.cfg.Rounds = 300
	}
	if *soak {
		s.cfg.Rounds = max(s.cfg.Rounds, 5000)
	}
	t.Run("NotSupportedIsExplicit", s.testNotSupported)
	if s.open(t, namespace(t)).Capabilities().Store {
		t.Run("Count", s.testCount)
		t.Run("Barrier", s.testBarrier)
	}
	if !s.supported(t) {
		return
	}
	t.Run("Mutex/Excludes", s.testMutexExcludes)
	t.Run("Mutex/FairOrderAndGrowingTokens", s.testMutexFair)
	t.Run("Mutex/Reentrant", s.testMutexReentrant)
	t.Run("Mutex/TryLock", s.testMutexTryLock)
	t.Run("Mutex/CancelLeavesNoNode", s.testMutexCancel)
	t.Run("Mutex/HolderSessionLost", s.testMutexHolderLost)
	t.Run("Mutex/WaiterSessionLost", s.testMutexWaiterLost)
	t.Run("Mutex/SuspendedPolicies", s.testMutexSuspended)
	t.Run("Mutex/FencedSafety", s.testMutexSafety)
	t.Run("Mutex/FencedSafetyLostOnly", s.testMutexSafetyLostOnly)
	t.Run("MultiLock/Excludes", s.testMultiLockExcludes)
	t.Run("MultiLock/AllOrNothing", s.testMultiLockAllOrNothing)
	t.Run("RWMutex", s.testRWMutex)
	t.Run("Semaphore", s.testSemaphore)
	t.Run("Semaphore/FencedSafety", s.testSemaphoreSafety)
	t.Run("DoubleBarrier", s.testDoubleBarrier)
	t.Run("DoubleBarrier/Rounds", s.testDoubleBarrierRounds)
	t.Run("Group", s.testGroup)
	t.Run("Leader/Election", s.testElection)
	t.Run("Leader/ObserveAndResign", s.testObserve)
	t.Run("Leader/Latch", s.testLatch)
	t.Run("Leader/LatchSessionLost", s.testLatchLost)
	t.Run("Leader/Selector", s.testSelector)
	t.Run("Leader/MixedParticipants", s.testLeaderMixed)
	t.Run("Hold/EndsWithSessionAtOnce", s.testHoldEndsWithSession)
	t.Run("Hold/DoneContextCreatesNothing", s.testDoneContextCreatesNothing)
	t.Run("Options/InvalidRefused", s.testInvalidOptions)
	t.Run("Leader/FencedSafety", s.testLeaderSafety)
}

type suite struct {
	h   registrytest.Harness
	cfg Config
}

func (s *suite) timeout() time.Duration {
	if s.h.Timeout > 0 {
		return s.h.Timeout
	}
	return 30 * time.Second
}

var nsCounter atomic.Int64

var nsUnsafe = regexp.MustCompile(`[^A-Za-z0-9]+`)

// namespace returns a namespace unique to this test run.
func namespace(t testing.TB) string {
	n := nsUnsafe.ReplaceAllString(t.Name(), "-")
	if len(n) > 40 {
		n = n[len(n)-40:]
	}
	return fmt.Sprintf("rc%d-%d-%s", time.Now().UnixNano()%1e6, nsCounter.Add(1), n)
}

func (s *suite) open(t testing.TB, ns string) *registry.Client {
	t.Helper()
	c := s.h.NewClient(t, ns)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *suite) session(t testing.TB, c *registry.Client) *registry.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout())
	defer cancel()
	sess, err := c.NewSession(ctx, registry.WithTTL(s.cfg.SessionTTL))
	if err != nil {
		t.Fatalf("%s: NewSession: %v", s.h.Name, err)
	}
	return sess
}

func (s *suite) ctx(t testing.TB, mult int) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(mult)*s.timeout())
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	poll.Until(t, s.timeout(), s.h.Name+": "+what, cond)
}

func (s *suite) supported(t *testing.T) bool {
	c := s.open(t, namespace(t))
	cp := c.Capabilities()
	return cp.Store && cp.Sessions && cp.Ephemeral && cp.Sequential
}

// ended waits until ch is closed, failing after the timeout.
func (s *suite) ended(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(s.timeout()):
		t.Fatalf("%s: %s: not within %v", s.h.Name, what, s.timeout())
	}
}

// lockNodes returns the participant nodes under key.
func lockNodes(ctx context.Context, c *registry.Client, key string) ([]string, error) {
	names, err := c.Store().Children(ctx, key)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil
	}
	return names, err
}

func recipesTTL(s *suite) recipes.Option { return recipes.WithSessionTTL(s.cfg.SessionTTL) }
