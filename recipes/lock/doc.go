// Package lock holds the locking recipes, written once over registry.Store and
// registry.Session so they run unchanged on every backend with sessions (mem,
// etcd, ZooKeeper in every layout, Consul; on Nacos every constructor fails with
// an error matching registry.ErrNotSupported):
//   - Mutex: Curator's InterProcessMutex with etcd concurrency.Mutex's
//     session-first API; fair, re-entrant, each waiter watching only its
//     predecessor.
//   - MultiLock: Curator's InterProcessMultiLock, a Mutex on each of several
//     keys taken in sorted order, all or nothing, one fencing token per key.
//   - RWMutex: Curator's InterProcessReadWriteLock; writers are not starved.
//   - Semaphore: Curator's InterProcessSemaphoreV2, n leases.
//
// Every acquisition returns a *recipes.Hold: a fencing token and a context
// cancelled the moment the holder can no longer be sure it holds. See package
// recipes for the guarantees per backend and the window a fenced resource closes.
//
// Nodes are named as Curator names them ("_c_<uuid>-lock-<sequence>",
// "_c_<uuid>-__READ__<sequence>", key/leases/"_c_<uuid>-lease-<sequence>"), and
// queue by the sequence number, as Curator's do: on ZooKeeper a Mutex and a Java
// process's InterProcessMutex on the same path exclude each other (tested live
// against Curator 5.4; so are leader.Latch and LeaderLatch). RWMutex and
// Semaphore use Curator's names and layout but are not tested against Curator.
package lock
