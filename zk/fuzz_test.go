package zk

import (
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/regkit/regkit/registry/driver"
)

// decoded reports whether a codec's decode accepted a node, whatever the shape of
// its second result (a bool ok, or a string saying why not).
func decoded(second any) bool {
	switch v := second.(type) {
	case bool:
		return v
	case string:
		return v == ""
	}
	panic("decode returned an unknown second result")
}

// checkDecoded is the property every layout's decoder keeps: an accepted node is
// a valid Instance of the service its directory names.
func checkDecoded(t *testing.T, what, service, name string, in driver.Instance, ok bool) {
	t.Helper()
	if !ok || panicsOnly {
		return
	}
	if err := in.Validate(); err != nil {
		t.Fatalf("%s: decode(%q, %q) accepted an invalid instance %+v: %v", what, service, name, in, err)
	}
	if in.Service != service {
		t.Fatalf("%s: decode(%q, %q) gave service %q", what, service, name, in.Service)
	}
}

// fuzzService turns arbitrary input into a valid service name (the directory a
// list reads is always one).
func fuzzService(s string) string {
	if driver.ValidServiceName(s) == nil {
		return s
	}
	return "svc"
}

func FuzzRegkitDecode(f *testing.F) {
	for _, s := range []struct{ svc, name, data string }{
		{"orders", "o1", `{"id":"o1","service":"orders","host":"10.0.0.1","port":8080,"weight":100}`},
		{"orders", "o1", `{"id":"o1","service":"orders","host":"10.0.0.1","port":8080,"weight":5,"zone":"z1","metadata":{"k":"v"}}`},
		{"orders", "o1", `{"id":"other","service":"orders","host":"10.0.0.1","port":8080}`},
		{"orders", "o1", `{"id":"o1","service":"payments","host":"10.0.0.1","port":8080}`},
		{"orders", "o1", `{"id":"o1","service":"orders","host":"10.0.0.1","port":0}`},
		{"orders", "o1", `{"id":"o1","service":"orders","host":"10.0.0.1","port":65536,"weight":-1}`},
		{"orders", "o1", `{"id":"o1","service":"orders","host":"a/b@c","port":1,"metadata":{"":"x"}}`},
		{"orders", "o1", `{"id":"o1","service":"orders","host":"h","port":1,"zone":"bad zone"}`},
		{"orders", "o1", "not json"},
		{"orders", "o1", ""},
		{"orders", "o1", "null"},
		{"orders", "..", `{"id":"..","service":"orders","host":"h","port":1}`},
		{"orders", "o1", `{"id":"o1","service":"orders","host":"h","port":1e3}`},
		{"orders", "o1", "\xff\xfe"},
	} {
		f.Add(s.svc, s.name, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, service, name string, data []byte) {
		service = fuzzService(service)
		in, why := regkitCodec{root: "/regkit/services"}.decode(service, name, data)
		ok := decoded(why)
		checkDecoded(t, "regkit", service, name, in, ok)
		if ok && !panicsOnly && in.ID != name {
			t.Fatalf("regkit: decode(%q, %q) gave ID %q: the node's name is the ID", service, name, in.ID)
		}
	})
}

