#!/usr/bin/env bash
# bench.sh runs the performance benchmarks of issues 15 and 16 against the real
# servers (installed by install-servers.sh, started by the tests) and rewrites the
# "Figures" and "Recipes" tables of BENCHMARKS.md. It is not part of CI: it takes
# about 35 minutes. Every figure is measured in REGKIT_BENCH_ROUNDS rounds (default 6);
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
#   REGKIT_BENCH_ONLY=recipes bash scripts/bench.sh  # issue 16's only
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
  # issue 16: coordination recipes next to each backend's native lock
  "recipes-etcd-mutex ./etcd/embedded/internal/etcdtest ^BenchmarkMutexUncontended\$ 2000x"
  "recipes-etcd-contended ./etcd/embedded/internal/etcdtest ^BenchmarkMutexContended\$ 5x"
  "recipes-etcd-failover ./etcd/embedded/internal/etcdtest ^BenchmarkFailover\$/after=(resign|close)\$ 30x"
  "recipes-etcd-expiry ./etcd/embedded/internal/etcdtest ^BenchmarkFailover\$/after=expiry\$ 5x"
  "recipes-consul-mutex ./consul ^BenchmarkMutexUncontended\$ 1000x"
  "recipes-consul-contended ./consul ^BenchmarkMutexContended\$ 2x"
  "recipes-consul-failover ./consul ^BenchmarkFailover\$/after=(resign|close)\$ 30x"
  "recipes-consul-expiry ./consul ^BenchmarkFailover\$/after=expiry\$ 3x"
  "recipes-zk-mutex ./zk ^BenchmarkMutexUncontended\$ 1000x"
  "recipes-zk-contended ./zk ^BenchmarkMutexContended\$ 5x"
  "recipes-zk-failover ./zk ^BenchmarkFailover\$/after=(resign|close)\$ 30x"
  "recipes-zk-expiry ./zk ^BenchmarkFailover\$/after=expiry\$ 5x"
)

for round in $(seq "$rounds"); do
  echo "round $round: $(uptime)" | tee -a "$out/load.txt"
  for spec in "${benches[@]}"; do
    read -r name pkg bench benchtime extra <<<"$spec"
    if [ -n "$only" ] && [[ "$name" != $only* ]]; then
      continue
    fi
    echo "  $name"
    # The full output goes to a log; a run that fails says so and shows it, and
    # the rounds go on (benchsummary.py reports a figure with no samples).
    if ! go test -run '^$' -bench "$bench" -benchtime "$benchtime" ${extra:-} -count 1 -timeout 30m "$pkg" >"$out/$name.log" 2>&1; then
      echo "  $name failed in round $round:" >&2
      tail -20 "$out/$name.log" >&2
    fi
    grep -E '^(Benchmark|goos|goarch|pkg|cpu)' "$out/$name.log" >>"$out/$name.txt" || true
  done
done
# The heap profile of the cache figure, for its explanation (when it was measured).
if [ -z "$only" ] || [[ cache-fleet == $only* ]]; then
  # Its output goes to a log, shown when it fails (it failed once under heavy
  # load with nothing on the terminal); a failure leaves the figures intact.
  if ! REGKIT_FLEET_HEAPPROFILE="$PWD/$out/fleet.heap" go test -run '^$' -bench '^BenchmarkFleet$' -benchtime 1x ./registry/cache >"$out/fleet-heap.log" 2>&1; then
    echo "the heap profile run failed (the figures are still written):" >&2
    tail -20 "$out/fleet-heap.log" >&2
  fi
fi
for f in "$out"/*.txt; do
  [ "$(basename "$f")" = load.txt ] && continue
  benchstat "$f" >"${f%.txt}.benchstat" 2>&1 || true
done
if [ -n "$only" ] && [ "$only" != recipes ]; then
  # A partial run leaves BENCHMARKS.md alone (its other figures were not
  # measured): the table goes to a copy in $out. (The recipes are a table of
  # their own: a recipes-only run rewrites it and keeps the other.)
  cp BENCHMARKS.md "$out/BENCHMARKS.md"
  python3 scripts/benchsummary.py "$out" "$out/BENCHMARKS.md"
  echo "partial run ($only): figures written to $out/BENCHMARKS.md; raw output and benchstat summaries in $out/"
else
  python3 scripts/benchsummary.py "$out" BENCHMARKS.md
  echo "figures written to BENCHMARKS.md; raw output and benchstat summaries in $out/"
fi
