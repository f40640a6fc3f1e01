package etcdtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Fault tests beyond the conformance suite. Each ends by checking that the
// registrations are back on the server and that a watcher's view equals what the
// server holds; TestMain's goleak check covers leaked goroutines.

const faultTimeout = 60 * time.Second

// serverIDs reads the IDs of service's instances straight from the server.
func (e *env) serverIDs(t testing.TB, ns, service string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.admin.Get(ctx, "/"+ns+"/services/"+service+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("admin get: %v", err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		var r struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			t.Fatalf("admin get: %s: %v", kv.Key, err)
		}
		out = append(out, r.ID)
	}
	slices.Sort(out)
	return out
}

func snapIDs(s registry.Snapshot) []string {
	out := make([]string, len(s.Instances))
	for i, in := range s.Instances {
		out[i] = in.ID
	}
	return out
}

// converge reads w until its view is fresh, equals want, and equals the server's.
// It also says whether any snapshot on the way was marked Resynced.
func (e *env) converge(t testing.TB, w registry.Watcher, ns, service string, want []string) (registry.Snapshot, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	var last string
	resynced := false
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch %s never converged to %v: %v (last: %s)", service, want, err, last)
		}
		resynced = resynced || s.Resynced
		got := snapIDs(s)
		last = fmt.Sprintf("view %v stale=%v err=%v", got, s.Stale, s.Err)
		if s.Stale || !slices.Equal(got, want) {
			continue
		}
		if srv := e.serverIDs(t, ns, service); !slices.Equal(srv, want) {
			last += fmt.Sprintf(", server %v", srv)
			continue
		}
		return s, resynced
	}
}

// setup registers ids of service on one client and watches it from another.
func (e *env) setup(t *testing.T, service string, ids ...string) (ns string, a *registry.Client, w registry.Watcher) {
	t.Helper()
	ns = strings.ReplaceAll(t.Name(), "/", "-")
	a, b := e.open(t, ns), e.open(t, ns)
	t.Cleanup(func() { a.Close(); b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	t.Cleanup(cancel) // the watcher lives as long as ctx
	for i, id := range ids {
		if _, err := a.Register(ctx, registry.Instance{Service: service, ID: id, Host: "127.0.0.1", Port: 9000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := b.Watch(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	e.converge(t, w, ns, service, ids)
	return ns, a, w
}

// A server that comes back with no data at all: the lease and the keys are gone,
// so every registration must be granted and put again, by itself.
func TestRestartWithFreshData(t *testing.T) {
	e := newEnv(t)
	ns, _, w := e.setup(t, "fresh", "f1", "f2")
	e.srv.Restart(t, true)
	s, resynced := e.converge(t, w, ns, "fresh", []string{"f1", "f2"})
	if !resynced {
		t.Errorf("no snapshot marked Resynced after the restart")
	}
	t.Logf("converged after a fresh-data restart: %v", snapIDs(s))
}

// A cut longer than the lease TTL: the server expires the lease and deletes the
// registrations while the client cannot reach it. After the heal the client finds
// its lease gone and registers again; the watcher catches up.
func TestCutLongerThanLeaseTTL(t *testing.T) {
	e := newEnv(t)
	ns, _, w := e.setup(t, "cut", "c1")
	e.proxy.Cut()
	healed := false
	defer func() {
		if !healed {
			e.proxy.Heal()
		}
	}()
	// The lease (TTL 3s) expires on the server: the registration disappears there.
	testenv.Eventually(t, faultTimeout, "registration expired on the server during the cut", func() error {
		if ids := e.serverIDs(t, ns, "cut"); len(ids) != 0 {
			return fmt.Errorf("server still has %v", ids)
		}
		return nil
	})
	e.proxy.Heal()
	healed = true
	e.converge(t, w, ns, "cut", []string{"c1"})
}

// Compaction below a watcher's revision: while the watcher is cut off, instances
// change and the server compacts past the watcher's last revision. The watcher must
// not resume into ErrCompacted and stop: it re-lists, marks the view resynced, and
// ends equal to the server's.
func TestCompactionBelowWatcher(t *testing.T) {
	e := newEnv(t)
	ns := "compact"
	writer := e.open(t, ns) // talks through the proxy too, but registers before the cut
	defer writer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	// The watcher dials a proxy of its own so only it is cut off.
	wp := testenv.NewProxy(t, e.srv.Endpoint())
	wc, err := registry.Open(ctx, "etcd://"+wp.Addr()+"/"+ns+"?lease_ttl=3s&dial_timeout=10s",
		registry.WithRetryBackoff(50*time.Millisecond, time.Second), registry.WithRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	r1, err := writer.Register(ctx, registry.Instance{Service: "compact", ID: "k1", Host: "127.0.0.1", Port: 9101})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, "compact")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	e.converge(t, w, ns, "compact", []string{"k1"})
	// One change seen through the armed watch: no list is in flight when the cut
	// comes, so the watcher's next news must come through the resumed watch.
	if _, err := writer.Register(ctx, registry.Instance{Service: "compact", ID: "k0", Host: "127.0.0.1", Port: 9100}); err != nil {
		t.Fatal(err)
	}
	e.converge(t, w, ns, "compact", []string{"k0", "k1"})

	wp.Cut()
	healed := false
	defer func() {
		if !healed {
			wp.Heal()
		}
	}()
	if err := r1.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Register(ctx, registry.Instance{Service: "compact", ID: "k2", Host: "127.0.0.1", Port: 9102}); err != nil {
		t.Fatal(err)
	}
	// Churn unrelated keys so the compaction point is well past the watcher.
	for i := range 20 {
		if _, err := e.admin.Put(ctx, "/compact/other", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := e.admin.Get(ctx, "/compact/other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	wp.Heal()
	healed = true
	s, resynced := e.converge(t, w, ns, "compact", []string{"k0", "k2"})
	if !resynced {
		t.Errorf("no snapshot marked Resynced after the compaction gap")
	}
	t.Logf("converged after compaction to rev %d: %v", resp.Header.Revision, snapIDs(s))
}
