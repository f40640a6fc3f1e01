package zk_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/recipes/recipestest"
	"github.com/regkit/regkit/registry"
)

// zkLocker is the same recipe written on plain go-zookeeper, one connection
// (session) per participant: create an ephemeral-sequential node, get the
// children, hold if first, else wait for the predecessor to go; delete to
// release.
type zkLocker struct {
	c    *zk.Conn
	dir  string
	node string
}

func (l *zkLocker) Lock(ctx context.Context) error {
	path, err := l.c.Create(l.dir+"/lock-", nil, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		return err
	}
	me := path[strings.LastIndexByte(path, '/')+1:]
	for {
		kids, _, err := l.c.Children(l.dir)
		if err != nil {
			return err
		}
		slices.Sort(kids) // one prefix, so name order is sequence order
		i := slices.Index(kids, me)
		if i < 0 {
			return fmt.Errorf("%s vanished", path)
		}
		if i == 0 {
			l.node = path
			return nil
		}
		ok, _, ch, err := l.c.ExistsW(l.dir + "/" + kids[i-1])
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			_ = l.c.Delete(path, -1)
			return ctx.Err()
		}
	}
}

func (l *zkLocker) Unlock(context.Context) error {
	err := l.c.Delete(l.node, -1)
	l.node = ""
	return err
}

func newZKLocker(b testing.TB, addr, dir string) recipestest.Locker {
	b.Helper()
	c := rawConn(b, addr)
	if _, err := c.Create(dir, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		b.Fatal(err)
	}
	return &zkLocker{c: c, dir: dir}
}

func benchOpen(b testing.TB, addr, ns string) *registry.Client {
	return openURL(b, "zk://"+addr+"/"+ns+"?session_timeout=10s", quiet)
}

// BenchmarkMutexUncontended measures one uncontended acquire+release of
// lock.Mutex next to the same recipe on plain go-zookeeper on the same server,
// both in every iteration (see recipestest.BenchUncontended).
func BenchmarkMutexUncontended(b *testing.B) {
	e := newEnv(b)
	c := benchOpen(b, e.srv.Addr(), "bench")
	recipestest.BenchUncontended(b, recipestest.NewMutexLocker(b, c, "/locks/bench"),
		newZKLocker(b, e.srv.Addr(), "/zk-lock-bench"))
}

// BenchmarkMutexContended measures the throughput of one lock with 8 and 64
// waiters, each with a session of its own, regkit's next to the plain
// go-zookeeper recipe's (see recipestest.BenchContended).
func BenchmarkMutexContended(b *testing.B) {
	e := newEnv(b)
	c := benchOpen(b, e.srv.Addr(), "bench")
	for _, w := range []int{8, 64} {
		b.Run(fmt.Sprintf("waiters=%d", w), func(b *testing.B) {
			var ours, native []recipestest.Locker
			for range w {
				ours = append(ours, recipestest.NewMutexLocker(b, c, fmt.Sprintf("/locks/c%d", w)))
				native = append(native, newZKLocker(b, e.srv.Addr(), fmt.Sprintf("/zk-lock-c%d", w)))
			}
			recipestest.BenchContended(b, ours, native, 4*w)
		})
	}
}

// BenchmarkFailover measures the time from a leader's Resign, its Client's Close,
// or the cut of its connection to the moment the next candidate leads (see
// recipestest.BenchFailover), with 4s sessions.
func BenchmarkFailover(b *testing.B) {
	e := newEnv(b)
	open := func(addr string) func(b testing.TB, ns string) *registry.Client {
		return func(b testing.TB, ns string) *registry.Client {
			return openURL(b, "zk://"+addr+"/"+ns+"?session_timeout=4s", quiet)
		}
	}
	env := recipestest.FailoverEnv{
		Open: open(e.srv.Addr()),
		OpenCuttable: func(b testing.TB, ns string) (*registry.Client, func() func()) {
			return open(e.proxy.Addr())(b, ns), func() func() { e.proxy.Blackhole(); return e.proxy.Heal }
		},
		TTL: 4 * time.Second,
	}
	b.Run("after=resign", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverResign) })
	b.Run("after=close", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverClose) })
	b.Run("after=expiry", func(b *testing.B) { recipestest.BenchFailover(b, env, recipestest.FailoverExpiry) })
}
