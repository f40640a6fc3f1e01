package lbgrpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/registry"
)

// Names of the gRPC balancers this package registers (when imported), each
// running the lb policy of the same name over the ClientConn's ready SubConns,
// with lb's outlier ejection fed by each RPC's status. Select one with a
// service config:
//
//	grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"regkit_weighted_round_robin":{}}]}`)
//	grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"regkit_zone_aware":{"zone":"eu-1","minHealthyShare":0.5}}]}`)
//
// See Config for the fields each accepts.
const (
	RoundRobinName         = "regkit_round_robin"
	WeightedRoundRobinName = "regkit_weighted_round_robin"
	RandomName             = "regkit_random"
	LeastLoadedName        = "regkit_least_loaded"
	ConsistentHashName     = "regkit_consistent_hash"
	ZoneAwareName          = "regkit_zone_aware"
)

func init() {
	for _, n := range []string{RoundRobinName, WeightedRoundRobinName, RandomName, LeastLoadedName, ConsistentHashName, ZoneAwareName} {
		balancer.Register(lbBuilder{name: n})
	}
}

// Config is the JSON configuration of the balancers in a service config. Every
// field is optional.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// Zone is the caller's zone (regkit_zone_aware).
	Zone string `json:"zone,omitempty"`
	// MinHealthyShare is the share of the local zone that must be ready to stay
	// local (regkit_zone_aware; in [0, 1], default 0.5).
	MinHealthyShare *float64 `json:"minHealthyShare,omitempty"`
	// Policy is the policy regkit_zone_aware applies within the chosen zones:
	// round_robin, weighted_round_robin (default), random, least_loaded,
	// consistent_hash.
	Policy string `json:"policy,omitempty"`
	// Replicas is consistent_hash's points per instance on the ring
	// (lb.ConsistentHashConfig.Replicas: 1 to lb.MaxReplicas, default 100).
	Replicas int `json:"replicas,omitempty"`
	// LoadFactor is consistent_hash's bound on an instance's calls in flight
	// over the mean (lb.ConsistentHashConfig.LoadFactor: at least 1, default
	// 1.25).
	LoadFactor float64 `json:"loadFactor,omitempty"`
	// Ejection configures outlier ejection (lb.Ejection; durations as Go
	// durations, "30s"); absent means lb.DefaultEjection, consecutiveFailures -1
	// turns it off.
	Ejection *EjectionConfig `json:"ejection,omitempty"`
}

// EjectionConfig is lb.Ejection in JSON; absent or zero fields take
// lb.DefaultEjection's values.
type EjectionConfig struct {
	// ConsecutiveFailures ejects an instance after this many failed RPCs
	// (status Unavailable) in a row; -1 turns ejection off. Default 5.
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty"`
	// BaseTime is the first ejection's length, a Go duration ("30s"). Default 30s.
	BaseTime string `json:"baseTime,omitempty"`
	// MaxTime caps the doubling ejection length, a Go duration. Default 5m.
	MaxTime string `json:"maxTime,omitempty"`
	// MaxEjectedShare is the panic threshold: the largest share (0..1) of
	// instances ejected at once. Default 0.5.
	MaxEjectedShare float64 `json:"maxEjectedShare,omitempty"`
}

type lbBuilder struct{ name string }

func (b lbBuilder) Name() string { return b.name }

