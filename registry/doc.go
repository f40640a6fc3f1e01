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
// (TLS, credentials, a logger) is given as functional options; backend-specific
// settings are the typed options of the backend's package (consul.WithTags,
// zk.WithDialer), and one given to another backend is an error matching ErrInvalid.
// A program that already holds a native client wraps it with its backend package's
// New (etcd.New(cli, opts...)) instead of Open.
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
//     the Client's shared watch: when the instance is gone from a read that
//     started after its last put returned (or a delete event names it) while its
//     lease lives (an operator deleted it) and a fresh read a moment later
//     confirms it, it is put
//     back (only while the ID is free: see One instance ID, one owner). One guard
//     per service serves all of a Client's registrations of it: per read, a map
//     walk over the Client's own IDs of that service; no registration reads the
//     service by itself, and a view lagging behind a burst of puts is never taken
//     for a deletion (see guard.go). Nothing
//     registered vanishes while its Registration is open; Deregister
//     and Close remove it. A first put refused for permissions (ErrPermission)
//     or because another owner holds the ID (ErrExists) fails Register at once
//     instead of retrying.
//   - Watches never stop by themselves. One loop per service and Client is shared by
//     all its watchers. Where the driver hands over the changes themselves
//     (driver.EventWatcher: etcd's events, over one watch per service or one
//     prefix watch per Client; Consul's blocking-query answers; ZooKeeper's
//     re-arming replies; mem), the loop applies them to its view
//     and publishes, without a goroutine of its own, and lists the service afresh
//     after every gap the driver reports (a compacted history, a broken stream, a
//     lost connection or session) and every ten minutes or so as a safety net.
//     Elsewhere native events only mark the service dirty (a 1-buffered
//     signal, so bursts coalesce); the loop then re-lists. Either way it publishes a complete,
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
//     A loop that only registration guards follow (no Watch) sets the changes
//     aside and folds them when a Watch starts, a complete listing comes or the
//     subscription breaks, and outlives its last registration by 10s, so that
//     a service registered and deregistered over and over keeps its
//     subscription. WatchFunc pushes every snapshot to a callback instead of a
//     Watcher's Next, with no goroutine per subscription (registry/cache uses
//     it).
//   - Watchers see every final state but maybe not every intermediate step; a
//     watcher reading slowly only skips to the newest snapshot, it never stalls the
//     loop or other watchers. A Client reads its own registrations: the first
//     snapshot of a Watch or WatchFunc started after a Register returned holds
//     that instance, and so does Client.Instances. (The registration's guard
//     starts the service's loop before the put, so the shared view may not have
//     its event yet: the first snapshot then waits for it, at most the request
//     timeout, and Instances reads the backend.) Not on Nacos: its driver guards
//     its registrations itself (Capabilities.GuardsRegistrations) and the server
//     answers lists from a cache (Polaris's lags a register by up to a second),
//     so a read right after Register may not have the instance yet.
//   - Input is validated before any I/O; errors are *FieldError values naming the
//     field and matching ErrInvalid. That covers the URL (hosts, ports 1-65535,
//     every query parameter: unknown ones, repeated ones and those of another
//     layout or mode are rejected, fragments too; errors show the redacted URL and
//     name the parameter), the instance (Host an IP address or DNS name, metadata
//     valid UTF-8) and the backend's size limits, which each driver declares
//     (driver.Limits in Capabilities, driver.InstanceChecker for encoded sizes)
//     instead of discovering them by a refused, retried request. A refusal no
//     retry can fix (too large, invalid argument) is ErrInvalid on every backend,
//     and Register never retries it.
//   - Staleness within a bound: a watcher's view is marked Stale within a bound
//     each backend documents after the backend stops answering it (ZooKeeper: as
//     soon as the session's connection drops, at most 2/3 of the session timeout
//     on a silent partition; etcd: etcd.StaleBound, 5s; Consul: consul.StaleBound,
//     3s after the agent stops answering or its server knows no leader), so two
//     processes never disagree for long about one outage. Client.Health says
//     whether the Client reaches its backend now.
//   - Starting during an outage: with WithLazyConnect, Open returns without
//     waiting for the backend (ZooKeeper and etcd connect in the background;
//     Consul probes its agent in the background), so a process started while
//     the cluster is down still gets a Client, and registry/cache serves its
//     snapshot files, marked Stale, until the backend answers. Without it Open
//     waits, as below.
//   - One error vocabulary: a backend that does not answer fails Open with
//     ErrUnavailable; a cancelled or expired context gives context.Canceled or
//     context.DeadlineExceeded under errors.Is from Open, Register, Instances,
//     Services, Watch and WatchServices (a Watch with a done context fails rather
//     than returning a closed watcher).
//   - Services lists the services that have at least one instance, and
//     WatchServices follows that set on the same re-arm/re-list loop as every
//     watch; backends offer it through driver.ServiceLister.
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
// Registration.Close and Client.Close may come in either order, each any number
// of times: a registration closed first is no longer the Client's, and one the
// Client closed returns the Client's result for it.
//
// Client.Shutdown(ctx) is the Client's graceful form, built for a grace period:
// it deregisters every registration concurrently (each retrying with backoff
// while the backend does not answer), closes sessions and stops watches, all
// under ctx's one deadline. When ctx ends first it gives up what remains (those
// instances are left to the backend's own expiry), still stops every goroutine
// and closes the connection, and returns an error wrapping ctx.Err() that names
// the instances not deregistered. Client.Close is Shutdown with
// DefaultShutdownTimeout (10s in total, whatever the number of registrations,
// well inside Kubernetes' default 30s). Drivers whose connection Close talks to
// the backend (etcd's lease revoke, ZooKeeper's session closes) bound that by the
// same ctx (driver.ContextCloser), with one exception: on ZooKeeper, when ctx
// has ended and the server does not answer, closing the connection can take up
// to one second more (go-zookeeper's own fixed wait for its close request),
// so budget Shutdown's ctx a second short of the grace period there.
//
// The shutdown sequence of a server, on SIGTERM:
//
//  1. Deregister: Shutdown (or each Registration's Deregister), so that no new
//     caller picks this instance.
//  2. Let callers notice: keep serving for the propagation delay of the
//     callers' watches (one watch round-trip for etcd and ZooKeeper; Consul
//     blocking queries and Nacos pushes or polls take longer, up to a poll
//     interval) plus their balancers' refresh; a few seconds is typical.
//  3. Drain: stop accepting, finish the requests in flight
//     (http.Server.Shutdown, grpc.Server.GracefulStop).
//  4. Stop: exit. Budget the three steps inside the grace period
//     (terminationGracePeriodSeconds, 30s by default).
//
// Example (Client.Shutdown) shows it.
//
// # Instances and addresses
//
// The address registered is the one others can dial, which is not always the one
// the program binds. Register asks the AddressResolver (default: package
// registry/address), which follows Dubbo's precedence: the deployment's variables
// REGKIT_REGISTER_HOST/PORT, then DUBBO_IP_TO_REGISTRY/DUBBO_PORT_TO_REGISTRY,
// override the Instance's Host and Port, each on its own (a Kubernetes manifest
// passes the node IP and a NodePort while the program sets the pod port it
// binds); then the Instance's own values; then, for an empty Host, preferred
// networks and interfaces (never a loopback address silently). When the
// advertised address differs from the configured one, one Info line says which
// variable supplied each half. Registration.Instance returns what was
// registered; the program keeps its bound address. Tests that pin an address use
// WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}). A port that
// nothing sets fails Register with a FieldError naming Port and the variables.
// An empty ID becomes "Host:Port" of the advertised address; Weight 0 becomes
// DefaultWeight (100). Registered instances are healthy; Healthy on discovered
// instances is what the backend reports, and Snapshot.Healthy filters on it.
//
// # Local health
//
// Without a health check, Healthy is true for every live registration on etcd,
// ZooKeeper and mem (nothing else writes it); Consul's and Nacos's own checks
// (TTL, heartbeats, consul.WithChecks) decide there. A process that is alive but
// broken ties a check to its registration: Register(ctx, inst,
// WithHealthCheck(check, interval, policy)). The check runs on a goroutine the
// Registration owns, on the Client's clock, each run bounded by a timeout; after
// WithHealthFailures consecutive failures (1 by default) the Registration acts
// as policy says, and the first passing run undoes it:
//
//   - MarkUnhealthy (default): the instance stays listed, unhealthy, through the
//     lease's driver.HealthSetter. mem sets the flag; etcd rewrites the record
//     with "healthy": false under the same lease, and so does ZooKeeper's regkit
//     layout under the same session (readers that predate the field see it
//     healthy); Consul reports the registration's TTL check
//     critical on every keep-alive, so its health endpoint, DNS and ?passing
//     queries drop it (a client with passing_only, the default, lists it no
//     more; with passing_only=false it lists it with Healthy false). Where the
//     layout cannot express health (Capabilities.Health false: etcd's naming
//     layout, ZooKeeper's curator layout, whose "enabled" field readers older
//     than Curator 4 fail on, its dubbo layout, whose provider URL is the node's
//     name, and Nacos for now) the instance is withdrawn instead, logged once.
//   - Withdraw: the instance is deregistered while the check fails and put back
//     once it passes; State says Withdrawn meanwhile.
//
// Registration.Healthy says which verdict is applied. A verdict the backend
// refuses (an outage) is retried with backoff; a re-registration after a lost
// lease is healthy at first and the verdict is applied again at once (while
// the check fails under Withdraw, a lost lease is not re-put at all). The
// verdict outlives Registration.Update: an instance marked unhealthy is
// written with the new data and marked unhealthy again (where the record
// holds no health flag, a reader may see it healthy for a moment in between),
// and an Update while
// Withdrawn only records the data, which the put when the check passes
// carries.
//
// # The layout: one name per instance, and the key is the truth
//
// Every backend maps (namespace, service, instance ID) to its backend names
// injectively: two different triples never meet in one etcd key, znode, Consul
// service name or ID, or Nacos service, whichever characters the parts hold. The
// separators a backend joins them with cannot occur in the parts: service names are
// [A-Za-z0-9._:-], instance IDs follow driver.ValidInstanceID on every backend (no
// '/', '\', '@', no "." or "..", no control characters or code points ZooKeeper
// refuses), and namespaces are a key prefix, a chroot, one Consul name segment
// joined with '/' (which plain service names cannot hold) or a Nacos namespace.
// The mapping of namespace N, service S and instance ID I, per backend (each
// backend's package doc gives the record formats; the README has the table):
//
//   - etcd, layout=regkit: N is the URL path P (a key prefix, default /regkit);
//     the instance is the key P/services/S/I; the store is under P/kv.
//   - etcd, layout=naming: N is target_prefix T; the instance is the key T/S/I
//     (T/S is the gRPC target; without T, S/I).
//   - zk, layout=regkit: N is the chroot C (default /regkit); the instance is the
//     ephemeral znode C/services/S/I.
//   - zk, layout=curator: chroot C and base B (absolute); the znode C B/S/I.
//   - zk, layout=dubbo: chroot C and group G; the znode
//     C/G/S/providers/<url-encoded provider URL>, whose ID is its "regkit.id"
//     parameter, else Host:Port followed by ";group=" and ";version=" with the
//     URL's group and version when it has them.
//   - consul: N is the URL path (one segment, not "regkit"); the service name is
//     N/S (S without N), the service ID N/S@I (S@I), with meta regkit-id = I.
//   - nacos: N is the namespace parameter (a Nacos namespace id); the service is
//     G@@S in it (G the group parameter); the instance is the host at Host, Port
//     and cluster (Zone, else the cluster parameter), with I in metadata
//     "regkit.id". Nacos names an instance by ip:port#cluster, not by I: two IDs
//     at one address are one instance, held by one owner (see below).
//   - mem: N is the URL host; a map keyed by S, then I.
//
// Reading back, the name is the truth: the service and ID of a listed instance are
// those of the key or node it was read from, and an entry that does not decode into
// a valid Instance under that exact name (garbage, an empty record, a record whose
// body names another service or ID, a nested key, a foreign entry missing a port)
// is skipped, logged once per key by driver.SkipLog, never listed and never
// counted by the registration guard. The coordination store never shares data
// with the registry: where a backend keeps both in one tree (ZooKeeper's chroot),
// store keys inside the registry's tree are refused with a FieldError naming the
// key, and a recursive store delete of "/" leaves registrations alone. URL prefixes
// and chroots are checked by one rule, driver.CleanRoot.
//
// # One instance ID, one owner
//
// A live registration owns its instance ID (per namespace and service). The rule,
// on every backend:
//
//   - A Register of an ID that another live owner holds fails with ErrExists, at
//     once, never retried, and writes nothing. Another owner is another Client's
//     registration (another process, or another Client of this one) and, checked
//     in the Client before any I/O, another open Registration of the same Client.
//   - The ID is free again when its owner ends: Deregister or Close, or its
//     liveness ending (session expired, lease gone, TTL passed, heartbeats
//     stopped).
//   - A Registration that lost its lease puts the instance again only if the ID is
//     still free: it never overwrites an entry another owner registered
//     meanwhile. While the other owner holds the ID it stays Reregistering with
//     Err wrapping ErrExists, keeps retrying with backoff, and takes the ID back
//     once the other owner is gone. Its Deregister and Close never delete the
//     other owner's entry.
//   - A listing or Snapshot has each ID once.
//
// Apache Curator's x-discovery differs: its registerService deletes and re-creates
// the node, so the last writer wins, and after a session loss whichever client
// re-creates last wins, bringing stale data back (CURATOR-181). Nacos differs too:
// an instance is identified by ip:port (and cluster), and the last register wins.
// regkit refuses instead, because two processes believing they are one instance
// is a deployment mistake that silent overwriting hides: each would deregister
// the other's entry on its way out, and watchers would see the data flip between
// them. To change a live instance, use Registration.Update; to move an ID to
// another process, close the old registration first.
//
// On Nacos, where the server's instance is the address, not the ID, the same
// holds per ip:port#cluster, with one difference: a Register of another ID at an
// address another live registration holds takes the address (Nacos's last
// register wins; a hand-over, as regkit sync's, registers the new copy before it
// deletes the old, so readers never see the address missing). The registration
// it was taken from then steps back: it reports Reregistering with Err wrapping
// ErrExists, its put back is refused while the other lives, and it takes the
// address back once the other is gone; the two never take turns.
//
// How each backend enforces it (its package doc has the details): etcd puts in a
// transaction that writes only if the key is absent or bound to the Client's own
// lease; ZooKeeper creates an ephemeral node and, when it exists, sets its data
// only if its EphemeralOwner is the Client's session (the dubbo layout, whose
// node names are not IDs, looks for other sessions' nodes of the ID first); mem
// is exact. Consul and Nacos have no compare-and-set for registrations: they read
// first (Consul: the agent and a consistent catalog read; Nacos: the service's
// list) and register if the ID is free, so two clients registering one ID at the
// same moment can both pass. Consul then lists the healthy, then the oldest entry
// of the ID; a Nacos keep-alive that finds the ID listed as another owner's steps
// back (deregisters its own entry and reports ErrExists).
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
// # Metrics and logs
//
// A cache that keeps answering during an outage also hides it; the metrics show
// it. They are recorded through OpenTelemetry's metric API with the
// MeterProvider given to WithMeterProvider (registry/cache: cache.WithMeterProvider),
// a no-op one by default; the library never imports the SDK. Meter
// "github.com/regkit/regkit/registry" (the cache's: ".../registry/cache"):
//
//	name                                 kind    unit             attributes     meaning
//	regkit.registration.state_changes    Counter {change}         service, state a Registration entered state: registered
//	                                                                             (the first put too), re-registering or
//	                                                                             deregistered
//	regkit.registration.reregistrations  Counter {reregistration} service        an instance the backend dropped was put
//	                                                                             back
//	regkit.watch.resyncs                 Counter {resync}         service        a watch re-listed its service after a
//	                                                                             gap (a broken watch, a failed read)
//	regkit.watch.staleness               Gauge   s                service        per live service watch, observed:
//	                                                                             seconds since the last good read while
//	                                                                             its view is stale (before the first
//	                                                                             read: since the watch started); 0 while
//	                                                                             fresh
//	regkit.cache.stale_lookups           Counter {lookup}         service        Cache.Lookup (or Instances) answered
//	                                                                             with a Stale snapshot, the last good one
//	                                                                             or a snapshot file's
//	regkit.session.state_changes         Counter {change}         state          a Session entered state: suspended,
//	                                                                             reconnected, lost or closed
//	regkit.request.errors                Counter {error}          op, kind       a backend request the library made
//	                                                                             failed; op: put, list, watch,
//	                                                                             deregister, session; kind: unavailable,
//	                                                                             permission, invalid, not_found,
//	                                                                             conflict, other
//
// Attributes hold service names and the fixed words above, never a URL, a host,
// an instance ID or a credential. Request errors are those of registrations
// (put, deregister), of Instances and of every watch loop, service and store
// tree watches alike (watch, list), and of NewSession; the coordination store's
// calls return their errors to the caller uncounted. A request that failed because its context ended
// (the caller's deadline, Close) or on a closed handle is not counted; a request
// timeout (WithRequestTimeout) is kind unavailable; ErrNotSupported counts as
// invalid, ErrSessionLost as other. An alert on an outage the cache hides:
// regkit.watch.staleness above a few seconds, or regkit.cache.stale_lookups
// growing.
//
// Logs go to the WithLogger slog.Logger. Each state change is logged once at
// Warn, never per retry: a registration lost and restored, a session's change
// (except its owner's Close), and a watch loop's failure streak (a broken watch
// or a failed re-list, whichever comes first), logged again only after the loop
// has worked for the retry backoff's maximum.
//
// # Writing a backend
//
// The contract a backend implements (Driver, Conn, Lease, StoreConn, SessionConn)
// and the helpers only backends use live in package registry/driver, as
// database/sql/driver stands apart from database/sql; its package doc says how to
// write one. A driver only translates: put this instance under a keep-alive and say
// when it was lost, list this service, say when something under it may have
// changed. Prove it with registrytest.RunRegistry and RunStore against a real
// server with fault hooks.
//
// # Design choices where the issue was silent
//
//   - Register retries the first put until it succeeds or ctx ends, so a service that
//     starts during a short outage registers by itself; when ctx ends first nothing
//     is left behind and the error says why, wrapping both ctx's error and the last
//     put's error for errors.Is.
//   - Nothing is left behind is made true in two halves. The Client undoes a put no
//     Registration owns (a failed or abandoned first put; a re-put abandoned by
//     Close) with the driver's Remover, on a goroutine it owns, retried with backoff
//     for at most 10s (Client.Close waits for it); a Register of the same
//     instance waits for that removal, and the removal is skipped while another
//     Register or Registration of the same instance in this Client owns it. The
//     driver makes the delete come after the put: a put whose ctx ends is not cut
//     off mid-flight (it could then be applied at any later time, after the delete)
//     but runs on, on a goroutine the connection owns, until the backend answers
//     or for 10s more (internal/inflight), and Remove first waits for it; ZooKeeper,
//     which applies one session's requests in order, only needs the wait. The one
//     way left to leave an instance behind is a backend that takes longer than that
//     to answer a put; such an entry then lasts as long as what keeps it (etcd:
//     the connection's shared lease, until Close; ZooKeeper: the session; Consul:
//     check TTL plus deregister_after; Nacos: the heartbeat timeout, or forever for
//     persistent instances). Proved by the suite's FailedRegisterLeavesNothing.
//   - Registration.Close deregisters (with a 10s timeout, retrying while the
//     backend does not answer); a process that dies without Close is removed by
//     the backend's own TTL or session expiry. Client.Close deregisters its
//     registrations concurrently under one 10s budget (Shutdown takes the
//     caller's), not one after another with 10s each: during an outage three
//     registrations used to take 30s, past a Kubernetes grace period.
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
