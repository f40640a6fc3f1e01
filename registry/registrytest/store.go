package registrytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// RunStore runs the coordination-store conformance suite. Cases the backend's
// Capabilities exclude are checked to fail with ErrNotSupported instead.
func RunStore(t *testing.T, h Harness) {
	if h.NewClient == nil {
		t.Fatal("registrytest: Harness.NewClient is required")
	}
	t.Run("NotSupportedIsExplicit", func(t *testing.T) { testNotSupported(t, &h) })
	t.Run("CreateGetSetDelete", func(t *testing.T) { needStore(t, &h); testCRUD(t, &h) })
	t.Run("CompareAndSetRace", func(t *testing.T) { needStore(t, &h); testCASRace(t, &h) })
	t.Run("Sequential", func(t *testing.T) { need(t, &h, "sequential"); testSequential(t, &h) })
	t.Run("EphemeralAndSessions", func(t *testing.T) { need(t, &h, "ephemeral"); testEphemeral(t, &h) })
	t.Run("SessionLost", func(t *testing.T) { need(t, &h, "ephemeral"); testStoreSessionLost(t, &h) })
	t.Run("PersistentNode", func(t *testing.T) { need(t, &h, "ephemeral"); testPersistentNode(t, &h) })
	t.Run("StoreApartFromRegistry", func(t *testing.T) { needStore(t, &h); testStoreApart(t, &h) })
	t.Run("TreeWatch", func(t *testing.T) { needStore(t, &h); testTreeWatch(t, &h) })
	t.Run("TreeWatchSurvivesRestart", func(t *testing.T) {
		needStore(t, &h)
		if h.Restart == nil {
			t.Skipf("%s: no Restart hook", h.Name)
		}
		testTreeWatchFault(t, &h, false, func() func() { h.Restart(t); return func() {} })
	})
	t.Run("TreeWatchSurvivesCut", func(t *testing.T) {
		needStore(t, &h)
		if h.Cut == nil {
			t.Skipf("%s: no Cut hook", h.Name)
		}
		testTreeWatchFault(t, &h, true, func() func() { return h.Cut(t) })
	})
}

func caps(t *testing.T, h *Harness) driver.Capabilities {
	c := h.open(t, namespace(t))
	return c.Capabilities()
}

func needStore(t *testing.T, h *Harness) {
	if !caps(t, h).Store {
		t.Skipf("%s declares no store (checked by NotSupportedIsExplicit)", h.Name)
	}
}

func need(t *testing.T, h *Harness, what string) {
	cp := caps(t, h)
	ok := cp.Store && map[string]bool{"sequential": cp.Sequential, "ephemeral": cp.Ephemeral && cp.Sessions}[what]
	if !ok {
		t.Skipf("%s declares no %s keys (checked by NotSupportedIsExplicit)", h.Name, what)
	}
}

func testNotSupported(t *testing.T, h *Harness) {
	c := h.open(t, namespace(t))
	ctx := ctxT(t, h.timeout())
	cp := c.Capabilities()
	st := c.Store()
	if !cp.Store {
		if _, err := st.Get(ctx, "/x"); !errors.Is(err, driver.ErrNotSupported) {
			t.Errorf("Get on a backend without store = %v, want ErrNotSupported", err)
		}
	}
	if !cp.Sessions {
		if _, err := c.NewSession(ctx); !errors.Is(err, driver.ErrNotSupported) {
			t.Errorf("NewSession without sessions = %v, want ErrNotSupported", err)
		}
	}
	if cp.Store && !cp.Sequential {
		if _, err := st.Create(ctx, "/seq/n-", nil, registry.Sequential()); !errors.Is(err, driver.ErrNotSupported) {
			t.Errorf("sequential Create = %v, want ErrNotSupported", err)
		}
	}
	if _, err := st.Get(ctx, "no-slash"); cp.Store && !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("Get(no-slash) = %v, want ErrInvalid", err)
	}
}

