package driver

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultWeight is the weight given to an instance registered with Weight 0.
const DefaultWeight = 100

// Instance is one running copy of a service, as registered and as discovered.
//
// Instances returned by discovery are shared between watchers: treat them, and their
// Metadata maps, as read-only (use Clone to modify one).
type Instance struct {
	// ID identifies the instance within its service. Empty at Register means
	// "Host:Port", so a restarted process replaces its own old entry (on zk's
	// layout=dubbo, ";group=G;version=V" follow when Metadata has Dubbo's group
	// or version: see IDDefaulter). See
	// ValidInstanceID for the characters allowed (one rule on every backend).
	ID string
	// Service is the logical service name: letters, digits, '.', '_', '-' and ':'
	// (the characters every backend can store in a key), 1 to 255 of them, starting
	// with a letter or digit.
	Service string
	// Host is the address others dial: an IP address (IPv6 without brackets) or a
	// DNS name. At Register,
	// REGKIT_REGISTER_HOST or DUBBO_IP_TO_REGISTRY override it, and empty means
	// "resolve it" from preferred networks and interfaces (see
	// registry.WithAddressResolver and package registry/address).
	Host string
	// Port is the port others dial, 1 to 65535. At Register, REGKIT_REGISTER_PORT
	// or DUBBO_PORT_TO_REGISTRY override it (Dubbo's precedence: the deployment
	// knows the reachable port, e.g. a NodePort); zero with neither set is an
	// error naming Port.
	Port int
	// Weight is the relative share of traffic for weighted balancers; 0 at Register
	// means DefaultWeight (100). Negative weights are rejected. Backends with other
	// scales (Nacos: float 0–10000, default 1) map it; see their package docs.
	Weight int
	// Zone is the zone, cluster or datacenter the instance runs in (Nacos cluster,
	// Consul meta "zone"); empty means unknown.
	Zone string
	// Metadata is free-form string key/value data: keys must be non-empty, keys and
	// values valid UTF-8 (every backend but mem stores text), and the backend's
	// Limits (Capabilities.Limits) apply.
	Metadata map[string]string
	// Healthy is what the backend reports at discovery. Register ignores it: an
	// instance is registered healthy and the backend's checks, and the
	// registration's own health check (registry.WithHealthCheck, through
	// HealthSetter), decide afterwards.
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
	if err := ValidInstanceID(in.ID); err != nil {
		return err
	}
	if in.Host == "" {
		return invalid("Host", in.Host, "host is empty")
	}
	if err := validHost(in.Host); err != nil {
		return invalid("Host", in.Host, err.Error())
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
	size := 0
	for k, v := range in.Metadata {
		size += len(k) + len(v)
		if k == "" {
			return invalid("Metadata", k, "metadata key is empty")
		}
		if !utf8.ValidString(k) {
			return invalid("Metadata", k, "metadata key is not valid UTF-8 (backends store text)")
		}
		if !utf8.ValidString(v) {
			return invalid("Metadata", k, "the value of metadata key "+strconv.Quote(k)+" is not valid UTF-8 (backends store text)")
		}
	}
	if size > MaxMetadataBytes {
		return invalid("Metadata", fmt.Sprintf("%d bytes", size), fmt.Sprintf("metadata keys and values exceed %d bytes in total", MaxMetadataBytes))
	}
	return nil
}

// MaxMetadataBytes bounds the total length of an instance's metadata keys and
// values (256 KiB). It is one rule for every backend, the mem one included, below
// what the smallest of them can store in one registration (Consul's 512 KiB),
// so that a test on mem refuses what production would; backends may refuse less
// (ZooKeeper's 1 MiB packet applies to the whole encoded node; see each
// driver's CheckInstance).
const MaxMetadataBytes = 256 << 10

// validHost reports why host is neither an IP address (IPv6 without brackets,
// optionally with a zone) nor a DNS name (dot-separated labels of letters, digits,
// '-' and '_', each 1 to 63 bytes not starting or ending with '-', at most 253 bytes
// in all, an optional final dot), or nil.
func validHost(host string) error {
	if host == "" {
		return errors.New("host is empty")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if strings.HasPrefix(host, "[") {
		return errors.New("host must be an IP address or DNS name (IPv6 without brackets)")
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 || name == "" {
		return errors.New("host must be an IP address or DNS name (a DNS name has at most 253 bytes)")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("host must be an IP address or DNS name (empty, too long or '-'-edged label)")
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return errors.New("host must be an IP address or DNS name (letters, digits, '-', '_' and dots)")
			}
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
