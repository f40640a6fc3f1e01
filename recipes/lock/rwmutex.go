package lock

import (
	"context"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/internal/queue"
	"github.com/regkit/regkit/registry"
)

// Curator's InterProcessReadWriteLock node names.
const (
	readPrefix  = "__READ__"
	writePrefix = "__WRIT__"
)

// RWMutex is a distributed readers-writer lock (Curator's
// InterProcessReadWriteLock): readers and writers queue in one line under the key,
// in creation order. A writer holds when it is first in line; a reader holds when
// no writer is ahead of it. So a writer is never starved: readers that come after
// it wait for it, however many readers hold now. A writer watches only the node
// just ahead of it, a reader only the nearest writer ahead.
//
// The read side and the write side are each a Mutex as to re-entrancy, Holds,
// fencing tokens, cancellation and session loss (see Mutex); tokens grow from
// writer to writer, and every reader's token is larger than the writer's before
// it. Taking the write side while holding the read side waits forever, as with
// sync.RWMutex (there is no upgrade, nor Curator's write-to-read downgrade). The
// methods are safe for concurrent use.
type RWMutex struct {
	r, w *Mutex
}

// NewRWMutex returns a readers-writer lock on key bound to session s of client
// c; errors as NewMutex.
func NewRWMutex(c *registry.Client, s *registry.Session, key string, opts ...recipes.Option) (*RWMutex, error) {
	if _, err := NewMutex(c, s, key, opts...); err != nil { // validates
		return nil, err
	}
	o := recipes.Apply(opts)
	return &RWMutex{
		r: newMutex(c, s, key, readPrefix, []string{writePrefix}, queue.LastAhead(writePrefix), o),
		w: newMutex(c, s, key, writePrefix, []string{readPrefix}, queue.Predecessor, o),
	}, nil
}

// Lock acquires the write side; see Mutex.Lock.
func (rw *RWMutex) Lock(ctx context.Context) (*recipes.Hold, error) { return rw.w.Lock(ctx) }

// TryLock acquires the write side if no one holds or waits ahead; see
// Mutex.TryLock.
func (rw *RWMutex) TryLock(ctx context.Context) (*recipes.Hold, error) { return rw.w.TryLock(ctx) }

// Unlock releases the write side; see Mutex.Unlock.
func (rw *RWMutex) Unlock(ctx context.Context) error { return rw.w.Unlock(ctx) }

// RLock acquires the read side: it waits until no writer is ahead; see
// Mutex.Lock.
func (rw *RWMutex) RLock(ctx context.Context) (*recipes.Hold, error) { return rw.r.Lock(ctx) }

// TryRLock acquires the read side if no writer holds or waits, else ErrLocked.
func (rw *RWMutex) TryRLock(ctx context.Context) (*recipes.Hold, error) { return rw.r.TryLock(ctx) }

// RUnlock releases the read side; see Mutex.Unlock.
func (rw *RWMutex) RUnlock(ctx context.Context) error { return rw.r.Unlock(ctx) }

// ReadLocker returns the read side as a Mutex (Curator's readLock()).
func (rw *RWMutex) ReadLocker() *Mutex { return rw.r }

// WriteLocker returns the write side as a Mutex (Curator's writeLock()).
func (rw *RWMutex) WriteLocker() *Mutex { return rw.w }
