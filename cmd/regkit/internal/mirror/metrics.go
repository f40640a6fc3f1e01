package mirror

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// MeterName is the name of the Meter the Syncer's instruments belong to.
const MeterName = "github.com/regkit/regkit/cmd/regkit/internal/mirror"

// Instrument names (see the package doc, Metrics).
const (
	MetricCopies = "regkit.sync.copies"
	MetricErrors = "regkit.sync.errors"
	MetricLag    = "regkit.sync.lag"
)

type metrics struct {
	held metric.Int64UpDownCounter
	errs metric.Int64Counter
	lagH metric.Float64Histogram
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(MeterName)
	held, e1 := m.Int64UpDownCounter(MetricCopies, metric.WithUnit("{copy}"),
		metric.WithDescription("Copies this sync process holds on destinations."))
	errs, e2 := m.Int64Counter(MetricErrors, metric.WithUnit("{error}"),
		metric.WithDescription("Failed registers, updates and deregisters of copies, and failed watches."))
	lagH, e3 := m.Float64Histogram(MetricLag, metric.WithUnit("s"),
		metric.WithDescription("Time from reading a source change to its copies being applied."))
	if err := errors.Join(e1, e2, e3); err != nil {
		return nil, err
	}
	return &metrics{held: held, errs: errs, lagH: lagH}, nil
}

func (m *metrics) copies(ctx context.Context, service string, n int64) {
	m.held.Add(context.WithoutCancel(ctx), n, metric.WithAttributes(attribute.String("service", service)))
}

func (m *metrics) errors(ctx context.Context, op string) {
	m.errs.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(attribute.String("op", op)))
}

func (m *metrics) lag(ctx context.Context, service string, d time.Duration) {
	m.lagH.Record(context.WithoutCancel(ctx), d.Seconds(), metric.WithAttributes(attribute.String("service", service)))
}