func testCRUD(t *testing.T, h *Harness) {
	c := h.open(t, namespace(t))
	ctx := ctxT(t, h.timeout())
	st := c.Store()
	n, err := st.Create(ctx, "/app/config/db", []byte("v1"))
	if err != nil {
		t.Fatalf("Create with parents: %v", err)
	}
	if n.Key != "/app/config/db" || string(n.Value) != "v1" || n.CreateRevision <= 0 {
		t.Errorf("created node = %+v", n)
	}
	for _, p := range []string{"/app", "/app/config"} {
		if _, err := st.Get(ctx, p); err != nil {
			t.Errorf("parent %s: %v", p, err)
		}
	}
	if _, err := st.Create(ctx, "/app/config/db", []byte("again")); !errors.Is(err, driver.ErrExists) {
		t.Errorf("second Create = %v, want ErrExists", err)
	}
	got, err := st.Get(ctx, "/app/config/db")
	if err != nil || string(got.Value) != "v1" || got.Version != n.Version {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := st.Set(ctx, "/app/config/db", []byte("x"), got.Version+1000); !errors.Is(err, driver.ErrVersionConflict) {
		t.Errorf("Set with wrong version = %v, want ErrVersionConflict", err)
	}
	n2, err := st.Set(ctx, "/app/config/db", []byte("v2"), got.Version)
	if err != nil || n2.Version == got.Version || n2.CreateRevision != n.CreateRevision {
		t.Fatalf("Set = %+v, %v (version must change, create revision must not)", n2, err)
	}
	if _, err := st.Set(ctx, "/app/config/db", []byte("v3"), driver.AnyVersion); err != nil {
		t.Errorf("unconditional Set: %v", err)
	}
	if _, err := st.Set(ctx, "/app/nothing", []byte("x"), driver.AnyVersion); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Set missing = %v, want ErrNotFound", err)
	}
	if _, err := st.Create(ctx, "/app/config/cache", nil); err != nil {
		t.Fatal(err)
	}
	kids, err := st.Children(ctx, "/app/config")
	if err != nil || !slices.Equal(kids, []string{"cache", "db"}) {
		t.Errorf("Children = %v, %v; want [cache db]", kids, err)
	}
	if _, err := st.Children(ctx, "/nope"); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Children of missing = %v, want ErrNotFound", err)
	}
	tree, err := st.Tree(ctx, "/app")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, n := range tree {
		keys = append(keys, n.Key)
	}
	if !slices.Equal(keys, []string{"/app", "/app/config", "/app/config/cache", "/app/config/db"}) {
		t.Errorf("Tree keys = %v", keys)
	}
	if err := st.Delete(ctx, "/app"); !errors.Is(err, driver.ErrNotEmpty) {
		t.Errorf("Delete non-empty = %v, want ErrNotEmpty", err)
	}
	if err := st.Delete(ctx, "/app/config/cache", registry.IfVersion(-12345)); !errors.Is(err, driver.ErrVersionConflict) {
		t.Errorf("Delete with wrong version = %v, want ErrVersionConflict", err)
	}
	if err := st.Delete(ctx, "/app", registry.Recursive()); err != nil {
		t.Fatalf("recursive Delete: %v", err)
	}
	for _, k := range keys {
		if _, err := st.Get(ctx, k); !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("after recursive delete, Get(%s) = %v", k, err)
		}
	}
	if err := st.Delete(ctx, "/app"); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Delete missing = %v, want ErrNotFound", err)
	}
}

func testCASRace(t *testing.T, h *Harness) {
	ns := namespace(t)
	ctx := ctxT(t, 3*h.timeout())
	c0 := h.open(t, ns)
	if _, err := c0.Store().Create(ctx, "/counter", []byte("0")); err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		c := h.open(t, ns)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				n, err := c.Store().Get(ctx, "/counter")
				if err != nil {
					errs <- err
					return
				}
				v, _ := strconv.Atoi(string(n.Value))
				_, err = c.Store().Set(ctx, "/counter", []byte(strconv.Itoa(v+1)), n.Version)
				if errors.Is(err, driver.ErrVersionConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				i++
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n, err := c0.Store().Get(ctx, "/counter")
	if err != nil || string(n.Value) != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %q, %v; want %d (a lost update means CAS is broken)", n.Value, err, workers*each)
	}
}

