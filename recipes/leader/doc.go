// Package leader holds the leader-election recipes, written once over
// registry.Store and registry.Session: Election (etcd's concurrency.Election:
// Campaign, Resign, Proclaim, Leader, Observe, over a session you own), Latch
// (Curator's LeaderLatch: leads until closed, IsLeader, Await, with sessions of
// its own) and Selector (Curator's LeaderSelector: a callback runs while leading,
// with requeue). Observe and LeaderOf follow or read an election without taking
// part. Elections, Latches and Selectors on one key are candidates of one
// election, served in the order their nodes were created.
//
// Every term of leadership is a *recipes.Hold: a fencing token (the candidate
// node's CreateRevision, growing from term to term) and a context cancelled the
// moment the leader can no longer be sure it leads. See package recipes for the
// guarantees per backend and the window a fenced resource closes.
package leader
