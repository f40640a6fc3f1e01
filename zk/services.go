package zk

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry/driver"
)

var _ driver.ServiceLister = (*Conn)(nil)

// servicesRoot returns the node whose children are the services of the
// connection's layout (<chroot>/services, Curator's base path, Dubbo's group) and
// what follows a service's name in its instance directory ("" or "/providers").
func (c *Conn) servicesRoot() (root, suffix string) {
	const probe = "\x00"
	dir := c.codec().dir(probe)
	i := strings.LastIndex(dir, "/"+probe)
	return dir[:i], dir[i+len(probe)+1:]
}

// Services returns the children of the layout's services node (Curator's
// queryForNames) that have at least one instance node, each checked with an
// exists call (at most 16 at a time).
func (c *Conn) Services(ctx context.Context) ([]string, error) {
	root, suffix := c.servicesRoot()
	kids, err := call(ctx, c, func() ([]string, error) {
		kids, _, err := c.zc.zk.Children(root)
		return kids, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("services", root, err)
	}
	keep := make([]bool, len(kids))
	errs := make([]error, len(kids))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, k := range kids {
		if driver.ValidServiceName(k) != nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st, err := c.exists(ctx, root+"/"+k+suffix)
			if errors.Is(err, zk.ErrNoNode) {
				return
			}
			keep[i], errs[i] = err == nil && st.NumChildren > 0, err
		}()
	}
	wg.Wait()
	var out []string
	for i, k := range kids {
		if errs[i] != nil {
			return nil, wrap("services", root+"/"+k+suffix, errs[i])
		}
		if keep[i] {
			out = append(out, k)
		}
	}
	return out, nil
}

// WatchServices follows the services node down to the instance directories.
func (c *Conn) WatchServices(ctx context.Context, notify func()) error {
	root, suffix := c.servicesRoot()
	return c.watchTree(ctx, root, 2+strings.Count(suffix, "/"), notify)
}
