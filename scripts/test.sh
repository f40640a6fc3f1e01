#!/usr/bin/env bash
# test.sh is the project's one test command (README, CI): it installs the real servers
# the tests need when they are missing, then vets and runs every test under the race
# detector. A missing server fails the run; nothing is skipped for lack of one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-servers.sh
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
# The repository is a Go workspace (go.work): the root module, and the nested modules
# that keep the etcd server out of the root's requirements (etcd/embedded, which also
# holds the etcd backend's tests against a real server), the examples, interop/nacos
# (nacos-sdk-go, the Nacos interop tests' live peer) and registry/metricstest (the
# OpenTelemetry SDK, which the metric tests read through). A ./...
# pattern stops at a nested module's boundary, so every module's directory is listed.
mapfile -t modules < <(go list -m -f '{{.Dir}}')
pkgs=() peers=()
for dir in "${modules[@]}"; do
  # Each module's go.mod lists exactly what it imports, tests included, and is tidy on
  # its own (the nested ones replace regkit with this checkout).
  (cd "$dir" && go mod tidy -diff) || { echo "go.mod/go.sum of $dir are not tidy: run go mod tidy there" >&2; exit 1; }
  case "$dir" in
  */interop/nacos) peers+=("$dir/...") ;;
  *) pkgs+=("$dir/...") ;;
  esac
done
# What a program importing one backend gets is the root go.mod's list: no etcd server.
if grep -q 'go.etcd.io/etcd/server' go.mod; then
  echo "the root module requires the etcd server: code that imports it belongs in the etcd/embedded module" >&2
  exit 1
fi
go vet "${pkgs[@]}" "${peers[@]}"
# lb/bench compares lb's pickers with grpc-go's and go-kit's; it is a module outside
# go.work so that go-kit's requirements never enter the workspace's build list.
(cd lb/bench && GOWORK=off go mod tidy -diff && GOWORK=off go vet ./... && GOWORK=off go test -count=1 -run '^$' -bench Pick -benchtime 100x ./...) \
  || { echo "lb/bench: not tidy, or does not build" >&2; exit 1; }
go test -race -count=1 -timeout 15m "$@" "${pkgs[@]}"
# interop/nacos drives nacos-sdk-go v2.3.2 (and v1.0.8 against nacostest) as live peers. The SDK has data races of
# its own (its instance cache sorts a slice its readers iterate, service_info_holder.go),
# which the race detector reports against the test whatever regkit does; regkit's side
# of those tests runs under -race in the nacos package. So the peer module runs without
# the race detector.
go test -count=1 -timeout 15m "$@" "${peers[@]}"
# A short, bounded run of every fuzz target after the unit tests (issue 19), one
# target at a time (go test -fuzz takes one target per package per run). Their seed
# corpora (testdata/fuzz and the f.Add seeds) already ran above as unit tests. A
# failure writes the input to the package's testdata/fuzz/<target>/ (commit it as a
# regression case once fixed). REGKIT_FUZZTIME=0 skips this step.
fuzztime=${REGKIT_FUZZTIME:-8s}
if [ "$fuzztime" != "0" ]; then
  fuzz_targets=(
    ./internal/urltest:FuzzParseURL ./internal/urltest:FuzzOpen
    ./registry/driver:FuzzParams ./registry/driver:FuzzHosts ./registry/driver:FuzzValidKey
    ./zk:FuzzRegkitDecode ./zk:FuzzCuratorDecode ./zk:FuzzDubboDecode
    ./consul:FuzzInstance ./nacos:FuzzConvert ./registry/cache:FuzzLoadFile
  )
  for pt in "${fuzz_targets[@]}"; do
    pkg=${pt%%:*} target=${pt##*:}
    corpus="$pkg/testdata/fuzz/$target"
    before=$(ls "$corpus" 2>/dev/null | wc -l)
    for attempt in 1 2; do
      if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime="$fuzztime" "$pkg" 2>&1); then
        break
      fi
      after=$(ls "$corpus" 2>/dev/null | wc -l)
      # The fuzz engine itself sometimes fails on a loaded machine ("context
      # deadline exceeded" while stopping its workers) without a failing input:
      # run that target once more. A failing input always fails the run.
      if [ "$attempt" = 1 ] && [ "$after" = "$before" ] && grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input' <<<"$out"; then
        continue
      fi
      echo "$out" >&2
      echo "fuzz target $target in $pkg failed" >&2
      exit 1
    done
  done
fi
