package cache

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// WithMeterProvider sets the OpenTelemetry MeterProvider the Cache's instrument is
// created with (default: a no-op one). The Cache records
// regkit.cache.stale_lookups (Counter, {lookup}, attribute service): lookups
// answered with a Stale snapshot, the outage the Cache is hiding. The Client under
// the Cache has its own instruments (registry.WithMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.meter = mp } }

// MeterName is the name of the Meter the Cache's instrument belongs to.
const MeterName = "github.com/regkit/regkit/registry/cache"

// MetricStaleLookups is the name of the Cache's counter of stale lookups.
const MetricStaleLookups = "regkit.cache.stale_lookups"

// newStaleCounter returns the stale-lookup counter of mp (no-op if mp is nil or
// refuses it) and the error of its creation.
func newStaleCounter(mp metric.MeterProvider) (metric.Int64Counter, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	ctr, err := mp.Meter(MeterName).Int64Counter(MetricStaleLookups, metric.WithUnit("{lookup}"),
		metric.WithDescription("Lookups answered with a stale snapshot (the backend did not answer; "+
			"the last good instances or the snapshot file's were served)."))
	if ctr == nil {
		ctr = noop.Int64Counter{}
	}
	return ctr, err
}

// staleOpts are the options a stale lookup of service is counted with, made once
// per entry so that a lookup does not allocate.
func staleOpts(service string) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("service", service)))}
}
