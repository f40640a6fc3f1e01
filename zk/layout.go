package zk

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// codec is one registration layout: where a service's instances live and how one
// instance is named and encoded.
type codec interface {
	// dir is the absolute path of the znode whose children are the instances.
	dir(service string) string
	// encode returns the instance's node name and data.
	encode(inst driver.Instance) (name string, data []byte, err error)
	// decode reads one child of dir. The node's name and directory are the
	// truth: a child whose data names another service or ID, or that does not
	// make a valid Instance, is not an instance, and why (non-empty) says so.
	decode(service, name string, data []byte) (inst driver.Instance, why string)
	// needsData says whether decode reads the node's data (dubbo encodes
	// everything in the name).
	needsData() bool
	// byName says whether a node's name is a function of the instance's ID alone;
	// when false, Put and Deregister look for other nodes carrying the same ID.
	byName() bool
}

func (c *Conn) codec() codec {
	switch c.cfg.layout {
	case LayoutCurator:
		return curatorCodec{base: c.cfg.base, payload: c.cfg.payload}
	case LayoutDubbo:
		return dubboCodec{root: c.cfg.group}
	}
	return regkitCodec{root: c.cfg.chroot + "/services"}
}

// defaultID is registry's default instance ID for host and port.
func defaultID(host string, port int) string {
	return strings.NewReplacer(":", "_", "%", "_").Replace(host) + ":" + strconv.Itoa(port)
}

// ---- regkit ----

type regkitCodec struct{ root string }

