package etcd

import (
	"context"
	"strings"

	"github.com/regkit/regkit/registry/driver"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var _ driver.ServiceLister = (*Conn)(nil)

// servicesPrefix is the prefix every instance key is under.
func (c *Conn) servicesPrefix() string { return c.prefix + "/services/" }

// Services reads the keys (only) under <prefix>/services/ and returns the service
// segment of each.
func (c *Conn) Services(ctx context.Context) ([]string, error) {
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
	return c.watchPrefix(ctx, c.servicesPrefix(), notify)
}