func (b lbBuilder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &Config{}
	if len(js) > 0 {
		if err := json.Unmarshal(js, cfg); err != nil {
			return nil, fmt.Errorf("%s: config: %w", b.name, err)
		}
	}
	if _, _, err := b.pool(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// pool returns the policy and options a config asks for.
func (b lbBuilder) pool(cfg *Config) (lb.Policy, []lb.Option, error) {
	policyName := b.name[len("regkit_"):]
	if b.name == ZoneAwareName {
		policyName = cfg.Policy
		if policyName == "" {
			policyName = "weighted_round_robin"
		}
	}
	var pol lb.Policy
	switch policyName {
	case "round_robin":
		pol = lb.RoundRobin()
	case "weighted_round_robin":
		pol = lb.WeightedRoundRobin()
	case "random":
		pol = lb.Random()
	case "least_loaded":
		pol = lb.LeastLoaded()
	case "consistent_hash":
		pol = lb.ConsistentHash(lb.ConsistentHashConfig{Replicas: cfg.Replicas, LoadFactor: cfg.LoadFactor})
	default:
		return nil, nil, fmt.Errorf("%s: unknown policy %q: %w", b.name, policyName, registry.ErrInvalid)
	}
	if b.name == ZoneAwareName {
		share := 0.5
		if cfg.MinHealthyShare != nil {
			share = *cfg.MinHealthyShare
		}
		pol = lb.ZoneAware(cfg.Zone, share, pol)
	}
	var opts []lb.Option
	if e := cfg.Ejection; e != nil {
		ej := lb.Ejection{ConsecutiveFailures: e.ConsecutiveFailures, MaxEjectedShare: e.MaxEjectedShare}
		for _, d := range []struct {
			s   string
			out *time.Duration
		}{{e.BaseTime, &ej.BaseTime}, {e.MaxTime, &ej.MaxTime}} {
			if d.s == "" {
				continue
			}
			v, err := time.ParseDuration(d.s)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: ejection: %w", b.name, err)
			}
			*d.out = v
		}
		opts = append(opts, lb.WithEjection(ej))
	}
	if _, err := lb.NewPool(pol, opts...); err != nil { // validate
		return nil, nil, err
	}
	return pol, opts, nil
}

func (b lbBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	gb := &grpcBalancer{builder: b, insts: map[string]registry.Instance{}}
	gb.Balancer = base.NewBalancerBuilder(b.name, (*pickerBuilder)(gb), base.Config{HealthCheck: true}).Build(cc, opts)
	return gb
}

// grpcBalancer is grpc-go's base balancer (SubConn per address, connectivity
// tracking) with an lb.Pool choosing among the ready SubConns.
type grpcBalancer struct {
	balancer.Balancer
	builder lbBuilder

	// Set in UpdateClientConnState and read in Build, which base calls from it
	// or from SubConn state listeners, all serialised by gRPC.
	mu    sync.Mutex
	cfg   *Config
	pool  *lb.Pool
	insts map[string]registry.Instance // by Addr, from the latest resolver state
}

func (gb *grpcBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, _ := s.BalancerConfig.(*Config)
	if cfg == nil {
		cfg = &Config{}
	}
	gb.mu.Lock()
	if gb.pool == nil || !sameConfig(gb.cfg, cfg) {
		pol, opts, err := gb.builder.pool(cfg)
		if err != nil {
			gb.mu.Unlock()
			return err
		}
		p, err := lb.NewPool(pol, opts...)
		if err != nil {
			gb.mu.Unlock()
			return err
		}
		if gb.pool != nil {
			gb.pool.Close()
		}
		gb.cfg, gb.pool = cfg, p
	}
	insts := make(map[string]registry.Instance, len(s.ResolverState.Addresses))
	for _, a := range s.ResolverState.Addresses {
		if in, ok := InstanceOf(a); ok {
			insts[a.Addr] = in
		}
	}
	gb.insts = insts
	gb.mu.Unlock()
	return gb.Balancer.UpdateClientConnState(s)
}

func sameConfig(a, b *Config) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func (gb *grpcBalancer) Close() {
	gb.Balancer.Close()
	gb.mu.Lock()
	defer gb.mu.Unlock()
	if gb.pool != nil {
		gb.pool.Close()
	}
}

type pickerBuilder grpcBalancer

// Build is called by base with the ready SubConns: it updates the Pool and
// returns a picker over it.
func (pb *pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	gb := (*grpcBalancer)(pb)
	gb.mu.Lock()
	defer gb.mu.Unlock()
	if len(info.ReadySCs) == 0 || gb.pool == nil {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	insts := make([]registry.Instance, 0, len(info.ReadySCs))
	p := &picker{pool: gb.pool, scs: make(map[string]scEntry, len(info.ReadySCs))}
	counted := false
	if la, ok := gb.pool.Policy().(lb.LoadAware); ok {
		counted = la.LoadAware()
	}
	for sc, sci := range info.ReadySCs {
		in, ok := gb.insts[sci.Address.Addr]
		if !ok {
			in = fromAddr(sci.Address.Addr) // an address from another resolver
			in.Healthy = true               // READY is all we know of it
		}
		// Otherwise Healthy is the registry's verdict: the Pool prefers healthy
		// instances among the READY ones, and lb still ejects on failures.
		insts = append(insts, in)
		p.scs[in.ID] = scEntry{sc: sc}
	}
	gb.pool.Update(insts)
	if !counted {
		// The Result of a non-load-aware pick is its Endpoint alone: one Done
		// func per SubConn, built here, keeps Pick allocation-free.
		for _, ep := range gb.pool.Endpoints().All {
			if e, ok := p.scs[ep.Instance.ID]; ok {
				e.done = func(di balancer.DoneInfo) { lb.Result{Endpoint: ep}.Done(failure(di.Err)) }
				p.scs[ep.Instance.ID] = e
			}
		}
	}
	return p
}

func fromAddr(addr string) registry.Instance {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return registry.Instance{ID: addr, Host: host, Port: n, Weight: registry.DefaultWeight}
}

type scEntry struct {
	sc   balancer.SubConn
	done func(balancer.DoneInfo)
}

type picker struct {
	pool *lb.Pool
	scs  map[string]scEntry
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	r, err := p.pool.Pick(lb.PickInfo{Key: HashKey(info.Ctx)})
	if err != nil {
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	e, ok := p.scs[r.Endpoint.Instance.ID]
	if !ok { // the Pool moved on to a newer picker's set; gRPC picks again with it
		r.Done(nil)
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	if e.done != nil {
		return balancer.PickResult{SubConn: e.sc, Done: e.done}, nil
	}
	return balancer.PickResult{SubConn: e.sc, Done: func(di balancer.DoneInfo) { r.Done(failure(di.Err)) }}, nil
}

// failure says whether an RPC's error counts against its instance: Unavailable
// (the connection failed or the server is shutting down) does; application
// errors, cancellations and deadlines do not.
func failure(err error) error {
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.Unavailable {
		return err
	}
	return nil
}

type hashKey struct{}

// WithHashKey returns a context whose RPCs regkit_consistent_hash routes by key:
// equal keys go to the same server while it is not overloaded.
func WithHashKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, hashKey{}, key)
}

// HashKey returns the key WithHashKey set, or "".
func HashKey(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	s, _ := ctx.Value(hashKey{}).(string)
	return s
}
