package reliability

import "fmt"

// Header is the top of RELIABILITY.md.
func Header(runs, status int) string {
	verdict := "every limit below was asserted and met"
	if status != 0 {
		verdict = fmt.Sprintf("**the test runs failed (exit status %d): a limit was missed; see the figures**", status)
	}
	return fmt.Sprintf(`# Reliability on real 3-member clusters

Written by `+"`bash scripts/reliability.sh`"+` (each scenario %d times, `+"`REGKIT_RELIABILITY_RUNS`"+`
to change); %s. CI (`+"`scripts/test.sh`"+`) runs leader kill -9, quorum loss and client
process kill once per backend and asserts the same limits.

Clusters, started by the tests on loopback: 3 embedded etcd 3.6 members
(`+"`etcdtest.StartCluster`"+`, heartbeat 100 ms, election 1 s, lease TTL 4 s) and a 3-node
ZooKeeper 3.8 ensemble (`+"`testenv.StartZooKeeperEnsemble`"+`, tickTime 500 ms, session
timeout 4 s). Every member port sits behind a fault proxy: the client is given every
member's address through its client proxy; peer connections are tagged with the member
that opened them, so a member can be cut off from its peers and clients in both
directions. Each run: two Clients register two instances each; a third Client watches the
service and serves it through `+"`registry/cache`"+` with a snapshot directory; lookups every
20 ms through the fault; a fresh consistent read (etcd: linearizable Get; ZooKeeper: sync +
getChildren, both straight to the members) after recovery.

Limits (asserted): registrations lost after recovery 0; watch views (the raw Watcher and
the cache) differing from the servers' after recovery 0; cached lookups answered during the
fault 100%%; lookups made later than the backend's staleness bound into an outage where
no member answers: 100%% marked Stale with an age; a process started during such an outage
(`+"`registry.WithLazyConnect`"+`, a new cache over the snapshot files) answers from its
snapshot, marked stale; at most 20 new connections a second from all clients while the
cluster has no leader; client goroutines and sockets back to the baseline after every
Client is closed. Times are recorded, never asserted.

`+"`fresh again`"+`: from the end of the fault (member restarted, quorum back, cut healed) until
a cached lookup is fresh and equals the servers'. `+"`registrations back`"+`: until the servers hold
every open registration. `+"`leaderless`"+`: connections opened and bytes sent by the clients to
the members while the cluster had no leader, and how long that was.

`, runs, verdict)
}

// Notes is the end of RELIABILITY.md: where a figure misses its line, why.
const Notes = `
## Notes

- **Staleness bounds** (documented in each backend's package doc): ZooKeeper marks a view
  stale as soon as its session's connection drops (a member that loses its quorum closes
  its client connections at once; a silent partition is noticed after 2/3 of the session
  timeout by go-zookeeper's read timeout). etcd: ` + "`etcd.StaleBound`" + ` (5 s): a list requires a
  leader and gives up after ` + "`etcd.ListTimeout`" + ` (3 s), the watch's probe (a serializable
  count-only read requiring a leader, every second) breaks the watch after two failures.
  Before this change etcd's first stale mark came only when a list blocked for the whole
  request timeout (10 s) ran out, or never within a 8 s outage.
- **Registrations during quorum loss:** neither ZooKeeper nor etcd can expire a session or
  a lease without a leader, and neither can create one: registrations made before the
  outage survive it (the new leader restores sessions and leases with a fresh timeout), and
  a Register during it waits for the quorum. The client cut longer than the TTL is the
  scenario where the servers do expire them; they are back within one round trip after the
  cut heals.
- **Fresh again after an outage** no longer waits out the watch loop's retry backoff
  (100 ms doubling to 10 s, jittered): the drivers report their connection's health
  (` + "`driver.Health`" + `: ZooKeeper's session state, etcd's probe verdict) and the loop's
  backoff sleeps end as soon as it is back (weakness (a) of issue 19;
  ` + "`registry.TestReconnectWakesRelist`" + ` fails on the old loop). etcd's wake-up covers a failed
  re-list while its watch (which runs the probe) is armed; after a broken watch the loop
  re-arms on its backoff, where etcd's client resumes the stream by itself.
- **Client cut longer than the TTL:** the servers expire the session or lease during the
  cut, so the registrations are gone from the servers until the client is back; they are
  put again within the reconnect plus one backoff step (ZooKeeper: go-zookeeper's
  reconnect into a new session after the expired one, then the re-put).
- **Client process kill -9:** the registration goes with the session or lease (TTL 4 s)
  within 4.4-4.5 s (etcd's lease expiry check and ZooKeeper's session tick add the rest).
- **Leaderless traffic:** the clients reconnect with backoff (gRPC's, go-zookeeper's
  round over the three members): a few connections a second for the three Clients of a
  run, no tight loop.
- Consul: the 3-server cluster (with a client agent), its scenarios (the client agent
  restarted during a leader election) and its staleness fix (a blocking query that never
  returns while there is no leader) are not done yet; nor is ZooKeeper's "session expiry
  during the election" scenario.
`
