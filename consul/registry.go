package consul

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// option is the driver.Option value of this package's options.
type option func(*settings) error

// WithChecks adds health checks to every registration (each WithChecks adds its
// own). Checks without DeregisterCriticalServiceAfter get the URL's
// deregister_after. Consul starts them critical unless their Status says otherwise,
// so with passing_only the instance is discovered once they pass.
func WithChecks(checks Checks) registry.Option {
	return registry.DriverOption("consul.WithChecks", option(func(s *settings) error {
		if checks == nil {
			return &driver.FieldError{Field: "consul.WithChecks", Value: nil, Reason: "checks is nil"}
		}
		if prev := s.checks; prev != nil {
			s.checks = func(in driver.Instance) []*api.AgentServiceCheck {
				return append(prev(in), checks(in)...)
			}
			return nil
		}
		s.checks = checks
		return nil
	}))
}

// WithTags adds Consul tags to every registration (each WithTags adds its own). The
// tags "regkit", "regkit-meta=…" and "regkit-owner=…" are reserved.
func WithTags(tags ...string) registry.Option {
	return registry.DriverOption("consul.WithTags", option(func(s *settings) error {
		for _, t := range tags {
			if t == tagRegkit || strings.HasPrefix(t, tagMetaPrefix) || strings.HasPrefix(t, tagOwnerPrefix) {
				return &driver.FieldError{Field: "consul.WithTags", Value: t, Reason: "tag reserved by regkit"}
			}
		}
		s.tags = append(s.tags, tags...)
		return nil
	}))
}

// WithNamespace sets the namespace, as the URL's path does (with Open it replaces
// the path): one segment of [A-Za-z0-9._-] prefixing every Consul service name and
// rooting the store; "" for none.
func WithNamespace(ns string) registry.Option {
	return registry.DriverOption("consul.WithNamespace", option(func(s *settings) error {
		ns = strings.Trim(ns, "/")
		if err := checkNamespace("consul.WithNamespace", ns); err != nil {
			return err
		}
		s.namespace = ns
		return nil
	}))
}

// Checks builds the extra checks of one instance being registered.
type Checks func(inst driver.Instance) []*api.AgentServiceCheck

// HTTPCheck checks http://Host:Port<path> every interval (2xx passing, 429 warning,
// anything else critical).
func HTTPCheck(path string, interval time.Duration) Checks {
	return func(in driver.Instance) []*api.AgentServiceCheck {
		return []*api.AgentServiceCheck{{Name: "http " + path, HTTP: "http://" + in.Addr() + path,
			Interval: interval.String(), Timeout: min(interval, 10*time.Second).String()}}
	}
}

// TCPCheck checks that Host:Port accepts TCP connections every interval.
func TCPCheck(interval time.Duration) Checks {
	return func(in driver.Instance) []*api.AgentServiceCheck {
		return []*api.AgentServiceCheck{{Name: "tcp", TCP: in.Addr(),
			Interval: interval.String(), Timeout: min(interval, 10*time.Second).String()}}
	}
}

// GRPCCheck runs the standard gRPC health check of service ("" for the whole server)
// on Host:Port every interval, over plain text unless useTLS.
func GRPCCheck(service string, useTLS bool, interval time.Duration) Checks {
	return func(in driver.Instance) []*api.AgentServiceCheck {
		target := in.Addr()
		if service != "" {
			target += "/" + service
		}
		return []*api.AgentServiceCheck{{Name: "grpc " + service, GRPC: target, GRPCUseTLS: useTLS,
			Interval: interval.String(), Timeout: min(interval, 10*time.Second).String()}}
	}
}

// Reserved tags and meta keys.
const (
	tagRegkit      = "regkit"
	tagMetaPrefix  = "regkit-meta="
	tagOwnerPrefix = "regkit-owner="
	metaID         = "regkit-id"
	metaZone       = "zone"
	maxMetaPairs   = 60 // Consul allows 64; two are ours
)

var metaKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// canMeta reports whether a metadata pair can be stored as Consul meta as it is.
func canMeta(k, v string) bool {
	return metaKeyRE.MatchString(k) && k != metaZone && !strings.HasPrefix(k, "consul-") &&
		!strings.HasPrefix(k, "regkit-") && len(v) <= 512
}

