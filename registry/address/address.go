// Package address decides which host and port a service registers in a service
// registry: the address others should dial, which may differ from the one it
// binds (a Kubernetes NodePort, the host's IP, a NAT mapping, a container
// running inside a VM).
//
// # Priority
//
// The host and the port are resolved independently; for each, the first rule
// that yields a value wins. The environment comes first, as in Dubbo: the
// deployment (a Kubernetes manifest with the node IP and a NodePort, a VM's NAT
// mapping) knows the address others can reach, while the program only knows
// the address it binds.
//
//  1. REGKIT_REGISTER_HOST / REGKIT_REGISTER_PORT.
//  2. Dubbo's DUBBO_IP_TO_REGISTRY / DUBBO_PORT_TO_REGISTRY, so existing
//     Kubernetes manifests keep working.
//  3. What the program configured: the host and port given to Advertise (the
//     Instance's Host and Port, when called by package registry), else the
//     Resolver's Host / Port fields.
//
// Set IgnoreEnvironment to skip rules 1 and 2 (and the REGKIT_PREFERRED_NETWORKS
// and REGKIT_IGNORED_INTERFACES variables), as tests that pin an address do.
//
// For the port nothing else is tried: with none of the above the port is 0,
// which Advertise reports as it is (package registry then fails Register with
// an error naming Port and these variables).
//
// For the host, the network interfaces are examined next. Only interfaces that
// are up, not loopback and not ignored (see IgnoredInterfaces) are considered,
// and link-local addresses (169.254.0.0/16, fe80::/10) are never chosen:
//
//  4. The first address matching a preferred network (see PreferredNetworks),
//     trying the entries in the order they are listed. For each entry an IPv4
//     address is taken over an IPv6 one.
//  5. The first site-local (RFC 1918: 10/8, 172.16/12, 192.168/16) IPv4 address.
//  6. The first other (public) IPv4 address.
//  7. The first global-unicast IPv6 address (including unique-local fc00::/7),
//     only when no interface has a usable IPv4 address. It is returned
//     without brackets or zone, e.g. "2001:db8::1"; join it with a port using
//     net.JoinHostPort.
//  8. Loopback (127.0.0.1, else ::1) but only when AllowLoopback is set.
//
// Otherwise Advertise and Resolve fail with an error wrapping ErrNoAddress that says which
// environment variable to set.
//
// # Validation
//
// Environment values are trimmed of surrounding white space; an empty value
// counts as unset. A value that is set but invalid is an error naming the
// variable; it never falls through to a lower-priority source. A port must be
// decimal digits in 1-65535 (no sign: "+80" is an error). A host must be an IP address or a DNS name (no spaces,
// no port, not 0.0.0.0 or ::, not a short or numeric IPv4 form such as 127.1,
// which resolvers expand to an address). A loopback host from the environment
// (127.0.0.0/8, ::1, "localhost") is refused unless AllowLoopback is set, so
// that a service never registers an address only it can dial. A configured
// host (the one given to Advertise, or Resolver.Host) is not checked here: the
// program chose it deliberately, and package registry validates the instance.
//
// PreferredNetworks and IgnoredInterfaces are compiled only when the
// interfaces are actually examined; an invalid entry is then an error naming it.
package address

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/regkit/regkit/internal/decimal"
)

// Environment variables read by Resolve (through Resolver.Getenv).
const (
	// EnvHost overrides the host to register.
	EnvHost = "REGKIT_REGISTER_HOST"
	// EnvPort overrides the port to register.
	EnvPort = "REGKIT_REGISTER_PORT"
	// EnvDubboHost is Dubbo's host override, honoured after EnvHost.
	EnvDubboHost = "DUBBO_IP_TO_REGISTRY"
	// EnvDubboPort is Dubbo's port override, honoured after EnvPort.
	EnvDubboPort = "DUBBO_PORT_TO_REGISTRY"
	// EnvPreferredNetworks lists preferred networks, comma-separated, used
	// when Resolver.PreferredNetworks is nil.
	EnvPreferredNetworks = "REGKIT_PREFERRED_NETWORKS"
	// EnvIgnoredInterfaces lists ignored interface-name patterns,
	// comma-separated, used when Resolver.IgnoredInterfaces is nil.
	EnvIgnoredInterfaces = "REGKIT_IGNORED_INTERFACES"
)

