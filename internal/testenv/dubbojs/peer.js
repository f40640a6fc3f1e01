// peer.js: a live node-zookeeper-dubbo consumer (the Yoke class, pinned by
// scripts/install-servers.sh), the other side of regkit's layout=dubbo interop tests.
//
//   node peer.js CONNECT ROOT DEPENDENCIES_JSON
//
// CONNECT is ZooKeeper's connect string (host:port[/chroot]); ROOT is Yoke's root
// option (Dubbo's registry group, default "dubbo"); DEPENDENCIES_JSON is Yoke's
// dependencies option: {"key": {"interface": I, "version": V, "group": G}, ...}
// (leave out version or group for none).
//
// The package does everything as it does for an application: it connects, lists
// /ROOT/I/providers with a watch, parses each provider URL and keeps those whose
// version, group and protocol (dubbo:) match the dependency, builds its Service
// (which dials every chosen provider's host:port), and registers a consumer URL
// under /ROOT/I/consumers. The peer only listens in: each time every dependency
// has had an answer, and again on each later answer (a watch fired), it prints one
// line "providers {key: [provider, ...]}" where a provider is the URL as Yoke
// parsed it (protocol, hostname, port, query) and a dependency Yoke found no
// match for has []. It exits when its stdin closes.
"use strict";

const Yoke = require("node-zookeeper-dubbo");
const qs = require("querystring");

const [connect, root, depsJSON] = process.argv.slice(2);
if (!connect || !root || !depsJSON) {
  console.error("usage: node peer.js CONNECT ROOT DEPENDENCIES_JSON");
  process.exit(2);
}
const dependencies = JSON.parse(depsJSON);

class Peer extends Yoke {
  constructor(opt) {
    super(opt);
    this.chosen = {};
  }

  resolveService(path, depKey, depVal) {
    const resolve = super.resolveService(path, depKey, depVal);
    return (error, children, stat) => {
      // Yoke keeps the previous Service when nothing matches; the peer reports
      // what this answer chose: nothing unless determineService is called.
      this.chosen[depKey] = error ? { error: String(error) } : [];
      resolve(error, children, stat);
      this.report();
    };
  }

  determineService(depKey, depVal, providers) {
    this.chosen[depKey] = providers.map(p => ({
      protocol: p.protocol,
      hostname: p.hostname,
      port: Number(p.port),
      query: Object.assign({}, qs.parse(p.query)),
    }));
    super.determineService(depKey, depVal, providers);
  }

  report() {
    for (const k of Object.keys(dependencies)) {
      if (!(k in this.chosen)) {
        return;
      }
    }
    process.stdout.write("providers " + JSON.stringify(this.chosen) + "\n");
  }
}

const peer = new Peer({
  application: { name: "regkit-dubbojs-peer" },
  registry: connect,
  root: root,
  dubboVer: "2.5.3.6",
  dependencies: dependencies,
});

process.stdin.resume();
process.stdin.on("end", () => {
  peer.client.close();
  process.exit(0);
});