// registration builds the agent registration of inst.
func (c *Conn) registration(inst driver.Instance) (*api.AgentServiceRegistration, error) {
	id := c.ServiceID(inst.Service, inst.ID)
	meta := map[string]string{metaID: inst.ID}
	if inst.Zone != "" {
		meta[metaZone] = inst.Zone
	}
	var extra map[string]string
	keys := make([]string, 0, len(inst.Metadata))
	for k := range inst.Metadata {
		keys = append(keys, k)
	}
	// Sorted, so that which pairs overflow does not depend on map order.
	slices.Sort(keys)
	for _, k := range keys {
		v := inst.Metadata[k]
		if canMeta(k, v) && len(meta) < maxMetaPairs+2 {
			meta[k] = v
			continue
		}
		if extra == nil {
			extra = map[string]string{}
		}
		extra[k] = v
	}
	tags := append([]string{tagRegkit, tagOwnerPrefix + c.owner}, c.s.tags...)
	if extra != nil {
		b, err := json.Marshal(extra)
		if err != nil {
			return nil, fmt.Errorf("consul: encode metadata of %s: %w", inst, err)
		}
		tags = append(tags, tagMetaPrefix+string(b))
	}
	checks := api.AgentServiceChecks{{
		CheckID: c.checkID(id), Name: "regkit keep-alive", TTL: c.s.checkTTL.String(), Status: api.HealthPassing,
		DeregisterCriticalServiceAfter: c.s.deregisterAfter.String(),
	}}
	if c.s.checks != nil {
		for _, ch := range c.s.checks(inst) {
			if ch == nil {
				continue
			}
			cp := *ch
			if cp.DeregisterCriticalServiceAfter == "" {
				cp.DeregisterCriticalServiceAfter = c.s.deregisterAfter.String()
			}
			checks = append(checks, &cp)
		}
	}
	return &api.AgentServiceRegistration{
		ID: id, Name: c.ServiceName(inst.Service), Address: inst.Host, Port: inst.Port, Tags: tags, Meta: meta,
		Weights: &api.AgentWeights{Passing: inst.Weight, Warning: 1}, Checks: checks,
	}, nil
}

// Put registers the instance with the agent, with its TTL check passing, and starts
// the keep-alive that passes the check every check_ttl/3.
func (c *Conn) Put(ctx context.Context, inst driver.Instance) (driver.Lease, error) {
	if c.life.Err() != nil {
		return nil, fmt.Errorf("consul: put %s: %w", inst, driver.ErrClosed)
	}
	reg, err := c.registration(inst)
	if err != nil {
		return nil, err
	}
	if err := c.claim(ctx, reg.ID, reg.Name); err != nil {
		return nil, err
	}
	// Replace the checks too: a changed check set must not leave old checks behind.
	// A register cut off mid-flight could still be run by the agent after Remove's
	// deregister: when ctx ends first, it runs on until the agent answers, and
	// Remove waits for it.
	_, err = inflight.Run(ctx, &c.puts, reg.ID, c.spawn, fmt.Errorf("consul: put %s: %w", inst, driver.ErrClosed),
		func() (struct{}, error) {
			rctx, cancel := inflight.Detach(ctx, c.life, inflight.Grace)
			defer cancel()
			return struct{}{}, c.cli.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(rctx))
		})
	if err != nil {
		return nil, wrap("register", reg.ID, err)
	}
	kctx, cancel := context.WithCancel(c.life)
	l := &lease{c: c, serviceID: reg.ID, checkID: c.checkID(reg.ID), cancel: cancel,
		stopped: make(chan struct{})}
	if !c.spawn(func() {
		defer close(l.stopped)
		l.keep(kctx)
	}) {
		cancel()
		close(l.stopped)
		_ = l.Deregister(ctx)
		return nil, fmt.Errorf("consul: put %s: %w", inst, driver.ErrClosed)
	}
	return l, nil
}

// checkID is the ID of the TTL check of service ID id: "<id>:ttl:<owner>". It
// names the owner so that a keep-alive never passes the check of another client
// that took the ID over after ours went critical: the agent answers "unknown
// check" instead, and the registration learns it lost the ID.
func (c *Conn) checkID(id string) string { return id + ":ttl:" + c.owner }

