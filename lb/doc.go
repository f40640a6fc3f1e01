// Package lb balances calls over the instances of a service: immutable pickers
// rebuilt on every update, outlier ejection from reported call outcomes, and the
// empty-push guard, over the shared, stale-serving view of package
// registry/cache.
//
// # Pieces
//
//   - Policy builds a Picker from the ready endpoints: RoundRobin (random start),
//     WeightedRoundRobin (nginx's smooth weighted round-robin over
//     Instance.Weight), Random, LeastLoaded (power of two choices on calls in
//     flight), ConsistentHash (sticky keys, with bounded loads), ZoneAware
//     (prefer the caller's zone, spill over when too little of it is healthy).
//   - Pool holds one set of instances and the current Picker behind an atomic
//     pointer; Pick takes no lock and does not allocate. It keeps per-instance
//     state across updates: calls in flight, consecutive failures, ejections.
//   - Balancer is a Pool fed from a watch of one service.
//
// # Calling
//
//	b, err := lb.New(ctx, cache, "greeter", lb.WeightedRoundRobin())
//	...
//	r, err := b.Pick(lb.PickInfo{})
//	if err != nil { return err } // lb.ErrNoInstances
//	err = call(r.Endpoint.Addr)
//	r.Done(err) // nil, or a failure that says something about the instance
//
// Packages lb/lbgrpc, lb/lbhttp and lb/lbrpc wire Pools and Balancers into
// gRPC, net/http and net/rpc.
//
// # Health, ejection and panic
//
// A Picker picks from the ready set: instances the backend reports healthy and
// that are not ejected. Consecutive failures eject an instance for a time that
// grows while it keeps failing (see Ejection), never more than MaxEjectedShare of
// the set at once. When nothing is ready, the healthy instances serve, ejected
// or not; when none is healthy, all of them do: a Pool with instances always
// answers.
//
// # Snapshots
//
// A stale snapshot (backend unreachable) keeps serving its instances. An empty
// snapshot after a non-empty one is held back for a grace period unless the
// backend confirms it; see Balancer for what confirms means.
package lb