func testSequential(t *testing.T, h *Harness) {
	ns := namespace(t)
	ctx := ctxT(t, 3*h.timeout())
	const workers, each = 4, 3
	var mu sync.Mutex
	var nodes []driver.Node
	var wg sync.WaitGroup
	for range workers {
		c := h.open(t, ns)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				n, err := c.Store().Create(ctx, "/queue/item-", []byte("x"), registry.Sequential())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				nodes = append(nodes, n)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(nodes) != workers*each {
		t.Fatalf("%d nodes", len(nodes))
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		suffix, ok := strings.CutPrefix(n.Key, "/queue/item-")
		if !ok || len(suffix) != 10 || strings.Trim(suffix, "0123456789") != "" || seen[n.Key] {
			t.Errorf("sequential key %q: want /queue/item- and 10 unique digits", n.Key)
		}
		seen[n.Key] = true
	}
	// Key order, creation order and CreateRevision order agree.
	slices.SortFunc(nodes, func(a, b driver.Node) int { return strings.Compare(a.Key, b.Key) })
	for i := 1; i < len(nodes); i++ {
		if nodes[i].CreateRevision <= nodes[i-1].CreateRevision {
			t.Errorf("%s has CreateRevision %d after %s with %d", nodes[i].Key, nodes[i].CreateRevision, nodes[i-1].Key, nodes[i-1].CreateRevision)
		}
	}
	kids, err := h.open(t, ns).Store().Children(ctx, "/queue")
	if err != nil || len(kids) != workers*each {
		t.Errorf("Children(/queue) = %d, %v", len(kids), err)
	}
}

func testEphemeral(t *testing.T, h *Harness) {
	ns := namespace(t)
	ctx := ctxT(t, 3*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	sess, err := a.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sess.ID() == "" || sess.Err() != nil {
		t.Fatalf("new session: id %q err %v", sess.ID(), sess.Err())
	}
	n, err := a.Store().Create(ctx, "/members/a", []byte("alive"), registry.Ephemeral(sess))
	if err != nil {
		t.Fatal(err)
	}
	if n.Session != sess.ID() {
		t.Errorf("node session %q, want %q", n.Session, sess.ID())
	}
	got, err := b.Store().Get(ctx, "/members/a")
	if err != nil || got.Session != sess.ID() {
		t.Fatalf("other client Get = %+v, %v", got, err)
	}
	if st := sess.State(); st != registry.StateConnected {
		t.Errorf("new session state %v, want connected", st)
	}
	changed := sess.Changed()
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if !errors.Is(sess.Err(), driver.ErrClosed) {
		t.Errorf("Err after Close = %v, want ErrClosed", sess.Err())
	}
	h.gone(t, ctx, b, "/members/a", "ephemeral key gone with its session")
	if st := sess.State(); st != registry.StateClosed {
		t.Errorf("state after Close %v, want closed", st)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not closed by Close")
	}
	if err := sess.Close(); err != nil {
		t.Errorf("second Close = %v, want the first's nil", err)
	}
	if _, err := a.Store().Create(ctx, "/members/late", nil, registry.Ephemeral(sess)); err == nil {
		t.Error("Create bound to a closed session succeeded")
	}
	// The parent is persistent.
	if _, err := b.Store().Get(ctx, "/members"); err != nil {
		t.Errorf("parent: %v", err)
	}
}

func testStoreSessionLost(t *testing.T, h *Harness) {
	if h.ExpireSession == nil {
		t.Fatalf("%s: Harness.ExpireSession is nil", h.Name)
	}
	ns := namespace(t)
	ctx := ctxT(t, 3*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	sess, err := a.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changed := sess.Changed()
	if _, err := a.Store().Create(ctx, "/eph/x", nil, registry.Ephemeral(sess)); err != nil {
		t.Fatal(err)
	}
	h.ExpireSession(t, a)
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("session Done not closed after expiry")
	}
	if !errors.Is(sess.Err(), driver.ErrSessionLost) {
		t.Errorf("Err = %v, want ErrSessionLost", sess.Err())
	}
	// State is Lost once Done is closed, and the change closed Changed.
	if st := sess.State(); st != registry.StateLost {
		t.Errorf("state after expiry %v, want lost", st)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed when the session was lost")
	}
	h.gone(t, ctx, b, "/eph/x", "ephemeral key gone with the lost session")
	// A new session works.
	s2, err := a.NewSession(ctx)
	if err != nil {
		t.Fatalf("new session after loss: %v", err)
	}
	if _, err := a.Store().Create(ctx, "/eph/y", nil, registry.Ephemeral(s2)); err != nil {
		t.Fatal(err)
	}
}

func nextChange(t *testing.T, h *Harness, w registry.TreeWatcher, what string, ok func(registry.TreeChange) error) registry.TreeChange {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
	defer cancel()
	last := errors.New("no change")
	for {
		tc, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("%s: %s: Next: %v (last mismatch: %v)", h.Name, what, err, last)
		}
		if last = ok(tc); last == nil {
			return tc
		}
	}
}

func keysOf(nodes []driver.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Key)
	}
	return out
}