// holder says who holds service ID id on the agent and in the catalog: "" when no
// live registration of another owner does, else a description of that owner. A
// registration is live unless its checks are critical (its TTL passed); one on
// this agent is another owner's unless it carries our owner tag; one on another
// node always is (service IDs are per agent).
func (c *Conn) holder(ctx context.Context, id, name string) (string, error) {
	status, info, err := c.cli.Agent().AgentHealthServiceByIDOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	if info != nil && info.Service != nil && status != api.HealthCritical && !slices.Contains(info.Service.Tags, tagOwnerPrefix+c.owner) {
		return "another client of this agent", nil
	}
	// The agent's node name needs agent:read; without it, an entry of this node
	// is judged by its owner tag like any other.
	node := c.nodeName()
	entries, _, err := c.cli.Health().Service(name, "", false, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Service == nil || e.Service.ID != id || e.Node == nil || (node != "" && e.Node.Node == node) ||
			slices.Contains(e.Service.Tags, tagOwnerPrefix+c.owner) {
			continue
		}
		if e.Checks.AggregatedStatus() != api.HealthCritical {
			return "node " + e.Node.Node, nil
		}
	}
	return "", nil
}

// nodeName returns the agent's node name, read once per Conn (an agent keeps
// its node name for its life; /v1/agent/self is the largest answer an agent
// gives, and every Put would read it); "" while it cannot be read.
func (c *Conn) nodeName() string {
	if p := c.agentNode.Load(); p != nil {
		return *p
	}
	name, err := c.cli.Agent().NodeName()
	if err != nil || name == "" {
		return ""
	}
	c.agentNode.Store(&name)
	return name
}

// claim fails with ErrExists when another live owner holds service ID id (see
// holder). Consul has no compare-and-set for agent services: two clients checking
// at the same moment can both pass (see the package doc, Ownership).
func (c *Conn) claim(ctx context.Context, id, name string) error {
	who, err := c.holder(ctx, id, name)
	if err != nil {
		return wrap("register: check the owner of", id, err)
	}
	if who != "" {
		return fmt.Errorf("consul: register %s: the instance ID is held by another owner (%s): %w", id, who, driver.ErrExists)
	}
	return nil
}

// ours reports whether the agent's registration of service ID id is this Conn's
// (or absent: nothing to protect), so that a deregister never removes the
// registration of a client that took the ID over.
func (c *Conn) ours(ctx context.Context, id string) (bool, error) {
	_, info, err := c.cli.Agent().AgentHealthServiceByIDOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, err
	}
	return info == nil || info.Service == nil || slices.Contains(info.Service.Tags, tagOwnerPrefix+c.owner), nil
}

// lease is the keep-alive of one registration.
type lease struct {
	c                  *Conn
	serviceID, checkID string
	cancel             context.CancelFunc
	stopped            chan struct{}
	// critical: the registration's health check fails (SetHealthy(false)); the
	// keep-alive then reports the TTL check critical instead of passing.
	critical atomic.Bool

	sig driver.LostSignal
}

var _ driver.HealthSetter = (*lease)(nil)

// status is what the keep-alive reports on the TTL check.
func (l *lease) status() string {
	if l.critical.Load() {
		return api.HealthCritical
	}
	return api.HealthPassing
}

