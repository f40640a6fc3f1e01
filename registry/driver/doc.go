// Package driver is the contract between package registry and its backends, in the
// spirit of database/sql/driver: what a backend implements (Driver, Conn, Lease,
// Listing, and optionally StoreConn and SessionConn) and the helpers only backends
// use (Params, Hosts, the key helpers, LostSignal, ApplyOptions). Users import
// package registry, never this one.
//
// A backend only translates: put this instance under a keep-alive and say when it
// was lost, list this service, say when something under it may have changed.
// Re-registration, watch re-arming, re-list and diff, staleness, sharing one watch
// among many watchers and validation live once in package registry, over these
// interfaces.
//
// # Writing a backend
//
//   - Implement Driver and Conn (and StoreConn for the coordination store), and
//     assert them at compile time: var _ driver.Conn = (*Conn)(nil).
//   - Register the Driver under its URL scheme from the package's init:
//     func init() { driver.Register("etcd", drv{}) }. Register panics on a nil
//     driver or a scheme already taken, as sql.Register does.
//   - In Driver.Open, read the URL's query with NewParams and end with Params.Done,
//     so that unknown parameters are rejected; split the host list with Hosts.
//   - Give backend-specific settings as typed options: a WithX function in the
//     backend package returning registry.DriverOption("pkg.WithX", v), where v is
//     of an unexported type of the backend; read them in Open (and New) with
//     ApplyOptions, which rejects another backend's options before any I/O.
//   - Offer New(native client, opts ...registry.Option) (*registry.Client, error)
//     for users who already hold a native client, built with registry.NewClient,
//     honouring Config.Logger.
//   - Report the end of a Lease or a SessionConn with a LostSignal.
//   - Run registrytest.RunRegistry and registrytest.RunStore against a real server
//     with fault hooks; the suites skip exactly what Capabilities says is missing.
//
// Types both packages need (Instance, Node, SessionState, the sentinel errors,
// FieldError) are defined here and aliased in package registry, so errors.Is and
// values cross the boundary unchanged.
package driver
