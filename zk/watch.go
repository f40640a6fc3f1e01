package zk

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry/driver"
)

// treeWatch keeps one-shot watches armed over a subtree: a data (or, for a missing
// root, exists) watch on every node and a child watch on every node above maxLevel.
// Each fired watch is re-armed before notify is called, so a re-list after notify
// sees every change that no armed watch will report.
type treeWatch struct {
	c        *Conn
	root     string
	maxLevel int // child watches on nodes with level < maxLevel; -1: unlimited
	level    map[string]int
	dataW    map[string]<-chan zk.Event
	kidsW    map[string]<-chan zk.Event
}

// watchTree runs a treeWatch until ctx is done, a watch call fails, or the
// connection leaves the session it was armed in.
func (c *Conn) watchTree(ctx context.Context, root string, maxLevel int, notify func()) error {
	st, sid, changed := c.zc.status()
	if st != zk.StateHasSession {
		return fmt.Errorf("zk: watch %s: not connected (%v): %w", root, st, driver.ErrUnavailable)
	}
	w := &treeWatch{c: c, root: root, maxLevel: maxLevel, level: map[string]int{root: 0},
		dataW: map[string]<-chan zk.Event{}, kidsW: map[string]<-chan zk.Event{}}
	if err := w.armRoot(ctx); err != nil {
		return w.fail(ctx, err)
	}
	notify()
	for {
		cases := []reflect.SelectCase{
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(changed)},
		}
		type src struct {
			path string
			kids bool
		}
		srcs := []src{{}, {}}
		for p, ch := range w.dataW {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
			srcs = append(srcs, src{p, false})
		}
		for p, ch := range w.kidsW {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
			srcs = append(srcs, src{p, true})
		}
		i, v, ok := reflect.Select(cases)
		switch i {
		case 0:
			return ctx.Err()
		case 1:
			var nst zk.State
			var nsid int64
			nst, nsid, changed = c.zc.status()
			if nst != zk.StateHasSession || nsid != sid {
				return fmt.Errorf("zk: watch %s: connection state %v: %w", root, nst, driver.ErrUnavailable)
			}
			continue
		}
		s := srcs[i]
		var ev zk.Event
		if ok {
			ev = v.Interface().(zk.Event)
		} else {
			ev = zk.Event{Type: zk.EventNotWatching, Err: errors.New("watch channel closed")}
		}
		var err error
		if s.kids {
			delete(w.kidsW, s.path)
			err = w.onKids(ctx, s.path, ev)
		} else {
			delete(w.dataW, s.path)
			err = w.onData(ctx, s.path, ev)
		}
		if err != nil {
			return w.fail(ctx, err)
		}
		notify()
	}
}

func (w *treeWatch) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return wrap("watch", w.root, err)
}

func notWatching(ev zk.Event) error {
	if ev.Err != nil {
		return fmt.Errorf("watch lost: %w: %w", driver.ErrUnavailable, ev.Err)
	}
	return fmt.Errorf("watch lost: %w", driver.ErrUnavailable)
}

func (w *treeWatch) onData(ctx context.Context, p string, ev zk.Event) error {
	switch ev.Type {
	case zk.EventNotWatching:
		return notWatching(ev)
	case zk.EventNodeDeleted:
		return w.gone(ctx, p)
	}
	// Created (root) or data changed: re-arm.
	if p == w.root {
		return w.armRoot(ctx)
	}
	return w.armNode(ctx, p)
}

func (w *treeWatch) onKids(ctx context.Context, p string, ev zk.Event) error {
	if ev.Type == zk.EventNotWatching {
		return notWatching(ev)
	}
	// Re-arm if the node is (still, or again) tracked as existing; a deleted node's
	// data watch handles the deletion.
	if _, tracked := w.dataW[p]; tracked {
		return w.armKids(ctx, p)
	}
	return nil
}

// gone forgets p and its descendants, then looks at p again (it may have been
// re-created in between; its parent's child watch covers later creations).
func (w *treeWatch) gone(ctx context.Context, p string) error {
	prefix := p + "/"
	if p == "/" {
		prefix = "/"
	}
	for q := range w.level {
		if q == p || strings.HasPrefix(q, prefix) {
			if q != w.root {
				delete(w.level, q)
			}
			delete(w.dataW, q)
			delete(w.kidsW, q)
		}
	}
	if p == w.root {
		return w.armRoot(ctx)
	}
	return w.armNode(ctx, p)
}

// armRoot arms an exists watch on the root: a data watch while it exists (then its
// children are armed), a creation watch while it does not.
func (w *treeWatch) armRoot(ctx context.Context) error {
	if _, ok := w.dataW[w.root]; ok {
		return nil
	}
	type res struct {
		ok bool
		ch <-chan zk.Event
	}
	r, err := call(ctx, w.c, func() (res, error) {
		ok, _, ch, err := w.c.zc.zk.ExistsW(w.root)
		return res{ok, ch}, err
	})
	if err != nil {
		return err
	}
	w.dataW[w.root] = r.ch
	if r.ok {
		return w.armKids(ctx, w.root)
	}
	return nil
}

// armNode arms a data watch on a non-root node and its children; a missing node
// is forgotten (GetW sets no watch on a missing node).
func (w *treeWatch) armNode(ctx context.Context, p string) error {
	if _, ok := w.dataW[p]; ok {
		return nil
	}
	ch, err := call(ctx, w.c, func() (<-chan zk.Event, error) {
		_, _, ch, err := w.c.zc.zk.GetW(p)
		return ch, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		delete(w.level, p)
		return nil
	}
	if err != nil {
		return err
	}
	w.dataW[p] = ch
	return w.armKids(ctx, p)
}

// armKids arms a child watch on p (if p's level allows) and arms every child not
// yet watched.
func (w *treeWatch) armKids(ctx context.Context, p string) error {
	lvl := w.level[p]
	if w.maxLevel >= 0 && lvl >= w.maxLevel {
		return nil
	}
	if _, ok := w.kidsW[p]; ok {
		return nil
	}
	type res struct {
		kids []string
		ch   <-chan zk.Event
	}
	r, err := call(ctx, w.c, func() (res, error) {
		kids, _, ch, err := w.c.zc.zk.ChildrenW(p)
		return res{kids, ch}, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil // the data watch reports the deletion
	}
	if err != nil {
		return err
	}
	w.kidsW[p] = r.ch
	for _, k := range r.kids {
		cp := driver.JoinKey(p, k)
		if p == "/" && k == "zookeeper" {
			continue
		}
		if _, ok := w.dataW[cp]; ok {
			continue
		}
		w.level[cp] = lvl + 1
		if err := w.armNode(ctx, cp); err != nil {
			return err
		}
	}
	return nil
}
