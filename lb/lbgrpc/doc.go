// Package lbgrpc connects gRPC to regkit: a resolver.Builder so that
// grpc.NewClient("regkit:///greeter", grpc.WithResolvers(b)) follows a service
// on any backend, balancers running package lb's policies selectable by service
// config, and Serve, which registers a gRPC server only while it serves.
//
//	b, err := lbgrpc.Open(ctx, "etcd://127.0.0.1:2379/prod") // or lbgrpc.NewBuilder(cache)
//	defer b.Close()
//	conn, err := grpc.NewClient("regkit:///greeter", grpc.WithResolvers(b),
//		grpc.WithTransportCredentials(insecure.NewCredentials()),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"regkit_weighted_round_robin":{}}]}`))
//
// # Resolver
//
// Each resolver follows its service through the Builder's Discovery (one
// *cache.Cache: one backend watch per service, whatever the number of
// ClientConns) and pushes the complete address list on every snapshot; each
// address carries its instance (ID, Weight, Zone, Metadata) in
// BalancerAttributes (InstanceOf, Weight, Zone, Metadata). A stale snapshot keeps
// the last good list; errors are reported to gRPC (ReportError) only when there
// is no list to keep. The empty-push guard of package lb applies: an empty list
// after a non-empty one is pushed only once the backend has confirmed it for the
// grace period (see lb.Balancer).
//
// # Balancers
//
// Importing the package registers regkit_round_robin,
// regkit_weighted_round_robin (nginx's smooth WRR over the instances' Weight),
// regkit_random, regkit_least_loaded, regkit_consistent_hash (keys from
// WithHashKey) and regkit_zone_aware (Config.Zone, Config.MinHealthyShare,
// Config.Policy). They are grpc-go's base balancer (a SubConn per address,
// connectivity tracking) with an lb.Pool picking among the READY SubConns, those
// whose instance the registry reports healthy first (an instance marked
// unhealthy gets calls only when no healthy one is READY); an RPC failing with
// Unavailable counts against its instance for lb's outlier ejection
// (Config.Ejection).
//
// # Servers
//
// Serve starts a grpc.Server, waits until it accepts gRPC connections, then
// registers it (WithRegisterOptions adds a health check). Serving.GracefulStop deregisters first, waits for callers to
// notice (WithDrainDelay), then drains in-flight RPCs and stops, so a rolling
// restart never leaves callers dialing a stopped server.
package lbgrpc
