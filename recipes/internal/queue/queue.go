// Package queue is the fair waiting line the lock and election recipes share: one
// ephemeral sequential node per participant under a directory, ordered by its
// sequence suffix; each participant waits only for its predecessor to go (no herd).
package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// ProtectedPrefix starts every participant name: ProtectedPrefix, a random UUID in
// its 36-character text form, '-', the queue's prefix, then the store's 10-digit
// sequence number: Curator's protected naming, exactly as its InterProcessMutex
// ("_c_<uuid>-lock-0000000007") and LeaderLatch ("_c_<uuid>-latch-...") name
// their nodes, so that on ZooKeeper a Curator process and a regkit process queue
// in one line on the same path. The UUID finds the node again after a create
// whose answer was lost.
const ProtectedPrefix = "_c_"

// Check returns an error matching registry.ErrNotSupported unless c's backend
// offers what queues need: a store with sessions, ephemeral and sequential keys.
func Check(c *registry.Client, what string) error {
	cp := c.Capabilities()
	if !cp.Store || !cp.Sessions || !cp.Ephemeral || !cp.Sequential {
		return fmt.Errorf("recipes: %s needs sessions with ephemeral sequential keys: %w", what, registry.ErrNotSupported)
	}
	return nil
}

// ValidDir checks a queue directory key.
func ValidDir(dir string) error {
	if err := driver.ValidKey(dir); err != nil {
		return err
	}
	if dir == "/" {
		return &registry.FieldError{Field: "key", Value: dir, Reason: "a recipe needs a key of its own, not the root"}
	}
	return nil
}

// Queue is a waiting line under Dir for participants bound to Sess.
type Queue struct {
	St     *registry.Store
	Sess   *registry.Session
	Dir    string // the lock or election key
	Prefix string // e.g. "lock-": participants are the children ending in Prefix+10 digits
	// Others are prefixes of other participants that queue with ours (an
	// observer's view of a Selector's and a Latch's nodes).
	Others []string
	Opts   recipes.Options
}

// litter is what a session's recipes still have to delete: nodes of creates
// whose outcome was unknown (found by GUID) and nodes whose delete failed. It is
// kept per session, not per recipe object, so that whichever recipe next uses the
// session cleans up after one that gave up or was dropped; a session's end
// deletes it all anyway.
var litter = struct {
	sync.Mutex
	m map[*registry.Session][]trash
}{m: map[*registry.Session][]trash{}}

type trash struct {
	dir  string
	guid string // a create's GUID; "" when name is known
	name string
}

func (q *Queue) drop(t trash) {
	if q.Sess == nil {
		return
	}
	litter.Lock()
	defer litter.Unlock()
	for s := range litter.m {
		if s.Err() != nil {
			delete(litter.m, s)
		}
	}
	if q.Sess.Err() == nil {
		litter.m[q.Sess] = append(litter.m[q.Sess], t)
	}
}

func (q *Queue) takeLitter() []trash {
	if q.Sess == nil {
		return nil
	}
	litter.Lock()
	defer litter.Unlock()
	l := litter.m[q.Sess]
	delete(litter.m, q.Sess)
	return l
}

// Entry is a participant's node.
type Entry struct {
	Name string        // the child's name
	Node registry.Node // as created
	// listed holds the directory's children as read with the create (nil when
	// unknown), for the first Place only: a listing is a snapshot, and only the
	// first look may use the one the create brought.
	listed *atomic.Pointer[[]string]
}

