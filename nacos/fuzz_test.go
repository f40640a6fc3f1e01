package nacos

import (
	"encoding/json"
	"os"
	"testing"
)

// FuzzConvert maps arbitrary Nacos list answers (instances registered by other
// clients: missing fields, odd metadata, weights, ports) to instances: no panic,
// and every instance listed is a valid Instance of the service read.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		`{"hosts":[{"instanceId":"1","ip":"10.0.0.1","port":80,"weight":1,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@orders","metadata":{"regkit.id":"a","k":"v"}}],"cacheMillis":1000}`,
		`{"hosts":[{"ip":"10.0.0.1"}]}`,
		`{"hosts":[{"port":80}]}`,
		`{"hosts":[{}]}`,
		`{"hosts":[{"ip":"10.0.0.1","port":80,"weight":-1e308,"clusterName":"bad cluster"}]}`,
		`{"hosts":[{"ip":"10.0.0.1","port":80,"weight":1e308}]}`,
		`{"hosts":[{"ip":"10.0.0.1","port":80,"weight":"NaN"}]}`,
		`{"hosts":[{"ip":"::1","port":99999,"metadata":{"regkit.id":"a/b","regkit.weight":"-5","":"x"}}]}`,
		`{"hosts":[{"ip":"a b","port":1,"metadata":null}]}`,
		`{"hosts":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var l v1List
		if json.Unmarshal(data, &l) != nil {
			return
		}
		for _, h := range l.Hosts {
			in, why := convert("orders", h)
			if why != "" || panicsOnly {
				continue
			}
			if err := in.Validate(); err != nil {
				t.Fatalf("convert(%s) accepted an invalid instance %+v: %v", data, in, err)
			}
			if in.Service != "orders" {
				t.Fatalf("convert(%s) gave service %q", data, in.Service)
			}
		}
	})
}

// panicsOnly (REGKIT_FUZZ_PANICS_ONLY=1) checks for panics only, to explore past
// known invalid-instance findings.
var panicsOnly = os.Getenv("REGKIT_FUZZ_PANICS_ONLY") != ""
