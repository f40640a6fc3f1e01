package nacos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// Nacos answer codes the driver acts on.
const (
	codeOK              = 10200 // v1 beat: instance known
	codeNotFound        = 20404 // v1 beat: instance unknown, register again
	codeInstanceMissing = 21003 // v3 heartBeat: instance unknown, register again
)

// host is one instance as Nacos lists it (v1 hosts[] and v3 data[]).
type host struct {
	InstanceID  string            `json:"instanceId"`
	IP          string            `json:"ip"`
	Port        int               `json:"port"`
	Weight      float64           `json:"weight"`
	Healthy     bool              `json:"healthy"`
	Enabled     *bool             `json:"enabled"`
	Ephemeral   bool              `json:"ephemeral"`
	ClusterName string            `json:"clusterName"`
	ServiceName string            `json:"serviceName"`
	Metadata    map[string]string `json:"metadata"`
}

// v1List is the answer of GET /v1/ns/instance/list.
type v1List struct {
	Hosts                    []host `json:"hosts"`
	CacheMillis              int64  `json:"cacheMillis"`
	ReachProtectionThreshold bool   `json:"reachProtectionThreshold"`
}

// v3Result is the envelope of every v3 answer.
type v3Result struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// rawList is one read of a service before conversion.
type rawList struct {
	hosts       []host
	cacheMillis time.Duration
	protect     bool
}

