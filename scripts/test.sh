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
go vet ./...
go test -race -count=1 -timeout 15m "$@" ./...
