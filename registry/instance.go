package registry

import (
	"strconv"
	"strings"

	"github.com/regkit/regkit/registry/driver"
)

// DefaultWeight is the weight given to an instance registered with Weight 0.
const DefaultWeight = driver.DefaultWeight

// Instance is one running copy of a service, as registered and as discovered: ID,
// Service, Host, Port, Weight, Zone, Metadata and Healthy (see driver.Instance for
// each field). Instances returned by Client.Instances and Watcher.Next are the
// caller's own copies; package registry/cache's Lookup shares its snapshots
// between callers (see there). Clone copies an instance and its Metadata.
type Instance = driver.Instance

// ValidServiceName reports why name cannot be used as a service name, or nil.
func ValidServiceName(name string) error { return driver.ValidServiceName(name) }

// withDefaults fills ID and Weight and marks the instance healthy.
func withDefaults(in Instance) Instance {
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
