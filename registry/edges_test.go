package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// TestUnknownParameterNamesURLAndParameter: the error shows the redacted URL
// and names the parameter (it used to read `invalid url "foo": unknown query
// parameter`).
func TestUnknownParameterNamesURLAndParameter(t *testing.T) {
	_, err := registry.Open(context.Background(), "mem://demo?foo=1")
	var fe *registry.FieldError
	if !errors.As(err, &fe) || fe.Field != "url" || fe.Value != "mem://demo?foo=1" || !strings.Contains(fe.Reason, `"foo"`) {
		t.Errorf("Open(mem://demo?foo=1) = %#v, want a FieldError for url with the URL as value and naming foo", err)
	}
}

// TestRegisterValidatesHostAndUTF8 is issue 14.1's instance example: a Host that
// is neither an IP address nor a DNS name, and metadata that is not UTF-8, are
// refused on mem as on every backend (etcd and ZooKeeper used to replace bad
// bytes silently while mem round-tripped them).
func TestRegisterValidatesHostAndUTF8(t *testing.T) {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://edges-validate", registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		in    registry.Instance
		field string
	}{
		{registry.Instance{Service: "s", Host: "exa mple.com", Port: 80}, "Host"},
		{registry.Instance{Service: "s", Host: "a..b", Port: 80}, "Host"},
		{registry.Instance{Service: "s", Host: "[::1]", Port: 80}, "Host"},
		{registry.Instance{Service: "s", Host: "-a.example", Port: 80}, "Host"},
		{registry.Instance{Service: "s", Host: "a!b", Port: 80}, "Host"},
		{registry.Instance{Service: "s", Host: strings.Repeat("a", 64) + ".com", Port: 80}, "Host"},
		{registry.Instance{Service: "s", Host: "10.0.0.1", Port: 80, Metadata: map[string]string{"k": "\xff\xfe"}}, "Metadata"},
		{registry.Instance{Service: "s", Host: "10.0.0.1", Port: 80, Metadata: map[string]string{"\xc3": "v"}}, "Metadata"},
	} {
		_, err := c.Register(ctx, tc.in)
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Register(%+v) = %v, want a FieldError for %s", tc.in, err, tc.field)
		}
	}
	for _, host := range []string{"10.0.0.1", "::1", "fe80::1%eth0", "svc.ns.svc.cluster.local", "my_host.local.", "localhost"} {
		r, err := c.Register(ctx, registry.Instance{Service: "s", Host: host, Port: 80})
		if err != nil {
			t.Errorf("Register(Host %q) = %v", host, err)
			continue
		}
		_ = r.Close()
	}
}
