package zk_test

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
	rzk "github.com/regkit/regkit/zk"
)

// Interop of the recipes with Curator's own on one ZooKeeper: lock.Mutex with
// InterProcessMutex and leader.Latch with LeaderLatch, on the same path, in a Java
// peer (internal/testenv/curator). They queue in one line because regkit names
// its nodes exactly as Curator does ("_c_<uuid>-lock-<sequence>",
// "_c_<uuid>-latch-<sequence>") and both order them by the sequence after the
// lock name.

// curatorNode matches a node name as Curator's protected mode writes it for
// lockName ("lock-" for InterProcessMutex, "latch-" for LeaderLatch).
func curatorNode(lockName string) *regexp.Regexp {
	return regexp.MustCompile(`^_c_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-` + regexp.QuoteMeta(lockName) + `[0-9]{10}$`)
}

// waitChildren waits until the znode at abs has n children and returns them.
func waitChildren(t *testing.T, e *env, abs string, n int) []string {
	t.Helper()
	var kids []string
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("%d children under %s", n, abs), func() error {
		var err error
		if kids, _, err = e.adm(t).Children(abs); err != nil {
			return err
		}
		if len(kids) != n {
			return fmt.Errorf("children %v", kids)
		}
		return nil
	})
	return kids
}

// A Go Mutex and Curator's InterProcessMutex on one path exclude each other, in
// both directions, and hand over to each other; contending for many rounds, their
// critical sections never overlap (an exclusive marker znode and a counter that
// loses no increment). With another lock name, or a node name Curator does not
// sort by its sequence, Java acquires while Go holds.
func TestCuratorMutexInterop(t *testing.T) {
	e := newEnv(t)
	p, c := curatorPeer(t, e, "/cur-mutex", "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sess, err := c.NewSession(ctx, registry.WithTTL(4*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	const key, abs = "/locks/job", "/cur-mutex/locks/job"
	m, err := lock.NewMutex(c, sess, key)
	if err != nil {
		t.Fatal(err)
	}

	// Go holds: Java's acquire times out.
	h, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if name := path.Base(h.Key()); !curatorNode("lock-").MatchString(name) {
		t.Errorf("Go's lock node %q is not named as InterProcessMutex names its nodes", name)
	}
	if ok, err := p.MutexAcquire("j", key, 300*time.Millisecond); err != nil || ok {
		t.Fatalf("Java's acquire while Go holds = %v, %v; want false", ok, err)
	}

	// Go releases: Java, waiting, acquires.
	got := make(chan error, 1)
	go func() {
		ok, err := p.MutexAcquire("j", key, 45*time.Second)
		if err == nil && !ok {
			err = errors.New("not acquired within 45s")
		}
		got <- err
	}()
	kids := waitChildren(t, e, abs, 2) // Java queued behind Go
	for _, k := range kids {
		if !curatorNode("lock-").MatchString(k) {
			t.Errorf("lock node %q: want Curator's naming", k)
		}
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Java's acquire after Go released: %v", err)
	}

	// Java holds: Go's TryLock fails, Lock waits until Java releases.
	if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("Go's TryLock while Java holds = %v, want ErrLocked", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = m.Lock(short)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Go's Lock while Java holds = %v, want DeadlineExceeded", err)
	}
	waitChildren(t, e, abs, 1) // the cancelled Lock left nothing
	locked := make(chan *recipes.Hold, 1)
	go func() {
		h, err := m.Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		locked <- h
	}()
	waitChildren(t, e, abs, 2)
	select {
	case <-locked:
		t.Fatal("Go's Lock returned while Java holds")
	default:
	}
	if err := p.MutexRelease("j"); err != nil {
		t.Fatal(err)
	}
	if h := <-locked; h == nil || h.Err() != nil {
		t.Fatalf("Go's hold after Java released: %v", h)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// Both contend, Java in a thread of its own, Go in two goroutines with a Mutex
	// each; every critical section creates an exclusive marker and increments a
	// shared counter by a read and an unconditional write.
	const javaRounds, goRounds = 40, 20
	st := c.Store()
	if _, err := st.Create(ctx, "/counter", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := p.Contend("c", "/locks/contended", javaRounds, "/counter"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	goViolations := 0
	for range 2 {
		m, err := lock.NewMutex(c, sess, "/locks/contended")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range goRounds {
				if err := goSection(ctx, st, m, &mu, &goViolations); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var jr testenv.CuratorContention
	testenv.Eventually(t, 3*time.Minute, "Java's contender ends", func() error {
		var err error
		if jr, err = p.ContendWait("c", 5*time.Second); err != nil || !jr.Done {
			return fmt.Errorf("%+v, %v", jr, err)
		}
		return nil
	})
	if jr.Error != nil || jr.Rounds != javaRounds {
		t.Fatalf("Java's contender: %d rounds of %d, error %v", jr.Rounds, javaRounds, deref(jr.Error))
	}
	n, err := st.Get(ctx, "/counter")
	if err != nil {
		t.Fatal(err)
	}
	if jr.Violations != 0 || goViolations != 0 || string(n.Value) != strconv.Itoa(javaRounds+2*goRounds) {
		t.Fatalf("critical sections overlapped: Java found the marker %d times, Go %d times; counter %s after %d increments",
			jr.Violations, goViolations, n.Value, javaRounds+2*goRounds)
	}
}

// goSection is one of the Go side's critical sections of TestCuratorMutexInterop.
func goSection(ctx context.Context, st *registry.Store, m *lock.Mutex, mu *sync.Mutex, violations *int) error {
	h, err := m.Lock(ctx)
	if err != nil {
		return err
	}
	defer m.Unlock(ctx)
	if _, err := st.Create(ctx, "/counter/inside", nil); errors.Is(err, registry.ErrExists) {
		mu.Lock()
		*violations++
		mu.Unlock()
	} else if err != nil {
		return err
	}
	n, err := st.Get(ctx, "/counter")
	if err != nil {
		return err
	}
	v, err := strconv.Atoi(string(n.Value))
	if err != nil {
		return err
	}
	if _, err := st.Set(ctx, "/counter", []byte(strconv.Itoa(v+1)), registry.AnyVersion); err != nil {
		return err
	}
	if err := st.Delete(ctx, "/counter/inside"); err != nil && !errors.Is(err, registry.ErrNotFound) {
		return err
	}
	if err := h.Err(); err != nil {
		return fmt.Errorf("hold ended in a section without faults: %w", err)
	}
	return nil
}

// A Go leader.Latch and Curator's LeaderLatch on one path elect one leader
// between them: whoever came first leads, the other does not until it closes,
// then leadership passes over, round after round in both directions; each reads
// the other's participant id as the leader's.
func TestCuratorLeaderLatchInterop(t *testing.T) {
	e := newEnv(t)
	p, c := curatorPeer(t, e, "/cur-latch", "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const key, abs = "/leader/job", "/cur-latch/leader/job"
	newLatch := func(id string) *leader.Latch {
		l, err := leader.NewLatch(c, key, recipes.WithValue([]byte(id)), recipes.WithSessionTTL(4*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return l
	}
	leaderIs := func(javaLatch, want string) {
		t.Helper()
		testenv.Eventually(t, 20*time.Second, "both see "+want+" as the leader", func() error {
			l, err := leader.LeaderOf(ctx, c, key)
			if err != nil {
				return err
			}
			j, err := p.LatchLeader(javaLatch)
			if err != nil {
				return err
			}
			if string(l.Value) != want || j != want {
				return fmt.Errorf("Go sees %q, Java sees %q", l.Value, j)
			}
			return nil
		})
	}

	gl := newLatch("go-0")
	term, err := gl.Await(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if name := path.Base(term.Key()); !curatorNode("latch-").MatchString(name) {
		t.Errorf("Go's latch node %q is not named as LeaderLatch names its nodes", name)
	}
	const rounds = 3
	for r := range rounds {
		// Go leads; a Java latch joins and does not lead.
		jname := fmt.Sprintf("java-%d", r)
		if err := p.LatchStart(jname, key, jname); err != nil {
			t.Fatal(err)
		}
		kids := waitChildren(t, e, abs, 2)
		if !slices.ContainsFunc(kids, curatorNode("latch-").MatchString) {
			t.Fatalf("no LeaderLatch node among %v", kids)
		}
		if ok, err := p.LatchAwait(jname, 300*time.Millisecond); err != nil || ok {
			t.Fatalf("round %d: Java's await while Go leads = %v, %v; want false", r, ok, err)
		}
		if !gl.IsLeader() {
			t.Fatalf("round %d: Go's latch lost leadership to a Java latch that joined after it", r)
		}
		leaderIs(jname, fmt.Sprintf("go-%d", r))

		// Go closes: Java leads, and a new Go latch does not.
		if err := gl.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, err := p.LatchAwait(jname, 45*time.Second); err != nil || !ok {
			t.Fatalf("round %d: Java's await after Go closed = %v, %v; want true", r, ok, err)
		}
		gl = newLatch(fmt.Sprintf("go-%d", r+1))
		waitChildren(t, e, abs, 2)
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := gl.Await(short)
		cancelShort()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("round %d: Go's Await while Java leads = %v, want DeadlineExceeded", r, err)
		}
		if has, err := p.LatchHasLeadership(jname); err != nil || !has || gl.IsLeader() {
			t.Fatalf("round %d: Java leads %v (%v), Go leads %v: want Java only", r, has, err, gl.IsLeader())
		}
		leaderIs(jname, jname)

		// Java closes: Go leads.
		if err := p.LatchClose(jname); err != nil {
			t.Fatal(err)
		}
		if _, err := gl.Await(ctx); err != nil {
			t.Fatalf("round %d: Go's Await after Java closed: %v", r, err)
		}
	}
	kids := waitChildren(t, e, abs, 1)
	if _, rest, ok := rzk.ProtectedID(kids[0]); !ok || rzk.SequenceOf(rest) < 0 {
		t.Errorf("last node %q", kids[0])
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
