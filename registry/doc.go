// Package registry is the uniform API of regkit: service registration, discovery and
// a coordination store over ZooKeeper, etcd, Consul, Nacos and an in-process memory
// backend, with the hard parts written once here and backends kept thin.
//
// # Opening a backend
//
// Backends register themselves as database/sql drivers do; import the ones you use
// and open a URL:
//
//	import _ "github.com/regkit/regkit/etcd" // or mem, zk, consul, nacos
//	c, err := registry.Open(ctx, "etcd://h1:2379,h2:2379/prod")
//
// A malformed URL, an unknown scheme or an unknown query parameter is an error
// matching ErrInvalid whose message names what is wrong. What a URL cannot carry
// (TLS, credentials, a logger) is given as functional options. NewClient wraps a
// driver connection a backend package built from a native client.
//
// # Guarantees every backend gives
//
// These are proved for each backend by the conformance suites in registrytest,
// against a real server with real faults.
//
//   - Registration keeps itself alive. Register returns once the instance is on the
//     backend. Whenever the backend drops it (session expiry, lease revoked, agent
//     restart, heartbeat refused), the Registration notices through the driver's
//     Lease and puts it again with jittered exponential backoff, for as long as it
//     takes, reporting Reregistering meanwhile. It also follows its service through
//     the Client's shared watch: when the instance, once seen, is gone from a fresh
//     view while its lease lives (an operator deleted it, a second process with the
//     same ID deregistered) and a fresh read a moment later confirms it, it is put
//     back. Nothing registered vanishes while its Registration is open; Deregister
//     and Close remove it. A first put refused for permissions (ErrPermission)
//     fails Register at once instead of retrying.
//   - Watches never stop by themselves. One loop per service and Client is shared by
//     all its watchers. Native events only mark the service dirty (a 1-buffered
//     signal, so bursts coalesce); the loop then re-lists and publishes a complete,
//     immutable, sorted Snapshot when the view changed. After any broken watch or
//     failed read it backs off, re-arms, re-lists and publishes a Resynced snapshot,
//     so the final view always equals the server's. While the backend is
//     unreachable it publishes the last good view once more marked Stale, with the
//     error and the time of the last good read. A watcher that read too slowly to
//     see the re-listed snapshot gets Resynced on the next fresh one it reads. The
//     backoff of re-arming grows with every failure and starts again from its
//     minimum only once the watch stayed up for the backoff's maximum (10s by
//     default, see WithRetryBackoff), so a watch that breaks right after every
//     re-arm is retried ever more slowly; such a streak is logged once.
//   - Watchers see every final state but maybe not every intermediate step; a
//     watcher reading slowly only skips to the newest snapshot, it never stalls the
//     loop or other watchers.
//   - Input is validated before anything is written; errors are *FieldError values
//     naming the field and matching ErrInvalid.
//   - What a caller receives is its own: Client.Instances and Watcher.Next return
//     deep copies (Snapshot.Clone), so sorting them or editing an instance or its
//     Metadata changes nothing another caller or watcher sees.
//   - Every goroutine has an owner: the Client owns watch loops, registration
//     keepers, tree watches and persistent nodes, and its Close returns only after
//     every one of them has ended, after the calls in flight that use the
//     connection (a Register, a Deregister) have finished, and before it closes
//     the connection. Watcher.Close and the context given to Watch release a
//     watcher.
//
// # Closing
//
// Every handle closes the same way: Client, Registration, Session,
// PersistentNode, Watcher and TreeWatcher have Close() error. Close stops what
// the handle does, waits for every goroutine it owns and for the backend calls it
// makes (bounded by a 10-second timeout where it deletes something: a
// registration, a session's ephemeral keys), and returns what failed; it never
// reports success for a delete that did not happen. It is idempotent: concurrent
// and later calls wait for the first and return its result. Calls on a closed
// handle return ErrClosed (a blocked Watcher.Next or TreeWatcher.Next too).
// Registration.Deregister(ctx) is the graceful form with the caller's deadline;
// the Client's Close closes everything it handed out that is still open.
//
// # Instances and addresses
//
// An Instance with an empty Host or zero Port gets them from the AddressResolver
// (default: package registry/address, which reads REGKIT_REGISTER_HOST/PORT, the
// Dubbo variables DUBBO_IP_TO_REGISTRY/DUBBO_PORT_TO_REGISTRY, then preferred
// networks and interfaces; it never picks a loopback address silently). An empty ID
// becomes "Host:Port"; Weight 0 becomes DefaultWeight (100). Registered instances are
// healthy; Healthy on discovered instances is what the backend reports, and
// Snapshot.Healthy filters on it.
//
// # Coordination store
//
// Store is Curator's framework layer: a tree of slash-separated keys with versions
// (compare-and-set), creation with parents, ephemeral keys bound to a Session,
// sequential keys (ZooKeeper's 10-digit suffix, on every backend that can), recursive
// delete, children, and a persistent recursive TreeWatcher built on the same
// re-arm/re-list/diff loop as service watches. Node.CreateRevision orders creations
// store-wide and is the recipes' fencing token. A Session has Curator's states
// (connected, suspended, reconnected, lost, closed), read with State and waited for
// with Changed (a channel closed at the next change) or Done; it starts no
// goroutine and keeps no history. A Changed channel taken in a sure state
// (connected, reconnected) that is found closed means the session was suspended,
// lost or closed since, so a recipe never misses a suspension. A lost session is
// final, as in etcd's concurrency package: open a new one. For a key that must stay
// present across session loss (membership, announced configuration) use
// Store.NewPersistentNode, Curator's PersistentNode. Backends that cannot offer
// a part say so: the call fails with ErrNotSupported, never a silent no-op.
//
// # Writing a backend
//
// Implement Driver and Conn (and StoreConn for the store) from driver.go, register
// the Driver in init, and run registrytest.RunRegistry and RunStore against a real
// server with fault hooks. A driver only translates: put this instance under a
// keep-alive and say when it was lost, list this service, say when something under
// it may have changed.
//
// # Design choices where the issue was silent
//
//   - Register retries the first put until it succeeds or ctx ends, so a service that
//     starts during a short outage registers by itself; when ctx ends first nothing
//     is left behind and the error says why.
//   - Registration.Close deregisters (with a 10s timeout); a process that dies
//     without Close is removed by the backend's own TTL or session expiry.
//   - Client.Instances answers from a running watch of the same Client when there is
//     one and it is not stale, else reads the backend; package registry/cache adds a
//     lock-free lookup, snapshot files and a protect threshold on top.
//   - Timers run on the Client's clock (WithClock), so tests drive time with a
//     fake clock instead of waiting: backoff sleeps, snapshot age, a registration
//     guard's confirmation delay, a PersistentNode's recheck. Request timeouts are
//     contexts, on the real clock.
//   - Store watches are level-triggered: after a gap, events are recomputed by diffing
//     the re-listed tree against what the watcher last returned, so a watcher never
//     misses a final state.
package registry
