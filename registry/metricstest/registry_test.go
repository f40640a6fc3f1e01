package metricstest_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/cache"
)

// Credentials given to the metric tests' Clients; no attribute may hold them.
const (
	metricUser     = "metrics-alice"
	metricPassword = "hunter2-s3cr3t"
)

// meterT is an SDK MeterProvider with a ManualReader, and what was logged.
type meterT struct {
	t      *testing.T
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	logs   *syncBuffer
}

func newMeterT(t *testing.T) *meterT {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return &meterT{t: t, reader: reader, mp: mp, logs: &syncBuffer{}}
}

// open opens a Client on a fresh mem server, with credentials in the URL and in
// WithCredentials, the test's MeterProvider and a logger writing to m.logs.
func (m *meterT) open() (*registry.Client, *mem.Server) {
	name := fmt.Sprintf("metrics-%s-%d", m.t.Name(), time.Now().UnixNano())
	c, err := registry.Open(context.Background(), "mem://"+metricUser+":"+metricPassword+"@"+name,
		registry.WithCredentials(metricUser, metricPassword),
		registry.WithMeterProvider(m.mp),
		registry.WithLogger(slog.New(slog.NewTextHandler(m.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		registry.WithRetryBackoff(5*time.Millisecond, 100*time.Millisecond),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { c.Close() })
	srvNames.Store(c, name)
	return c, mem.Lookup(name)
}

var srvNames sync.Map // *registry.Client: the name of its mem server

func srvName(c *registry.Client) string {
	n, _ := srvNames.Load(c)
	return n.(string)
}

func (m *meterT) collect() metricdata.ResourceMetrics {
	m.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		m.t.Fatal(err)
	}
	return rm
}

// sum is the value of counter name over the data points whose attributes include
// every pair of match ("service", "api", ...).
func (m *meterT) sum(name string, match ...string) int64 {
	m.t.Helper()
	var n int64
	for _, dp := range dataPoints[metricdata.Sum[int64]](m.collect(), name) {
		for _, p := range dp.(metricdata.Sum[int64]).DataPoints {
			if has(p.Attributes, match) {
				n += p.Value
			}
		}
	}
	return n
}

// gauge is the staleness of service, or -1 when it is not reported.
func (m *meterT) gauge(service string) float64 {
	m.t.Helper()
	for _, g := range dataPoints[metricdata.Gauge[float64]](m.collect(), registry.MetricWatchStaleness) {
		for _, p := range g.(metricdata.Gauge[float64]).DataPoints {
			if has(p.Attributes, []string{"service", service}) {
				return p.Value
			}
		}
	}
	return -1
}

func dataPoints[T metricdata.Aggregation](rm metricdata.ResourceMetrics, name string) []metricdata.Aggregation {
	var out []metricdata.Aggregation
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if _, ok := mt.Data.(T); ok && mt.Name == name {
				out = append(out, mt.Data)
			}
		}
	}
	return out
}

func has(set attribute.Set, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if v, ok := set.Value(attribute.Key(match[i])); !ok || v.Emit() != match[i+1] {
			return false
		}
	}
	return true
}

// until polls cond, a description of what is wrong or "".
func until(t *testing.T, what string, cond func() string) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, func() error {
		if msg := cond(); msg != "" {
			return fmt.Errorf("%s", msg)
		}
		return nil
	})
}

// checkAttributes fails the test when an attribute of any instrument holds a
// credential or a URL, or is not one of the documented keys and values.
func (m *meterT) checkAttributes() {
	m.t.Helper()
	allowed := map[string][]string{
		"service": nil, // service names
		"state": {"registered", "re-registering", "deregistered",
			"connected", "suspended", "reconnected", "lost", "closed"},
		"op":   {"put", "list", "watch", "deregister", "session"},
		"kind": {"unavailable", "permission", "invalid", "not_found", "conflict", "other"},
	}
	check := func(metric string, set attribute.Set) {
		for _, kv := range set.ToSlice() {
			k, v := string(kv.Key), kv.Value.Emit()
			for _, secret := range []string{metricUser, metricPassword, "mem://", "@"} {
				if strings.Contains(k, secret) || strings.Contains(v, secret) {
					m.t.Errorf("%s: attribute %s=%q holds %q", metric, k, v, secret)
				}
			}
			vals, ok := allowed[k]
			if !ok || (vals != nil && !slices.Contains(vals, v)) {
				m.t.Errorf("%s: undocumented attribute %s=%q", metric, k, v)
			}
		}
	}
	for _, sm := range m.collect().ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					check(mt.Name, p.Attributes)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					check(mt.Name, p.Attributes)
				}
			default:
				m.t.Errorf("%s: unexpected aggregation %T", mt.Name, mt.Data)
			}
		}
	}
	if logs := m.logs.String(); strings.Contains(logs, metricPassword) {
		m.t.Errorf("a log line holds the password:\n%s", logs)
	}
}

