package nacos

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// option is the driver.Option value of this package's options.
type option func(*options) error

// WithNamespace sets the Nacos namespace id (default "", public; with Open it
// replaces the URL's namespace parameter).
func WithNamespace(ns string) registry.Option {
	return registry.DriverOption("nacos.WithNamespace", option(func(o *options) error {
		o.namespace = ns
		return nil
	}))
}

// WithGroup sets the Nacos group of every service (default DefaultGroup; with
// Open it replaces the URL's group parameter). It must be non-empty without "@@".
func WithGroup(group string) registry.Option {
	return registry.DriverOption("nacos.WithGroup", option(func(o *options) error {
		o.group = group
		return nil
	}))
}

// WithCluster sets the cluster of instances with an empty Zone (default
// DefaultCluster; with Open it replaces the URL's cluster parameter).
func WithCluster(cluster string) registry.Option {
	return registry.DriverOption("nacos.WithCluster", option(func(o *options) error {
		o.cluster = cluster
		return nil
	}))
}

// WithHTTPClient makes the driver send its requests through hc's Transport
// (proxies, custom TLS, instrumentation); the driver keeps its own timeouts (the
// timeout parameter, and none for long polls), so hc.Timeout is not used, and
// Close does not close hc's idle connections. Nil hc is an error.
func WithHTTPClient(hc *http.Client) registry.Option {
	return registry.DriverOption("nacos.WithHTTPClient", option(func(o *options) error {
		if hc == nil {
			return &driver.FieldError{Field: "nacos.WithHTTPClient", Value: nil, Reason: "client is nil"}
		}
		o.rt = hc.Transport
		if o.rt == nil {
			o.rt = http.DefaultTransport
		}
		return nil
	}))
}

// New connects to the Nacos servers ("host:port", default port 8848, context path
// DefaultContextPath) and returns a Client over them, after probing the API
// version, logging in and probing the store as Open does (bounded by ctx). Nacos
// has no native Go client this package wraps (it speaks the HTTP API itself), so
// New takes the server list; WithHTTPClient lends it an HTTP client's transport.
// Options: registry.WithLogger, WithCredentials and WithTLS, and this package's
// WithNamespace, WithGroup, WithCluster and WithHTTPClient; every other setting
// has its URL default. A bad server address or option is an error matching
// registry.ErrInvalid, before any I/O.
func New(ctx context.Context, servers []string, opts ...registry.Option) (*registry.Client, error) {
	if len(servers) == 0 {
		return nil, &driver.FieldError{Field: "servers", Value: "", Reason: "no Nacos server given"}
	}
	u := &url.URL{Scheme: "nacos", Host: strings.Join(servers, ",")}
	return registry.NewClient(func(cfg driver.Config) (driver.Conn, error) {
		return drv{}.Open(ctx, u, cfg)
	}, opts...)
}
