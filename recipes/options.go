package recipes

import (
	"bytes"
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
}

// Apply returns the Options opts set, over the defaults.
func Apply(opts []Option) Options {
	o := Options{RequestTimeout: 10 * time.Second, RetryMin: 50 * time.Millisecond, RetryMax: 2 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithPolicy sets the session-state policy of the recipe's Holds.
func WithPolicy(p Policy) Option { return func(o *Options) { o.Policy = p } }

// WithValue sets the value written into the recipe's node (a participant's
// identity, shown by Leader and Observe).
func WithValue(v []byte) Option { return func(o *Options) { o.Value = bytes.Clone(v) } }

// WithSessionTTL sets the TTL of the sessions a recipe opens for itself.
func WithSessionTTL(d time.Duration) Option {
	return func(o *Options) { o.SessionOptions = append(o.SessionOptions, registry.WithTTL(d)) }
}

// WithRequestTimeout bounds each store call the recipe makes.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *Options) {
		if d > 0 {
			o.RequestTimeout = d
		}
	}
}

// WithRetryBackoff bounds the jittered exponential backoff between retries.
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *Options) {
		if min > 0 && max >= min {
			o.RetryMin, o.RetryMax = min, max
		}
	}
}

// WithAutoRequeue makes a leader selector campaign again every time its callback
// returns, until closed.
func WithAutoRequeue() Option { return func(o *Options) { o.AutoRequeue = true } }
