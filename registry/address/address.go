// Package address decides which host and port a service registers: the address
// others should dial, which may differ from the one it binds (NodePort, host IP, NAT).
package address

import "errors"

// Resolver resolves the address to register. (Stub: being written.)
type Resolver struct {
	// Host and Port, when set, win over everything else.
	Host string
	Port int
}

// Default returns the resolver that reads the environment.
func Default() *Resolver { return &Resolver{} }

// Resolve returns the host and port to register.
func (r *Resolver) Resolve() (string, int, error) {
	if r.Host != "" {
		return r.Host, r.Port, nil
	}
	return "", 0, errors.New("address: not implemented yet")
}