// nacosWeight maps our integer weight to Nacos's float scale (ours/100, capped).
func nacosWeight(w int) string {
	f := float64(w) / 100
	if f > 10000 {
		f = 10000
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func (c *Conn) clusterOf(inst driver.Instance) string {
	if inst.Zone != "" {
		return inst.Zone
	}
	return c.o.cluster
}

// metadataJSON is the metadata sent for inst: its own plus the id, the exact
// weight and this Conn's owner token.
func (c *Conn) metadataJSON(inst driver.Instance) string {
	m := make(map[string]string, len(inst.Metadata)+3)
	for k, v := range inst.Metadata {
		m[k] = v
	}
	m[MetaID] = inst.ID
	m[MetaWeight] = strconv.Itoa(inst.Weight)
	m[MetaOwner] = c.owner
	b, _ := json.Marshal(m)
	return string(b)
}

// instanceForm is the form of a v1 or v3 register, deregister or v3 heartbeat.
func (c *Conn) instanceForm(api string, inst driver.Instance) url.Values {
	f := url.Values{
		"namespaceId": {c.o.namespace},
		"groupName":   {c.o.group},
		"ip":          {inst.Host},
		"port":        {strconv.Itoa(inst.Port)},
		"clusterName": {c.clusterOf(inst)},
		"weight":      {nacosWeight(inst.Weight)},
		"enabled":     {"true"},
		"healthy":     {"true"},
		"ephemeral":   {strconv.FormatBool(c.o.ephemeral)},
		"metadata":    {c.metadataJSON(inst)},
	}
	if api == APIV3 {
		f.Set("serviceName", inst.Service)
	} else {
		f.Set("serviceName", c.serviceName(inst.Service))
	}
	return f
}

// checkV3 reads a v3 envelope and returns an error when its code is not 0.
func checkV3(b []byte) (v3Result, error) {
	var r v3Result
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("bad answer %q: %w", b, err)
	}
	if r.Code != 0 {
		return r, fmt.Errorf("code %d: %s", r.Code, r.Message)
	}
	return r, nil
}

// register puts inst on the server once.
func (c *Conn) register(ctx context.Context, api string, inst driver.Instance) error {
	switch api {
	case APIV3:
		b, err := c.do(ctx, http.MethodPost, "/v3/client/ns/instance", c.instanceForm(api, inst), false)
		if err != nil {
			c.gone(err)
			return err
		}
		_, err = checkV3(b)
		return err
	default:
		_, err := c.do(ctx, http.MethodPost, "/v1/ns/instance", c.instanceForm(api, inst), false)
		c.gone(err)
		return err
	}
}

// deregister deletes inst from the server.
func (c *Conn) deregister(ctx context.Context, api string, inst driver.Instance) error {
	f := c.instanceForm(api, inst)
	f.Del("metadata")
	f.Del("weight")
	f.Del("enabled")
	f.Del("healthy")
	path := "/v1/ns/instance"
	if api == APIV3 {
		path = "/v3/client/ns/instance"
	}
	b, err := c.do(ctx, http.MethodDelete, path, f, false)
	if err != nil {
		c.gone(err)
		return err
	}
	if api == APIV3 {
		_, err = checkV3(b)
	}
	return err
}

// beat renews inst once. It reports whether the server said the instance is
// unknown, and the server's beat interval (0 when it gave none).
func (c *Conn) beat(ctx context.Context, api string, inst driver.Instance) (unknown bool, interval time.Duration, err error) {
	if api == APIV3 {
		f := c.instanceForm(api, inst)
		f.Set("heartBeat", "true")
		b, err := c.do(ctx, http.MethodPost, "/v3/client/ns/instance", f, false)
		if err != nil {
			c.gone(err)
			return false, 0, err
		}
		r, err := checkV3(b)
		if r.Code == codeInstanceMissing {
			return true, 0, nil
		}
		return false, 0, err
	}
	meta := map[string]string{}
	_ = json.Unmarshal([]byte(c.metadataJSON(inst)), &meta)
	w, _ := strconv.ParseFloat(nacosWeight(inst.Weight), 64)
	beat, _ := json.Marshal(map[string]any{
		"serviceName": c.serviceName(inst.Service), "ip": inst.Host, "port": inst.Port,
		"cluster": c.clusterOf(inst), "weight": w, "metadata": meta, "scheduled": true,
	})
	f := url.Values{
		"namespaceId": {c.o.namespace},
		"serviceName": {c.serviceName(inst.Service)},
		"groupName":   {c.o.group},
		"beat":        {string(beat)},
	}
	b, err := c.do(ctx, http.MethodPut, "/v1/ns/instance/beat", f, false)
	if err != nil {
		c.gone(err)
		return false, 0, err
	}
	var a struct {
		Code               int   `json:"code"`
		ClientBeatInterval int64 `json:"clientBeatInterval"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return false, 0, fmt.Errorf("bad beat answer %q: %w", b, err)
	}
	return a.Code == codeNotFound, time.Duration(a.ClientBeatInterval) * time.Millisecond, nil
}

// listRaw reads service with the given API.
func (c *Conn) listRaw(ctx context.Context, api, service string) (rawList, error) {
	if api == APIV3 {
		f := url.Values{"namespaceId": {c.o.namespace}, "groupName": {c.o.group}, "serviceName": {service}}
		b, err := c.do(ctx, http.MethodGet, "/v3/client/ns/instance/list", f, false)
		if err != nil {
			return rawList{}, err
		}
		r, err := checkV3(b)
		if err != nil {
			return rawList{}, err
		}
		var hosts []host
		if len(r.Data) > 0 && string(r.Data) != "null" {
			if err := json.Unmarshal(r.Data, &hosts); err != nil {
				return rawList{}, fmt.Errorf("bad list answer %q: %w", b, err)
			}
		}
		return rawList{hosts: hosts}, nil
	}
	f := url.Values{"namespaceId": {c.o.namespace}, "serviceName": {c.serviceName(service)},
		"groupName": {c.o.group}, "healthyOnly": {"false"}}
	b, err := c.do(ctx, http.MethodGet, "/v1/ns/instance/list", f, false)
	if err != nil {
		return rawList{}, err
	}
	var l v1List
	if err := json.Unmarshal(b, &l); err != nil {
		return rawList{}, fmt.Errorf("bad list answer %q: %w", b, err)
	}
	return rawList{hosts: l.Hosts, cacheMillis: time.Duration(l.CacheMillis) * time.Millisecond,
		protect: l.ReachProtectionThreshold}, nil
}

// read lists service with the current API and remembers its cacheMillis.
func (c *Conn) read(ctx context.Context, service string) (rawList, error) {
	api, err := c.currentAPI(ctx)
	if err != nil {
		return rawList{}, err
	}
	l, err := c.listRaw(ctx, api, service)
	if err != nil {
		c.gone(err)
		return rawList{}, wrap("list "+service, err)
	}
	c.mu.Lock()
	c.cacheMs[service] = l.cacheMillis
	c.mu.Unlock()
	return l, nil
}

func (c *Conn) cacheMillis(service string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cacheMs[service]
}

// convert turns a Nacos host into an Instance (see the package doc, Data layout),
// or says why it is not a valid one.
func convert(service string, h host) (driver.Instance, string) {
	in := driver.Instance{Service: service, Host: h.IP, Port: h.Port, Healthy: h.Healthy}
	if h.ClusterName != DefaultCluster {
		in.Zone = h.ClusterName
	}
	in.Weight = int(math.Round(h.Weight * 100))
	for k, v := range h.Metadata {
		switch {
		case k == MetaID:
			in.ID = v
		case k == MetaOwner:
		case k == MetaWeight:
			if w, err := strconv.Atoi(v); err == nil && w >= 0 {
				in.Weight = w
			}
		case strings.HasPrefix(k, "internal-nacos-"):
		default:
			if in.Metadata == nil {
				in.Metadata = map[string]string{}
			}
			in.Metadata[k] = v
		}
	}
	if in.ID == "" {
		in.ID = net.JoinHostPort(h.IP, strconv.Itoa(h.Port))
	}
	if err := in.Validate(); err != nil {
		return driver.Instance{}, err.Error()
	}
	return in, ""
}

// toListing converts a read; hosts that are not valid instances (a missing ip or
// port, an ID in regkit.id that the registry would refuse, a bad cluster name) are
// skipped and logged once per ip:port#cluster. Of several hosts whose regkit.id
// names one ID (another client's entry claiming it, or two owners that raced
// past Put's ownership check), the healthy one, then the one with the least
// ip:port#cluster, is the instance, so that a listing has each ID once and every
// reader picks the same one; the others are skipped.
func (c *Conn) toListing(service string, l rawList) driver.Listing {
	out := driver.Listing{ProtectThreshold: l.protect, Instances: make([]driver.Instance, 0, len(l.hosts))}
	key := func(h host) string { return net.JoinHostPort(h.IP, strconv.Itoa(h.Port)) + "#" + h.ClusterName }
	hosts := slices.Clone(l.hosts)
	slices.SortStableFunc(hosts, func(a, b host) int {
		if a.Healthy != b.Healthy {
			if a.Healthy {
				return -1
			}
			return 1
		}
		return strings.Compare(key(a), key(b))
	})
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		in, why := convert(service, h)
		if why == "" && seen[in.ID] {
			why = fmt.Sprintf("another entry of the service has instance id %q", in.ID)
		}
		if why != "" {
			c.skipped.Skip(c.serviceName(service)+" "+key(h), why)
			continue
		}
		seen[in.ID] = true
		out.Instances = append(out.Instances, in)
	}
	return out
}

// List reads every instance of service, healthy or not. While a Watch of the
// service runs, it records what it read for the poller (see Watch).
func (c *Conn) List(ctx context.Context, service string) (driver.Listing, error) {
	l, err := c.read(ctx, service)
	if err != nil {
		return driver.Listing{}, err
	}
	out := c.toListing(service, l)
	c.mu.Lock()
	if set, ok := c.listed[service]; ok {
		set[fingerprint(out)] = struct{}{}
	}
	c.mu.Unlock()
	return out, nil
}

// watching registers a poller of service; the returned func unregisters it.
func (c *Conn) watching(service string) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watchers[service] == 0 {
		c.listed[service] = map[string]struct{}{}
	}
	c.watchers[service]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.watchers[service]--
		if c.watchers[service] == 0 {
			delete(c.watchers, service)
			delete(c.listed, service)
		}
	}
}

// listedOtherThan reports whether a List since the last call read a state other
// than fp, and forgets what was read.
func (c *Conn) listedOtherThan(service, fp string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	set := c.listed[service]
	other := false
	for f := range set {
		if f != fp {
			other = true
		}
		delete(set, f)
	}
	return other
}

// fingerprint is a digest of a listing's content, independent of order.
func fingerprint(l driver.Listing) string {
	list := slices.Clone(l.Instances)
	driver.SortInstances(list)
	h := sha256.New()
	_ = json.NewEncoder(h).Encode(struct {
		I []driver.Instance
		P bool
	}{list, l.ProtectThreshold})
	return hex.EncodeToString(h.Sum(nil))
}

// Watch polls service every max(cacheMillis, poll_interval), jittered, and
// notifies once armed and whenever the fingerprint of the list changes. A failed
// poll ends it with the error.
//
// It also notifies when a List since the previous poll read a state other than
// the one polled now: package registry may have listed an intermediate state the
// poller never saw (A, then B listed after a notify, then A again), and without
// this the return to A would look like no change.
func (c *Conn) Watch(ctx context.Context, service string, notify func()) error {
	defer c.watching(service)()
	var last string
	first := true
	for {
		l, err := c.read(ctx, service)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		fp := fingerprint(c.toListing(service, l))
		if other := c.listedOtherThan(service, fp); first || fp != last || other {
			notify()
		}
		first, last = false, fp
		d := max(c.o.pollInterval, l.cacheMillis)
		d = time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
		t := time.NewTimer(d)
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
