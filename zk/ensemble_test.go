package zk_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/reliability"
	"github.com/regkit/regkit/internal/testenv"
)

// The reliability scenarios of issue 19 on a 3-node ZooKeeper ensemble. CI runs a
// subset once each and asserts the limits; REGKIT_RELIABILITY=long runs every
// scenario REGKIT_RELIABILITY_RUNS times (default 3) for RELIABILITY.md
// (scripts/reliability.sh); REGKIT_RELIABILITY_ONLY=<part of a name> keeps the
// scenarios whose name contains it.

const ensembleTTL = 4 * time.Second

func ensembleTarget(t *testing.T) *reliability.Target {
	z := testenv.StartZooKeeperEnsemble(t)
	return &reliability.Target{
		Backend: "zookeeper", Cluster: z, Members: testenv.EnsembleSize, TTL: ensembleTTL,
		StaleBound: 3 * time.Second, // see the package doc: a dropped connection at once, a silent one within 2/3 of the session timeout
		URL: func(ns string) string {
			return "zk://" + joinAddrs(z.Addrs()) + "/" + ns + "?session_timeout=" + ensembleTTL.String()
		},
		ServerIDs: func(ctx context.Context, ns, service string) ([]string, error) {
			return zkChildren(ctx, z.DirectAddrs(), "/"+ns+"/services/"+service)
		},
	}
}

func joinAddrs(a []string) string {
	s := ""
	for i, x := range a {
		if i > 0 {
			s += ","
		}
		s += x
	}
	return s
}

// zkChildren reads dir's children with a fresh connection of its own, after a
// sync, so the read is as fresh as the leader's view.
func zkChildren(ctx context.Context, addrs []string, dir string) ([]string, error) {
	c, events, err := zk.Connect(addrs, 4*time.Second, zk.WithLogger(nopLogger{}))
	if err != nil {
		return nil, err
	}
	defer func() {
		c.Close()
		for range events {
		}
	}()
	for c.State() != zk.StateHasSession {
		select {
		case <-events:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if _, err := c.Sync(dir); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return nil, err
	}
	kids, _, err := c.Children(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	return kids, err
}

func TestEnsembleReliability(t *testing.T) {
	reliability.RunCI(t, ensembleTarget(t), reliability.Scenarios{
		CI:   []reliability.Scenario{reliability.LeaderKill, reliability.QuorumLoss, reliability.SessionExpiryDuringElection},
		Long: append(slices.Clone(reliability.All), reliability.SessionExpiryDuringElection),
	})
}