func FuzzCuratorDecode(f *testing.F) {
	for _, s := range []struct{ svc, name, data string }{
		{"orders", "o1", `{"name":"orders","id":"o1","address":"10.0.0.1","port":8080,"sslPort":null,"payload":null,"registrationTimeUTC":1,"serviceType":"DYNAMIC","uriSpec":null}`},
		{"orders", "o1", `{"name":"orders","id":"o1","address":"10.0.0.1","port":null,"sslPort":8443,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"orders","name":"orders","metadata":{"weight":"7","zone":"z","k":"v"}}}`},
		{"orders", "o1", `{"name":"orders","id":"o1","address":"10.0.0.1","port":8080,"payload":{"@class":"com.example.X","a":"b","n":1},"enabled":false}`},
		{"orders", "o1", `{"name":"orders","id":"o1","address":"10.0.0.1","port":8080,"payload":"str"}`},
		{"orders", "o1", `{"name":"orders","id":"o1","address":"10.0.0.1","port":-5,"sslPort":-1}`},
		{"orders", "o1", `{"name":"orders","id":"o1","address":"10.0.0.1","port":8080,"payload":{"metadata":{"weight":"-3","":"x"}}}`},
		{"orders", "o1", `{"name":"x","id":"y","address":"10.0.0.1","port":8080}`},
		{"orders", "o1", `{"address":"h"}`},
		{"orders", "o1", `{"name":"orders","id":"o1","address":"10.0.0.1","port":8080,"payload":{"metadata":{"zone":"bad zone"}}}`},
		{"orders", "o1", `[]`},
		{"orders", "o1", `{"payload":{"metadata":null}}`},
	} {
		f.Add(s.svc, s.name, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, service, name string, data []byte) {
		service = fuzzService(service)
		in, why := curatorCodec{base: "/services"}.decode(service, name, data)
		ok := decoded(why)
		checkDecoded(t, "curator", service, name, in, ok)
		if ok && !panicsOnly && in.ID != name {
			t.Fatalf("curator: decode(%q, %q) gave ID %q: the node's name is the ID", service, name, in.ID)
		}
		class, pok := payloadClass(data)
		_ = class
		_ = autoPayload([][]byte{data})
		_ = pok
	})
}

func FuzzDubboDecode(f *testing.F) {
	for _, s := range []struct{ svc, url string }{
		{"com.example.Greeter", "dubbo://10.0.0.1:20880/com.example.Greeter?anyhost=false&interface=com.example.Greeter&side=provider&timestamp=1&weight=100"},
		{"com.example.Greeter", "tri://[::1]:50051/com.example.Greeter?group=g&version=1.0.0&zone=z&enabled=false"},
		{"com.example.Greeter", "dubbo://10.0.0.1:20880/com.example.Greeter?regkit.id=my-id&disabled=true&weight=-1"},
		{"com.example.Greeter", "dubbo://10.0.0.1:20880/com.example.Other?interface=com.example.Other"},
		{"com.example.Greeter", "dubbo://10.0.0.1:0/x"},
		{"com.example.Greeter", "dubbo://10.0.0.1:99999/x"},
		{"com.example.Greeter", "dubbo://h/x"},
		{"com.example.Greeter", "dubbo://10.0.0.1:1/x?regkit.id=a/b"},
		{"com.example.Greeter", "dubbo://10.0.0.1:1/x?zone=bad zone"},
		{"com.example.Greeter", "dubbo://10.0.0.1:1/x?group=a/b%00"},
		{"com.example.Greeter", "dubbo://10.0.0.1:1/x?=v"},
	} {
		f.Add(s.svc, url.QueryEscape(s.url))
	}
	// Broken escaping, as another client might write it.
	f.Add("com.example.Greeter", "dubbo%3A%2F%2F10.0.0.1%3A20880%2Fx%3Fa%3D%ZZ")
	f.Add("com.example.Greeter", "dubbo%3A%2F%2F10.0.0.1%3A20880%2Fx%3Fa%3D%25zz")
	f.Add("com.example.Greeter", "%")
	f.Add("com.example.Greeter", "dubbo://10.0.0.1:20880/x") // not escaped at all
	f.Fuzz(func(t *testing.T, service, name string) {
		service = fuzzService(service)
		in, why := dubboCodec{root: "/dubbo"}.decode(service, name, nil)
		ok := decoded(why)
		checkDecoded(t, "dubbo", service, name, in, ok)
		if ok && !panicsOnly && strings.Contains(in.ID, "/") {
			t.Fatalf("dubbo: ID %q has a slash", in.ID)
		}
	})
}

// panicsOnly (REGKIT_FUZZ_PANICS_ONLY=1) checks for panics only, to explore past
// known invalid-instance findings.
var panicsOnly = os.Getenv("REGKIT_FUZZ_PANICS_ONLY") != ""
