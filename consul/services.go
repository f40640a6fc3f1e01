package consul

import (
	"context"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/registry/driver"
)

var _ driver.ServiceLister = (*Conn)(nil)

// Services reads the catalog's service list (GET /v1/catalog/services, in the
// URL's dc, stale as discovery is): with a namespace, the services named
// "<namespace>-<service>", with the prefix removed; without one, every service
// but Consul's own "consul". Names that are not valid registry service names are
// left out. The catalog lists a service while it has an instance, passing or not.
func (c *Conn) Services(ctx context.Context) ([]string, error) {
	m, _, err := c.cli.Catalog().Services(c.queryOpts(ctx, 0, true))
	if err != nil {
		return nil, wrap("services", "", err)
	}
	return c.serviceNames(m), nil
}

func (c *Conn) serviceNames(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for name := range m {
		if c.s.namespace != "" {
			var ok bool
			if name, ok = strings.CutPrefix(name, c.ServiceName("")); !ok {
				continue
			}
		} else if name == "consul" {
			continue
		}
		if driver.ValidServiceName(name) == nil {
			out = append(out, name)
		}
	}
	return out
}

// WatchServices runs blocking queries on the catalog's service list.
func (c *Conn) WatchServices(ctx context.Context, notify func()) error {
	return c.block(ctx, "services", true, notify, func(q *api.QueryOptions) (*api.QueryMeta, error) {
		_, meta, err := c.cli.Catalog().Services(q)
		if err != nil {
			return nil, err
		}
		return meta, nil
	})
}
