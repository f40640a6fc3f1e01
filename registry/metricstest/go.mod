module github.com/regkit/regkit/registry/metricstest

go 1.24.0

require (
	github.com/regkit/regkit v0.0.0-00010101000000-000000000000
	go.opentelemetry.io/otel v1.34.0
	go.opentelemetry.io/otel/sdk/metric v1.34.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/go-logr/logr v1.4.2 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/jonboulle/clockwork v0.5.0 // indirect
	go.opentelemetry.io/auto/sdk v1.1.0 // indirect
	go.opentelemetry.io/otel/metric v1.34.0 // indirect
	go.opentelemetry.io/otel/sdk v1.34.0 // indirect
	go.opentelemetry.io/otel/trace v1.34.0 // indirect
	golang.org/x/sys v0.36.0 // indirect
)

replace github.com/regkit/regkit => ../..
