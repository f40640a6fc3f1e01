#!/usr/bin/env bash
# install-servers.sh installs the real servers the tests run against, when missing:
#   - ZooKeeper from Debian's `zookeeper` package (needs Java, which the machine has);
#   - Apache Curator 5.4 (client, framework, recipes, x-discovery) from Debian's
#     libcurator-*-java packages, and a JDK (javac): the zk interop tests compile and
#     run a Curator peer against the test ZooKeeper;
#   - node-zookeeper-dubbo (npm, pinned) and Node.js: the zk layout=dubbo interop test
#     runs it as a live Dubbo consumer (internal/testenv/dubbojs/peer.js);
#   - Consul, built from the Go module proxy (replace directives dropped), cached;
#   - Polaris (Nacos-compatible v1 API), built from the Go module proxy, cached.
# etcd needs nothing: the tests embed the real server (go.etcd.io/etcd/server/v3/embed,
# in the etcd/embedded module).
#
# Binaries are cached under $REGKIT_SERVERS_DIR (default ~/.cache/regkit/servers);
# the tests find them there (see internal/testenv). Idempotent: a second run is quick.
set -euo pipefail

CONSUL_VERSION=${CONSUL_VERSION:-v1.22.0}
# Keep in step with testenv.DubboJSVersion.
DUBBOJS_VERSION=${DUBBOJS_VERSION:-3.0.15}
POLARIS_VERSION=${POLARIS_VERSION:-v1.18.1}
DIR=${REGKIT_SERVERS_DIR:-$HOME/.cache/regkit/servers}
mkdir -p "$DIR"

log() { printf 'install-servers: %s\n' "$*" >&2; }

install_zookeeper() {
  if [ -f /usr/share/zookeeper/bin/zkServer.sh ] || ls /usr/share/java/zookeeper*.jar >/dev/null 2>&1; then
    log "zookeeper: present"
    return
  fi
  log "zookeeper: apt-get install zookeeper"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq zookeeper >/dev/null
}

# The Curator peer of the zk interop tests (internal/testenv/curator) is compiled with
# javac against these jars in /usr/share/java.
CURATOR_PKGS="libcurator-client-java libcurator-framework-java libcurator-recipes-java libcurator-discovery-java"

install_curator() {
  local missing=""
  for p in $CURATOR_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  command -v javac >/dev/null 2>&1 || missing="$missing default-jdk-headless"
  if [ -z "$missing" ]; then
    log "curator: present"
    return
  fi
  log "curator: apt-get install$missing"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
}

# The Dubbo JS peer of the zk interop tests (internal/testenv/dubbojs/peer.js) runs
# node-zookeeper-dubbo from $DIR/dubbojs/node_modules with Node.js.
install_dubbojs() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "dubbojs: apt-get install nodejs npm"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  local pkg="$DIR/dubbojs/node_modules/node-zookeeper-dubbo/package.json"
  if [ -f "$pkg" ] && grep -q "\"version\": \"$DUBBOJS_VERSION\"" "$pkg"; then
    log "dubbojs: node-zookeeper-dubbo $DUBBOJS_VERSION cached in $DIR/dubbojs"
    return
  fi
  log "dubbojs: npm install node-zookeeper-dubbo@$DUBBOJS_VERSION"
  mkdir -p "$DIR/dubbojs"
  npm install --prefix "$DIR/dubbojs" --no-audit --no-fund --save-exact "node-zookeeper-dubbo@$DUBBOJS_VERSION" >/dev/null
}

# build_from_proxy MODULE VERSION OUTPUT [PACKAGE]
build_from_proxy() {
  local mod=$1 ver=$2 out=$3 pkg=${4:-.}
  local src work
  src=$(go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$src" ] || { log "$mod: download failed"; return 1; }
  work=$(mktemp -d)
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  (
    cd "$work"
    # Local replace directives point at directories the module zip does not carry
    # (nested modules are published separately); drop those, keep version pins.
    go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"].get("Version"):
        continue
    o = r["Old"]
    print(o["Path"] + ("@" + o["Version"] if o.get("Version") else ""))
' | while read -r r; do go mod edit -dropreplace="$r"; done
    # Some of Consul's nested modules are on the proxy but unknown to the checksum
    # database; this builds a test server, not our module, so skip that check here.
    GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$out.tmp" "$pkg"
  )
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

install_consul() {
  local bin="$DIR/consul-$CONSUL_VERSION"
  if [ -x "$bin" ]; then log "consul: cached at $bin"; else
    log "consul: building $CONSUL_VERSION from the Go module proxy (several minutes)"
    build_from_proxy github.com/hashicorp/consul "$CONSUL_VERSION" "$bin"
  fi
  ln -sf "$bin" "$DIR/consul"
}

install_polaris() {
  local bin="$DIR/polaris-server-$POLARIS_VERSION"
  if [ -x "$bin" ]; then log "polaris: cached at $bin"; else
    log "polaris: building $POLARIS_VERSION from the Go module proxy"
    build_from_proxy github.com/polarismesh/polaris "$POLARIS_VERSION" "$bin"
  fi
  ln -sf "$bin" "$DIR/polaris-server"
  local src
  src=$(go mod download -json "github.com/polarismesh/polaris@$POLARIS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$DIR/polaris-conf"
  cp -f "$src/release/conf/polaris-server.yaml" "$DIR/polaris-conf/polaris-server.yaml"
  chmod u+w "$DIR/polaris-conf/polaris-server.yaml"
}

what=${1:-all}
case "$what" in
  all) install_zookeeper; install_curator; install_dubbojs; install_consul; install_polaris ;;
  zookeeper) install_zookeeper; install_curator; install_dubbojs ;;
  curator) install_curator ;;
  dubbojs) install_dubbojs ;;
  consul) install_consul ;;
  polaris) install_polaris ;;
  *) log "usage: $0 [all|zookeeper|curator|dubbojs|consul|polaris]"; exit 2 ;;
esac
log "servers ready in $DIR"