// SetHealthy sets the registration's TTL check to critical (unhealthy) or
// passing, at once and on every keep-alive from then on, so that Consul's
// health endpoint (and DNS, and List) report the instance unhealthy. Consul
// counts that time as critical: a check critical for longer than
// deregister_after makes the agent remove the service, the lease is then lost
// and package registry registers it again (passing for the moment until the
// verdict is applied again). Keep deregister_after above the failures you
// expect to last.
func (l *lease) SetHealthy(ctx context.Context, healthy bool) error {
	l.critical.Store(!healthy)
	err := l.c.cli.Agent().UpdateTTLOpts(l.checkID, "regkit health check", l.status(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil && checkGone(err) {
		l.lose(fmt.Errorf("consul: agent no longer knows %s: %w: %w", l.serviceID, driver.ErrSessionLost, err))
	}
	return wrap("set health of", l.serviceID, err)
}

// keep passes the TTL check every check_ttl/3 until ctx is done or the agent no
// longer knows the check.
func (l *lease) keep(ctx context.Context) {
	tick := time.NewTicker(l.c.s.checkTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		uctx, cancel := context.WithTimeout(ctx, l.c.s.checkTTL/3)
		err := l.c.cli.Agent().UpdateTTLOpts(l.checkID, "", l.status(), (&api.QueryOptions{}).WithContext(uctx))
		cancel()
		switch {
		case err == nil, ctx.Err() != nil:
		case checkGone(err):
			l.lose(fmt.Errorf("consul: agent no longer knows %s: %w: %w", l.serviceID, driver.ErrSessionLost, err))
			return
		default:
			l.c.log.Debug("consul: passing the TTL check failed; retrying", "service", l.serviceID, "err", err)
		}
	}
}

// checkGone reports whether an UpdateTTL error says the agent does not know the
// check (it restarted without its state, or the service was deregistered): the
// agent answers 404 "Unknown check ID". Its other refusal, a 500 "does not have
// associated TTL", only comes from a check being replaced at that moment, so it is
// retried like any other error; the next update answers 404 if the check is gone.
func checkGone(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

func (l *lease) lose(err error) { l.sig.Lose(err) }

// Lost is closed when the agent forgot the registration.
func (l *lease) Lost() <-chan struct{} { return l.sig.Lost() }

// Err says why Lost is closed.
func (l *lease) Err() error { return l.sig.Err() }

// Abandon stops the keep-alive.
func (l *lease) Abandon() {
	l.cancel()
	<-l.stopped
}

// Deregister stops the keep-alive and deregisters the service from the agent,
// unless another client's registration holds the service ID now; a service the
// agent does not know is not an error.
func (l *lease) Deregister(ctx context.Context) error {
	l.Abandon()
	if ok, err := l.c.ours(ctx, l.serviceID); err != nil || !ok {
		return wrap("deregister", l.serviceID, err)
	}
	err := l.c.cli.Agent().ServiceDeregisterOpts(l.serviceID, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil
	}
	return wrap("deregister", l.serviceID, err)
}

var _ driver.Remover = (*Conn)(nil)

// Remove deregisters inst's service from the agent, once the agent has answered
// every register of it that an abandoned Put left running, unless another client's
// registration holds the service ID now; a service the agent does not know is not
// an error.
func (c *Conn) Remove(ctx context.Context, inst driver.Instance) error {
	id := c.ServiceID(inst.Service, inst.ID)
	if err := c.puts.Wait(ctx, id); err != nil {
		return wrap("remove", id, err)
	}
	if ok, err := c.ours(ctx, id); err != nil || !ok {
		return wrap("remove", id, err)
	}
	err := c.cli.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil
	}
	return wrap("remove", id, err)
}

// List reads the service's instances through the health endpoint.
func (c *Conn) List(ctx context.Context, service string) (driver.Listing, error) {
	entries, meta, err := c.cli.Health().Service(c.ServiceName(service), "", c.s.passingOnly, c.queryOpts(ctx, 0, true))
	if err != nil {
		return driver.Listing{}, wrap("list", c.where(service), err)
	}
	return c.listing(service, entries, meta)
}

// listing turns one health query's answer into a Listing.
func (c *Conn) listing(service string, entries []*api.ServiceEntry, meta *api.QueryMeta) (driver.Listing, error) {
	if meta.ResultsFilteredByACLs && len(entries) == 0 {
		return driver.Listing{}, fmt.Errorf("consul: list %s: the ACL token may not read any instance of %s: %w",
			service, c.ServiceName(service), driver.ErrPermission)
	}
	out := make([]driver.Instance, 0, len(entries))
	// Service IDs are per agent: two nodes may each hold one ID. A listing has
	// each ID once, the same one for every reader: the healthy entry, then the
	// oldest (least CreateIndex), then the least node name.
	slices.SortStableFunc(entries, func(a, b *api.ServiceEntry) int {
		ah, bh := a.Checks.AggregatedStatus() == api.HealthPassing, b.Checks.AggregatedStatus() == api.HealthPassing
		switch {
		case ah != bh && ah:
			return -1
		case ah != bh:
			return 1
		}
		var ai, bi uint64
		if a.Service != nil {
			ai = a.Service.CreateIndex
		}
		if b.Service != nil {
			bi = b.Service.CreateIndex
		}
		if ai != bi {
			return cmp.Compare(ai, bi)
		}
		var an, bn string
		if a.Node != nil {
			an = a.Node.Node
		}
		if b.Node != nil {
			bn = b.Node.Node
		}
		return strings.Compare(an, bn)
	})
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		in, why := c.instance(service, e)
		if why == "" && seen[in.ID] {
			why = fmt.Sprintf("another entry of the service (a healthier or older one) has instance id %q", in.ID)
		}
		if why != "" {
			id := ""
			if e.Service != nil {
				id = e.Service.ID
			}
			if e.Node != nil {
				id += " on " + e.Node.Node
			}
			c.skipped.Skip(c.ServiceName(service)+" "+id, why)
			continue
		}
		seen[in.ID] = true
		out = append(out, in)
	}
	l := driver.Listing{Instances: out, Revision: meta.LastIndex, NoLeader: noLeader(meta)}
	if c.s.stale {
		l.ReplicaLag = meta.LastContact
	}
	return l, nil
}

// where names a service in errors, with the datacenter when the URL chose one.
func (c *Conn) where(service string) string {
	if c.s.dc == "" {
		return service
	}
	return service + " in datacenter " + c.s.dc
}

// instance maps a health entry to an Instance. The service ID is the truth: an
// entry tagged "regkit" is ours only when its service ID is
// "<consul name>@<id>" and its "regkit-id" meta says the same id, and its
// "regkit-meta=" tags decode; an entry of another Consul client (no "regkit" tag)
// is read with its service ID as ID. Either must then be a valid Instance. why
// (non-empty) says why an entry is skipped.
func (c *Conn) instance(service string, e *api.ServiceEntry) (driver.Instance, string) {
	s := e.Service
	if s == nil {
		return driver.Instance{}, "no service in the health entry"
	}
	in := driver.Instance{ID: s.ID, Service: service, Host: s.Address, Port: s.Port, Weight: s.Weights.Passing,
		Healthy: e.Checks.AggregatedStatus() == api.HealthPassing}
	if in.Host == "" && e.Node != nil {
		in.Host = e.Node.Address
	}
	if in.Weight <= 0 {
		in.Weight = driver.DefaultWeight
	}
	ours := slices.Contains(s.Tags, tagRegkit)
	if ours {
		id, ok := strings.CutPrefix(s.ID, c.ServiceName(service)+"@")
		if !ok || s.Meta[metaID] != id {
			return driver.Instance{}, fmt.Sprintf("a regkit entry whose service ID %q and %s meta %q disagree", s.ID, metaID, s.Meta[metaID])
		}
		in.ID = id
	}
	md := map[string]string{}
	for k, v := range s.Meta {
		switch k {
		case metaID:
		case metaZone:
			in.Zone = v
		default:
			md[k] = v
		}
	}
	for _, t := range s.Tags {
		if js, ok := strings.CutPrefix(t, tagMetaPrefix); ok && ours {
			var extra map[string]string
			if err := json.Unmarshal([]byte(js), &extra); err != nil {
				return driver.Instance{}, "undecodable metadata tag: " + err.Error()
			}
			maps.Copy(md, extra)
		}
	}
	if len(md) > 0 {
		in.Metadata = md
	}
	if err := in.Validate(); err != nil {
		return driver.Instance{}, err.Error()
	}
	return in, ""
}

var _ driver.EventWatcher = (*Conn)(nil)

// SubscribeEvents runs blocking queries on the service's health endpoint, with
// the consistency mode of List, and hands over each answer that changed the
// index as a Reset: the watch's own result, not a second read.
func (c *Conn) SubscribeEvents(service string, fn func(driver.Change)) (func(), error) {
	ctx, cancel := context.WithCancel(c.life)
	var mu sync.Mutex // serialises fn and cancel
	closed := false
	deliver := func(ch driver.Change) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		if ch.Err != nil {
			closed = true
		}
		fn(ch)
	}
	name := c.ServiceName(service)
	var last driver.Change
	var lastErr error
	ok := c.spawn(func() {
		err := c.block(ctx, c.where(service), true, func() {
			if lastErr != nil {
				deliver(driver.Change{Err: lastErr})
				cancel()
				return
			}
			deliver(last)
		}, func(q *api.QueryOptions) (*api.QueryMeta, error) {
			at := time.Now()
			entries, meta, err := c.cli.Health().Service(name, "", c.s.passingOnly, q)
			if err != nil {
				return nil, err
			}
			l, lerr := c.listing(service, entries, meta)
			last, lastErr = driver.Change{Reset: true, Listing: l, Revision: l.Revision, ReadAt: at}, lerr
			return meta, nil
		})
		if ctx.Err() == nil {
			deliver(driver.Change{Err: err})
		}
	})
	if !ok {
		cancel()
		return nil, fmt.Errorf("consul: watch %s: %w", service, driver.ErrClosed)
	}
	return func() {
		cancel()
		mu.Lock()
		closed = true
		mu.Unlock()
	}, nil
}

// Watch runs blocking queries on the service's health endpoint.
func (c *Conn) Watch(ctx context.Context, service string, notify func()) error {
	name := c.ServiceName(service)
	return c.block(ctx, c.where(service), true, notify, func(q *api.QueryOptions) (*api.QueryMeta, error) {
		_, meta, err := c.cli.Health().Service(name, "", c.s.passingOnly, q)
		if err != nil {
			return nil, err
		}
		return meta, nil
	})
}
