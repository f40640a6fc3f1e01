// Package metricstest holds the tests of the OpenTelemetry metrics of the
// registry and registry/cache packages, which read them through the
// OpenTelemetry SDK's manual reader. It is a module of its own
// (github.com/regkit/regkit/registry/metricstest) so that the SDK
// (go.opentelemetry.io/otel/sdk/metric and its dependencies) never enters the
// root module's requirements: the root needs only the OpenTelemetry API.
package metricstest