func testTreeWatch(t *testing.T, h *Harness) {
	ns := namespace(t)
	ctx := ctxT(t, 3*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	if _, err := a.Store().Create(ctx, "/w/one", []byte("1")); err != nil {
		t.Fatal(err)
	}
	w, err := b.Store().Watch(ctx, "/w")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextChange(t, h, w, "initial state", func(tc registry.TreeChange) error {
		if !slices.Equal(keysOf(tc.Nodes), []string{"/w", "/w/one"}) || len(tc.Events) != 2 || tc.Events[0].Type != registry.EventCreated {
			return fmt.Errorf("nodes %v events %v", keysOf(tc.Nodes), tc.Events)
		}
		return nil
	})
	if _, err := a.Store().Create(ctx, "/w/two", []byte("2")); err != nil {
		t.Fatal(err)
	}
	nextChange(t, h, w, "created", func(tc registry.TreeChange) error {
		if len(tc.Events) != 1 || tc.Events[0].Type != registry.EventCreated || tc.Events[0].Node.Key != "/w/two" {
			return fmt.Errorf("events %v", tc.Events)
		}
		return nil
	})
	if _, err := a.Store().Set(ctx, "/w/one", []byte("1b"), driver.AnyVersion); err != nil {
		t.Fatal(err)
	}
	nextChange(t, h, w, "updated", func(tc registry.TreeChange) error {
		if len(tc.Events) != 1 || tc.Events[0].Type != registry.EventUpdated || string(tc.Events[0].Node.Value) != "1b" {
			return fmt.Errorf("events %v", tc.Events)
		}
		return nil
	})
	if err := a.Store().Delete(ctx, "/w/two"); err != nil {
		t.Fatal(err)
	}
	last := nextChange(t, h, w, "deleted", func(tc registry.TreeChange) error {
		if len(tc.Events) != 1 || tc.Events[0].Type != registry.EventDeleted || tc.Events[0].Node.Key != "/w/two" {
			return fmt.Errorf("events %v", tc.Events)
		}
		return nil
	})
	tree, err := a.Store().Tree(ctx, "/w")
	if err != nil || !slices.Equal(keysOf(tree), keysOf(last.Nodes)) {
		t.Errorf("server tree %v (%v) != watch view %v", keysOf(tree), err, keysOf(last.Nodes))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(ctx); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
}

// testTreeWatchFault: a tree watch catches up after fault; with waitStale it
// first shows the fault as Stale (a cut), and the first fresh change after it
// must be Resynced.
func testTreeWatchFault(t *testing.T, h *Harness, waitStale bool, fault func() (heal func())) {
	ns := namespace(t)
	ctx := ctxT(t, 4*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	if _, err := a.Store().Create(ctx, "/f/one", nil); err != nil {
		t.Fatal(err)
	}
	w, err := b.Store().Watch(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextChange(t, h, w, "initial", func(tc registry.TreeChange) error {
		if len(tc.Nodes) != 2 {
			return fmt.Errorf("nodes %v", keysOf(tc.Nodes))
		}
		return nil
	})
	heal := sync.OnceFunc(fault())
	defer heal()
	if waitStale {
		nextChange(t, h, w, "stale during the fault", func(tc registry.TreeChange) error {
			if !tc.Stale {
				return fmt.Errorf("not stale: %v", keysOf(tc.Nodes))
			}
			return nil
		})
	}
	heal()
	h.eventually(t, "create after the fault", func() error {
		_, err := a.Store().Create(ctx, "/f/two", nil)
		if errors.Is(err, driver.ErrExists) {
			return nil
		}
		return err
	})
	// If the fault showed as a gap (a Stale change), the first fresh change after
	// it must be Resynced.
	sawStale, checked := waitStale, false
	nextChange(t, h, w, "change after the fault", func(tc registry.TreeChange) error {
		switch {
		case tc.Stale:
			sawStale = true
		case sawStale && !checked:
			checked = true
			if !tc.Resynced {
				t.Errorf("first fresh change after the fault's gap is not Resynced: %+v", tc)
			}
		}
		if !slices.Equal(keysOf(tc.Nodes), []string{"/f", "/f/one", "/f/two"}) || tc.Stale {
			return fmt.Errorf("nodes %v stale=%v", keysOf(tc.Nodes), tc.Stale)
		}
		return nil
	})
}

// testPersistentNode: a PersistentNode comes back, with its value, after its
// session is lost and after someone deletes it; SetValue is written; Close deletes.
func testPersistentNode(t *testing.T, h *Harness) {
	if h.ExpireSession == nil {
		t.Fatalf("%s: Harness.ExpireSession is nil", h.Name)
	}
	ns := namespace(t)
	ctx := ctxT(t, 4*h.timeout())
	a, b := h.open(t, ns), h.open(t, ns)
	p, err := a.Store().NewPersistentNode("/pn/member", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.WaitForCreate(ctx); err != nil {
		t.Fatal(err)
	}
	// present reports nil once b reads the key with value want, bound to a session
	// other than notSession.
	present := func(want, notSession string) func() error {
		return func() error {
			n, err := b.Store().Get(ctx, "/pn/member")
			switch {
			case err != nil:
				return err
			case string(n.Value) != want:
				return fmt.Errorf("value %q, want %q", n.Value, want)
			case n.Session == "" || n.Session == notSession:
				return fmt.Errorf("bound to session %q", n.Session)
			}
			return nil
		}
	}
	h.eventually(t, "persistent node created", present("v1", ""))
	first, _ := b.Store().Get(ctx, "/pn/member")

	h.ExpireSession(t, a)
	h.eventually(t, "persistent node re-created under a new session after expiry", present("v1", first.Session))

	if err := b.Store().Delete(ctx, "/pn/member"); err != nil && !errors.Is(err, driver.ErrNotFound) {
		t.Fatal(err)
	}
	h.eventually(t, "persistent node re-created after a delete", present("v1", ""))

	p.SetValue([]byte("v2"))
	h.eventually(t, "new value written", present("v2", ""))

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	h.gone(t, ctx, b, "/pn/member", "persistent node deleted by Close")
}

// gone waits until c reads key as not found.
func (h *Harness) gone(t *testing.T, ctx context.Context, c *registry.Client, key, what string) {
	t.Helper()
	h.eventually(t, what, func() error {
		if n, err := c.Store().Get(ctx, key); !errors.Is(err, driver.ErrNotFound) {
			return fmt.Errorf("Get(%s) = %+v, %v; want ErrNotFound", key, n, err)
		}
		return nil
	})
}

// testStoreApart: the store and the registry never share data. Store writes under
// every path a layout keeps instances at either succeed without showing up as
// instances, or are refused with ErrInvalid; a recursive delete of the store's
// root leaves registrations alone.
func testStoreApart(t *testing.T, h *Harness) {
	ns := namespace(t)
	c := h.open(t, ns)
	ctx := ctxT(t, 2*h.timeout())
	r, err := c.Register(ctx, inst("ssvc", "live", 7701))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	body := []byte(`{"id":"ghost","service":"ssvc","host":"10.0.0.9","port":7702,"weight":100,` +
		`"name":"ssvc","address":"10.0.0.9","enabled":true}`)
	keys := []string{
		"/services/ssvc/ghost", "/services/ssvc/config", "/regkit/services/ssvc/ghost",
		"/ssvc/ghost", "/dubbo/ssvc/providers/" + strings.ReplaceAll("dubbo://10.0.0.9:7702/ssvc?interface=ssvc", "/", "%2F"),
		"/kv/services/ssvc/ghost", "/services/ssvc",
	}
	st := c.Store()
	for _, k := range keys {
		_, err := st.Create(ctx, k, body)
		var fe *registry.FieldError
		switch {
		case err == nil:
		case errors.Is(err, registry.ErrExists):
		case errors.Is(err, registry.ErrInvalid) && errors.As(err, &fe) && strings.Contains(err.Error(), "ssvc"):
		default:
			t.Errorf("Create(%s) = %v, want success or a FieldError naming the key", k, err)
		}
	}
	got, err := c.Conn().List(ctx, "ssvc")
	if err != nil {
		t.Fatal(err)
	}
	if g := ids(got.Instances); !slices.Equal(g, []string{"live"}) {
		t.Errorf("after store writes, ssvc lists %v, want [live]", g)
	}
	if err := st.Delete(ctx, "/", registry.Recursive()); err != nil && !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Delete(/, Recursive) = %v", err)
	}
	// Read at once: the registration guard would put a deleted instance back a
	// moment later, which must not be what keeps it listed.
	got, err = c.Conn().List(ctx, "ssvc")
	if err != nil {
		t.Fatal(err)
	}
	if g := ids(got.Instances); !slices.Equal(g, []string{"live"}) {
		t.Errorf("right after the store's recursive delete of /, ssvc lists %v, want [live]", g)
	}
	if r.State() != registry.Registered {
		t.Errorf("registration %v after the store's delete (%v)", r.State(), r.Err())
	}
}
