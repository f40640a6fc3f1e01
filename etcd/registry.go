package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/registry/driver"
	clientv3 "go.etcd.io/etcd/client/v3"
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

// Put writes the instance under the shared registration lease.
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
	_, err = inflight.Run(ctx, &c.puts, key, c.spawnWrite, fmt.Errorf("etcd: put %s: %w", key, driver.ErrClosed),
		func() (*clientv3.PutResponse, error) {
			pctx, cancel := inflight.Detach(ctx, c.life, inflight.Grace)
			defer cancel()
			return c.cli.Put(pctx, key, string(data), clientv3.WithLease(l.id))
		})
	if err != nil {
		l.loseIfGone(err) // the next put grants a new lease
		return nil, wrap("put", key, err)
	}
	return &regLease{c: c, l: l, key: key}, nil
}

type regLease struct {
	c   *Conn
	l   *lease
	key string
}

func (r *regLease) Lost() <-chan struct{} { return r.l.Done() }
func (r *regLease) Err() error            { return r.l.Err() }
func (r *regLease) Abandon()              {}

func (r *regLease) Deregister(ctx context.Context) error {
	_, err := r.c.cli.Delete(ctx, r.key)
	return wrap("delete", r.key, err)
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
		Weight: r.Weight, Zone: r.Zone, Metadata: r.Metadata, Healthy: true}
	if err := in.Validate(); err != nil {
		return driver.Instance{}, err.Error()
	}
	return in, ""
}

// List reads every instance of service: the keys of the exact shape
// <prefix>/services/<service>/<id> holding a valid record of that service and ID.
// Anything else is skipped, and logged once per key.
func (c *Conn) List(ctx context.Context, service string) (driver.Listing, error) {
	resp, err := c.cli.Get(ctx, c.serviceKey(service), clientv3.WithPrefix())
	if err != nil {
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
	for resp := range ch {
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