// A cut the cache hides is visible: the staleness of the watched service grows,
// stale lookups are counted, requests fail as unavailable, sessions are
// suspended; after the heal the watch resyncs and the staleness is 0 again. Each
// state change is logged once, not at every retry.
func TestMetricsCutIsVisible(t *testing.T) {
	m := newMeterT(t)
	c, srv := m.open()
	ctx := ctxT(t)
	reg, err := c.Register(ctx, registry.Instance{ID: "i1", Service: "api", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	sess, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	cc, err := cache.New(c, cache.WithMeterProvider(m.mp), cache.WithLogger(slog.New(slog.NewTextHandler(m.logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if s, err := cc.Lookup(ctx, "api"); err != nil || s.Stale || len(s.Instances) != 1 {
		t.Fatalf("Lookup = %+v, %v", s, err)
	}
	if g := m.gauge("api"); g != 0 {
		t.Fatalf("staleness of a fresh watch = %v, want 0", g)
	}
	if n := m.sum(cache.MetricStaleLookups); n != 0 {
		t.Fatalf("stale lookups before the cut = %d", n)
	}

	srv.Cut()
	until(t, "lookups stale", func() string {
		if s, _ := cc.Lookup(ctx, "api"); !s.Stale {
			return "fresh"
		}
		return ""
	})
	var g1 float64
	until(t, "staleness above 50ms", func() string {
		if g1 = m.gauge("api"); g1 < 0.05 {
			return fmt.Sprintf("staleness %v", g1)
		}
		return ""
	})
	until(t, "staleness grows", func() string {
		if g2 := m.gauge("api"); g2 <= g1 {
			return fmt.Sprintf("staleness %v after %v", g2, g1)
		}
		return ""
	})
	for range 3 {
		if _, err := cc.Lookup(ctx, "api"); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.sum(cache.MetricStaleLookups, "service", "api"); n < 4 {
		t.Errorf("stale lookups during the cut = %d, want at least 4", n)
	}
	until(t, "unavailable list and watch errors counted", func() string {
		l := m.sum(registry.MetricRequestErrors, "op", "list", "kind", "unavailable")
		w := m.sum(registry.MetricRequestErrors, "op", "watch", "kind", "unavailable")
		if l < 2 || w < 1 {
			return fmt.Sprintf("list errors %d, watch errors %d", l, w)
		}
		return ""
	})
	if n := m.sum(registry.MetricSessionStateChanges, "state", "suspended"); n != 1 {
		t.Errorf("session suspensions = %d, want 1", n)
	}
	resyncsBefore := m.sum(registry.MetricWatchResyncs, "service", "api")

	srv.Heal()
	until(t, "lookups fresh, staleness 0, a resync counted", func() string {
		s, _ := cc.Lookup(ctx, "api")
		g, n := m.gauge("api"), m.sum(registry.MetricWatchResyncs, "service", "api")
		if s.Stale || g != 0 || n <= resyncsBefore {
			return fmt.Sprintf("stale %v, staleness %v, resyncs %d (before the heal %d)", s.Stale, g, n, resyncsBefore)
		}
		return ""
	})
	if n := m.sum(registry.MetricSessionStateChanges, "state", "reconnected"); n != 1 {
		t.Errorf("session reconnections = %d, want 1", n)
	}
	staleCount := m.sum(cache.MetricStaleLookups)
	if _, err := cc.Lookup(ctx, "api"); err != nil {
		t.Fatal(err)
	}
	if n := m.sum(cache.MetricStaleLookups); n != staleCount {
		t.Errorf("a fresh lookup was counted stale: %d, then %d", staleCount, n)
	}
	m.checkAttributes()
	logs := m.logs.String()
	// Many re-lists failed during the cut (5-20ms backoff); each streak is logged once.
	// The registration guard's watch and the cache's share one loop: one line for
	// the outage, whichever failed first, the watch or a read.
	if n := strings.Count(logs, "watch broke") + strings.Count(logs, "read failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, logs)
	}
	// A suspension needs an operator's eye; the reconnection only says it passed
	// (the default logger shows warnings only, so it stays quiet in programs).
	want := map[string][2]int{"level=WARN msg=\"registry: session state changed\" from=connected to=suspended": {1, 1},
		"level=INFO msg=\"registry: session state changed\" from=suspended to=reconnected": {1, 1}}
	for line, lim := range want {
		if n := strings.Count(logs, line); n < lim[0] || n > lim[1] {
			t.Errorf("%q logged %d times, want %d to %d:\n%s", line, n, lim[0], lim[1], logs)
		}
	}
}

// A session expiry drops the registration: the state changes and the
// re-registration are counted and logged once, the broken watch resyncs, the
// store session's loss is counted.
func TestMetricsSessionExpiry(t *testing.T) {
	m := newMeterT(t)
	c, _ := m.open()
	ctx := ctxT(t)
	reg, err := c.Register(ctx, registry.Instance{ID: "i1", Service: "api", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until the backend watch is armed, so that the expiry breaks it: after
	// the first read, a second client's instance is seen only through a notify of
	// an armed watch.
	c2, err := registry.Open(ctx, "mem://"+srvName(c), registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	reg2, err := c2.Register(ctx, registry.Instance{ID: "i2", Service: "api", Host: "10.0.0.2", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Close()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Instances) == 2 {
			break
		}
	}
	sess, err := c.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if n := m.sum(registry.MetricRegistrationStateChanges, "service", "api", "state", "registered"); n != 1 {
		t.Fatalf("registered = %d after Register, want 1", n)
	}

	c.Conn().(*mem.Conn).ExpireSession()
	until(t, "re-registered and resynced", func() string {
		rr := m.sum(registry.MetricReregistrations, "service", "api")
		rs := m.sum(registry.MetricWatchResyncs, "service", "api")
		if rr != 1 || rs < 1 || reg.State() != registry.Registered {
			return fmt.Sprintf("reregistrations %d, resyncs %d, state %v", rr, rs, reg.State())
		}
		return ""
	})
	if n := m.sum(registry.MetricRegistrationStateChanges, "service", "api", "state", "re-registering"); n != 1 {
		t.Errorf("re-registering = %d, want 1", n)
	}
	if n := m.sum(registry.MetricRegistrationStateChanges, "service", "api", "state", "registered"); n != 2 {
		t.Errorf("registered = %d, want 2 (the first put and the re-put)", n)
	}
	if n := m.sum(registry.MetricSessionStateChanges, "state", "lost"); n != 1 {
		t.Errorf("sessions lost = %d, want 1", n)
	}
	if n := m.sum(registry.MetricRequestErrors, "op", "watch"); n < 1 {
		t.Errorf("watch errors = %d, want the broken watch counted", n)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if n := m.sum(registry.MetricRegistrationStateChanges, "service", "api", "state", "deregistered"); n != 1 {
		t.Errorf("deregistered = %d, want 1", n)
	}
	m.checkAttributes()
	logs := m.logs.String()
	for _, line := range []string{"registration lost", "registration restored", "to=lost"} {
		if n := strings.Count(logs, line); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", line, n, logs)
		}
	}
}

// The staleness gauge covers live watches only: a closed watch, and every watch
// of a closed Client, is no longer reported.
func TestMetricsStalenessFollowsLiveWatches(t *testing.T) {
	m := newMeterT(t)
	c, _ := m.open()
	ctx := ctxT(t)
	w, err := c.Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if g := m.gauge("api"); g != 0 {
		t.Fatalf("staleness = %v, want 0", g)
	}
	w.Close()
	if g := m.gauge("api"); g != -1 {
		t.Fatalf("staleness of a closed watch reported: %v", g)
	}
	if _, err := c.Watch(ctx, "api"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if g := m.gauge("api"); g != -1 {
		t.Fatalf("staleness reported after Close: %v", g)
	}
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
