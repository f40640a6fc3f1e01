//go:build linux

package consul_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/consul"
	"github.com/regkit/regkit/internal/reliability"
	"github.com/regkit/regkit/internal/testenv"
)

// The reliability scenarios of issue 19 on a 3-server Consul cluster with a client
// agent that the clients register and watch through. CI runs a subset once each
// and asserts the limits; REGKIT_RELIABILITY=long runs every Consul scenario
// REGKIT_RELIABILITY_RUNS times (default 3) for RELIABILITY.md
// (scripts/reliability.sh); REGKIT_RELIABILITY_ONLY=<part of a name> keeps the
// scenarios whose name contains it.

const clusterTTL = 4 * time.Second // check_ttl

func clusterTarget(t *testing.T) *reliability.Target {
	c := testenv.StartConsulCluster(t)
	return &reliability.Target{
		Backend: "consul", Cluster: c, Members: testenv.EnsembleSize, TTL: clusterTTL,
		// consul.StaleBound after the agent's server stops knowing a leader, which
		// it notices within 1-2s (raft_multiplier 1).
		StaleBound: consul.StaleBound + 2*time.Second,
		// The surviving server answers as if all were well until its raft
		// heartbeat timeout (1-2s) passes: a process started before that reads
		// a fresh view, rightly as far as the cluster knows.
		StartAfter: 3 * time.Second,
		// passing_only=false: discovery lists every registration, passing or not.
		// Consul fails every check of a node whose agent it declares dead (its
		// serfHealth), which a killed client agent is for a moment and a client
		// agent on a loaded machine may be when it misses gossip probes; with the
		// default passing_only its instances then drop out of every view, which
		// is Consul's verdict, not a view regkit failed to serve. ServerIDs
		// still counts only registrations whose checks all pass.
		URL: func(ns string) string {
			return "consul://" + c.Addr() + "/" + ns + "?passing_only=false&check_ttl=" + clusterTTL.String()
		},
		ServerIDs: func(ctx context.Context, ns, service string) ([]string, error) {
			return passingIDs(ctx, c.ServerHTTPAddrs(), ns+"/"+service)
		},
		Settled: func(ctx context.Context, ns, service string, want []string) error {
			for _, addr := range c.ServerHTTPAddrs() {
				got, err := staleIDs(ctx, addr, ns+"/"+service)
				if err != nil {
					return err
				}
				for _, id := range want {
					if !slices.Contains(got, id) {
						return fmt.Errorf("server %s serves %v", addr, got)
					}
				}
			}
			return nil
		},
	}
}

// staleIDs reads the regkit instance IDs of Consul service name that server addr
// holds (a stale read, answered from what it applied).
func staleIDs(ctx context.Context, addr, name string) ([]string, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	cli, err := api.NewClient(&api.Config{Address: addr, Transport: tr, HttpClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	entries, _, err := cli.Health().Service(name, "", false, (&api.QueryOptions{AllowStale: true}).WithContext(rctx))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.Meta["regkit-id"])
	}
	return ids, nil
}

// passingIDs reads the regkit instance IDs of Consul service name whose checks all
// pass, with a consistent read (through the leader) asked of the first server that
// answers, bypassing the client agent and every proxy.
func passingIDs(ctx context.Context, servers []string, name string) ([]string, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	var errs []error
	for _, addr := range servers {
		cli, err := api.NewClient(&api.Config{Address: addr, Transport: tr, HttpClient: &http.Client{Transport: tr}})
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		entries, _, err := cli.Health().Service(name, "", true, (&api.QueryOptions{RequireConsistent: true}).WithContext(rctx))
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids := []string{}
		for _, e := range entries {
			ids = append(ids, e.Service.Meta["regkit-id"])
		}
		return ids, nil
	}
	return nil, errors.Join(errs...)
}

func TestClusterReliability(t *testing.T) {
	tg := clusterTarget(t)
	reliability.RunCI(t, tg, reliability.Scenarios{
		CI: []reliability.Scenario{reliability.LeaderKill, reliability.QuorumLoss, reliability.AgentRestartDuringElection},
		Long: []reliability.Scenario{reliability.LeaderKill, reliability.FollowerKill, reliability.LeaderCutOff,
			reliability.QuorumLoss, reliability.AgentRestartDuringElection},
		OnFailure: func(t *testing.T) {
			t.Logf("client agent's log:\n%s", tg.Cluster.(*testenv.ConsulCluster).AgentLogTail())
		},
	})
}
