package zk

import "github.com/regkit/regkit/registry/driver"

// MaxPacketBytes is ZooKeeper's default limit on one packet (the server's
// jute.maxbuffer, 0xfffff bytes). A server that receives a larger request drops
// the whole connection, which a client cannot tell from an outage, so requests that
// would exceed it are refused before they are sent: instances through
// CheckInstance (Register), store values through Capabilities.Limits. Servers
// configured with a larger jute.maxbuffer still get this bound.
const MaxPacketBytes = 0xfffff

// packetOverhead is what a create or set request adds to its path and data
// (header, flags, ACLs), with room to spare.
const packetOverhead = 1 << 10

var (
	_ driver.InstanceChecker = (*Conn)(nil)
	_ driver.IDDefaulter     = (*Conn)(nil)
)

// DefaultID is the ID of an instance registered without one: on layout=dubbo
// "Host:Port;group=G;version=V" (each part only when Metadata has it), the ID
// the layout reads back from a provider URL without regkit.id, so that one
// interface in several groups or versions on one host:port is several instances;
// "" (the registry's Host:Port) on the other layouts.
func (c *Conn) DefaultID(inst driver.Instance) string {
	if c.cfg.layout != LayoutDubbo {
		return ""
	}
	return dubboID(inst.Host, inst.Port, inst.Metadata["group"], inst.Metadata["version"])
}

// limits are the Capabilities.Limits of every Conn.
func (c *Conn) limits() driver.Limits {
	return driver.Limits{StoreBytes: MaxPacketBytes - packetOverhead - len(c.cfg.chroot)}
}

// CheckInstance refuses, without I/O, an instance whose node (path and data, as
// the connection's layout encodes it; in the curator layout with Spring's payload,
// the larger of the two a put may write) would exceed MaxPacketBytes.
func (c *Conn) CheckInstance(inst driver.Instance) error {
	cd := c.codec()
	if cc, ok := cd.(curatorCodec); ok {
		cc.payload = PayloadSpring // the largest a put may choose
		cd = cc
	}
	name, data, err := cd.encode(inst)
	if err != nil {
		return &driver.FieldError{Field: "Metadata", Value: inst.String(), Reason: "cannot be encoded in the " + string(c.cfg.layout) + " layout: " + err.Error()}
	}
	if n := len(cd.dir(inst.Service)) + 1 + len(name) + len(data) + packetOverhead; n > MaxPacketBytes {
		return driver.TooLarge(inst, n, MaxPacketBytes, "ZooKeeper's packet limit (jute.maxbuffer)")
	}
	return nil
}
