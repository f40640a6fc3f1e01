package registry

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// DefaultWeight is the weight given to an instance registered with Weight 0.
const DefaultWeight = 100

// Instance is one running copy of a service, as registered and as discovered.
//
// Instances returned by Client.Instances and Watcher.Next are the caller's own
// copies; package registry/cache's Lookup shares its snapshots between callers
// (see there). Clone copies an instance and its Metadata.
type Instance struct {
	// ID identifies the instance within its service. Empty at Register means
	// "Host:Port", so a restarted process replaces its own old entry.
	ID string
	// Service is the logical service name: letters, digits, '.', '_', '-' and ':'
	// (the characters every backend can store in a key), 1 to 255 of them, starting
	// with a letter or digit.
	Service string
	// Host is the address others dial: an IP or a DNS name. Empty at Register means
	// "resolve it" (see WithAddressResolver and package registry/address).
	Host string
	// Port is the port others dial, 1 to 65535. Zero at Register means "resolve it"
	// from the environment (REGKIT_REGISTER_PORT, DUBBO_PORT_TO_REGISTRY).
	Port int
	// Weight is the relative share of traffic for weighted balancers; 0 at Register
	// means DefaultWeight (100). Negative weights are rejected. Backends with other
	// scales (Nacos: float 0–10000, default 1) map it; see their package docs.
	Weight int
	// Zone is the zone, cluster or datacenter the instance runs in (Nacos cluster,
	// Consul meta "zone"); empty means unknown.
	Zone string
	// Metadata is free-form string key/value data; keys must be non-empty.
	Metadata map[string]string
	// Healthy is what the backend reports at discovery. Register ignores it: an
	// instance is registered healthy and the backend's checks decide afterwards.
	Healthy bool
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$`)

// ValidServiceName reports why name cannot be used as a service name, or nil.
func ValidServiceName(name string) error {
	if name == "" {
		return invalid("Service", name, "service name is empty")
	}
	if !nameRE.MatchString(name) {
		return invalid("Service", name, "service name must be 1-255 of [A-Za-z0-9._:-], starting with a letter or digit")
	}
	return nil
}

// Validate checks the instance as it will be written, after defaults were applied,
// and returns a *FieldError (matching ErrInvalid) naming the first bad field.
func (in Instance) Validate() error {
	if err := ValidServiceName(in.Service); err != nil {
		return err
	}
	if in.ID == "" {
		return invalid("ID", in.ID, "instance id is empty")
	}
	if len(in.ID) > 255 || strings.ContainsAny(in.ID, "/\\@\x00") || strings.IndexFunc(in.ID, isControl) >= 0 {
		return invalid("ID", in.ID, "instance id must be at most 255 characters without '/', '\\', '@' or control characters")
	}
	if in.Host == "" {
		return invalid("Host", in.Host, "host is empty")
	}
	if strings.ContainsAny(in.Host, "/ @") || strings.IndexFunc(in.Host, isControl) >= 0 {
		return invalid("Host", in.Host, "host must be an IP address or DNS name")
	}
	if in.Port < 1 || in.Port > 65535 {
		return invalid("Port", in.Port, "port must be in 1-65535")
	}
	if in.Weight < 0 {
		return invalid("Weight", in.Weight, "weight must not be negative")
	}
	if in.Zone != "" && !nameRE.MatchString(in.Zone) {
		return invalid("Zone", in.Zone, "zone must be 1-255 of [A-Za-z0-9._:-]")
	}
	for k := range in.Metadata {
		if k == "" {
			return invalid("Metadata", k, "metadata key is empty")
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Addr returns "Host:Port", with IPv6 hosts bracketed.
func (in Instance) Addr() string {
	if strings.Contains(in.Host, ":") {
		return "[" + in.Host + "]:" + strconv.Itoa(in.Port)
	}
	return in.Host + ":" + strconv.Itoa(in.Port)
}

// Clone returns a deep copy (the Metadata map is copied).
func (in Instance) Clone() Instance {
	if in.Metadata != nil {
		in.Metadata = maps.Clone(in.Metadata)
	}
	return in
}

// Equal reports whether two instances carry the same data.
func (in Instance) Equal(o Instance) bool {
	if in.ID != o.ID || in.Service != o.Service || in.Host != o.Host || in.Port != o.Port ||
		in.Weight != o.Weight || in.Zone != o.Zone || in.Healthy != o.Healthy || len(in.Metadata) != len(o.Metadata) {
		return false
	}
	for k, v := range in.Metadata {
		if ov, ok := o.Metadata[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// String formats the instance for logs.
func (in Instance) String() string {
	return fmt.Sprintf("%s/%s@%s", in.Service, in.ID, in.Addr())
}

// withDefaults fills ID and Weight and marks the instance healthy.
func (in Instance) withDefaults() Instance {
	in = in.Clone()
	if in.Weight == 0 {
		in.Weight = DefaultWeight
	}
	if in.ID == "" && in.Host != "" && in.Port != 0 {
		in.ID = net2ID(in.Host, in.Port)
	}
	in.Healthy = true
	return in
}

func net2ID(host string, port int) string {
	// ':' is allowed in ids but IPv6 hosts would make them ambiguous; keep them readable.
	return strings.NewReplacer(":", "_", "%", "_").Replace(host) + ":" + strconv.Itoa(port)
}

// SortInstances sorts by ID, the order of every Snapshot.
func SortInstances(list []Instance) {
	slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
}

func quoteValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case nil:
		return "<nil>"
	default:
		return fmt.Sprint(x)
	}
}