// record is the JSON stored for an instance in the regkit layout.
type record struct {
	ID       string            `json:"id"`
	Service  string            `json:"service"`
	Host     string            `json:"host"`
	Port     int               `json:"port"`
	Weight   int               `json:"weight"`
	Zone     string            `json:"zone,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Healthy is false while the registration's local health check fails
	// (registry.MarkUnhealthy); absent means healthy, as etcd's record.
	Healthy *bool `json:"healthy,omitempty"`
}

func (r regkitCodec) dir(service string) string { return r.root + "/" + service }
func (regkitCodec) needsData() bool             { return true }
func (regkitCodec) byName() bool                { return true }

func (c regkitCodec) encode(in driver.Instance) (string, []byte, error) {
	b, err := c.encodeHealth(in, true)
	return in.ID, b, err
}

// encodeHealth is the record with "healthy": false, or without the field.
func (regkitCodec) encodeHealth(in driver.Instance, healthy bool) ([]byte, error) {
	r := record{ID: in.ID, Service: in.Service, Host: in.Host, Port: in.Port,
		Weight: in.Weight, Zone: in.Zone, Metadata: in.Metadata}
	if !healthy {
		r.Healthy = &healthy
	}
	return json.Marshal(r)
}

func (regkitCodec) decode(service, name string, data []byte) (driver.Instance, string) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return driver.Instance{}, "undecodable: " + err.Error()
	}
	if r.ID != name || r.Service != service {
		return driver.Instance{}, fmt.Sprintf("the record names service %q, id %q, not its path's", r.Service, r.ID)
	}
	return valid(driver.Instance{ID: name, Service: service, Host: r.Host, Port: r.Port, Weight: r.Weight,
		Zone: r.Zone, Metadata: r.Metadata, Healthy: r.Healthy == nil || *r.Healthy})
}

// valid returns in, or why it is not a valid Instance.
func valid(in driver.Instance) (driver.Instance, string) {
	if err := in.Validate(); err != nil {
		return driver.Instance{}, err.Error()
	}
	return in, ""
}

// ---- curator ----

type curatorCodec struct {
	base string
	// payload is the policy; encode needs it resolved (PayloadNull or
	// PayloadSpring): Put resolves PayloadAuto against the service's instances.
	payload CuratorPayload
}

// CuratorInstance is Curator x-discovery's ServiceInstance as its
// JsonInstanceSerializer writes it (fields in Jackson's order). Enabled is absent
// (nil) in what Curator writes by default (its compatible serialization mode, for
// readers older than Curator 4, which fail on unknown fields) and in what regkit
// writes; absent means enabled.
type CuratorInstance struct {
	Name                string          `json:"name"`
	ID                  string          `json:"id"`
	Address             string          `json:"address"`
	Port                *int            `json:"port"`
	SSLPort             *int            `json:"sslPort"`
	Payload             json.RawMessage `json:"payload"`
	RegistrationTimeUTC int64           `json:"registrationTimeUTC"`
	ServiceType         string          `json:"serviceType"`
	URISpec             json.RawMessage `json:"uriSpec"`
	Enabled             *bool           `json:"enabled,omitempty"`
}

// SpringCloudPayload is the payload Spring Cloud Zookeeper puts in Curator's
// ServiceInstance (org.springframework.cloud.zookeeper.discovery.ZookeeperInstance).
type SpringCloudPayload struct {
	Class    string            `json:"@class"`
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Metadata map[string]string `json:"metadata"`
}

// SpringCloudPayloadClass is the Java class name in SpringCloudPayload.Class.
const SpringCloudPayloadClass = "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance"

func (c curatorCodec) dir(service string) string { return c.base + "/" + service }
func (curatorCodec) needsData() bool             { return true }
func (curatorCodec) byName() bool                { return true }

func (cc curatorCodec) encode(in driver.Instance) (string, []byte, error) {
	payload := json.RawMessage("null")
	if cc.payload == PayloadSpring {
		md := maps.Clone(in.Metadata)
		if md == nil {
			md = map[string]string{}
		}
		md["weight"] = strconv.Itoa(in.Weight)
		if in.Zone != "" {
			md["zone"] = in.Zone
		}
		b, err := json.Marshal(SpringCloudPayload{Class: SpringCloudPayloadClass, ID: in.Service, Name: in.Service, Metadata: md})
		if err != nil {
			return "", nil, err
		}
		payload = b
	}
	port := in.Port
	b, err := json.Marshal(CuratorInstance{Name: in.Service, ID: in.ID, Address: in.Host, Port: &port,
		Payload: payload, RegistrationTimeUTC: time.Now().UnixMilli(), ServiceType: "DYNAMIC",
		URISpec: json.RawMessage("null")})
	return in.ID, b, err
}

// payloadClass returns the "@class" of a ServiceInstance's payload: "" for a null
// or absent payload, "?" for a payload without a class (which no Curator reader
// can read), ok false for data that is not a ServiceInstance.
func payloadClass(data []byte) (class string, ok bool) {
	var ci CuratorInstance
	if err := json.Unmarshal(data, &ci); err != nil || ci.Address == "" {
		return "", false
	}
	if len(ci.Payload) == 0 || string(ci.Payload) == "null" {
		return "", true
	}
	var typed struct {
		Class string `json:"@class"`
	}
	if json.Unmarshal(ci.Payload, &typed) != nil || typed.Class == "" {
		return "?", true
	}
	return typed.Class, true
}

// autoPayload resolves PayloadAuto from the data of a service's other instances:
// Spring's ZookeeperInstance if at least one carries a payload and every payload
// is a ZookeeperInstance (a Curator reader that reads those reads ours, and one
// that does not was already failing on them), else null (the only payload every
// reader reads; any other class's shape is unknown to us, and a payload of the
// right class but the wrong shape could fail the reader's whole query).
func autoPayload(others [][]byte) CuratorPayload {
	spring := false
	for _, d := range others {
		switch class, ok := payloadClass(d); {
		case !ok, class == "":
		case class == SpringCloudPayloadClass:
			spring = true
		default:
			return PayloadNull
		}
	}
	if spring {
		return PayloadSpring
	}
	return PayloadNull
}

func (curatorCodec) decode(service, name string, data []byte) (driver.Instance, string) {
	var ci CuratorInstance
	if err := json.Unmarshal(data, &ci); err != nil {
		return driver.Instance{}, "undecodable: " + err.Error()
	}
	// Curator writes <base>/<name>/<id>: the node is named after the id.
	if ci.ID != name || ci.Name != service {
		return driver.Instance{}, fmt.Sprintf("the ServiceInstance names service %q, id %q, not its path's", ci.Name, ci.ID)
	}
	in := driver.Instance{ID: name, Service: service, Host: ci.Address, Healthy: ci.Enabled == nil || *ci.Enabled}
	switch {
	case ci.Port != nil && *ci.Port > 0:
		in.Port = *ci.Port
	case ci.SSLPort != nil:
		in.Port = *ci.SSLPort
	}
	md := map[string]string{}
	var obj map[string]json.RawMessage
	var str string
	switch {
	case len(ci.Payload) == 0 || string(ci.Payload) == "null":
	case json.Unmarshal(ci.Payload, &obj) == nil:
		if raw, ok := obj["metadata"]; ok {
			var m map[string]string
			if json.Unmarshal(raw, &m) == nil {
				maps.Copy(md, m)
			}
			break
		}
		for k, v := range obj {
			var s string
			if k != "@class" && json.Unmarshal(v, &s) == nil {
				md["payload."+k] = s
			}
		}
	case json.Unmarshal(ci.Payload, &str) == nil:
		md["payload"] = str
	}
	in.Weight = driver.DefaultWeight
	if w, ok := md["weight"]; ok {
		if n, err := strconv.Atoi(w); err == nil && n >= 0 {
			in.Weight = n
			delete(md, "weight")
		}
	}
	if z, ok := md["zone"]; ok {
		in.Zone = z
		delete(md, "zone")
	}
	if len(md) > 0 {
		in.Metadata = md
	}
	return valid(in)
}

// ---- dubbo ----

type dubboCodec struct{ root string }

func (d dubboCodec) dir(service string) string { return d.root + "/" + service + "/providers" }
func (dubboCodec) needsData() bool             { return false }
func (dubboCodec) byName() bool                { return false }

// Query parameters that only restate the layout: written, dropped on read.
var dubboDropped = map[string]bool{"interface": true, "side": true, "timestamp": true, "anyhost": true, "category": true}

func (dubboCodec) encode(in driver.Instance) (string, []byte, error) {
	q := url.Values{}
	scheme := "dubbo"
	for k, v := range in.Metadata {
		if k == "protocol" {
			scheme = v
			continue
		}
		q.Set(k, v)
	}
	q.Set("anyhost", "false")
	q.Set("interface", in.Service)
	q.Set("side", "provider")
	q.Set("timestamp", strconv.FormatInt(time.Now().UnixMilli(), 10))
	q.Set("weight", strconv.Itoa(in.Weight))
	if in.Zone != "" {
		q.Set("zone", in.Zone)
	}
	if in.ID != dubboID(in.Host, in.Port, q.Get("group"), q.Get("version")) {
		q.Set("regkit.id", in.ID)
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(in.Host, strconv.Itoa(in.Port)), Path: "/" + in.Service, RawQuery: q.Encode()}
	return url.QueryEscape(u.String()), nil, nil
}

func (dubboCodec) decode(service, name string, _ []byte) (driver.Instance, string) {
	raw, err := url.QueryUnescape(name)
	if err != nil {
		return driver.Instance{}, "not a url-encoded provider URL: " + err.Error()
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return driver.Instance{}, "not a provider URL with a host"
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return driver.Instance{}, "the provider URL has no port"
	}
	if itf := u.Query().Get("interface"); itf != "" && itf != service {
		return driver.Instance{}, fmt.Sprintf("the provider URL is of interface %q", itf)
	}
	in := driver.Instance{Service: service, Host: u.Hostname(), Port: port, Weight: driver.DefaultWeight, Healthy: true}
	md := map[string]string{}
	for k, vs := range u.Query() {
		if len(vs) == 0 || dubboDropped[k] {
			continue
		}
		v := vs[len(vs)-1]
		switch k {
		case "weight":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				in.Weight = n
				continue
			}
		case "zone":
			in.Zone = v
			continue
		case "regkit.id":
			in.ID = v
			continue
		case "enabled":
			if v == "false" {
				in.Healthy = false
			}
		case "disabled":
			if v == "true" {
				in.Healthy = false
			}
		}
		md[k] = v
	}
	if u.Scheme != "dubbo" {
		md["protocol"] = u.Scheme
	}
	if in.ID == "" {
		in.ID = dubboID(in.Host, in.Port, md["group"], md["version"])
	}
	if len(md) > 0 {
		in.Metadata = md
	}
	return valid(in)
}

// dubboID is the ID of a provider URL without regkit.id: "Host:Port" (registry's
// default ID), then ";group=G" and ";version=V" when the URL has them, so that the
// providers of one interface in several groups or versions on one host:port are
// instances of their own.
func dubboID(host string, port int, group, version string) string {
	id := defaultID(host, port)
	clean := strings.NewReplacer("/", "_", "\\", "_", "@", "_")
	if group != "" {
		id += ";group=" + clean.Replace(group)
	}
	if version != "" {
		id += ";version=" + clean.Replace(version)
	}
	return id
}

// DubboURL returns the provider URL (decoded) that layout=dubbo writes for inst,
// for tools that want to show it.
func DubboURL(inst driver.Instance) (string, error) {
	name, _, err := dubboCodec{}.encode(inst)
	if err != nil {
		return "", err
	}
	s, err := url.QueryUnescape(name)
	if err != nil {
		return "", fmt.Errorf("zk: dubbo url: %w", err)
	}
	return s, nil
}
