package recipes

import (
	"bytes"
	"errors"
	"time"

	"github.com/regkit/regkit/registry"
)

// Option configures a recipe. Every recipe accepts every Option; each recipe's
// doc says which ones it reads.
type Option func(*Options)

// Options are the settings a recipe reads, built from Options by Apply. They are
// exported for writing recipes; users set them with the With functions.
type Options struct {
	// Policy says which session states end a Hold (default SuspendedIsLost).
	Policy Policy
	// Value is written into the recipe's node: a lock holder's or candidate's
	// identity that Observe and Leader report (default empty).
	Value []byte
	// SessionOptions configure the sessions a recipe opens for itself (leader
	// latch and selector, group member): WithSessionTTL.
	SessionOptions []registry.SessionOption
	// RequestTimeout bounds each store call a recipe makes (default 10s); waits
	// are bounded only by the caller's context.
	RequestTimeout time.Duration
	// AutoRequeue: a leader selector campaigns again after its callback returns
	// (Curator's autoRequeue; default: it leads once).
	AutoRequeue bool
	// RetryMin and RetryMax bound the jittered exponential backoff between retries
	// of failed store calls (default 50ms and 2s).
	RetryMin, RetryMax time.Duration

	errs []error // the invalid options, whose settings were left at the default
}

// Err returns the options given with invalid values, each a *registry.FieldError
// naming the option (matching registry.ErrInvalid), or nil. The settings of an
// invalid option stay at their defaults; a recipe's constructor returns Err
// before any I/O.
func (o Options) Err() error { return errors.Join(o.errs...) }

func (o *Options) invalid(field string, value any, reason string) {
	o.errs = append(o.errs, &registry.FieldError{Field: field, Value: value, Reason: reason})
}

// Apply returns the Options opts set, over the defaults.
func Apply(opts []Option) Options {
	o := Options{RequestTimeout: 10 * time.Second, RetryMin: 50 * time.Millisecond, RetryMax: 2 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithPolicy sets the session-state policy of the recipe's Holds: SuspendedIsLost
// or LostOnly (another value is invalid).
func WithPolicy(p Policy) Option {
	return func(o *Options) {
		if p != SuspendedIsLost && p != LostOnly {
			o.invalid("WithPolicy", p, "must be SuspendedIsLost or LostOnly")
			return
		}
		o.Policy = p
	}
}

// WithValue sets the value written into the recipe's node (a participant's
// identity, shown by Leader and Observe).
func WithValue(v []byte) Option { return func(o *Options) { o.Value = bytes.Clone(v) } }

// WithSessionTTL sets the TTL of the sessions a recipe opens for itself (0: the
// backend's default; negative is invalid).
func WithSessionTTL(d time.Duration) Option {
	return func(o *Options) {
		if d < 0 {
			o.invalid("WithSessionTTL", d, "must not be negative")
			return
		}
		o.SessionOptions = append(o.SessionOptions, registry.WithTTL(d))
	}
}

// WithRequestTimeout bounds each store call the recipe makes (positive; default
// 10s).
func WithRequestTimeout(d time.Duration) Option {
	return func(o *Options) {
		if d <= 0 {
			o.invalid("WithRequestTimeout", d, "must be positive")
			return
		}
		o.RequestTimeout = d
	}
}

// WithRetryBackoff bounds the jittered exponential backoff between retries:
// 0 < min <= max (default 50ms and 2s).
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *Options) {
		if min <= 0 || max < min {
			o.invalid("WithRetryBackoff", [2]time.Duration{min, max}, "needs 0 < min <= max")
			return
		}
		o.RetryMin, o.RetryMax = min, max
	}
}

// WithAutoRequeue makes a leader selector campaign again every time its callback
// returns, until closed.
func WithAutoRequeue() Option { return func(o *Options) { o.AutoRequeue = true } }
