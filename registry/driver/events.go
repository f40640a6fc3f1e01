package driver

import "time"

// EventWatcher is optionally implemented by a Conn whose watch carries the
// changes themselves (etcd's events with revisions, Consul's blocking-query
// answer), found by type assertion. Package registry then applies the changes to
// its view instead of listing the service again after every notification, and
// keeps re-listing as the safety net: it subscribes again, which starts with a
// complete listing, after every broken subscription and on a slow periodic
// check. A Conn without it, or whose SubscribeEvents returns ErrNotSupported,
// is followed with Watch and List.
type EventWatcher interface {
	// SubscribeEvents follows service until cancel is called. It returns at once;
	// the driver calls fn later, from its own goroutines, one call at a time and
	// in order, never from within SubscribeEvents and never after cancel has
	// returned (cancel waits for a call in progress, so fn must not call cancel).
	//
	// The first call carries Reset with a complete listing read after
	// SubscribeEvents was called; later calls carry either the changes since
	// the previous call (Puts and Deletes, a whole backend transaction or watch
	// response in one call) or, where the backend answers with complete sets, a
	// new Reset. A subscription that broke or may have lost a change (a
	// compacted history, a cancelled or failed watch, a new session, a lost
	// connection) ends with a call carrying Err; no call follows it, and package
	// registry subscribes again after a backoff. An event the driver cannot
	// decode into a valid instance of service is reported as a delete of its ID
	// (List skips such entries), or not at all when its name is not an
	// instance's.
	//
	// It returns ErrNotSupported when this connection cannot offer events (a
	// layout whose names do not map to instances one to one): package registry
	// then watches and lists.
	SubscribeEvents(service string, fn func(Change)) (cancel func(), err error)
}

// Change is one step of an EventWatcher subscription.
type Change struct {
	// Reset: Listing is the service's complete set, which replaces the view.
	Reset   bool
	Listing Listing
	// Puts are instances created or replaced, Deletes the IDs of instances
	// deleted (or no longer valid); the IDs of a call are distinct.
	Puts    []Instance
	Deletes []string
	// Revision is the backend's revision after this change, or 0.
	Revision uint64
	// ReadAt is when the read behind a Reset was sent (before the request left,
	// on the monotonic clock), so that package registry can tell whether it can
	// reflect a put that returned at a given time. Zero: when the driver received
	// it.
	ReadAt time.Time
	// Err ends the subscription: why it broke or may have missed a change.
	Err error
}
