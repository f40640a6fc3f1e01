#!/usr/bin/env bash
# reliability.sh runs the reliability scenarios of issue 19 on real 3-member
# clusters (etcd embedded, the Debian ZooKeeper, Consul's 3 servers with a client
# agent) and writes RELIABILITY.md from their figures. The CI subset
# (scripts/test.sh) runs a few of them once and asserts
# the limits; this is the long version: every scenario REGKIT_RELIABILITY_RUNS
# times (default 3). It takes about 20 minutes on 2 cores.
#
#   bash scripts/reliability.sh            # writes RELIABILITY.md
#   REGKIT_RELIABILITY_RUNS=5 bash scripts/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
export REGKIT_RELIABILITY=long REGKIT_RELIABILITY_OUT="$out"
status=0
go test -race -count=1 -timeout 40m -run 'TestClusterReliability' ./etcd/embedded/internal/etcdtest || status=$?
go test -race -count=1 -timeout 40m -run 'TestEnsembleReliability' ./zk || status=$?
go test -race -count=1 -timeout 40m -run 'TestClusterReliability' ./consul || status=$?
go run ./internal/reliability/cmd/report -runs "${REGKIT_RELIABILITY_RUNS:-3}" -status "$status" < "$out" > RELIABILITY.md
echo "wrote RELIABILITY.md (tests exit status $status)"
exit "$status"
