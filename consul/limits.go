package consul

import (
	"encoding/json"

	"github.com/regkit/regkit/registry/driver"
)

// Consul's size limits, checked before anything is sent.
const (
	// MaxValueBytes is Consul's default limit on a KV value (limits.kv_max_value_size,
	// 512 KiB); the store refuses a key plus value above it.
	MaxValueBytes = 512 << 10
	// MaxRegistrationBytes bounds the JSON of one agent service registration (its
	// meta and the "regkit-meta=" tag that carries the metadata Consul's meta cannot:
	// keys other than [A-Za-z0-9_-], values over 512 bytes, pairs beyond 60). Consul
	// itself bounds meta (64 pairs, keys of 128 bytes, values of 512) but not tags;
	// this bound keeps a registration within what Consul replicates comfortably,
	// as large as a KV value.
	MaxRegistrationBytes = 512 << 10
)

var _ driver.InstanceChecker = (*Conn)(nil)

// CheckInstance refuses, without I/O, an instance whose registration would exceed
// MaxRegistrationBytes.
func (c *Conn) CheckInstance(inst driver.Instance) error {
	reg, err := c.registration(inst)
	if err != nil {
		return &driver.FieldError{Field: "Metadata", Value: inst.String(), Reason: err.Error()}
	}
	b, err := json.Marshal(reg)
	if err != nil {
		return &driver.FieldError{Field: "Metadata", Value: inst.String(), Reason: err.Error()}
	}
	if len(b) > MaxRegistrationBytes {
		return driver.TooLarge(inst, len(b), MaxRegistrationBytes, "the Consul registration limit")
	}
	return nil
}
