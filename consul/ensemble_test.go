//go:build linux

package consul_test

import (
	"context"
	"errors"
	"net/http"
	"os"
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
// (scripts/reliability.sh).

const clusterTTL = 4 * time.Second // check_ttl

func clusterTarget(t *testing.T) *reliability.Target {
	c := testenv.StartConsulCluster(t)
	return &reliability.Target{
		Backend: "consul", Cluster: c, Members: testenv.EnsembleSize, TTL: clusterTTL,
		// consul.StaleBound after the agent's server stops knowing a leader, which
		// it notices within 1-2s (raft_multiplier 1).
		StaleBound: consul.StaleBound + 2*time.Second,
		URL: func(ns string) string {
			return "consul://" + c.Addr() + "/" + ns + "?check_ttl=" + clusterTTL.String()
		},
		ServerIDs: func(ctx context.Context, ns, service string) ([]string, error) {
			return passingIDs(ctx, c.ServerHTTPAddrs(), ns+"/"+service)
		},
	}
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
	scenarios := []reliability.Scenario{reliability.LeaderKill, reliability.QuorumLoss, reliability.AgentRestartDuringElection}
	runs := 1
	if os.Getenv("REGKIT_RELIABILITY") == "long" {
		scenarios = []reliability.Scenario{reliability.LeaderKill, reliability.FollowerKill, reliability.LeaderCutOff,
			reliability.QuorumLoss, reliability.AgentRestartDuringElection}
		runs = reliability.Runs()
	}
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			for run := range runs {
				r := reliability.Run(t, tg, sc, run)
				reliability.Report(t, r)
				reliability.Check(t, r)
			}
		})
	}
	t.Run("client process kill -9", func(t *testing.T) {
		for range runs {
			r := reliability.ProcessKill(t, tg)
			reliability.Report(t, r)
			reliability.CheckProcessKill(t, tg, r)
		}
	})
}
