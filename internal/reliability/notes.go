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
process kill once per backend (plus ZooKeeper's session expiry during an election and
Consul's client agent restart during an election) and asserts the same limits.

Clusters, started by the tests on loopback: 3 embedded etcd 3.6 members
(`+"`etcdtest.StartCluster`"+`, heartbeat 100 ms, election 1 s, lease TTL 4 s), a 3-node
ZooKeeper 3.8 ensemble (`+"`testenv.StartZooKeeperEnsemble`"+`, tickTime 500 ms, session
timeout 4 s) and 3 Consul 1.22 servers with a client agent (`+"`testenv.StartConsulCluster`"+`,
`+"`-bootstrap-expect=3`"+`, raft_multiplier 1, check_ttl 4 s). Every member port sits behind a
fault proxy: the client is given every member's address through its client proxy; peer
connections are tagged with the member that opened them, so a member can be cut off from
its peers and clients in both directions. Consul: the Clients register and watch through
the client agent, as in production (its HTTP port is their proxy, so the connections and
bytes counted are theirs to the agent); each agent binds a loopback address of its own and
every server's RPC port (raft, and the client agent's RPCs) is behind a proxy that tags
connections by source; Serf gossip is not proxied. Each run: two Clients register two
instances each; a third Client watches the service and serves it through `+"`registry/cache`"+`
with a snapshot directory; lookups every 20 ms through the fault; a fresh consistent read
(etcd: linearizable Get; ZooKeeper: sync + getChildren; Consul: a consistent health read of
the entries whose checks all pass; all straight to the members) after recovery.

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
  within 4.4-4.5 s (etcd's lease expiry check and ZooKeeper's session tick add the rest);
  Consul's leaves the passing entries when its TTL check goes critical (check_ttl 4 s), and
  the agent removes the service after deregister_after (at least 1 min).
- **Leaderless traffic:** the clients reconnect with backoff (gRPC's, go-zookeeper's
  round over the three members; Consul's Clients keep their HTTP connections to the agent
  and probe once a second): a few connections a second for the three Clients of a run, no
  tight loop.
- **Consul staleness** (` + "`consul.StaleBound`" + `, 3 s after the agent stops answering or its
  server knows no leader; a server notices a dead leader after its raft heartbeat timeout,
  1-2 s here, 5 s with Consul's default raft_multiplier): a server without a leader answers
  stale reads, but a blocking query on it sees no change, waits out its whole wait (30 s)
  and then answers as if all were well, so a watcher was never marked stale during an
  outage while a process started meanwhile read ` + "`NoLeader`" + `. The Conn now asks its agent
  for the leader every second while a watch runs (one probe per Conn), breaks its blocking
  queries after two failed probes and reports the verdict as ` + "`driver.Health`" + `
  (` + "`consul.TestWatchStaleWithoutLeader`" + ` fails on the old driver: no stale mark within
  25 s). Consul's streaming backend, which serves blocking health queries, always sends
  ` + "`X-Consul-KnownLeader: false`" + `: every snapshot after a watch's first was flagged
  ` + "`NoLeader`" + `; only the blocking-query backend's header is read now.
- **Consul's stale reads and a leader crash:** a follower learns that an entry is committed
  from the leader's next message, so a registration made just before the leader dies is
  missing from the followers' stale reads (the default, ` + "`stale=true`" + `) until the new leader
  commits, about an election. Views then lack it for that long, and package registry's
  registration guard takes it for a deletion and registers it again (harmless). The runs
  wait until every server serves every registration before the fault.
- **Consul client agent killed:** Consul fails every check of a node whose agent it
  declares dead (serfHealth), so with ` + "`passing_only`" + ` (the default) that agent's instances
  leave every view until it is back; a client agent on a loaded machine that misses gossip
  probes does the same. The runs use ` + "`passing_only=false`" + ` so that the figures are about
  regkit's views, not Consul's health verdict; the registrations counted on the servers
  are those whose checks all pass. The restarted agent restores its services and checks
  from its data directory; regkit's keep-alives and watches resume on it.
- **Consul registrations during quorum loss:** the client agent keeps its services and
  passes their TTL checks locally, so nothing expires; its check updates were observed
  to take up to 8 s while there was no leader (the keep-alive gives up after check_ttl/3
  and retries). A process started during the outage: Consul's servers answer as if all
  were well until they notice the leader gone, so that process starts 3 s into the
  outage; a process started earlier reads a fresh view, rightly as far as the cluster knows.
- **ZooKeeper session expiry during an election:** the leader is killed and every client
  cut off for 3 TTL; the new leader gives every session a fresh timeout when it takes
  over, so they expire one TTL after the election (the run asserts that every
  registration left the servers during the fault). The clients reconnect into new
  sessions and register again; the watcher resumes.
`
