// Command regkit inspects and operates any registry regkit can open (etcd,
// ZooKeeper, Consul, Nacos, and mem:// for in-process use), and serves the
// registry over DNS.
//
// Install:
//
//	go install github.com/regkit/regkit/cmd/regkit@latest
//
// The registry URL comes from --url or, when that is not given, from the
// REGKIT_URL environment variable (etcd://h:2379/prefix, zk://h:2181/chroot,
// consul://h:8500/ns, nacos://h:8848?namespace=x).
//
// Commands:
//
//	regkit ls [SERVICE]                     the services, or the instances of one
//	regkit watch SERVICE                    each change live: added, removed, changed; stale/resynced flags
//	regkit register SERVICE HOST:PORT       register and hold until SIGINT/SIGTERM, then deregister
//	regkit get KEY | put KEY [VALUE] | rm [-r] KEY | tree KEY    the coordination store
//	regkit dns [--all | SERVICE...]         a DNS server (SRV, A, AAAA) answering from a shared cache
//	regkit lock PATH -- COMMAND [ARG...]    run COMMAND holding a distributed lock (recipes/lock)
//	regkit leader PATH -- COMMAND [ARG...]  run COMMAND only while leader (recipes/leader; --requeue)
//	regkit sync SRC_URL DST_URL             mirror services to another registry (--both-ways; see the README)
//	regkit version                          build information and the backends compiled in
//
// Every command takes --help. Output is a human-readable table by default and
// JSON with -o json (watch and register print one JSON object per line).
//
// `regkit ls` without a service lists the services that have an instance
// (Client.Services); a backend that cannot list them (etcd with layout=naming and
// no target_prefix) is exit status 1.
//
// # Metrics
//
// sync, dns and watch take --metrics-addr HOST:PORT and then serve the process's
// OpenTelemetry metrics in Prometheus text format at http://HOST:PORT/metrics
// (regkit_sync_copies, regkit_watch_staleness_seconds, ..., and the Go runtime's);
// port 0 picks a free port, printed on stderr.
//
// # Lock and leader
//
// `regkit lock` and `regkit leader` run a command while holding a lock or leading
// an election, and pass it the hold's fencing token in REGKIT_FENCING_TOKEN (the
// node's creation revision; it only grows from holder to holder, so a fenced
// resource can reject a late holder). They need a backend with sessions (etcd,
// ZooKeeper, Consul); on Nacos they are exit status 1. When the hold is lost (the
// session expired, or, by default, its connection was interrupted) the command
// gets SIGTERM, then SIGKILL after --grace; on Linux it is also killed if regkit
// dies. They exit with the command's status (128+N when signal N killed it), or: 124 --timeout ran out
// before the hold was won; 125 the hold was lost while the command ran; 126 the
// command could not be started; 127 it was not found. Before the command runs,
// errors are exit status 1 and 2 as for every command.
//
// # Exit status
//
//	0  success (for register, watch and dns: stopped by SIGINT or SIGTERM)
//	1  error: the backend failed, could not be reached in time (--timeout),
//	   refused the credentials, or cannot do the operation
//	2  usage: a bad flag, argument or URL; nothing was sent to the backend
//	3  not found: no such key, nothing under the key (tree), or no instance of
//	   the service (ls)
//	4  conflict: the key exists (put --create), its version differs
//	   (put/rm --version), or it has children (rm without -r)
//
// The command links every backend; its dependencies (the CLI library, the DNS
// library) live in this nested module, github.com/regkit/regkit/cmd/regkit, so
// that they never reach programs that import regkit's packages.
package main
