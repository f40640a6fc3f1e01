// Package mirror copies service instances from one registry to another over the
// uniform registry API, one way or both ways at once: the engine behind
// `regkit sync`. It plays the part of Nacos-Sync, for every pair of backends
// regkit opens (ZooKeeper, etcd, Consul, Nacos, mem).
//
// # What a copy is
//
// For each selected service a Route (From → To) registers, on To, one copy of
// every healthy instance From lists, with a normal registry.Registration held by
// the Syncer's To client: the copy lives under To's own liveness (etcd lease,
// ZooKeeper session, Consul TTL check, Nacos heartbeats), so when every sync
// process dies its copies expire with it. A copy has the source's address,
// weight, zone and metadata, and these metadata keys (Nacos-Sync's names where
// it has one):
//
//	sourceClusterId         MetaSourceCluster  Route.From.Name: the registry the copy came from
//	destClusterId           MetaDestCluster    Route.To.Name
//	sync.instance.tag       MetaGroup          the sync group (WithGroup) that wrote it
//	regkit.sync.source-id   MetaSourceID       the source instance's ID
//	regkit.sync.owner       MetaOwner          the member (sync process) that holds it
//	regkit.sync.held-since  MetaHeldSince      set while the source lists nothing (empty-push guard)
//
// The copy's ID is the source ID, "~", and the owner's member ID (CopyID): the
// registry lets one live owner hold an instance ID (see the registry package doc,
// One instance ID, one owner), so two sync processes could never hold one copy
// side by side, and a hand-over would have to delete before it registers. When
// that ID is held by another owner, a process with the same member ID (a crashed
// predecessor whose copy lives until its session or lease ends, or the old
// process of a restart still running), the copy is registered at once under
// this process's incarnation ID instead: CopyID, "~", 6 random hex digits drawn
// per Syncer (IncarnationCopyID).
// Owner-scoped IDs let the new owner register its copy first and the old owner
// delete its own after; watchers see the instance's address the whole time (on
// etcd, ZooKeeper, Consul and mem they see both copies for a moment; on Nacos,
// whose instances are identified by ip:port, the one entry changes owner: the
// new owner's register overwrites it, and the old owner's deregister then leaves
// it alone, since the Nacos driver deletes only its own entries. Should the old
// owner's presence check fall between the two, its copy steps back (Reregistering
// with ErrExists) and is not put back while the new owner's lives; see the nacos
// package doc, Ownership).
//
// # No loops, no echo
//
//   - An instance that carries MetaSourceCluster is a copy and is never copied
//     again, by any route or group, so A ↔ B never loops. Chains (A → B → C) are
//     therefore not followed: sync every registry from the origin directly.
//   - An instance registered natively on both sides (a destination instance with
//     no MetaSourceCluster at the same host:port: one endpoint is one instance,
//     as Nacos identifies instances, whatever the IDs) is left alone on both: no
//     copy is made, and a copy made before it appeared is removed.
//   - Unhealthy source instances are not copied (a copy would be healthy).
//   - A Syncer touches only the registrations it made: copies of another member
//     or of an earlier run of this one are left to their own liveness.
//
// # Following the source
//
// Each owned service is followed with a registry watch on both sides. A copy is
// registered when its source appears, updated in place (Registration.Update, so
// watchers never see it missing) when the source changes, and deregistered when
// the source is deregistered or expires (session death, lease gone). Copies are
// registered before the copies no longer wanted are deregistered, so a source
// instance that changes its ID at one address (on Nacos an instance is its
// address: a register under a new ID replaces the old one at once) has a copy
// listed throughout. All within one
// watch round trip of the source's change, plus the empty-push grace below when
// it was the service's last instance. A stale view (Snapshot.Stale: the backend
// cannot be read) is never acted on.
//
// Empty-push guard: when a fresh view of the source suddenly lists no healthy
// instance (none at all, or only unhealthy ones) while copies exist (an outage a
// backend reports as an empty answer, a stale replica, Nacos marking every
// instance unhealthy when their heartbeats stop reaching it), the copies are
// kept, marked with MetaHeldSince, for WithEmptyGrace (30s by default) plus a
// per-copy jitter of up to a quarter of it, so one service's copies never
// vanish together; the source listing a healthy instance again ends the hold.
//
// # High availability
//
// Several sync processes with one group and one coordinator (WithCoordinator: a
// registry.Client whose backend has sessions) split the work: each joins the
// group's membership (recipes/group, key "/regkit-sync/GROUP/members") and owns
// the (route, service) pairs that rendezvous hashing over the live members gives
// it. When a member joins or leaves, the pairs that move are handed over without
// a gap: the new owner registers its copies; the old owner keeps its own until
// the destination lists the new owner's copy of each (or WithHandoverTimeout
// passes, or the source instance is gone) and only then deregisters them.
// Run's graceful end leaves the group first and hands over the same way. A
// member whose own node is missing from the membership for a while (its session
// expired in a coordinator outage, or a crashed predecessor with its member ID
// held the node) keeps counting itself meanwhile, so it never drops its copies
// for that; other members may hold copies of its pairs beside its own.
//
// A process that dies (a crash, kill -9) is replaced when its membership session
// expires, WithMemberTTL (DefaultMemberTTL, 5s) after its last renewal; the
// survivors register their copies of its pairs within a watch round trip of its
// node going (about 10ms measured on ZooKeeper). Its own copies expire with its
// destination sessions, leases or checks (10s by default on ZooKeeper, etcd and
// Consul, 15s on Nacos), so with the member TTL below those watchers see both
// copies for a moment and never none. A member TTL at or above the copies'
// liveness brings the gap back; so does Consul as coordinator, which raises the
// TTL to 10s and invalidates a session only after twice it.
//
// A restarted sync converges without touching what it did not write: it
// registers its own copies and leaves the dead process's to expire with that
// process's sessions and leases. Restarted with the same member ID (--member),
// it finds its copies' IDs still held by the predecessor's copies and registers
// its own under its incarnation ID beside them, so watchers see two copies of
// an address for a moment, never none, as in a crash take-over between members.
// A graceful stop of the only member deregisters its copies (nobody is left to
// hand them over to), so stopping it and then starting its successor leaves a
// gap as long as the restart: start the successor first (with the same member ID
// or another), let it register its copies, then stop the old process.
//
// Without a coordinator a Syncer is the only member and owns every pair.
//
// # Metrics
//
// Recorded through OpenTelemetry's metric API (WithMeterProvider; no-op by
// default), meter "github.com/regkit/regkit/cmd/regkit/internal/mirror":
//
//	regkit.sync.copies  UpDownCounter {copy}  service   copies this process holds
//	regkit.sync.errors  Counter       {error} op        a failed register, update or
//	                                                    deregister of a copy, or watch
//	regkit.sync.lag     Histogram     s       service   from reading a source change
//	                                                    to its copies being applied
package mirror
