package address_test

import (
	"fmt"
	"net/netip"

	"github.com/regkit/regkit/registry/address"
)

// A Kubernetes pod whose manifest sets Dubbo's variables to the node's IP and
// NodePort registers that address instead of its own pod IP.
func ExampleResolver_Resolve() {
	env := map[string]string{
		"DUBBO_IP_TO_REGISTRY":   "10.0.4.17",
		"DUBBO_PORT_TO_REGISTRY": "30080",
	}
	r := &address.Resolver{
		Getenv: func(k string) string { return env[k] },
		Interfaces: func() ([]address.Interface, error) {
			return []address.Interface{
				{Name: "docker0", Up: true, Addrs: []netip.Addr{netip.MustParseAddr("172.17.0.1")}},
				{Name: "eth0", Up: true, Addrs: []netip.Addr{netip.MustParseAddr("172.20.3.9")}},
			}, nil
		},
	}
	host, port, err := r.Resolve()
	fmt.Println(host, port, err)

	// Without the variables, the pod's own site-local address is chosen, the
	// docker bridge is ignored, and the port is left to the caller.
	delete(env, "DUBBO_IP_TO_REGISTRY")
	delete(env, "DUBBO_PORT_TO_REGISTRY")
	host, port, err = r.Resolve()
	fmt.Println(host, port, err)
	// Output:
	// 10.0.4.17 30080 <nil>
	// 172.20.3.9 0 <nil>
}

// Preferring a network picks the address on it even when another interface
// comes first.
func ExampleResolver_preferredNetworks() {
	r := &address.Resolver{
		PreferredNetworks: []string{"10.0.0.0/8"},
		Getenv:            func(string) string { return "" },
		Interfaces: func() ([]address.Interface, error) {
			return []address.Interface{
				{Name: "lo", Up: true, Loopback: true, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
				{Name: "docker0", Up: true, Addrs: []netip.Addr{netip.MustParseAddr("172.17.0.1")}},
				{Name: "eth0", Up: true, Addrs: []netip.Addr{netip.MustParseAddr("192.168.1.20")}},
				{Name: "eth1", Up: true, Addrs: []netip.Addr{netip.MustParseAddr("10.8.0.3")}},
			}, nil
		},
	}
	host, _, err := r.Resolve()
	fmt.Println(host, err)
	// Output: 10.8.0.3 <nil>
}
