// Package registrytest holds the conformance suites every backend runs against a real
// server: RunRegistry (registration, discovery, watches, faults) and RunStore (the
// coordination store and sessions). A backend's test calls them with a Harness that
// opens clients on its server and injects faults for real.
package registrytest

import (
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
	"go.uber.org/goleak"
)

// Harness is what a backend gives the suites.
type Harness struct {
	// Name labels the backend in messages.
	Name string
	// NewClient opens a new client on namespace ns: clients opened with the same ns
	// see the same data, clients with different ns see nothing of each other (a
	// key prefix, chroot or Nacos namespace). The suites close the clients they
	// open; NewClient should not register cleanups that close them. Required.
	NewClient func(t testing.TB, ns string) *registry.Client
	// ExpireSession makes the backend drop everything client c keeps alive
	// (revoke its leases, expire its ZooKeeper session, make the agent forget it,
	// delete its instances), as an outage longer than the TTL would. Nil: the
	// session-loss cases fail, since every backend must offer them.
	ExpireSession func(t testing.TB, c *registry.Client)
	// Restart stops the server and starts it again on the same address. Nil: the
	// restart cases are skipped with a message.
	Restart func(t testing.TB)
	// Cut breaks every connection between the clients opened by NewClient and the
	// server (through a fault proxy) until the returned heal is called. Nil: the
	// cut cases are skipped with a message.
	Cut func(t testing.TB) (heal func())
	// Blackhole is Cut where the server never answers (packets dropped, calls
	// hang until their context ends) instead of refusing: the outage a shutdown
	// meets when a backend's host is gone. Nil: the cases that use it run with
	// Cut instead.
	Blackhole func(t testing.TB) (heal func())
	// NewLazyClient opens a new client on namespace ns, as NewClient does but with
	// registry.WithLazyConnect and a short retry backoff (e.g. 50ms to 1s), while
	// the server is cut: the suite calls it between Cut and heal, and the client
	// must reach the server once healed. Like NewClient, it should not register
	// cleanups that close the client. Nil (a backend whose Open cannot return
	// during an outage, such as mem): the lazy-connect case is skipped with a
	// message.
	NewLazyClient func(t testing.TB, ns string) *registry.Client
	// UnreachableURL returns a URL of this backend that no server answers (a
	// closed loopback port), with timeouts short enough for a test. Nil: the
	// connect-failure case is skipped with a message.
	UnreachableURL func(t testing.TB) string
	// WriteForeign writes, straight on the server and in the namespace of client c,
	// entries under service that are not valid instances of this layout, every
	// kind the backend can hold: undecodable bytes, a decodable but empty record,
	// a record whose body names another service, a record at a nested key, and a
	// record whose body carries instance ID id at a key of another ID (skip what
	// the backend's data model cannot express). The suite checks that none is
	// listed, none breaks a watch, and the registration guard still puts back a
	// deleted instance id whose ID a foreign record carries. Nil: those cases are
	// skipped with a message.
	WriteForeign func(t testing.TB, c *registry.Client, service, id string)
	// HidesUnhealthy: the clients NewClient opens list only healthy instances
	// (Consul's default passing_only), so an instance marked unhealthy leaves
	// their views instead of showing Healthy false; the health case expects
	// that and says so.
	HidesUnhealthy bool
	// DeleteInstance deletes instance id of service straight on the server, in
	// the namespace of client c, as an operator would (etcdctl del, a znode
	// delete, an agent deregister, a Nacos DELETE), whoever registered it. The
	// suite uses it to check that a Registration puts back an instance deleted
	// behind its back (a second Register of the ID cannot do that: it fails with
	// ErrExists). Nil: those cases are skipped with a message.
	DeleteInstance func(t testing.TB, c *registry.Client, service, id string)
	// Timeout bounds each "eventually" wait (default 30s).
	Timeout time.Duration
	// LeakOptions are passed to goleak when checking that closed clients left no
	// goroutine behind (e.g. IgnoreTopFunction for an in-process server).
	LeakOptions []goleak.Option
}

func (h *Harness) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 30 * time.Second
}
