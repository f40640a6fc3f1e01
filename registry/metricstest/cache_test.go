package metricstest_test

import (
	"context"
	"errors"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/cache"
	"github.com/regkit/regkit/registry/driver"
)

// Stale lookups are counted per service; fresh ones are not; with the default
// (no-op) provider a stale lookup still does not allocate.
func TestStaleLookupsCounted(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	f := &fakeDiscovery{}
	c := newCache(t, f, cache.WithMeterProvider(mp))
	ctx := cacheCtxT(t)
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a")})
	if s, err := c.Lookup(ctx, "svc"); err != nil || s.Stale {
		t.Fatalf("Lookup = %+v, %v", s, err)
	}
	count := func() int64 {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != cache.MetricStaleLookups {
					continue
				}
				if m.Unit != "{lookup}" {
					t.Errorf("unit %q", m.Unit)
				}
				for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
					if v, _ := p.Attributes.Value("service"); v.AsString() != "svc" || p.Attributes.Len() != 1 {
						t.Errorf("attributes %v", p.Attributes.ToSlice())
					}
					n += p.Value
				}
			}
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("stale lookups after a fresh one: %d", n)
	}
	f.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a"), Stale: true,
		Err: errors.New("down: " + driver.ErrUnavailable.Error())})
	eventually(t, "stale", func() bool {
		s, err := c.Lookup(ctx, "svc")
		return err == nil && s.Stale
	})
	before := count()
	for range 5 {
		if _, err := c.Lookup(ctx, "svc"); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != before+5 {
		t.Fatalf("stale lookups = %d, want %d", n, before+5)
	}

	// The default provider: a stale lookup allocates nothing.
	f2 := &fakeDiscovery{}
	c2 := newCache(t, f2)
	f2.Publish(registry.Snapshot{Service: "svc", Instances: insts("svc", "a"), Stale: true})
	if _, err := c2.Lookup(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = c2.Lookup(ctx, "svc") }); a != 0 {
		t.Fatalf("a stale lookup allocates %v times", a)
	}
}
