// Package hooks lets the conformance suites (package registrytest) observe what
// package registry keeps unexported: how many goroutines a Client owns right now.
// Package registry sets the hooks in its init.
package hooks

// Live returns how many goroutines the *registry.Client c owns that have not
// finished yet. Each one is counted from before it starts until after every other
// deferred call of its body, including the one that lets its owner's wait
// return: when a Close that waits for it has returned, it no longer counts.
var Live func(c any) int64