// ErrNoAddress is returned (wrapped; test with errors.Is) when neither an
// explicit host nor the environment gives a host and no network interface has
// an address that qualifies.
var ErrNoAddress = errors.New("address: no network interface has a usable address to register; set " +
	EnvHost + " to the address other services should dial")

// DefaultIgnoredInterfaces returns the interface-name patterns ignored when
// neither Resolver.IgnoredInterfaces nor REGKIT_IGNORED_INTERFACES is set:
// container and VM bridges and virtual Ethernet pairs, whose addresses other
// machines cannot dial. The result is a fresh slice the caller may modify.
func DefaultIgnoredInterfaces() []string {
	return []string{`docker.*`, `veth.*`, `br-.*`, `virbr.*`, `cni.*`, `flannel.*`, `cali.*`, `vboxnet.*`, `vmnet.*`}
}

// Resolver resolves the host and port to register. The zero value is ready to
// use and reads the real environment and network interfaces; the function
// fields exist so that tests (and unusual programs) can substitute them.
type Resolver struct {
	// Host, when not empty, is the host to register unless the environment
	// overrides it or Advertise is given one. It is used as is.
	Host string
	// Port, when not 0, is the port to register unless the environment
	// overrides it or Advertise is given one. It must be in 1-65535.
	Port int
	// IgnoreEnvironment makes the resolver read no environment variable:
	// neither the overrides (REGKIT_REGISTER_*, DUBBO_*_TO_REGISTRY) nor
	// REGKIT_PREFERRED_NETWORKS and REGKIT_IGNORED_INTERFACES. Tests that pin
	// an address set it, so that a developer's or CI's environment cannot
	// change what they register.
	IgnoreEnvironment bool
	// PreferredNetworks lists the networks to take the host from, in order
	// of preference. Each entry is one of:
	//   - a CIDR prefix ("10.0.0.0/8", "2001:db8::/32") or a single IP
	//     ("10.1.2.3"), matched against the interface addresses;
	//   - otherwise a regular expression that must match the whole address
	//     string ("192\\.168\\..*") or the whole interface name ("eth1",
	//     "ens.*").
	// Nil means: read REGKIT_PREFERRED_NETWORKS (comma-separated). An empty,
	// non-nil slice means no preference.
	PreferredNetworks []string
	// IgnoredInterfaces lists regular expressions, each of which must match
	// the whole interface name ("docker.*", "veth.*"); matching interfaces
	// are never used. Nil means: read REGKIT_IGNORED_INTERFACES
	// (comma-separated) and, if that is unset or empty, use
	// DefaultIgnoredInterfaces. An empty, non-nil slice ignores nothing.
	IgnoredInterfaces []string
	// AllowLoopback permits a loopback host: from the environment, and as the
	// last resort when no interface qualifies. Without it a loopback host is
	// an error, since other machines cannot dial it.
	AllowLoopback bool
	// Getenv reads an environment variable. Nil means os.Getenv.
	Getenv func(string) string
	// Interfaces lists the network interfaces. Nil means the machine's
	// interfaces, from net.Interfaces.
	Interfaces func() ([]Interface, error)
}

// Interface is a network interface as seen by a Resolver.
type Interface struct {
	// Name is the interface name, such as "eth0".
	Name string
	// Up reports whether the interface is administratively up.
	Up bool
	// Loopback reports whether the interface is a loopback interface.
	Loopback bool
	// Addrs are the interface's IP addresses, in the order to try them.
	Addrs []netip.Addr
}

// Default returns a Resolver that reads the process environment and the
// machine's network interfaces, with no configured host or port.
func Default() *Resolver { return &Resolver{} }

