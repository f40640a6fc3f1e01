package registry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// WithMeterProvider sets the OpenTelemetry MeterProvider the Client's instruments
// are created with (default: a no-op one, so nothing is recorded). The instruments
// are listed in the package doc, section Metrics; their attributes are service
// names, states, operation names and error kinds, never a URL, a host or a
// credential.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *options) { o.meter = mp }
}

// MeterName is the name of the Meter the Client's instruments belong to.
const MeterName = "github.com/regkit/regkit/registry"

// Instrument names (see the package doc, section Metrics).
const (
	MetricRegistrationStateChanges = "regkit.registration.state_changes"
	MetricReregistrations          = "regkit.registration.reregistrations"
	MetricWatchResyncs             = "regkit.watch.resyncs"
	MetricWatchStaleness           = "regkit.watch.staleness"
	MetricSessionStateChanges      = "regkit.session.state_changes"
	MetricRequestErrors            = "regkit.request.errors"
)

// Error kinds, the values of the kind attribute of regkit.request.errors.
const (
	kindUnavailable = "unavailable"
	kindPermission  = "permission"
	kindInvalid     = "invalid"
	kindNotFound    = "not_found"
	kindConflict    = "conflict"
	kindOther       = "other"
)

// metrics holds the Client's instruments. Every method is safe on a Client whose
// provider is the no-op one, and none blocks.
type metrics struct {
	regChanges  metric.Int64Counter
	reregs      metric.Int64Counter
	resyncs     metric.Int64Counter
	sessChanges metric.Int64Counter
	reqErrors   metric.Int64Counter
	gauge       metric.Registration // the staleness callback; nil if none
}

func newMetrics(c *Client, mp metric.MeterProvider) *metrics {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(MeterName)
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		ctr, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err != nil {
			errs = append(errs, err)
		}
		if ctr == nil {
			ctr = noop.Int64Counter{}
		}
		return ctr
	}
	met := &metrics{
		regChanges: counter(MetricRegistrationStateChanges, "{change}",
			"State changes of registrations: registered, re-registering, deregistered."),
		reregs: counter(MetricReregistrations, "{reregistration}",
			"Instances put back on the backend after the backend dropped them."),
		resyncs: counter(MetricWatchResyncs, "{resync}",
			"Re-lists of a watched service after a gap (a broken watch, a failed read)."),
		sessChanges: counter(MetricSessionStateChanges, "{change}",
			"State changes of coordination sessions."),
		reqErrors: counter(MetricRequestErrors, "{error}",
			"Failed backend requests, by operation and kind of error."),
	}
	gauge, err := m.Float64ObservableGauge(MetricWatchStaleness, metric.WithUnit("s"),
		metric.WithDescription("Seconds since the last good read of a watched service while its view is stale "+
			"(or, before the first read, since the watch started); 0 while the view is fresh."))
	if err != nil {
		errs = append(errs, err)
	}
	if gauge != nil {
		reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			c.observeStaleness(func(service string, age float64) {
				o.ObserveFloat64(gauge, age, metric.WithAttributes(attribute.String("service", service)))
			})
			return nil
		}, gauge)
		if err != nil {
			errs = append(errs, err)
		}
		met.gauge = reg
	}
	if err := errors.Join(errs...); err != nil {
		c.log.warn("registry: cannot create every metric instrument", "err", err)
	}
	return met
}

// observeStaleness reports the staleness of every live service watch.
func (c *Client) observeStaleness(observe func(service string, age float64)) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	watches := make([]*serviceWatch, 0, len(c.watches))
	for _, sw := range c.watches {
		watches = append(watches, sw)
	}
	c.mu.Unlock()
	for _, sw := range watches {
		since := sw.started
		if s := sw.current(); s != nil {
			if !s.Stale {
				observe(sw.service, 0)
				continue
			}
			since = s.LastGood
		}
		observe(sw.service, max(c.clock.Since(since).Seconds(), 0))
	}
}

// close unregisters the gauge's callback.
func (m *metrics) close() {
	if m.gauge != nil {
		_ = m.gauge.Unregister()
	}
}

// registrationState records a registration's change from one state to another
// (from 0: the first put succeeded). Back to Registered from Reregistering is a
// re-registration, logged once; the loss itself is logged by the keeper.
func (c *Client) registrationState(inst Instance, from, to RegistrationState) {
	if from == to {
		return
	}
	ctx := context.Background()
	svc := attribute.String("service", inst.Service)
	c.met.regChanges.Add(ctx, 1, metric.WithAttributes(svc, attribute.String("state", to.String())))
	if from == Reregistering && to == Registered {
		c.met.reregs.Add(ctx, 1, metric.WithAttributes(svc))
		c.log.info("registry: registration restored", "instance", inst.String())
	}
}

// watchResynced records a re-list of service after a gap.
func (c *Client) watchResynced(service string) {
	c.met.resyncs.Add(context.Background(), 1, metric.WithAttributes(attribute.String("service", service)))
}

// sessionState records a session's change from one state to another, and logs it
// once unless its owner closed it: a suspension or a loss as a warning, a
// (re)connection as info (the default logger shows only the former). It runs under the Session's lock, maybe on a
// driver's callback goroutine: it must not call back into the session or driver.
func (c *Client) sessionState(from, to SessionState) {
	c.met.sessChanges.Add(context.Background(), 1, metric.WithAttributes(attribute.String("state", to.String())))
	switch to {
	case StateClosed:
	case StateSuspended, StateLost:
		c.log.warn("registry: session state changed", "from", from.String(), "to", to.String())
	default:
		c.log.info("registry: session state changed", "from", from.String(), "to", to.String())
	}
}

// requestError counts a failed backend request of op ("put", "list", "watch",
// "deregister", "session"); ctx is the one the request's own timeout was derived
// from. A request cut short because ctx ended (the caller's deadline, the
// Client's Close) and a closed handle are no request errors.
func (c *Client) requestError(ctx context.Context, op string, err error) {
	kind := errorKind(err)
	if kind == "" || ctx.Err() != nil {
		return
	}
	c.met.reqErrors.Add(context.Background(), 1,
		metric.WithAttributes(attribute.String("op", op), attribute.String("kind", kind)))
}

// errorKind is the kind attribute of err, "" for errors that are not counted.
func errorKind(err error) string {
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, ErrClosed):
		return ""
	case errors.Is(err, ErrPermission):
		return kindPermission
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrNotSupported):
		return kindInvalid
	case errors.Is(err, ErrNotFound):
		return kindNotFound
	case errors.Is(err, ErrExists), errors.Is(err, ErrVersionConflict), errors.Is(err, ErrNotEmpty):
		return kindConflict
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		// A request timeout (WithRequestTimeout) is a backend that did not answer.
		return kindUnavailable
	}
	return kindOther
}
