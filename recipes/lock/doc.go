// Package lock holds the locking recipes, written once over registry.Store and
// registry.Session so they run unchanged on every backend with sessions: Mutex
// (Curator's InterProcessMutex, etcd's concurrency.Mutex).
//
// Every acquisition returns a *recipes.Hold: a fencing token and a context
// cancelled the moment the holder can no longer be sure it holds. See package
// recipes for the guarantees per backend and the window a fenced resource closes.
package lock
