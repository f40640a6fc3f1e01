package mirror

import "time"

// SetRetryDelay sets the pause before a failed write is retried, for a test;
// it returns a func that restores it.
func SetRetryDelay(d time.Duration) (restore func()) {
	old := retryDelay
	retryDelay = d
	return func() { retryDelay = old }
}
