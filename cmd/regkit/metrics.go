package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/regkit/regkit/internal/decimal"
)

const metricsFlagHelp = "serve the OpenTelemetry metrics in Prometheus text format at http://`HOST:PORT`/metrics (port 0: any free port, printed on stderr)"

const metricsHelp = `
--metrics-addr HOST:PORT serves the process's metrics in Prometheus text format
at http://HOST:PORT/metrics: the library's OpenTelemetry instruments (regkit.*,
named the Prometheus way: regkit_sync_copies, regkit_watch_resyncs_total, ...),
Go runtime and process metrics. Port 0 picks a free port; the address is printed
on stderr ("regkit: serving metrics on http://.../metrics").`

// addMetricsFlag adds --metrics-addr to a long-running command.
func addMetricsFlag(cmd *cobra.Command, addr *string) {
	cmd.Flags().StringVar(addr, "metrics-addr", "", metricsFlagHelp)
}

// validMetricsAddr checks --metrics-addr without any I/O ("" is valid: off).
func validMetricsAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("invalid --metrics-addr %q: %v", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || !decimal.Digits(port) || n < 0 || n > 65535 {
		return usagef("invalid --metrics-addr %q: port must be a number in 0-65535", addr)
	}
	return nil
}

// secondsBuckets are the bucket bounds of histograms in seconds (the SDK's
// default bounds, 0 to 10000, suit milliseconds).
var secondsBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// secondsView gives every histogram whose unit is "s" (regkit.sync.lag)
// secondsBuckets.
func secondsView(inst sdkmetric.Instrument) (sdkmetric.Stream, bool) {
	if inst.Kind != sdkmetric.InstrumentKindHistogram || inst.Unit != "s" {
		return sdkmetric.Stream{}, false
	}
	return sdkmetric.Stream{Name: inst.Name, Description: inst.Description, Unit: inst.Unit,
		Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: secondsBuckets}}, true
}

// metricsServer is the HTTP endpoint of --metrics-addr and the MeterProvider
// whose instruments it exposes.
type metricsServer struct {
	provider *sdkmetric.MeterProvider
	srv      *http.Server
	done     chan struct{} // closed when Serve has returned
}

// startMetrics listens on addr and serves /metrics until close. With addr ""
// it returns nil (every method of a nil *metricsServer is a no-op and
// MeterProvider is nil, the library's no-op default).
func startMetrics(g *globals, addr string) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("metrics exporter: %w", err)
	}
	if err := errors.Join(reg.Register(collectors.NewGoCollector()),
		reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))); err != nil {
		return nil, fmt.Errorf("metrics collectors: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m := &metricsServer{
		provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithView(secondsView)),
		srv:      &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		done:     make(chan struct{}),
	}
	go func() { // owned by m: close shuts the server down and waits for this
		defer close(m.done)
		_ = m.srv.Serve(ln) // http.ErrServerClosed after close
	}()
	fmt.Fprintf(g.stderr, "regkit: serving metrics on http://%s/metrics\n", ln.Addr())
	return m, nil
}

// MeterProvider is the provider to record with; nil (no-op) when m is nil.
func (m *metricsServer) MeterProvider() metric.MeterProvider {
	if m == nil {
		return nil
	}
	return m.provider
}

// close stops serving (a scrape under way gets up to 5s to finish) and shuts
// the provider down.
func (m *metricsServer) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
	<-m.done
	_ = m.provider.Shutdown(ctx)
}
