package etcdtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd"
	"github.com/regkit/regkit/etcd/embedded/internal/etcdtest"
	"github.com/regkit/regkit/internal/reliability"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The reliability scenarios of issue 19 on a 3-member etcd cluster. CI runs a
// subset once each and asserts the limits; REGKIT_RELIABILITY=long runs every
// scenario REGKIT_RELIABILITY_RUNS times (default 3) for RELIABILITY.md
// (scripts/reliability.sh); REGKIT_RELIABILITY_ONLY=<part of a name> keeps the
// scenarios whose name contains it.

const clusterTTL = 4 * time.Second

func clusterTarget(t *testing.T) *reliability.Target {
	c := etcdtest.StartCluster(t)
	return &reliability.Target{
		Backend: "etcd", Cluster: c, Members: etcdtest.Size, TTL: clusterTTL,
		StaleBound: etcd.StaleBound,
		URL: func(ns string) string {
			return "etcd://" + strings.Join(c.Endpoints(), ",") + "/" + ns + "?lease_ttl=" + clusterTTL.String()
		},
		ServerIDs: func(ctx context.Context, ns, service string) ([]string, error) {
			// A client of its own per read, straight to the members: a
			// linearizable read through the leader.
			cli, err := clientv3.New(clientv3.Config{Endpoints: c.DirectEndpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				return nil, err
			}
			defer cli.Close()
			prefix := "/" + ns + "/services/" + service + "/"
			resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				return nil, err
			}
			var ids []string
			for _, kv := range resp.Kvs {
				ids = append(ids, strings.TrimPrefix(string(kv.Key), prefix))
			}
			return ids, nil
		},
	}
}

func TestClusterReliability(t *testing.T) {
	reliability.RunCI(t, clusterTarget(t), reliability.Scenarios{
		CI:   []reliability.Scenario{reliability.LeaderKill, reliability.QuorumLoss},
		Long: reliability.All,
	})
}
