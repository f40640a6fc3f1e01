package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/registry/driver"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// record is the JSON stored for an instance.
type record struct {
	ID       string            `json:"id"`
	Service  string            `json:"service"`
	Host     string            `json:"host"`
	Port     int               `json:"port"`
	Weight   int               `json:"weight"`
	Zone     string            `json:"zone,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Healthy is false while a registration's health check fails
	// (registry.MarkUnhealthy); absent means healthy, so records written before
	// it existed, and by other writers, read as healthy.
	Healthy *bool `json:"healthy,omitempty"`
}

func (c *Conn) serviceKey(service string) string {
	if c.layout == LayoutNaming {
		return c.target(service) + "/"
	}
	return c.prefix + "/services/" + service + "/"
}

var _ driver.InstanceChecker = (*Conn)(nil)

// encode returns the key and the JSON record of inst.
func (c *Conn) encode(inst driver.Instance) (string, []byte, error) {
	data, err := json.Marshal(record{ID: inst.ID, Service: inst.Service, Host: inst.Host, Port: inst.Port,
		Weight: inst.Weight, Zone: inst.Zone, Metadata: inst.Metadata})
	if c.layout == LayoutNaming {
		data, err = encodeNaming(inst)
	}
	if err != nil {
		return "", nil, fmt.Errorf("etcd: encode %s: %w: %w", inst, driver.ErrInvalid, err)
	}
	return c.serviceKey(inst.Service) + inst.ID, data, nil
}

// CheckInstance refuses, without I/O, an instance whose put would exceed
// MaxRequestBytes.
func (c *Conn) CheckInstance(inst driver.Instance) error {
	key, data, err := c.encode(inst)
	if err != nil {
		return err
	}
	if n := len(key) + len(data) + requestOverhead; n > MaxRequestBytes {
		return driver.TooLarge(inst, n, MaxRequestBytes, "etcd's request limit")
	}
	return nil
}

// InstanceKey returns the etcd key of instance id of service:
// <prefix>/services/<service>/<id>.
func (c *Conn) InstanceKey(service, id string) string { return c.serviceKey(service) + id }

// Put writes the instance under the shared registration lease, in a transaction
// that writes only if the key is absent or already bound to that lease: a key
// bound to another lease (another client's live registration) or written without
// a lease fails the put with ErrExists (see the package doc, Ownership).
func (c *Conn) Put(ctx context.Context, inst driver.Instance) (driver.Lease, error) {
	key, data, err := c.encode(inst)
	if err != nil {
		return nil, err
	}
	l, err := c.registrationLease(ctx)
	if err != nil {
		return nil, err
	}
	// A put cut off mid-flight could still be applied after Remove's delete: when
	// ctx ends first, the put runs on until etcd answers, and Remove waits for it.
	resp, err := inflight.Run(ctx, &c.puts, key, c.spawnWrite, fmt.Errorf("etcd: put %s: %w", key, driver.ErrClosed),
		func() (*clientv3.TxnResponse, error) {
			pctx, cancel := inflight.Detach(ctx, c.life, inflight.Grace)
			defer cancel()
			return c.ownedPut(pctx, key, string(data), l.id)
		})
	if err != nil {
		l.loseIfGone(err) // the next put grants a new lease
		return nil, wrap("put", key, err)
	}
	owner, ok := putOwner(resp)
	if !ok && owner != 0 && c.isPast(owner) {
		// Bound to a lease this Conn gave up on but etcd still holds: ours.
		resp, err = inflight.Run(ctx, &c.puts, key, c.spawnWrite, fmt.Errorf("etcd: put %s: %w", key, driver.ErrClosed),
			func() (*clientv3.TxnResponse, error) {
				pctx, cancel := inflight.Detach(ctx, c.life, inflight.Grace)
				defer cancel()
				return c.cli.Txn(pctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", owner)).
					Then(clientv3.OpPut(key, string(data), clientv3.WithLease(l.id))).Commit()
			})
		if err != nil {
			l.loseIfGone(err)
			return nil, wrap("put", key, err)
		}
		ok = resp.Succeeded
	}
	if !ok {
		held := "no lease"
		if owner != 0 {
			held = "lease " + strconv.FormatInt(int64(owner), 16)
		}
		return nil, fmt.Errorf("etcd: put %s: the instance ID is held by another owner (%s, ours is lease %s): %w",
			key, held, l.ID(), driver.ErrExists)
	}
	return &regLease{c: c, l: l, key: key, inst: inst}, nil
}

// ownedPut puts value at key bound to lease id if the key is absent or already
// bound to id (a re-put or an update of our own entry), in one transaction: an
// entry bound to another lease (another client's), or written without a lease by
// another program, is left alone. The answer says which (see putOwner). A key
// bound to a lease this Conn gave up on while etcd kept it (Conn.past) is put
// again by Put with a second transaction conditioned on that lease.
func (c *Conn) ownedPut(ctx context.Context, key, value string, id clientv3.LeaseID) (*clientv3.TxnResponse, error) {
	put := clientv3.OpPut(key, value, clientv3.WithLease(id))
	return c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(put).
		Else(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", id)},
			[]clientv3.Op{put}, []clientv3.Op{clientv3.OpGet(key)})).Commit()
}

// putOwner reads ownedPut's answer: ok when the put was applied, else the lease
// the key is bound to (0: written without one; or absent again by now).
func putOwner(resp *clientv3.TxnResponse) (owner clientv3.LeaseID, ok bool) {
	if resp.Succeeded {
		return 0, true
	}
	inner := resp.Responses[0].GetResponseTxn()
	if inner.GetSucceeded() {
		return 0, true
	}
	if rs := inner.GetResponses(); len(rs) > 0 {
		if kvs := rs[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			return clientv3.LeaseID(kvs[0].Lease), false
		}
	}
	return 0, false
}

// isPast reports whether id is a registration lease this Conn gave up on.
func (c *Conn) isPast(id clientv3.LeaseID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.past, id)
}

type regLease struct {
	c    *Conn
	l    *lease
	key  string
	inst driver.Instance
}

var _ driver.HealthSetter = (*regLease)(nil)

// SetHealthy rewrites the instance's record with "healthy": false (or without
// the field, for healthy) under the same lease. The naming layout has no health
// field: ErrNotSupported.
func (r *regLease) SetHealthy(ctx context.Context, healthy bool) error {
	if r.c.layout == LayoutNaming {
		return fmt.Errorf("etcd: set health of %s: the naming layout has no health field: %w", r.key, driver.ErrNotSupported)
	}
	rec := record{ID: r.inst.ID, Service: r.inst.Service, Host: r.inst.Host, Port: r.inst.Port,
		Weight: r.inst.Weight, Zone: r.inst.Zone, Metadata: r.inst.Metadata}
	if !healthy {
		rec.Healthy = &healthy
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("etcd: encode %s: %w: %w", r.inst, driver.ErrInvalid, err)
	}
	// Like Put's: a write cut off mid-flight runs on, and Remove waits for it.
	_, err = inflight.Run(ctx, &r.c.puts, r.key, r.c.spawnWrite, fmt.Errorf("etcd: set health of %s: %w", r.key, driver.ErrClosed),
		func() (*clientv3.PutResponse, error) {
			pctx, cancel := inflight.Detach(ctx, r.c.life, inflight.Grace)
			defer cancel()
			return r.c.cli.Put(pctx, r.key, string(data), clientv3.WithLease(r.l.id))
		})
	if err != nil {
		if lost := r.l.loseIfGone(err); lost != nil {
			return lost
		}
		return wrap("set health of", r.key, err)
	}
	return nil
}

func (r *regLease) Lost() <-chan struct{} { return r.l.Done() }
func (r *regLease) Err() error            { return r.l.Err() }
func (r *regLease) Abandon()              {}

// Deregister deletes the key if it is bound to this registration's lease or to
// the connection's live registration lease (a retried put may have gone through
// under it); a key another client now owns is left alone.
func (r *regLease) Deregister(ctx context.Context) error {
	ids := []clientv3.LeaseID{r.l.id}
	r.c.mu.Lock()
	if cur := r.c.reg; cur != nil && cur.id != r.l.id {
		ids = append(ids, cur.id)
	}
	r.c.mu.Unlock()
	for _, id := range ids {
		_, err := r.c.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", id)).
			Then(clientv3.OpDelete(r.key)).Commit()
		if err != nil {
			return wrap("delete", r.key, err)
		}
	}
	return nil
}

// decodeInstance reads the value of key <prefix>/services/<service>/<id> (id is
// the rest of the key after the service's prefix). The key is the truth: the
// instance's service and ID are the key's; a nested key, an undecodable value, a
// record naming another service or ID, or one that is not a valid Instance is not
// an instance, and why says so.
func decodeInstance(service, id string, value []byte) (driver.Instance, string) {
	if err := driver.ValidInstanceID(id); err != nil {
		return driver.Instance{}, "the key is not <prefix>/services/<service>/<id>: " + err.Error()
	}
	var r record
	if err := json.Unmarshal(value, &r); err != nil {
		return driver.Instance{}, "undecodable: " + err.Error()
	}
	if r.ID != id || r.Service != service {
		return driver.Instance{}, fmt.Sprintf("the record names service %q, id %q, not its key's", r.Service, r.ID)
	}
	in := driver.Instance{ID: id, Service: service, Host: r.Host, Port: r.Port,
		Weight: r.Weight, Zone: r.Zone, Metadata: r.Metadata, Healthy: r.Healthy == nil || *r.Healthy}
	if err := in.Validate(); err != nil {
		return driver.Instance{}, err.Error()
	}
	return in, ""
}

// List reads every instance of service: the keys of the exact shape
// <prefix>/services/<service>/<id> holding a valid record of that service and ID.
// Anything else is skipped, and logged once per key.
//
// The read requires a leader, so a member without one refuses it at once, and one
// attempt lasts at most ListTimeout: a linearizable read stuck in a cluster that
// lost its quorum fails as registry.ErrUnavailable (the watch loop then marks the
// view stale) instead of holding the loop for the caller's whole timeout.
func (c *Conn) List(ctx context.Context, service string) (driver.Listing, error) {
	lctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), ListTimeout)
	resp, err := c.cli.Get(lctx, c.serviceKey(service), clientv3.WithPrefix())
	cancel()
	if err != nil {
		if ctx.Err() == nil && lctx.Err() != nil {
			return driver.Listing{}, fmt.Errorf("etcd: list %s: no answer within %v: %w: %w", service, ListTimeout, driver.ErrUnavailable, err)
		}
		return driver.Listing{}, wrap("list", service, err)
	}
	prefix := c.serviceKey(service)
	out := make([]driver.Instance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if c.layout == LayoutNaming {
			if in, ok := c.decodeNaming(service, kv); ok {
				out = append(out, in)
			}
			continue
		}
		in, why := decodeInstance(service, strings.TrimPrefix(string(kv.Key), prefix), kv.Value)
		if why != "" {
			c.skipped.Skip(string(kv.Key), why)
			continue
		}
		out = append(out, in)
	}
	return driver.Listing{Instances: out, Revision: uint64(resp.Header.Revision)}, nil
}

// Watch follows the service's prefix.
func (c *Conn) Watch(ctx context.Context, service string, notify func()) error {
	return c.watchPrefix(ctx, c.serviceKey(service), notify)
}

// watchPrefix runs one etcd watch over a prefix; the client resumes it from the
// last revision after reconnects. It requires a leader, so a member cut off from
// the cluster breaks the watch instead of going silent.
func (c *Conn) watchPrefix(ctx context.Context, prefix string, notify func()) error {
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	// The client waits silently for a lost connection to come back, even while
	// arming a watch; a monitor breaks the watch when the connection is down, so
	// the view is marked stale and re-listed after the gap.
	var wg sync.WaitGroup
	defer func() {
		cancel(nil) // stops the monitor; it must come before the wait
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.monitorConnection(wctx, func() {
			cancel(fmt.Errorf("etcd: watch %s: connection lost: %w", prefix, driver.ErrUnavailable))
		})
	}()
	ch := c.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-ch:
		case <-wctx.Done():
			// The client closes ch only once its shared watch stream runs again,
			// which it keeps retrying while the member has no leader: do not wait
			// for it, or the view would not be marked stale before the cluster
			// recovers (ch is the client's; it closes it when it can).
			ok = false
		}
		if !ok {
			break
		}
		if resp.CompactRevision != 0 {
			// Resumed below the compaction point: the events in between are gone.
			// Returning makes package registry re-list, diff and mark the view resynced.
			return fmt.Errorf("etcd: watch %s: history compacted at revision %d: %w", prefix, resp.CompactRevision, resp.Err())
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("etcd: watch %s: %w: %w", prefix, driver.ErrUnavailable, err)
		}
		if resp.Created || len(resp.Events) > 0 {
			notify()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cause := context.Cause(wctx); cause != nil && cause != context.Canceled {
		return cause
	}
	return fmt.Errorf("etcd: watch %s closed: %w", prefix, driver.ErrUnavailable)
}

// ProbeInterval is how often a watch checks that its member still has a leader
// (and that the connection answers), and how long it waits for the answer. Two
// failed checks in a row break every watch of the connection, so a watcher's view
// is marked stale at most StaleBound after the cluster stops serving reads.
const ProbeInterval = time.Second

// ListTimeout bounds one List attempt (see List).
const ListTimeout = 3 * time.Second

// StaleBound is the longest a watcher's view goes unmarked after the member it
// reads from stops answering or loses its leader: a list in flight gives up after
// ListTimeout, a broken watch is noticed within two probes plus the member's own
// election timeout (1s by default), and the loop publishes the stale view at once.
const StaleBound = 5 * time.Second

// monitorConnection calls lost once the connection has failed two checks in a
// row, ProbeInterval apart: the gRPC connection is down, or a serializable
// count-only read that requires a leader fails or does not answer within
// ProbeInterval (a member without a leader refuses it at once; a silent
// partition lets it time out long before gRPC's keep-alive notices). It returns
// then or when ctx is done.
func (c *Conn) monitorConnection(ctx context.Context, lost func()) {
	tick := time.NewTicker(ProbeInterval)
	defer tick.Stop()
	bad := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var err error
		switch st := c.cli.ActiveConnection().GetState(); st {
		case connectivity.TransientFailure, connectivity.Connecting, connectivity.Idle, connectivity.Shutdown:
			err = fmt.Errorf("connection %v", st)
		default:
			pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), ProbeInterval)
			_, err = c.cli.Get(pctx, c.prefix+"/", clientv3.WithCountOnly(), clientv3.WithSerializable())
			cancel()
			if ctx.Err() != nil {
				return
			}
		}
		c.setHealth(err)
		if err == nil {
			bad = 0
			continue
		}
		if bad++; bad >= 2 {
			lost()
			return
		}
	}
}

// setHealth records the last probe's outcome for Health and, when the verdict
// changed, signals HealthChanged.
func (c *Conn) setHealth(err error) {
	if err != nil {
		err = fmt.Errorf("etcd: %w: %w", driver.ErrUnavailable, err)
	}
	prev := c.health.Swap(&healthState{err: err})
	if prev == nil || (prev.err == nil) != (err == nil) {
		c.healthMu.Lock()
		if c.healthCh != nil {
			close(c.healthCh)
			c.healthCh = nil
		}
		c.healthMu.Unlock()
	}
}

type healthState struct{ err error }

// HealthChanged returns a channel closed when a probe's verdict differs from the
// previous one (connection or leader lost, or back).
func (c *Conn) HealthChanged() <-chan struct{} {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	if c.healthCh == nil {
		c.healthCh = make(chan struct{})
	}
	return c.healthCh
}

var _ driver.Health = (*Conn)(nil)

// Health reports whether the client's connection is up and, while a watch runs
// (which probes every ProbeInterval), whether its last probe found a member with
// a leader: nil, or an error matching registry.ErrUnavailable.
func (c *Conn) Health() error {
	switch st := c.cli.ActiveConnection().GetState(); st {
	case connectivity.TransientFailure, connectivity.Connecting, connectivity.Shutdown:
		return fmt.Errorf("etcd: connection %v: %w", st, driver.ErrUnavailable)
	}
	if h := c.health.Load(); h != nil {
		return h.err
	}
	return nil
}

var _ driver.Remover = (*Conn)(nil)

// Remove deletes inst's key if it is bound to the live registration lease (a key
// bound to an earlier lease goes with that lease), once etcd has answered every put
// of it that an abandoned Put left running, so that none is applied after the delete.
func (c *Conn) Remove(ctx context.Context, inst driver.Instance) error {
	key := c.serviceKey(inst.Service) + inst.ID
	if err := c.puts.Wait(ctx, key); err != nil {
		return wrap("remove", key, err)
	}
	c.mu.Lock()
	l := c.reg
	c.mu.Unlock()
	if l == nil || l.Err() != nil {
		return nil
	}
	_, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", l.id)).
		Then(clientv3.OpDelete(key)).Commit()
	return wrap("remove", key, err)
}

// spawnWrite runs f on a goroutine Close waits for, or reports false once the Conn
// is closing.
func (c *Conn) spawnWrite(f func()) bool { return c.writes.Go(f) }
