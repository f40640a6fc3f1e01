package reliability

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// The scenarios of issue 19 that every backend runs.
var (
	LeaderKill = Scenario{Name: "leader kill -9 and restart", LeaderGone: false,
		Hold: func(*Target) time.Duration { return 3 * time.Second },
		Fault: func(t testing.TB, tg *Target) func(testing.TB) {
			l := tg.Cluster.Leader()
			tg.Cluster.Kill(l)
			return func(t testing.TB) {
				tg.Cluster.Start(t, l)
				tg.Cluster.WaitQuorum(t, deadline)
			}
		}}
	FollowerKill = Scenario{Name: "follower kill -9 and restart",
		Hold: func(*Target) time.Duration { return 3 * time.Second },
		Fault: func(t testing.TB, tg *Target) func(testing.TB) {
			f := tg.Cluster.Follower()
			tg.Cluster.Kill(f)
			return func(t testing.TB) {
				tg.Cluster.Start(t, f)
				tg.Cluster.WaitQuorum(t, deadline)
			}
		}}
	LeaderCutOff = Scenario{Name: "leader cut off (peers and clients) for 2 TTL",
		Hold: func(tg *Target) time.Duration { return 2 * tg.TTL },
		Fault: func(t testing.TB, tg *Target) func(testing.TB) {
			l := tg.Cluster.Leader()
			tg.Cluster.Isolate(l)
			return func(t testing.TB) {
				tg.Cluster.Rejoin(l)
				tg.Cluster.WaitQuorum(t, deadline)
			}
		}}
	QuorumLoss = Scenario{Name: "quorum lost for 2 TTL, restored", Unreachable: true, LeaderGone: true,
		Hold: func(tg *Target) time.Duration { return 2 * tg.TTL },
		Fault: func(t testing.TB, tg *Target) func(testing.TB) {
			down := tg.Cluster.KillMajority()
			return func(t testing.TB) {
				for _, i := range down {
					tg.Cluster.Start(t, i)
				}
				tg.Cluster.WaitQuorum(t, deadline)
			}
		}}
	RollingRestart = Scenario{Name: "rolling restart of every member",
		Fault: func(t testing.TB, tg *Target) func(testing.TB) {
			for i := range tg.Members {
				tg.Cluster.Kill(i)
				tg.Cluster.Start(t, i)
				tg.Cluster.WaitQuorum(t, deadline)
			}
			return func(testing.TB) {}
		}}
	ClientCutShort = clientCut("client cut off from every member for TTL/2", func(tg *Target) time.Duration { return tg.TTL / 2 })
	ClientCutLong  = clientCut("client cut off from every member for 2 TTL", func(tg *Target) time.Duration { return 2 * tg.TTL })
)

// AgentCluster is a Cluster whose clients reach the servers through a client
// agent of their own (Consul), which can be restarted.
type AgentCluster interface {
	RestartAgent(t testing.TB) // kill -9 and start again on its data directory
}

// AgentRestartDuringElection kills the leader and, while the others elect a new
// one, kills the client agent with SIGKILL and starts it again (Consul only).
var AgentRestartDuringElection = Scenario{Name: "client agent kill -9 and restart during a leader election",
	Hold: func(*Target) time.Duration { return 3 * time.Second },
	Fault: func(t testing.TB, tg *Target) func(testing.TB) {
		ac, ok := tg.Cluster.(AgentCluster)
		if !ok {
			t.Fatalf("%s: the cluster has no client agent", tg.Backend)
		}
		l := tg.Cluster.Leader()
		tg.Cluster.Kill(l)
		ac.RestartAgent(t)
		return func(t testing.TB) {
			tg.Cluster.Start(t, l)
			tg.Cluster.WaitQuorum(t, deadline)
		}
	}}

func clientCut(name string, hold func(*Target) time.Duration) Scenario {
	return Scenario{Name: name, Unreachable: true, Hold: hold,
		Fault: func(t testing.TB, tg *Target) func(testing.TB) {
			for _, p := range clientProxies(tg) {
				p.Blackhole()
			}
			return func(testing.TB) {
				for _, p := range clientProxies(tg) {
					p.Heal()
				}
			}
		}}
}

// SessionExpiryDuringElection kills the leader and at once cuts every client off
// from every member (blackholed) for 3 TTL, and on until the servers have expired
// the clients' sessions (a slow election on a loaded machine): the others elect a new leader, which
// expires the clients' sessions (or leases) while they cannot reach it. After the
// cut heals the clients find their sessions expired, open new ones and register
// again; the watcher's session expired too and its watch must resume.
var SessionExpiryDuringElection = Scenario{Name: "session expiry during a leader election (leader kill -9, clients cut off for 3 TTL)",
	Unreachable: true, Expires: true,
	// The new leader gives every session a fresh timeout when it takes over, so
	// the sessions expire one TTL after the election (a slow JVM start makes that
	// a few seconds).
	Hold: func(tg *Target) time.Duration { return 3 * tg.TTL },
	Fault: func(t testing.TB, tg *Target) func(testing.TB) {
		l := tg.Cluster.Leader()
		tg.Cluster.Kill(l)
		for _, p := range clientProxies(tg) {
			p.Blackhole()
		}
		return func(t testing.TB) {
			for _, p := range clientProxies(tg) {
				p.Heal()
			}
			tg.Cluster.Start(t, l)
			tg.Cluster.WaitQuorum(t, deadline)
		}
	}}

// All are the scenarios every backend runs in the long version.
var All = []Scenario{LeaderKill, FollowerKill, LeaderCutOff, QuorumLoss, RollingRestart, ClientCutShort, ClientCutLong}

// Runs is how many times the long version repeats each scenario
// ($REGKIT_RELIABILITY_RUNS, default 3).
func Runs() int {
	if n, err := strconv.Atoi(os.Getenv("REGKIT_RELIABILITY_RUNS")); err == nil && n > 0 {
		return n
	}
	return 3
}
