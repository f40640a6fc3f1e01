// Package recipes holds what the coordination recipes share, and says what they
// guarantee. The recipes themselves live in sub-packages, each written once over
// registry.Store and registry.Session so it runs unchanged on every backend with
// sessions (mem, etcd, ZooKeeper, Consul); on Nacos, which has none, every
// constructor of a recipe that needs sessions fails with an error matching
// registry.ErrNotSupported.
//
//   - lock.Mutex: Curator's InterProcessMutex / etcd's concurrency.Mutex, fair
//     and re-entrant; lock.MultiLock (InterProcessMultiLock: several keys, taken
//     in sorted order, all or nothing); lock.RWMutex (InterProcessReadWriteLock,
//     writers not starved); lock.Semaphore (InterProcessSemaphoreV2, n leases).
//   - leader.Election (etcd's Election: Campaign, Resign, Proclaim, Leader,
//     Observe), leader.Latch (Curator's LeaderLatch), leader.Selector (Curator's
//     LeaderSelector), leader.Observe and leader.LeaderOf.
//   - barrier.Barrier and barrier.Double (DistributedBarrier,
//     DistributedDoubleBarrier); counter.Count (SharedCount,
//     DistributedAtomicLong); group.Member (GroupMember) with group.Members and
//     group.Watch. Barrier and Count need only the store, so they also run on
//     Nacos where its config store is offered.
//
// # Interop with Curator
//
// The queue nodes are named exactly as Curator's protected mode names them,
// "_c_<uuid>-<lock name><10-digit sequence>" with Curator's lock names ("lock-"
// for a mutex and a leader selector, "latch-" for a leader latch, "__READ__" and
// "__WRIT__" for a readers-writer lock, "lease-" for a semaphore's leases), and
// are ordered, as Curator orders them, by the sequence after the lock name. On
// ZooKeeper (every layout: the recipes' keys live in the store, outside the
// registry's tree) a regkit process and a Java process using Curator on the same
// path therefore queue in one line: lock.Mutex with InterProcessMutex and
// leader.Latch with LeaderLatch are tested live against Curator 5.4 (exclusion
// both ways, handover, contention). Curator's InterProcessMultiLock takes its
// locks in the order given, regkit's MultiLock in sorted order: mixing the two on
// overlapping paths can deadlock unless the Java side lists them sorted.
//
// # Holds and fencing tokens
//
// Every lock acquisition and every term of leadership is a *Hold: the key of the
// node that holds, a fencing token (that node's Node.CreateRevision: etcd's create
// revision, ZooKeeper's czxid, Consul's CreateIndex) and a context cancelled the
// moment the holder can no longer be sure it holds. Tokens of successive holders
// of one lock or election only grow: holders are served in the order their nodes
// were created, and CreateRevision orders creations store-wide and never repeats
// for the life of the store (on Consul only while the servers keep their data: a
// dev agent restarted empty starts counting again).
//
// The Hold's context is cancelled, with a cause read by context.Cause or Hold.Err:
//   - ErrReleased, when the holder releases (Unlock, Resign, Close);
//   - the session's error, wrapping registry.ErrSessionLost or registry.ErrClosed,
//     when the session ends;
//   - ErrSuspended, under the default Policy SuspendedIsLost, at the first sign the
//     session's connection is interrupted (Curator's "treat suspended as lost"); a
//     later reconnect does not revive it. With LostOnly only the session's end
//     cancels it.
//
// # The window a fenced resource closes
//
// A holder learns of trouble from its own client, and the server may already
// have handed the lock to the next holder when it does. Between the moment the
// server deletes a holder's node (its session expired or was revoked) and the
// moment the old holder's context is cancelled, the old holder may still believe
// it holds; so may any holder whose process was paused (GC, swap, SIGSTOP) for
// longer than the margins below, whatever the policy. Only a fenced resource
// closes that window: the holder passes Hold.Token with every write, and the
// resource rejects any token lower than the highest it has accepted. The next
// holder's token is higher, and the next holder can only exist after the old
// node was deleted, so once the next holder has written, every late write of the
// old one is rejected. Per backend, with T the session TTL:
//
//   - etcd (a lease; the client keeps it alive every T/3; the server expires it T
//     after the last keep-alive it received, and extends every lease on a leader
//     change). Suspended is reported when no keep-alive answer came for T/3
//     (checked every T/6), so under SuspendedIsLost a cut-off holder is told at
//     most T/2 after its last answer: at least T/2 before the server can expire
//     the lease. Under LostOnly it is told when the client's own deadline for the
//     lease passes (T after the last answer it received, checked by the etcd
//     client every 500ms): up to about 500ms plus a round trip after the server
//     expired the lease. A lease revoked on the server (etcdctl lease revoke, an
//     operator, a compaction of leases) is learnt at the next keep-alive: up to
//     T/3 after the revocation, under either policy.
//   - ZooKeeper (a session of its own connection, timeout T as negotiated; the
//     server expires it T after it last heard from the client). A closed
//     connection is reported Suspended at once; a silent one after go-zookeeper's
//     receive timeout, 2T/3. Under SuspendedIsLost a cut-off holder is therefore
//     told at least T/3 before the server can expire the session. Under LostOnly
//     the driver declares the session lost T after the suspension, which can be up
//     to 2T/3 after the server expired it. A session expired while the client is
//     connected (an operator's kill, a server that restarted with its sessions
//     lost) is learnt when the server answers or closes the connection: about one
//     round trip, plus a reconnect.
//   - Consul (a session with behavior delete, renewed every T/3, T at least 10s;
//     the server invalidates it no sooner than T, in practice up to 2T, after the
//     last renewal). A failed renewal (it times out after T/3) reports Suspended,
//     so under SuspendedIsLost a cut-off holder is told at most 2T/3 after its last
//     renewal, T/3 or more before invalidation. Under LostOnly it is told after T
//     without a successful renewal (checked every second while failing), usually
//     before the server acts but not always. A session destroyed on the server
//     (an operator, a failing health check) is learnt at the next renewal: up to
//     T/3. Consul's lock-delay does not apply: every waiter creates a key of its
//     own. Every waiter holds one blocking query on its predecessor, and Consul
//     counts a cancelled blocking query against http_max_conns_per_client (200
//     per client IP by default) until its wait runs out: under heavy lock churn
//     from one address, use a shorter wait (the URL's wait parameter) or raise
//     that limit, or calls fail with 429 Too Many Requests.
//   - mem (in-process): session loss and its keys' deletion are one step; the
//     Hold learns of it as soon as its goroutine runs, microseconds later.
//
// The conformance suite (package recipestest) checks this on every backend with
// a fenced resource while injecting session expiries, cuts and restarts: two
// holders at once (or one more than a semaphore's leases) are excused only while
// one of them is within that backend's window above of a fault that touched it,
// and only if the older one was told, or its writes were rejected.
//
// # Waiting, cancelling and retrying
//
// Waiters queue in creation order and each watches only its predecessor, so a
// release wakes one waiter. A wait whose context ends deletes its node before it
// returns; the node's create is never abandoned half-way, and a create whose
// answer was lost is found again by the UUID in its name ("_c_<uuid>-lock-",
// Curator's protected naming) and deleted. What could not be deleted at once (the
// server unreachable) is remembered with the session and deleted by the next
// recipe call on that session, including any wait, so no waiter queues behind a
// forgotten node of a live session for longer than that. A waiter whose session
// ends stops waiting at once with the session's error. Store calls that fail for a
// reason a retry may cure are retried with jittered exponential backoff
// (WithRetryBackoff) for as long as the caller's context allows; each call is
// bounded by WithRequestTimeout.
//
// # Sessions
//
// Mutex and Election take a Session you own, as etcd's concurrency package does:
// when it is lost they fail and you open a new one. Latch and Selector own their
// sessions, as Curator's recipes own their connection state, and open a new one
// after a loss. Recipes learn about a Session through its Done, Err, State and
// Changed: a change seen from a sure state (Connected, Reconnected) means the
// session was unsure at some moment since, which ends a Hold under
// SuspendedIsLost even if the session reads Reconnected again.
package recipes
