package consul

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/registry/driver"
)

// FuzzInstance maps arbitrary health entries (as another client may register
// services: odd tags, meta, ports, IDs) to instances: no panic, and what it
// accepts is a valid Instance of the service listed.
func FuzzInstance(f *testing.F) {
	for _, s := range []string{
		`{"Node":{"Address":"10.0.0.9"},"Service":{"ID":"orders@a","Service":"orders","Address":"10.0.0.1","Port":80,"Weights":{"Passing":5},"Meta":{"regkit-id":"a","zone":"z1","k":"v"},"Tags":["regkit-meta={\"x\":\"y\"}"]},"Checks":[{"Status":"passing"}]}`,
		`{"Node":{"Address":"10.0.0.9"},"Service":{"ID":"foreign","Service":"orders","Address":"","Port":0},"Checks":[]}`,
		`{"Service":{"ID":"orders@a","Service":"orders","Address":"10.0.0.1","Port":70000,"Weights":{"Passing":-4}}}`,
		`{"Service":{"ID":"x","Service":"orders","Address":"a b/c","Port":1,"Meta":{"regkit-id":"a/b","zone":"bad zone"}}}`,
		`{"Service":{"ID":"x","Service":"orders","Address":"h","Port":1,"Tags":["regkit-meta=not json","regkit-meta={\"\":\"empty key\"}","regkit-meta=null","",":::"]}}`,
		`{"Service":{"ID":"x","Service":"orders","Address":"h","Port":1,"Meta":{"":"v"}}}`,
		`{"Service":null}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	c := &Conn{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e api.ServiceEntry
		if json.Unmarshal(data, &e) != nil {
			return
		}
		in, second := c.instance("orders", &e)
		if !accepted(second) {
			return
		}
		if panicsOnly {
			return
		}
		if err := in.Validate(); err != nil {
			t.Fatalf("instance(%s) accepted an invalid instance %+v: %v", data, in, err)
		}
		if in.Service != "orders" {
			t.Fatalf("instance(%s) gave service %q", data, in.Service)
		}
		_ = driver.Instance{}
	})
}

// panicsOnly (REGKIT_FUZZ_PANICS_ONLY=1) checks for panics only, to explore past
// known invalid-instance findings.
var panicsOnly = os.Getenv("REGKIT_FUZZ_PANICS_ONLY") != ""

// accepted reports whether instance accepted an entry, whatever the shape of its
// second result (a bool ok, or a string saying why not).
func accepted(second any) bool {
	switch v := second.(type) {
	case bool:
		return v
	case string:
		return v == ""
	}
	panic("instance returned an unknown second result")
}
