package registry

import "github.com/regkit/regkit/registry/driver"

// Sentinel errors. Backends wrap them with %w and a prefix naming the backend and the
// operation ("etcd: create /locks/a: registry: key exists"), so callers test them with
// errors.Is. They are the same values as package driver's, which backends return.
//
// Which errors change caller behaviour:
//   - ErrNotFound, ErrExists, ErrVersionConflict, ErrNotEmpty: permanent answers about
//     the data; retrying the same call gives the same answer.
//   - ErrSessionLost: the session (and every ephemeral node bound to it) is gone; open a
//     new session. Registrations do this by themselves.
//   - ErrUnavailable: the backend could not be reached or did not answer in time; the
//     call may be retried.
//   - ErrNotSupported: this backend cannot do that, ever; see Capabilities.
//   - ErrClosed: the Client, Session, Registration or Watcher was closed by its owner.
//   - ErrInvalid: the input was rejected before anything was written; the message names
//     the field.
//   - ErrPermission: the backend refused the credentials or the ACL denies the call;
//     retrying with the same credentials gives the same answer.
var (
	// ErrNotFound: the key, service or instance does not exist.
	ErrNotFound = driver.ErrNotFound
	// ErrExists: a create found the key already there.
	ErrExists = driver.ErrExists
	// ErrVersionConflict: a compare-and-set or versioned delete saw another version.
	ErrVersionConflict = driver.ErrVersionConflict
	// ErrNotEmpty: a non-recursive delete of a key that has children.
	ErrNotEmpty = driver.ErrNotEmpty
	// ErrNotSupported: the backend cannot offer this operation.
	ErrNotSupported = driver.ErrNotSupported
	// ErrClosed: the object was closed by its owner.
	ErrClosed = driver.ErrClosed
	// ErrSessionLost: the session expired or was revoked; its ephemeral nodes are gone.
	ErrSessionLost = driver.ErrSessionLost
	// ErrUnavailable: the backend could not be reached; retryable.
	ErrUnavailable = driver.ErrUnavailable
	// ErrInvalid: bad input (the wrapping message names the field).
	ErrInvalid = driver.ErrInvalid
	// ErrPermission: authentication failed or an ACL denied the operation (etcd auth,
	// ZooKeeper NoAuth, Consul ACL 403, Nacos 403).
	ErrPermission = driver.ErrPermission
)

// FieldError reports one bad input field (Field, the rejected Value, the Reason). It
// matches ErrInvalid with errors.Is.
type FieldError = driver.FieldError

func invalid(field string, value any, reason string) error {
	return &FieldError{Field: field, Value: value, Reason: reason}
}
