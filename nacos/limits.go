package nacos

import (
	"github.com/regkit/regkit/registry/driver"
)

// Nacos's size limits, checked before anything is sent.
const (
	// MaxFormBytes is the largest form body sent: the Nacos server (Spring Boot on
	// Tomcat) refuses form posts over 2 MiB by default. A registration whose
	// encoded form (metadata included, as JSON) exceeds it is refused by
	// CheckInstance.
	MaxFormBytes = 2 << 20
	// MaxValueBytes is the largest store key plus value: a value is published as
	// text or base64 in a form body, which may triple its size.
	MaxValueBytes = 512 << 10
)

var _ driver.InstanceChecker = (*Conn)(nil)

// CheckInstance refuses, without I/O, an instance whose registration form would
// exceed MaxFormBytes.
func (c *Conn) CheckInstance(inst driver.Instance) error {
	if n := len(c.instanceForm(APIV1, inst).Encode()); n > MaxFormBytes {
		return driver.TooLarge(inst, n, MaxFormBytes, "the Nacos server's form limit")
	}
	return nil
}
