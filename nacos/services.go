package nacos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

var _ driver.ServiceLister = (*Conn)(nil)

// servicePage is the page size of the service list.
const servicePage = 500

// Services lists the URL's group in its namespace with the v1 service list
// (GET /v1/ns/service/list, page by page), then keeps the services that have at
// least one instance: Nacos keeps an emptied service until its cleaner removes it,
// so each name is listed (at most 8 at a time). A server without the v1 API
// (Nacos 3.2) answers ErrNotSupported.
func (c *Conn) Services(ctx context.Context) ([]string, error) {
	var names []string
	for page := 1; ; page++ {
		f := url.Values{"namespaceId": {c.o.namespace}, "groupName": {c.o.group},
			"pageNo": {strconv.Itoa(page)}, "pageSize": {strconv.Itoa(servicePage)}}
		b, err := c.do(ctx, http.MethodGet, "/v1/ns/service/list", f, false)
		if isGone(err) {
			return nil, fmt.Errorf("nacos: services: this server has no v1 service list: %w", driver.ErrNotSupported)
		}
		if err != nil {
			return nil, wrap("services", err)
		}
		var a struct {
			Count int      `json:"count"`
			Doms  []string `json:"doms"`
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return nil, wrap("services", fmt.Errorf("bad answer %q: %w", b, err))
		}
		for _, d := range a.Doms {
			d = strings.TrimPrefix(d, c.o.group+"@@")
			if driver.ValidServiceName(d) == nil {
				names = append(names, d)
			}
		}
		if len(a.Doms) < servicePage || page*servicePage >= a.Count {
			break
		}
	}
	keep := make([]bool, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l, err := c.read(ctx, n)
			keep[i], errs[i] = len(l.hosts) > 0, err
		}()
	}
	wg.Wait()
	out := names[:0:0]
	for i, n := range names {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if keep[i] {
			out = append(out, n)
		}
	}
	c.mu.Lock()
	if set, ok := c.listed[servicesKey]; ok {
		set[servicesFingerprint(out)] = struct{}{}
	}
	c.mu.Unlock()
	return out, nil
}

// servicesKey is the key of the service list among the watched services (it is
// not a valid service name, so it cannot collide with one).
const servicesKey = "\x00services"

// servicesFingerprint identifies a set of service names, whatever their order.
func servicesFingerprint(names []string) string {
	s := slices.Clone(names)
	slices.Sort(s)
	return strings.Join(s, "\x00")
}

// WatchServices polls Services every poll_interval (±10%) and notifies when the
// set changed. Like Watch, it also notifies when a Services call since the
// previous poll read another set than the one polled now: package registry
// re-lists after a notify, and may read an intermediate set (A, then B read by
// the re-list, then A again) that the poller never saw; without this the return
// to A would look like no change and the watcher would keep B.
func (c *Conn) WatchServices(ctx context.Context, notify func()) error {
	defer c.watching(servicesKey)()
	var last string
	first := true
	for {
		names, err := c.Services(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		fp := servicesFingerprint(names)
		if other := c.listedOtherThan(servicesKey, fp); first || fp != last || other {
			notify()
		}
		first, last = false, fp
		t := time.NewTimer(time.Duration(float64(c.o.pollInterval) * (0.9 + 0.2*rand.Float64())))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-c.life.Done():
			t.Stop()
			return driver.ErrClosed
		case <-t.C:
		}
	}
}
