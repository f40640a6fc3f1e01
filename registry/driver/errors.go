package driver

import "errors"

// Sentinel errors. Backends wrap them with %w and a prefix naming the backend and the
// operation ("etcd: create /locks/a: registry: key exists"), so callers test them with
// errors.Is.
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
	ErrNotFound = errors.New("registry: not found")
	// ErrExists: a create found the key already there.
	ErrExists = errors.New("registry: key exists")
	// ErrVersionConflict: a compare-and-set or versioned delete saw another version.
	ErrVersionConflict = errors.New("registry: version conflict")
	// ErrNotEmpty: a non-recursive delete of a key that has children.
	ErrNotEmpty = errors.New("registry: key has children")
	// ErrNotSupported: the backend cannot offer this operation.
	ErrNotSupported = errors.New("registry: not supported by this backend")
	// ErrClosed: the object was closed by its owner.
	ErrClosed = errors.New("registry: closed")
	// ErrSessionLost: the session expired or was revoked; its ephemeral nodes are gone.
	ErrSessionLost = errors.New("registry: session lost")
	// ErrUnavailable: the backend could not be reached; retryable.
	ErrUnavailable = errors.New("registry: backend unavailable")
	// ErrInvalid: bad input (the wrapping message names the field).
	ErrInvalid = errors.New("registry: invalid argument")
	// ErrPermission: authentication failed or an ACL denied the operation (etcd auth,
	// ZooKeeper NoAuth, Consul ACL 403, Nacos 403).
	ErrPermission = errors.New("registry: permission denied")
)

// FieldError reports one bad input field. It matches ErrInvalid with errors.Is.
type FieldError struct {
	Field  string // e.g. "Port", "Service", "url", "dial_timeout"
	Value  any    // the rejected value
	Reason string // what is wrong with it
}

// Error implements error.
func (e *FieldError) Error() string {
	return "registry: invalid " + e.Field + " " + quoteValue(e.Value) + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func invalid(field string, value any, reason string) error {
	return &FieldError{Field: field, Value: value, Reason: reason}
}