// Advertised is the address to register and where each half came from.
type Advertised struct {
	Host string
	Port int // 0 when nothing set it
	// HostFrom and PortFrom say where Host and Port came from: the name of an
	// environment variable (EnvHost, EnvDubboPort, ...), "configured" for the
	// value the program gave, "interfaces" for an address found on the
	// network interfaces (loopback included, as the last resort), or "" for a
	// port nothing set.
	HostFrom, PortFrom string
}

// Advertise returns the address to register for a program that configured
// host and port (either may be empty or 0), following the priority order in
// the package documentation: the environment overrides each of them on its own,
// then the configured values, then the Resolver's Host and Port, then (for the
// host) the network interfaces. An environment value that is set but invalid is
// an error naming the variable. Advertised.Host is never empty when err is nil.
func (r *Resolver) Advertise(host string, port int) (Advertised, error) {
	var a Advertised
	var err error
	a.Port, a.PortFrom, err = r.resolvePort(port)
	if err != nil {
		return Advertised{}, err
	}
	a.Host, a.HostFrom, err = r.resolveHost(host)
	if err != nil {
		return Advertised{}, err
	}
	return a, nil
}

// Resolve returns the host and port to register for the Resolver's own Host
// and Port: Advertise(r.Host, r.Port) without the sources. port is 0 when
// nothing configures it; host is never empty when err is nil.
func (r *Resolver) Resolve() (host string, port int, err error) {
	a, err := r.Advertise("", 0)
	if err != nil {
		return "", 0, err
	}
	return a.Host, a.Port, nil
}

func (r *Resolver) getenv(key string) string {
	if r.IgnoreEnvironment {
		return ""
	}
	if r.Getenv != nil {
		return r.Getenv(key)
	}
	return os.Getenv(key)
}

func (r *Resolver) resolvePort(configured int) (int, string, error) {
	for _, key := range []string{EnvPort, EnvDubboPort} {
		raw := r.getenv(key)
		v := strings.TrimSpace(raw)
		if v == "" {
			continue
		}
		p, err := strconv.Atoi(v)
		if err != nil || !decimal.Digits(v) || p < 1 || p > 65535 {
			return 0, "", fmt.Errorf("address: %s=%q: not a port: want decimal digits in 1-65535", key, raw)
		}
		return p, key, nil
	}
	if configured != 0 {
		return configured, "configured", nil
	}
	if r.Port != 0 {
		if r.Port < 1 || r.Port > 65535 {
			return 0, "", fmt.Errorf("address: Resolver.Port=%d: not a port in 1-65535", r.Port)
		}
		return r.Port, "configured", nil
	}
	return 0, "", nil
}

func (r *Resolver) resolveHost(configured string) (string, string, error) {
	for _, key := range []string{EnvHost, EnvDubboHost} {
		raw := r.getenv(key)
		v := strings.TrimSpace(raw)
		if v == "" {
			continue
		}
		h, err := checkHost(v, r.AllowLoopback)
		if err != nil {
			return "", "", fmt.Errorf("address: %s=%q: %s", key, raw, err)
		}
		return h, key, nil
	}
	if configured != "" {
		return configured, "configured", nil
	}
	if r.Host != "" {
		return r.Host, "configured", nil
	}
	h, err := r.fromInterfaces()
	if err != nil {
		return "", "", err
	}
	return h, "interfaces", nil
}

