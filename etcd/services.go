package etcd

import (
	"context"
	"fmt"
	"strings"

	"github.com/regkit/regkit/registry/driver"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var _ driver.ServiceLister = (*Conn)(nil)

// servicesPrefix is the prefix every instance key is under.
func (c *Conn) servicesPrefix() string {
	if c.layout == LayoutNaming {
		return c.targetPrefix + "/"
	}
	return c.prefix + "/services/"
}

// listable reports whether the services can be told from the keys: with
// layout=naming and no target_prefix, targets sit at the top of the keyspace
// beside everything else, so they cannot.
func (c *Conn) listable() error {
	if c.layout == LayoutNaming && c.targetPrefix == "" {
		return fmt.Errorf("etcd: services with layout=naming and no target_prefix: %w", driver.ErrNotSupported)
	}
	return nil
}

// Services reads the keys (only) under <prefix>/services/ (layout=naming:
// <target_prefix>/; ErrNotSupported without a target_prefix) and returns the service
// segment of each.
func (c *Conn) Services(ctx context.Context) ([]string, error) {
	if err := c.listable(); err != nil {
		return nil, err
	}
	resp, err := c.cli.Get(ctx, c.servicesPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, wrap("services", c.servicesPrefix(), err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), c.servicesPrefix())
		if svc, _, ok := strings.Cut(rest, "/"); ok && driver.ValidServiceName(svc) == nil &&
			(len(out) == 0 || out[len(out)-1] != svc) {
			out = append(out, svc)
		}
	}
	return out, nil
}

// WatchServices follows the whole services prefix.
func (c *Conn) WatchServices(ctx context.Context, notify func()) error {
	if err := c.listable(); err != nil {
		return err
	}
	return c.watchPrefix(ctx, c.servicesPrefix(), notify)
}
