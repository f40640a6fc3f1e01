#!/usr/bin/env bash
# bench.sh runs the performance benchmarks of issue 15 against the real servers
# (installed by install-servers.sh, started by the tests) and rewrites the
# "Figures" section of BENCHMARKS.md. It is not part of CI: it takes about 15
# minutes. Every figure is measured in REGKIT_BENCH_ROUNDS rounds (default 6);
# in each round every benchmark runs once, and within it regkit and the native
# client take turns (in every iteration where the benchmark pairs them, else
# as two sub-benchmarks back to back), so a ratio compares runs under the same
# machine load. The summary gives the median of the rounds and, for ratios, the
# median of the per-round ratios; benchstat's own summary is kept beside the
# raw output in $REGKIT_BENCH_OUT (default bench-out/). uptime is recorded
# before every round.
#
#   bash scripts/bench.sh              # all, 6 rounds, rewrites BENCHMARKS.md
#   REGKIT_BENCH_ROUNDS=1 bash scripts/bench.sh
#   REGKIT_BENCH_ONLY=etcd bash scripts/bench.sh   # a subset (see the list below)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-servers.sh >/dev/null
export PATH="$(go env GOPATH)/bin:$PATH"
command -v benchstat >/dev/null || go install golang.org/x/perf/cmd/benchstat@latest
out=${REGKIT_BENCH_OUT:-bench-out}
rounds=${REGKIT_BENCH_ROUNDS:-6}
only=${REGKIT_BENCH_ONLY:-}
mkdir -p "$out"
rm -f "$out"/*.txt

# name  package  -bench  -benchtime  extra flags
benches=(
  "etcd-notify ./etcd/embedded/internal/etcdtest ^BenchmarkRegisterToWatch\$ 200x"
  "etcd-many ./etcd/embedded/internal/etcdtest ^BenchmarkRegisterMany\$ 1x"
  "etcd-watchers ./etcd/embedded/internal/etcdtest ^BenchmarkWatchers1000\$ 20x"
  "etcd-services ./etcd/embedded/internal/etcdtest ^BenchmarkServicesGoroutines\$ 1x"
  "zk-notify ./zk ^BenchmarkRegisterToWatch\$ 200x"
  "zk-many ./zk ^BenchmarkRegisterMany\$ 1x"
  "consul-notify ./consul ^BenchmarkRegisterToNotified\$ 200x"
  "nacos-polaris ./nacos ^BenchmarkNotifyPolaris\$ 10x"
  "nacos-test ./nacos ^BenchmarkNotifyTestServer\$ 10x"
  "cache-fleet ./registry/cache ^BenchmarkFleet\$ 1x"
  "cache-lookup ./registry/cache ^BenchmarkLookup\$ 1s -benchmem"
  "event-allocs ./registry ^BenchmarkApplyEvent\$ 2000x -benchmem"
)

for round in $(seq "$rounds"); do
  echo "round $round: $(uptime)" | tee -a "$out/load.txt"
  for spec in "${benches[@]}"; do
    read -r name pkg bench benchtime extra <<<"$spec"
    if [ -n "$only" ] && [[ "$name" != $only* ]]; then
      continue
    fi
    echo "  $name"
    go test -run '^$' -bench "$bench" -benchtime "$benchtime" ${extra:-} -count 1 -timeout 30m "$pkg" \
      | grep -E '^(Benchmark|goos|goarch|pkg|cpu)' >>"$out/$name.txt"
  done
done
# The heap profile of the cache figure, for its explanation.
REGKIT_FLEET_HEAPPROFILE="$PWD/$out/fleet.heap" go test -run '^$' -bench '^BenchmarkFleet$' -benchtime 1x ./registry/cache >/dev/null
for f in "$out"/*.txt; do
  [ "$(basename "$f")" = load.txt ] && continue
  benchstat "$f" >"${f%.txt}.benchstat" 2>&1 || true
done
python3 scripts/benchsummary.py "$out" BENCHMARKS.md
echo "figures written to BENCHMARKS.md; raw output and benchstat summaries in $out/"