// checkHost validates a host taken from the environment and returns it in
// canonical form (IPv6 without brackets).
func checkHost(v string, allowLoopback bool) (string, error) {
	s := v
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		switch {
		case a.Zone() != "":
			return "", errors.New("an IPv6 zone cannot be dialled from another machine")
		case a.IsUnspecified():
			return "", errors.New("the unspecified address cannot be dialled")
		case a.IsMulticast():
			return "", errors.New("a multicast address cannot be registered")
		case a.IsLoopback() && !allowLoopback:
			return "", errors.New("loopback address refused (other machines cannot dial it; set Resolver.AllowLoopback to permit it)")
		}
		return a.String(), nil
	}
	if strings.HasPrefix(v, "[") {
		return "", errors.New("not an IPv6 address in brackets")
	}
	if !validHostname(v) {
		if strings.Contains(v, ":") {
			return "", errors.New("not an IP address or host name (the port goes in the port variable)")
		}
		return "", errors.New("not an IP address or host name")
	}
	if numericIPv4(v) {
		return "", errors.New("not an IP address or host name (a short or numeric IPv4 form, which resolvers expand: 127.1 is 127.0.0.1; give the four-part dotted address)")
	}
	name := strings.ToLower(strings.TrimSuffix(v, "."))
	if (name == "localhost" || strings.HasSuffix(name, ".localhost")) && !allowLoopback {
		return "", errors.New("loopback host refused (other machines cannot dial it; set Resolver.AllowLoopback to permit it)")
	}
	return v, nil
}

// validHostname reports whether s is a syntactically valid DNS name: dot-
// separated labels of 1-63 letters, digits, hyphens or underscores, not
// starting or ending with a hyphen, 253 bytes at most (a trailing dot allowed).
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// numericIPv4 reports whether s, not a dotted-quad address, is one of the other
// IPv4 forms inet_aton accepts (every label decimal or 0x-hexadecimal: "127.1",
// "2130706433", "0x7f.0.0.1"): resolvers turn it into an address, so it would
// pass as a host name around the loopback, unspecified and multicast checks.
func numericIPv4(s string) bool {
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		digits := label
		if len(label) > 2 && (label[:2] == "0x" || label[:2] == "0X") {
			digits = label[2:]
		}
		for i := 0; i < len(digits); i++ {
			c := digits[i]
			hex := digits != label && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')
			if !(c >= '0' && c <= '9' || hex) {
				return false
			}
		}
	}
	return true
}

// netMatcher is one compiled PreferredNetworks entry.
type netMatcher struct {
	prefix netip.Prefix   // valid for CIDR / IP entries
	re     *regexp.Regexp // otherwise
}

func (m netMatcher) match(ifName string, a netip.Addr) bool {
	if m.prefix.IsValid() {
		return m.prefix.Contains(a)
	}
	return m.re.MatchString(a.String()) || m.re.MatchString(ifName)
}