// takeListing returns the children read with e's create, once.
func (e Entry) takeListing() []string {
	if e.listed == nil {
		return nil
	}
	if p := e.listed.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// Key returns the entry's full key.
func (q *Queue) Key(e Entry) string { return driver.JoinKey(q.Dir, e.Name) }

// newGUID returns a random (version 4) UUID in its text form, as
// java.util.UUID.randomUUID().toString() writes it for Curator's names.
func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Sequence returns the 10-digit sequence suffix of a participant name, or -1.
func Sequence(name string) int64 {
	if len(name) < 10 {
		return -1
	}
	var n int64
	for _, r := range name[len(name)-10:] {
		if r < '0' || r > '9' {
			return -1
		}
		n = n*10 + int64(r-'0')
	}
	return n
}

// Participants filters names to participants of a queue with one of prefixes and
// sorts them in creation order (by sequence number; a protected name's GUID does
// not sort in creation order).
func Participants(names []string, prefixes ...string) []string {
	var out []string
	for _, n := range names {
		if Sequence(n) < 0 {
			continue
		}
		for _, p := range prefixes {
			if strings.HasSuffix(n[:len(n)-10], p) {
				out = append(out, n)
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if sa, sb := Sequence(a), Sequence(b); sa != sb {
			if sa < sb {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// permanent reports errors no retry cures.
func permanent(err error) bool {
	return errors.Is(err, registry.ErrPermission) || errors.Is(err, registry.ErrInvalid) ||
		errors.Is(err, registry.ErrNotSupported) || errors.Is(err, registry.ErrClosed) ||
		errors.Is(err, registry.ErrSessionLost)
}

// NewBackoff returns the jittered exponential backoff recipes retry with.
func NewBackoff(o recipes.Options) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = o.RetryMin
	b.MaxInterval = o.RetryMax
	b.MaxElapsedTime = 0
	b.RandomizationFactor = 0.5
	b.Reset()
	return b
}

// Sleep waits d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry calls f until it succeeds, fails permanently, the session ends or ctx
// ends, backing off with jitter between attempts. Each attempt gets a context
// bounded by the request timeout.
func (q *Queue) retry(ctx context.Context, f func(ctx context.Context) error) error {
	var b *backoff.ExponentialBackOff
	for {
		rctx, cancel := context.WithTimeout(ctx, q.Opts.RequestTimeout)
		err := f(rctx)
		cancel()
		if err == nil || permanent(err) {
			return err
		}
		if serr := q.sessErr(); serr != nil {
			return fmt.Errorf("%w (after: %v)", serr, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		if b == nil {
			b = NewBackoff(q.Opts)
		}
		if Sleep(ctx, b.NextBackOff()) != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
	}
}

// Enqueue creates the participant's node with value. The create runs to its end
// even if ctx is cancelled meanwhile (so its outcome is known); if it failed in a
// way that may have created the node anyway, the node is found by its GUID and
// deleted. When ctx ended, any node created is deleted and ctx's error returned:
// an abandoned Enqueue leaves nothing behind, and one whose ctx is already done
// creates nothing.
func (q *Queue) Enqueue(ctx context.Context, value []byte) (Entry, error) {
	q.Cleanup(ctx)
	if err := q.sessErr(); err != nil {
		return Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err // before the create, which would run to its end
	}
	guid := newGUID()
	key := driver.JoinKey(q.Dir, ProtectedPrefix+guid+"-"+q.Prefix)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.Opts.RequestTimeout)
	// The create reads the directory too (one transaction where the store can),
	// so that an uncontended queue knows its place without another round trip.
	n, names, err := q.St.CreateAndChildren(cctx, key, value, registry.Ephemeral(q.Sess), registry.Sequential())
	cancel()
	if err != nil {
		if !permanent(err) {
			q.drop(trash{dir: q.Dir, guid: guid})
			q.Cleanup(ctx)
		}
		return Entry{}, err
	}
	e := Entry{Name: n.Key[strings.LastIndexByte(n.Key, '/')+1:], Node: n}
	if names != nil {
		e.listed = new(atomic.Pointer[[]string])
		e.listed.Store(&names)
	}
	if e.Node.CreateRevision <= 0 {
		// The driver could not read the node back: read it now.
		if err := q.retry(ctx, func(ctx context.Context) error {
			got, err := q.St.Get(ctx, n.Key)
			e.Node = got
			return err
		}); err != nil {
			q.Remove(ctx, e)
			return Entry{}, err
		}
	}
	if ctx.Err() != nil {
		q.Remove(ctx, e)
		return Entry{}, ctx.Err()
	}
	return e, nil
}

// Cleanup deletes the nodes the session's recipes left behind (see litter):
// creates whose outcome was unknown and deletes that failed. It tries each once,
// for at most a request timeout, keeps what it could not delete for the next
// call, and reports whether it deleted anything.
func (q *Queue) Cleanup(ctx context.Context) bool {
	l := q.takeLitter()
	if len(l) == 0 || q.sessErr() != nil {
		return false
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.Opts.RequestTimeout)
	defer cancel()
	deleted := false
	del := func(key string) bool {
		err := q.St.Delete(rctx, key)
		if err == nil {
			deleted = true
		}
		return err == nil || errors.Is(err, registry.ErrNotFound)
	}
	children := map[string][]string{}
	for _, t := range l {
		if t.guid == "" {
			if !del(driver.JoinKey(t.dir, t.name)) {
				q.drop(t)
			}
			continue
		}
		names, ok := children[t.dir]
		if !ok {
			var err error
			names, err = q.St.Children(rctx, t.dir)
			if err != nil && !errors.Is(err, registry.ErrNotFound) {
				q.drop(t)
				continue
			}
			children[t.dir] = names
		}
		for _, n := range names {
			if strings.Contains(n, t.guid) && !del(driver.JoinKey(t.dir, n)) {
				q.drop(t)
			}
		}
	}
	return deleted
}

// Remove deletes the entry's node, retrying with jitter until it is gone, the
// session has ended (which deletes it) or ctx ends; if ctx is already done it
// still tries for one request timeout.
func (q *Queue) Remove(ctx context.Context, e Entry) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), q.Opts.RequestTimeout)
		defer cancel()
	}
	err := q.retry(ctx, func(ctx context.Context) error {
		err := q.St.Delete(ctx, q.Key(e))
		if errors.Is(err, registry.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil && q.sessErr() != nil {
		return nil // gone with the session
	}
	if err != nil {
		q.drop(trash{dir: q.Dir, name: e.Name}) // whoever uses the session next deletes it
	}
	return err
}

// List returns the participants in order.
func (q *Queue) List(ctx context.Context) ([]string, error) {
	var names []string
	err := q.retry(ctx, func(ctx context.Context) error {
		var err error
		names, err = q.St.Children(ctx, q.Dir)
		if errors.Is(err, registry.ErrNotFound) {
			names, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return Participants(names, append([]string{q.Prefix}, q.Others...)...), nil
}

// ErrVanished: the participant's node is no longer in the queue while its session
// lives (someone deleted it).
var ErrVanished = errors.New("recipes: participant node deleted")

// Blocker picks, from the participants in order and e's index i among them, the
// participant e must wait for to go, or "" when e may proceed.
type Blocker func(names []string, i int) string

// Predecessor is the Blocker of a mutex: e waits for the participant just ahead.
func Predecessor(names []string, i int) string {
	if i == 0 {
		return ""
	}
	return names[i-1]
}

// LastAhead returns the Blocker that waits for the nearest participant ahead
// whose name has prefix before its sequence number (a reader waits for the last
// writer ahead of it).
func LastAhead(prefix string) Blocker {
	return func(names []string, i int) string {
		for j := i - 1; j >= 0; j-- {
			if n := names[j]; strings.HasSuffix(n[:len(n)-10], prefix) {
				return n
			}
		}
		return ""
	}
}

// Place returns the participants in order and e's index among them.
//
// The first Place of an entry uses the listing its create read (the same
// transaction on etcd and Consul, a read right after it elsewhere): sequence
// numbers are taken in creation order, so no participant created later can come
// ahead of e, and one that was ahead and left since only makes e wait on a node
// already gone (WaitGone sees at once it is gone). Later calls list again.
func (q *Queue) Place(ctx context.Context, e Entry) ([]string, int, error) {
	var names []string
	if all := e.takeListing(); all != nil {
		names = Participants(all, append([]string{q.Prefix}, q.Others...)...)
	} else {
		var err error
		if names, err = q.List(ctx); err != nil {
			return nil, 0, err
		}
	}
	i := slices.Index(names, e.Name)
	if i < 0 {
		if err := q.sessErr(); err != nil {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("recipes: %s: %w", q.Key(e), ErrVanished)
	}
	return names, i, nil
}

// Blocked returns whom e waits for now ("" for no one).
func (q *Queue) Blocked(ctx context.Context, e Entry, b Blocker) (string, error) {
	names, i, err := q.Place(ctx, e)
	if err != nil {
		return "", err
	}
	return b(names, i), nil
}

// WaitFirst waits until e is first in the queue; see Wait.
func (q *Queue) WaitFirst(ctx context.Context, e Entry) error { return q.Wait(ctx, e, Predecessor) }

// Wait waits until b says e may proceed, watching only the participant b names.
// It returns the session's error (wrapping registry.ErrSessionLost or ErrClosed)
// as soon as the session ends, ctx's error when ctx ends, ErrVanished if e's node
// was deleted.
func (q *Queue) Wait(ctx context.Context, e Entry, b Blocker) error {
	wctx, cancel := q.SessionContext(ctx)
	defer cancel()
	for {
		pred, err := q.Blocked(wctx, e, b)
		if err != nil {
			return q.why(ctx, err)
		}
		if pred == "" {
			return nil
		}
		if q.Cleanup(wctx) {
			continue // we may have been waiting behind our own litter
		}
		if err := q.WaitGone(wctx, driver.JoinKey(q.Dir, pred)); err != nil {
			return q.why(ctx, err)
		}
	}
}

// WaitChange waits until the participants differ from names (a fresh view says
// so), the session ends or ctx ends.
func (q *Queue) WaitChange(ctx context.Context, names []string) error {
	wctx, cancel := q.SessionContext(ctx)
	defer cancel()
	w, err := q.St.Watch(wctx, q.Dir)
	if err != nil {
		return q.why(ctx, err)
	}
	defer w.Close()
	for {
		tc, err := w.Next(wctx)
		if err != nil {
			return q.why(ctx, err)
		}
		if tc.Stale {
			continue
		}
		var now []string
		for _, n := range tc.Nodes {
			if driver.ParentKey(n.Key) == q.Dir {
				now = append(now, n.Key[strings.LastIndexByte(n.Key, '/')+1:])
			}
		}
		if !slices.Equal(Participants(now, append([]string{q.Prefix}, q.Others...)...), names) {
			return nil
		}
	}
}

func (q *Queue) sessErr() error {
	if q.Sess == nil {
		return nil
	}
	return q.Sess.Err()
}

// why prefers the session's error, then ctx's, to err.
func (q *Queue) why(ctx context.Context, err error) error {
	if serr := q.sessErr(); serr != nil {
		return serr
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// SessionContext returns ctx, also cancelled when the session ends.
func (q *Queue) SessionContext(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancelCause(ctx)
	if q.Sess == nil {
		return wctx, func() { cancel(context.Canceled) }
	}
	go func() {
		select {
		case <-q.Sess.Done():
			cancel(q.sessErr())
		case <-wctx.Done():
		}
	}()
	return wctx, func() { cancel(context.Canceled) }
}

// WaitGone waits until key does not exist (a fresh, not stale, view says so).
func (q *Queue) WaitGone(ctx context.Context, key string) error {
	w, err := q.St.Watch(ctx, key)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		tc, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if tc.Stale {
			continue
		}
		if !slices.ContainsFunc(tc.Nodes, func(n registry.Node) bool { return n.Key == key }) {
			return nil
		}
	}
}

// First returns the first participant's node, or ok false when the queue is
// empty.
func (q *Queue) First(ctx context.Context) (n registry.Node, ok bool, err error) {
	for {
		names, err := q.List(ctx)
		if err != nil || len(names) == 0 {
			return registry.Node{}, false, err
		}
		err = q.retry(ctx, func(ctx context.Context) error {
			n, err = q.St.Get(ctx, driver.JoinKey(q.Dir, names[0]))
			return err
		})
		if errors.Is(err, registry.ErrNotFound) {
			continue // gone meanwhile: list again
		}
		return n, err == nil, err
	}
}
