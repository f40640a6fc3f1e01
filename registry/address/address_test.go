package address

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func ifc(name string, addrs ...string) Interface {
	it := Interface{Name: name, Up: true, Loopback: name == "lo"}
	for _, a := range addrs {
		it.Addrs = append(it.Addrs, netip.MustParseAddr(a))
	}
	return it
}

func down(i Interface) Interface { i.Up = false; return i }

func ifs(list ...Interface) func() ([]Interface, error) {
	return func() ([]Interface, error) { return list, nil }
}

var (
	lo      = ifc("lo", "127.0.0.1", "::1")
	eth0    = ifc("eth0", "fe80::1", "10.1.2.3")
	eth1    = ifc("eth1", "192.168.1.5")
	pub     = ifc("ens5", "203.0.113.7")
	docker0 = ifc("docker0", "172.17.0.1")
	veth    = ifc("veth12ab", "172.17.0.9")
	v6only  = ifc("eth0", "fe80::1", "2001:db8::10")
	ll      = ifc("eth0", "169.254.10.1", "fe80::2")
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name     string
		r        Resolver
		wantHost string
		wantPort int
		wantErr  string // substring; "" means success
		noAddr   bool   // error must wrap ErrNoAddress
	}{
		// Explicit fields.
		// Dubbo's precedence: the deployment's variables override what the program
		// configured, each half on its own.
		{name: "env wins over configured host and port", r: Resolver{Host: "svc.example", Port: 8080,
			Getenv: env(EnvHost, "10.9.9.9", EnvPort, "9090", EnvDubboHost, "10.8.8.8", EnvDubboPort, "7070"), Interfaces: ifs(eth0)},
			wantHost: "10.9.9.9", wantPort: 9090},
		{name: "dubbo env wins over configured host and port", r: Resolver{Host: "svc.example", Port: 8080,
			Getenv: env(EnvDubboHost, "10.8.8.8", EnvDubboPort, "7070"), Interfaces: ifs(eth0)},
			wantHost: "10.8.8.8", wantPort: 7070},
		{name: "IgnoreEnvironment keeps the configured address", r: Resolver{Host: "svc.example", Port: 8080, IgnoreEnvironment: true,
			Getenv: env(EnvHost, "10.9.9.9", EnvPort, "9090", EnvDubboHost, "10.8.8.8", EnvDubboPort, "7070"), Interfaces: ifs(eth0)},
			wantHost: "svc.example", wantPort: 8080},
		{name: "IgnoreEnvironment ignores preferred networks from env", r: Resolver{IgnoreEnvironment: true,
			Getenv: env(EnvPreferredNetworks, "(bad"), Interfaces: ifs(eth0)}, wantHost: "10.1.2.3"},
		{name: "explicit host, port from env", r: Resolver{Host: "h1", Getenv: env(EnvPort, "9090")},
			wantHost: "h1", wantPort: 9090},
		{name: "configured port overridden, host from env", r: Resolver{Port: 81, Getenv: env(EnvHost, "10.9.9.9", EnvPort, "9090")},
			wantHost: "10.9.9.9", wantPort: 9090},
		{name: "configured port kept when no port variable", r: Resolver{Port: 81, Getenv: env(EnvHost, "10.9.9.9")},
			wantHost: "10.9.9.9", wantPort: 81},
		{name: "explicit port out of range", r: Resolver{Host: "h", Port: 70000, Getenv: env()}, wantErr: "Resolver.Port=70000"},
		{name: "explicit host is not consulted against interfaces", r: Resolver{Host: "h", Getenv: env(EnvPreferredNetworks, "(bad"),
			Interfaces: func() ([]Interface, error) { return nil, errors.New("must not be called") }}, wantHost: "h"},

		// Environment.
		{name: "regkit env wins over dubbo env and interfaces", r: Resolver{
			Getenv: env(EnvHost, "10.9.9.9", EnvPort, "9090", EnvDubboHost, "10.8.8.8", EnvDubboPort, "7070"), Interfaces: ifs(eth0)},
			wantHost: "10.9.9.9", wantPort: 9090},
		{name: "dubbo env used when regkit env unset", r: Resolver{
			Getenv: env(EnvDubboHost, "10.8.8.8", EnvDubboPort, "30080"), Interfaces: ifs(eth0)},
			wantHost: "10.8.8.8", wantPort: 30080},
		{name: "host and port independent: regkit host, dubbo port", r: Resolver{
			Getenv: env(EnvHost, "node1.example", EnvDubboPort, "30080")},
			wantHost: "node1.example", wantPort: 30080},
		{name: "env values trimmed; blank counts as unset", r: Resolver{
			Getenv: env(EnvHost, "   ", EnvDubboHost, " 10.8.8.8\n", EnvPort, " 443 ")},
			wantHost: "10.8.8.8", wantPort: 443},
		{name: "env IPv6 host in brackets canonicalised", r: Resolver{Getenv: env(EnvHost, "[2001:DB8::1]")}, wantHost: "2001:db8::1"},
		{name: "no port configured is 0, not an error", r: Resolver{Getenv: env(), Interfaces: ifs(eth0)}, wantHost: "10.1.2.3", wantPort: 0},

		// Bad env values.
		{name: "port not a number", r: Resolver{Getenv: env(EnvPort, "abc"), Interfaces: ifs(eth0)},
			wantErr: `address: REGKIT_REGISTER_PORT="abc": not a port: want decimal digits in 1-65535`},
		{name: "port too large", r: Resolver{Getenv: env(EnvPort, "70000"), Interfaces: ifs(eth0)},
			wantErr: `REGKIT_REGISTER_PORT="70000": not a port`},
		{name: "port with plus sign", r: Resolver{Getenv: env(EnvPort, "+80"), Interfaces: ifs(eth0)},
			wantErr: `REGKIT_REGISTER_PORT="+80": not a port: want decimal digits`},
		{name: "dubbo port with plus sign", r: Resolver{Getenv: env(EnvDubboPort, " +8080 "), Interfaces: ifs(eth0)},
			wantErr: `DUBBO_PORT_TO_REGISTRY=" +8080 ": not a port`},
		{name: "port with inner space", r: Resolver{Getenv: env(EnvPort, "80 80"), Interfaces: ifs(eth0)}, wantErr: `REGKIT_REGISTER_PORT="80 80"`},
		{name: "port zero", r: Resolver{Getenv: env(EnvPort, "0"), Interfaces: ifs(eth0)}, wantErr: `REGKIT_REGISTER_PORT="0"`},
		{name: "port negative", r: Resolver{Getenv: env(EnvPort, "-1"), Interfaces: ifs(eth0)}, wantErr: `REGKIT_REGISTER_PORT="-1"`},
		{name: "bad dubbo port", r: Resolver{Getenv: env(EnvDubboPort, "8080x"), Interfaces: ifs(eth0)}, wantErr: `DUBBO_PORT_TO_REGISTRY="8080x"`},
		{name: "bad regkit port does not fall through to dubbo", r: Resolver{Getenv: env(EnvPort, "x", EnvDubboPort, "80"), Interfaces: ifs(eth0)},
			wantErr: `REGKIT_REGISTER_PORT="x"`},
		{name: "host with spaces", r: Resolver{Getenv: env(EnvHost, "my host")}, wantErr: `REGKIT_REGISTER_HOST="my host": not an IP address or host name`},
		{name: "host with port", r: Resolver{Getenv: env(EnvHost, "10.0.0.1:8080")}, wantErr: "the port goes in the port variable"},
		{name: "bad dubbo host", r: Resolver{Getenv: env(EnvDubboHost, "a..b")}, wantErr: `DUBBO_IP_TO_REGISTRY="a..b"`},
		{name: "bad regkit host does not fall through to dubbo", r: Resolver{Getenv: env(EnvHost, "-x", EnvDubboHost, "10.0.0.1")},
			wantErr: `REGKIT_REGISTER_HOST="-x"`},
		{name: "unspecified host", r: Resolver{Getenv: env(EnvHost, "0.0.0.0")}, wantErr: "unspecified"},

		// Loopback.
		{name: "loopback IP from env refused", r: Resolver{Getenv: env(EnvHost, "127.0.0.1")}, wantErr: `REGKIT_REGISTER_HOST="127.0.0.1": loopback`},
		{name: "loopback IPv6 from dubbo env refused", r: Resolver{Getenv: env(EnvDubboHost, "::1")}, wantErr: `DUBBO_IP_TO_REGISTRY="::1": loopback`},
		{name: "localhost from env refused", r: Resolver{Getenv: env(EnvHost, "LocalHost")}, wantErr: "loopback host refused"},
		// Short and numeric IPv4 forms, which resolvers (inet_aton) expand: 127.1
		// is 127.0.0.1, 2130706433 and 0x7f000001 too. Not DNS names.
		{name: "short IPv4 form from env refused", r: Resolver{Getenv: env(EnvHost, "127.1")}, wantErr: `REGKIT_REGISTER_HOST="127.1": not an IP address or host name`},
		{name: "numeric IPv4 form from dubbo env refused", r: Resolver{Getenv: env(EnvDubboHost, "2130706433")}, wantErr: `DUBBO_IP_TO_REGISTRY="2130706433"`},
		{name: "hex IPv4 form from env refused", r: Resolver{Getenv: env(EnvHost, "0x7f.0.0.1")}, wantErr: `REGKIT_REGISTER_HOST="0x7f.0.0.1"`},
		{name: "loopback from env allowed", r: Resolver{AllowLoopback: true, Getenv: env(EnvHost, "127.0.0.2")}, wantHost: "127.0.0.2"},
		{name: "only loopback interface: ErrNoAddress", r: Resolver{Getenv: env(), Interfaces: ifs(lo)}, noAddr: true},
		{name: "only loopback interface, allowed: 127.0.0.1", r: Resolver{AllowLoopback: true, Getenv: env(), Interfaces: ifs(lo)}, wantHost: "127.0.0.1"},
		{name: "loopback never chosen over a real address even when allowed", r: Resolver{AllowLoopback: true, Getenv: env(), Interfaces: ifs(lo, pub)},
			wantHost: "203.0.113.7"},
		{name: "non-loopback address on loopback interface skipped", r: Resolver{Getenv: env(), Interfaces: ifs(ifc("lo", "127.0.0.1", "10.0.0.100"), pub)},
			wantHost: "203.0.113.7"},

		// Interface fallbacks.
		{name: "site-local IPv4 preferred over public", r: Resolver{Getenv: env(), Interfaces: ifs(lo, pub, eth1)}, wantHost: "192.168.1.5"},
		{name: "first site-local in interface order", r: Resolver{Getenv: env(), Interfaces: ifs(eth1, eth0)}, wantHost: "192.168.1.5"},
		{name: "public IPv4 when no site-local", r: Resolver{Getenv: env(), Interfaces: ifs(lo, pub)}, wantHost: "203.0.113.7"},
		{name: "down interfaces skipped", r: Resolver{Getenv: env(), Interfaces: ifs(down(eth1), pub)}, wantHost: "203.0.113.7"},
		{name: "IPv4 preferred over IPv6 on an earlier interface", r: Resolver{Getenv: env(), Interfaces: ifs(v6only, pub)}, wantHost: "203.0.113.7"},
		{name: "IPv6-only host: global IPv6 chosen", r: Resolver{Getenv: env(), Interfaces: ifs(lo, v6only)}, wantHost: "2001:db8::10"},
		{name: "IPv6-only host: unique-local chosen", r: Resolver{Getenv: env(), Interfaces: ifs(ifc("eth0", "fd00::5"))}, wantHost: "fd00::5"},
		{name: "link-local never chosen", r: Resolver{Getenv: env(), Interfaces: ifs(lo, ll)}, noAddr: true},
		{name: "link-local skipped for a later address", r: Resolver{Getenv: env(), Interfaces: ifs(ll, pub)}, wantHost: "203.0.113.7"},
		{name: "no interfaces", r: Resolver{Getenv: env(), Interfaces: ifs()}, noAddr: true, wantErr: "set REGKIT_REGISTER_HOST"},
		{name: "interface listing error", r: Resolver{Getenv: env(), Interfaces: func() ([]Interface, error) { return nil, errors.New("boom") }},
			wantErr: "boom"},

		// Ignored interfaces.
		{name: "docker0 and veth ignored by default", r: Resolver{Getenv: env(), Interfaces: ifs(docker0, veth, eth1)}, wantHost: "192.168.1.5"},
		{name: "only docker0: ErrNoAddress", r: Resolver{Getenv: env(), Interfaces: ifs(lo, docker0, veth)}, noAddr: true},
		{name: "empty non-nil ignore list disables defaults", r: Resolver{IgnoredInterfaces: []string{}, Getenv: env(), Interfaces: ifs(docker0, eth1)},
			wantHost: "172.17.0.1"},
		{name: "ignore list from field", r: Resolver{IgnoredInterfaces: []string{"eth.*"}, Getenv: env(), Interfaces: ifs(eth1, docker0)},
			wantHost: "172.17.0.1"},
		{name: "ignore list from env replaces defaults", r: Resolver{Getenv: env(EnvIgnoredInterfaces, " eth1 , , wlan.*"), Interfaces: ifs(eth1, docker0)},
			wantHost: "172.17.0.1"},
		{name: "ignore regex is anchored", r: Resolver{IgnoredInterfaces: []string{"eth"}, Getenv: env(), Interfaces: ifs(eth1)},
			wantHost: "192.168.1.5"},
		{name: "ignored interface skipped even if preferred", r: Resolver{PreferredNetworks: []string{"172.17.0.0/16"}, Getenv: env(),
			Interfaces: ifs(docker0, pub)}, wantHost: "203.0.113.7"},
		{name: "invalid ignore regex", r: Resolver{IgnoredInterfaces: []string{"docker(.*"}, Getenv: env(), Interfaces: ifs(eth0)},
			wantErr: `ignored interface "docker(.*"`},

		// Preferred networks.
		{name: "CIDR preference beats site-local order", r: Resolver{PreferredNetworks: []string{"10.0.0.0/8"}, Getenv: env(), Interfaces: ifs(eth1, eth0)},
			wantHost: "10.1.2.3"},
		{name: "CIDR preference selects public over site-local", r: Resolver{PreferredNetworks: []string{"203.0.113.0/24"}, Getenv: env(),
			Interfaces: ifs(eth1, pub)}, wantHost: "203.0.113.7"},
		{name: "preference order is list order, not interface order", r: Resolver{PreferredNetworks: []string{"192.168.0.0/16", "10.0.0.0/8"},
			Getenv: env(), Interfaces: ifs(eth0, eth1)}, wantHost: "192.168.1.5"},
		{name: "unmatched preference falls back", r: Resolver{PreferredNetworks: []string{"100.64.0.0/10"}, Getenv: env(), Interfaces: ifs(pub, eth1)},
			wantHost: "192.168.1.5"},
		{name: "regex over IP string", r: Resolver{PreferredNetworks: []string{`192\.168\..*`}, Getenv: env(), Interfaces: ifs(eth0, eth1)},
			wantHost: "192.168.1.5"},
		{name: "regex over interface name", r: Resolver{PreferredNetworks: []string{`ens.*`}, Getenv: env(), Interfaces: ifs(eth0, pub)},
			wantHost: "203.0.113.7"},
		{name: "single IP entry", r: Resolver{PreferredNetworks: []string{"192.168.1.5"}, Getenv: env(), Interfaces: ifs(eth0, eth1)},
			wantHost: "192.168.1.5"},
		{name: "preferred from env", r: Resolver{Getenv: env(EnvPreferredNetworks, "100.64.0.0/10, 203.0.113.0/24"), Interfaces: ifs(eth1, pub)},
			wantHost: "203.0.113.7"},
		{name: "preferred IPv6 CIDR", r: Resolver{PreferredNetworks: []string{"2001:db8::/32"}, Getenv: env(), Interfaces: ifs(eth1, v6only)},
			wantHost: "2001:db8::10"},
		{name: "preferred entry: IPv4 over IPv6 on same interface", r: Resolver{PreferredNetworks: []string{"eth0"}, Getenv: env(),
			Interfaces: ifs(eth1, ifc("eth0", "2001:db8::10", "10.1.2.3"))}, wantHost: "10.1.2.3"},
		{name: "preferred never picks link-local", r: Resolver{PreferredNetworks: []string{"169.254.0.0/16"}, Getenv: env(), Interfaces: ifs(ll, pub)},
			wantHost: "203.0.113.7"},
		{name: "preferred never picks loopback", r: Resolver{PreferredNetworks: []string{"127.0.0.0/8"}, AllowLoopback: true, Getenv: env(),
			Interfaces: ifs(lo, pub)}, wantHost: "203.0.113.7"},
		{name: "invalid CIDR", r: Resolver{PreferredNetworks: []string{"10.0.0.0/33"}, Getenv: env(), Interfaces: ifs(eth0)},
			wantErr: `preferred network "10.0.0.0/33"`},
		{name: "partial IP rejected", r: Resolver{Getenv: env(EnvPreferredNetworks, "192.168"), Interfaces: ifs(eth0)},
			wantErr: `preferred network "192.168"`},
		{name: "invalid preferred regex", r: Resolver{PreferredNetworks: []string{"eth[0"}, Getenv: env(), Interfaces: ifs(eth0)},
			wantErr: `preferred network "eth[0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := tt.r.Resolve()
			if tt.wantErr != "" || tt.noAddr {
				if err == nil {
					t.Fatalf("Resolve() = %q, %d, nil; want error", host, port)
				}
				if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				if got := errors.Is(err, ErrNoAddress); got != tt.noAddr {
					t.Errorf("errors.Is(%v, ErrNoAddress) = %v, want %v", err, got, tt.noAddr)
				}
				if host != "" || port != 0 {
					t.Errorf("on error got %q, %d; want zero values", host, port)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve() error: %v", err)
			}
			if host != tt.wantHost || port != tt.wantPort {
				t.Errorf("Resolve() = %q, %d; want %q, %d", host, port, tt.wantHost, tt.wantPort)
			}
		})
	}
}

func TestErrNoAddressNamesEnvVar(t *testing.T) {
	if !strings.Contains(ErrNoAddress.Error(), EnvHost) {
		t.Errorf("ErrNoAddress = %q; should name %s", ErrNoAddress, EnvHost)
	}
}

func TestDefaultIgnoredInterfacesIsACopy(t *testing.T) {
	a := DefaultIgnoredInterfaces()
	a[0] = "changed"
	if DefaultIgnoredInterfaces()[0] == "changed" {
		t.Error("DefaultIgnoredInterfaces shares its backing array")
	}
}

// TestDefaultUsesProcessEnvironment checks that the nil Getenv reads os.Getenv.
func TestDefaultUsesProcessEnvironment(t *testing.T) {
	t.Setenv(EnvHost, "10.20.30.40")
	t.Setenv(EnvPort, "1234")
	t.Setenv(EnvDubboHost, "")
	t.Setenv(EnvDubboPort, "")
	host, port, err := Default().Resolve()
	if err != nil || host != "10.20.30.40" || port != 1234 {
		t.Errorf("Default().Resolve() = %q, %d, %v; want 10.20.30.40, 1234, nil", host, port, err)
	}
}

// TestSystemInterfaces exercises the real interface listing; it only checks
// invariants, since the machine's interfaces are unknown.
func TestSystemInterfaces(t *testing.T) {
	list, err := systemInterfaces()
	if err != nil {
		t.Skipf("net.Interfaces: %v", err)
	}
	for _, it := range list {
		if it.Name == "" {
			t.Errorf("interface with empty name: %+v", it)
		}
		for _, a := range it.Addrs {
			if !a.IsValid() || a.Is4In6() {
				t.Errorf("%s: address %v not valid/unmapped", it.Name, a)
			}
		}
	}
	r := &Resolver{AllowLoopback: true, Getenv: env()}
	host, _, err := r.Resolve()
	if err != nil && !errors.Is(err, ErrNoAddress) {
		t.Errorf("Resolve on real interfaces: %v", err)
	}
	if err == nil && host == "" {
		t.Error("Resolve on real interfaces returned empty host without error")
	}
}

// TestAdvertiseNodePort is the Kubernetes NodePort case: the program binds pod
// port 8080 and configures it; the manifest passes the node IP and the NodePort
// through Dubbo's variables, which must win, each reported with its source.
func TestAdvertiseNodePort(t *testing.T) {
	r := &Resolver{Getenv: env(EnvDubboHost, "192.0.2.10", EnvDubboPort, "31080"), Interfaces: ifs(ifc("eth0", "10.244.1.7"))}
	a, err := r.Advertise("", 8080)
	if err != nil {
		t.Fatal(err)
	}
	want := Advertised{Host: "192.0.2.10", Port: 31080, HostFrom: EnvDubboHost, PortFrom: EnvDubboPort}
	if a != want {
		t.Errorf("Advertise = %+v, want %+v", a, want)
	}
	// Without the variables the configured port and an interface address are used.
	r = &Resolver{Getenv: env(), Interfaces: ifs(ifc("eth0", "10.244.1.7"))}
	a, err = r.Advertise("", 8080)
	if err != nil {
		t.Fatal(err)
	}
	want = Advertised{Host: "10.244.1.7", Port: 8080, HostFrom: "interfaces", PortFrom: "configured"}
	if a != want {
		t.Errorf("Advertise = %+v, want %+v", a, want)
	}
	// An invalid variable is an error even when the program configured a value.
	r = &Resolver{Getenv: env(EnvPort, "http")}
	if _, err := r.Advertise("h", 8080); err == nil || !strings.Contains(err.Error(), EnvPort) {
		t.Errorf("Advertise with a bad %s = %v, want an error naming it", EnvPort, err)
	}
}