// list returns the configured entries: the field when non-nil, else the
// comma-separated environment variable.
func (r *Resolver) list(field []string, key string) []string {
	if field != nil {
		return field
	}
	var out []string
	for _, e := range strings.Split(r.getenv(key), ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func compileFull(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, err
	}
	return regexp.Compile(`^(?:` + expr + `)$`)
}

func (r *Resolver) preferred() ([]netMatcher, error) {
	var out []netMatcher
	for _, e := range r.list(r.PreferredNetworks, EnvPreferredNetworks) {
		if p, err := netip.ParsePrefix(e); err == nil {
			out = append(out, netMatcher{prefix: p.Masked()})
			continue
		}
		if a, err := netip.ParseAddr(e); err == nil && a.Zone() == "" {
			a = a.Unmap()
			out = append(out, netMatcher{prefix: netip.PrefixFrom(a, a.BitLen())})
			continue
		}
		if looksLikeCIDR(e) {
			return nil, fmt.Errorf("address: preferred network %q: not a valid CIDR or IP address (write e.g. 192.168.0.0/16)", e)
		}
		re, err := compileFull(e)
		if err != nil {
			return nil, fmt.Errorf("address: preferred network %q: neither a CIDR, an IP nor a valid regular expression: %w", e, err)
		}
		out = append(out, netMatcher{re: re})
	}
	return out, nil
}

// looksLikeCIDR reports whether e is made only of the characters of an IP
// prefix and contains a separator, so that a typo such as "10.0.0.0/33" or
// "192.168" is reported rather than taken as a regular expression that
// matches nothing.
func looksLikeCIDR(e string) bool {
	if !strings.ContainsAny(e, ".:/") {
		return false
	}
	for _, c := range e {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}

func (r *Resolver) ignored() ([]*regexp.Regexp, error) {
	entries := r.list(r.IgnoredInterfaces, EnvIgnoredInterfaces)
	if r.IgnoredInterfaces == nil && len(entries) == 0 {
		entries = DefaultIgnoredInterfaces()
	}
	out := make([]*regexp.Regexp, 0, len(entries))
	for _, e := range entries {
		re, err := compileFull(e)
		if err != nil {
			return nil, fmt.Errorf("address: ignored interface %q: invalid regular expression: %w", e, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// candidate is an interface address that may be registered.
type candidate struct {
	ifName string
	addr   netip.Addr
}

func (r *Resolver) fromInterfaces() (string, error) {
	pref, err := r.preferred()
	if err != nil {
		return "", err
	}
	ign, err := r.ignored()
	if err != nil {
		return "", err
	}
	list := r.Interfaces
	if list == nil {
		list = systemInterfaces
	}
	ifaces, err := list()
	if err != nil {
		return "", fmt.Errorf("address: list network interfaces: %w (set %s to skip this)", err, EnvHost)
	}

	var cands []candidate
	var loop4, loop6 netip.Addr
	for _, ifc := range ifaces {
		if !ifc.Up || matchesAny(ign, ifc.Name) {
			continue
		}
		for _, a := range ifc.Addrs {
			a = a.Unmap().WithZone("")
			if !a.IsValid() {
				continue
			}
			if a.IsLoopback() {
				if a.Is4() && !loop4.IsValid() {
					loop4 = a
				} else if a.Is6() && !loop6.IsValid() {
					loop6 = a
				}
				continue
			}
			if ifc.Loopback {
				continue // e.g. a service VIP bound to lo: not dialable as such
			}
			if a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() || !a.IsGlobalUnicast() {
				continue
			}
			cands = append(cands, candidate{ifc.Name, a})
		}
	}

	// 4. Preferred networks, in list order; IPv4 before IPv6 per entry.
	for _, m := range pref {
		var v6 netip.Addr
		for _, c := range cands {
			if !m.match(c.ifName, c.addr) {
				continue
			}
			if c.addr.Is4() {
				return c.addr.String(), nil
			}
			if !v6.IsValid() {
				v6 = c.addr
			}
		}
		if v6.IsValid() {
			return v6.String(), nil
		}
	}
	// 5. Site-local IPv4.
	for _, c := range cands {
		if c.addr.Is4() && c.addr.IsPrivate() {
			return c.addr.String(), nil
		}
	}
	// 6. Any other IPv4.
	for _, c := range cands {
		if c.addr.Is4() {
			return c.addr.String(), nil
		}
	}
	// 7. IPv6 (global or unique-local).
	for _, c := range cands {
		if c.addr.Is6() {
			return c.addr.String(), nil
		}
	}
	// 8. Loopback, if allowed.
	if r.AllowLoopback {
		if loop4.IsValid() {
			return loop4.String(), nil
		}
		if loop6.IsValid() {
			return loop6.String(), nil
		}
	}
	return "", fmt.Errorf("%w (or %s; or adjust %s / %s)", ErrNoAddress, EnvDubboHost, EnvPreferredNetworks, EnvIgnoredInterfaces)
}

func matchesAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// systemInterfaces lists the machine's interfaces. An interface whose
// addresses cannot be read is listed without addresses.
func systemInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifc := range ifs {
		it := Interface{
			Name:     ifc.Name,
			Up:       ifc.Flags&net.FlagUp != 0,
			Loopback: ifc.Flags&net.FlagLoopback != 0,
		}
		addrs, err := ifc.Addrs()
		if err == nil {
			for _, a := range addrs {
				var ip net.IP
				switch v := a.(type) {
				case *net.IPNet:
					ip = v.IP
				case *net.IPAddr:
					ip = v.IP
				}
				if na, ok := netip.AddrFromSlice(ip); ok {
					it.Addrs = append(it.Addrs, na.Unmap())
				}
			}
		}
		out = append(out, it)
	}
	return out, nil
}
