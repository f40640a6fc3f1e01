package etcd

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"

	"github.com/regkit/regkit/registry/driver"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Layout names a registration layout (the URL's layout parameter).
type Layout string

// Layouts.
const (
	// LayoutRegkit stores the JSON of registry.Instance at
	// <prefix>/services/<service>/<id>. The default.
	LayoutRegkit Layout = "regkit"
	// LayoutNaming stores instances in the format of etcd's own gRPC naming
	// (go.etcd.io/etcd/client/v3/naming/endpoints and its resolver): the key
	// <target>/<id> holding {"Op":0,"Addr":"host:port","Metadata":...}.
	LayoutNaming Layout = "naming"
)

// namingUpdate is the value endpoints.Manager writes (its internal.Update): the
// JSON of gRPC's old naming.Update. Metadata is any JSON value.
type namingUpdate struct {
	Op       uint8
	Addr     string
	Metadata json.RawMessage
}

// namingMeta is what regkit keeps in an endpoint's Metadata, JSON-encoded into a
// string (see the package doc, layout=naming).
type namingMeta struct {
	Weight   int               `json:"weight"`
	Zone     string            `json:"zone,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// MetaNaming is the Metadata key under which an endpoint's Metadata that regkit
// cannot map is kept, as raw JSON (layout=naming).
const MetaNaming = "etcd.metadata"

// target returns the gRPC naming target of service.
func (c *Conn) target(service string) string {
	if c.targetPrefix == "" {
		return service
	}
	return c.targetPrefix + "/" + service
}

// encodeNaming returns the endpoint value of inst: Metadata null when the
// instance has nothing beyond its address (exactly what endpoints.Manager
// writes for Endpoint{Addr: addr}), else a string (never an object: gRPC
// compares Address.Metadata with ==, which panics on maps).
func encodeNaming(inst driver.Instance) ([]byte, error) {
	u := struct {
		Op       uint8
		Addr     string
		Metadata any
	}{Addr: inst.Addr()}
	if inst.Weight != driver.DefaultWeight || inst.Zone != "" || len(inst.Metadata) > 0 {
		m, err := json.Marshal(namingMeta{Weight: inst.Weight, Zone: inst.Zone, Metadata: inst.Metadata})
		if err != nil {
			return nil, err
		}
		u.Metadata = string(m)
	}
	return json.Marshal(u)
}

// decodeNaming reads one endpoint key of service's target; ok is false for a
// value that is not an endpoint with a host:port address.
func (c *Conn) decodeNaming(service string, kv *mvccpb.KeyValue) (driver.Instance, bool) {
	var u namingUpdate
	if err := json.Unmarshal(kv.Value, &u); err != nil {
		c.log.Warn("etcd: skipping an undecodable endpoint", "key", string(kv.Key), "err", err)
		return driver.Instance{}, false
	}
	host, p, err := net.SplitHostPort(u.Addr)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil || host == "" || port < 1 || port > 65535 {
		c.log.Warn("etcd: skipping an endpoint without host:port", "key", string(kv.Key), "addr", u.Addr)
		return driver.Instance{}, false
	}
	in := driver.Instance{Service: service, Host: host, Port: port, Weight: driver.DefaultWeight, Healthy: true,
		ID: strings.TrimPrefix(string(kv.Key), c.target(service)+"/")}
	if in.ID == "" {
		in.ID = u.Addr
	}
	readNamingMeta(&in, u.Metadata)
	return in, true
}

// readNamingMeta maps an endpoint's Metadata onto in: an object, or a string
// holding one (what regkit writes), gives "weight" -> Weight, "zone" -> Zone,
// "metadata" (an object of strings) -> Metadata, and any other member k ->
// Metadata[k] (strings as they are, other values as JSON); null adds nothing;
// anything else is kept whole as Metadata[MetaNaming].
func readNamingMeta(in *driver.Instance, raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	var s string
	obj := raw
	if json.Unmarshal(raw, &s) == nil {
		obj = json.RawMessage(s)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil || m == nil {
		setMeta(in, MetaNaming, metaString(raw))
		return
	}
	for k, v := range m {
		switch k {
		case "weight":
			// A number, or a string holding one.
			if n, err := strconv.Atoi(metaString(v)); err == nil && n >= 0 {
				in.Weight = n
			} else {
				setMeta(in, k, metaString(v))
			}
		case "zone":
			if json.Unmarshal(v, &in.Zone) != nil {
				setMeta(in, k, metaString(v))
			}
		case "metadata":
			var md map[string]string
			if json.Unmarshal(v, &md) != nil {
				setMeta(in, k, metaString(v))
				continue
			}
			if in.Metadata == nil && len(md) > 0 {
				in.Metadata = make(map[string]string, len(md))
			}
			maps.Copy(in.Metadata, md)
		default:
			setMeta(in, k, metaString(v))
		}
	}
}

func setMeta(in *driver.Instance, k, v string) {
	if in.Metadata == nil {
		in.Metadata = map[string]string{}
	}
	in.Metadata[k] = v
}

// metaString is a JSON string's content, or any other JSON value as it is.
func metaString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// checkTargetPrefix validates the target_prefix of layout=naming against the key
// prefix the store uses.
func checkTargetPrefix(tp, prefix string) error {
	if strings.IndexFunc(tp, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 || strings.Contains(tp, "//") {
		return &driver.FieldError{Field: "target_prefix", Value: tp, Reason: "must not contain control characters or empty segments"}
	}
	if tp != "" && (tp == prefix || strings.HasPrefix(tp+"/", prefix+"/") || strings.HasPrefix(prefix+"/", tp+"/")) {
		return &driver.FieldError{Field: "target_prefix", Value: tp, Reason: fmt.Sprintf("must not overlap the key prefix %q (where the store lives)", prefix)}
	}
	return nil
}
