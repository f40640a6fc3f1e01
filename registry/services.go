package registry

import (
	"context"
	"fmt"
	"slices"

	"github.com/regkit/regkit/registry/driver"
)

// Services returns the sorted names of the services that have at least one
// registered instance, healthy or not, as the backend lists them (Curator's
// queryForNames, Consul's catalog, Nacos's service list); see each backend's
// package doc for where the names come from. A backend that cannot list services
// fails with ErrNotSupported.
func (c *Client) Services(ctx context.Context) ([]string, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: services: %w", err)
	}
	sl, ok := c.conn.(driver.ServiceLister)
	if !ok {
		return nil, fmt.Errorf("registry: services: %w", ErrNotSupported)
	}
	names, err := sl.Services(ctx)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
