package registry_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
	"github.com/regkit/regkit/registry/driver"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpenErrorsNameTheProblem(t *testing.T) {
	ctx := context.Background()
	cases := map[string]string{
		"::bad":              "url",
		"no-scheme":          "url",
		"nosuch://h":         "url",
		"mem://x?unknown=1":  "url",
		"mem://x?unknown=1&": "url",
	}
	for u, field := range cases {
		_, err := registry.Open(ctx, u)
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want a FieldError on %s", u, err, field)
		}
	}
}

// A backend-specific option given to another backend is rejected before any I/O,
// naming the option.
func TestForeignDriverOption(t *testing.T) {
	_, err := registry.Open(context.Background(), "mem://foreign", registry.DriverOption("consul.WithTags", []string{"x"}))
	var fe *registry.FieldError
	if !errors.As(err, &fe) || fe.Field != "option" || fe.Value != "consul.WithTags" || !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("Open = %v, want a FieldError naming consul.WithTags", err)
	}
}

func TestParams(t *testing.T) {
	u, _ := url.Parse("x://h/p?dial_timeout=3s&ttl=-1s&n=7&b=yes&mode=fast&extra=1")
	p := driver.NewParams(u)
	if d := p.Duration("dial_timeout", time.Second); d != 3*time.Second {
		t.Errorf("dial_timeout = %v", d)
	}
	if n := p.Int("n", 0); n != 7 {
		t.Errorf("n = %d", n)
	}
	if m := p.OneOf("mode", "slow", "slow", "fast"); m != "fast" {
		t.Errorf("mode = %q", m)
	}
	p.Duration("ttl", 0)
	err := p.Done()
	var fe *registry.FieldError
	if !errors.As(err, &fe) || fe.Field != "ttl" {
		t.Fatalf("Done = %v, want the bad ttl named", err)
	}
	p = driver.NewParams(u)
	p.Duration("dial_timeout", 0)
	p.Duration("ttl", 0)
	p.Int("n", 0)
	p.Bool("b", false)
	p.String("mode", "")
	err = p.Done() // b=yes is not a bool
	if !errors.As(err, &fe) || fe.Field != "ttl" && fe.Field != "b" {
		t.Fatalf("Done = %v", err)
	}
	u2, _ := url.Parse("x://h?a=1&zz=2")
	p = driver.NewParams(u2)
	p.String("a", "")
	if err := p.Done(); err == nil || !errors.As(err, &fe) || fe.Value != "x://h?a=1&zz=2" || !strings.Contains(fe.Reason, `"zz"`) {
		t.Errorf("unknown parameter: %v", err)
	}
}

func TestHosts(t *testing.T) {
	u, err := registry.ParseURL("etcd://h1:2379,h2,[::1]:9,[::2]/prefix")
	if err != nil {
		t.Fatal(err)
	}
	got, err := driver.Hosts(u, 2379)
	if u.Path != "/prefix" {
		t.Errorf("path %q", u.Path)
	}
	want := []string{"h1:2379", "h2:2379", "[::1]:9", "[::2]:2379"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Hosts = %v, %v; want %v", got, err, want)
	}
	u, _ = url.Parse("etcd:///prefix")
	if _, err := driver.Hosts(u, 1); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("no host: %v", err)
	}
}

func TestValidKey(t *testing.T) {
	for _, k := range []string{"/", "/a", "/a/b-c/d_e.f"} {
		if err := driver.ValidKey(k); err != nil {
			t.Errorf("ValidKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "a", "/a/", "//a", "/a/./b", "/a/../b", "/a\x00"} {
		if err := driver.ValidKey(k); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("ValidKey(%q) = %v, want ErrInvalid", k, err)
		}
	}
	if p := driver.ParentKey("/a/b"); p != "/a" {
		t.Errorf("ParentKey = %q", p)
	}
	if p := driver.ParentKey("/a"); p != "/" {
		t.Errorf("ParentKey = %q", p)
	}
	if s := driver.SequenceSuffix(42); s != "0000000042" {
		t.Errorf("SequenceSuffix = %q", s)
	}
}

// Register during an outage waits for the backend, then succeeds; with a context
// that ends first it fails and leaves nothing behind.
func TestRegisterRetriesThroughOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, "mem://outage", registry.WithRetryBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := mem.Lookup("outage")
	srv.Cut()
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = c.Register(short, registry.Instance{Service: "s", Host: "10.0.0.1", Port: 1})
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, registry.ErrUnavailable) && err == nil {
		t.Fatalf("Register during outage with short ctx = %v, want deadline exceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Register(ctx, registry.Instance{Service: "s", Host: "10.0.0.2", Port: 2})
		done <- err
	}()
	srv.Heal()
	if err := <-done; err != nil {
		t.Fatalf("Register after heal: %v", err)
	}
	got, err := c.Instances(ctx, "s")
	if err != nil || len(got) != 1 || got[0].Host != "10.0.0.2" {
		t.Fatalf("instances = %v, %v; want only the second", got, err)
	}
}

func TestHostFromResolver(t *testing.T) {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://resolver", registry.WithAddressResolver(fixed{"192.0.2.9", 7070}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Register(ctx, registry.Instance{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if in := r.Instance(); in.Host != "192.0.2.9" || in.Port != 7070 || in.ID != "192.0.2.9:7070" {
		t.Errorf("resolved instance = %+v", in)
	}
	// The resolver decides: it is given the configured port and may override it
	// (the standard one does when REGKIT_REGISTER_PORT or DUBBO_PORT_TO_REGISTRY
	// is set).
	r, err = c.Register(ctx, registry.Instance{Service: "svc", ID: "other", Port: 81})
	if err != nil || r.Instance().Port != 7070 {
		t.Errorf("resolver's port: %v, %v", r, err)
	}
}

type fixed struct {
	host string
	port int
}

func (f fixed) Advertise(string, int) (address.Advertised, error) {
	return address.Advertised{Host: f.host, Port: f.port}, nil
}

func TestRedactURL(t *testing.T) {
	u, err := registry.ParseURL("consul://bob:hunter2@h:8500/ns?token=s3cret&dc=eu&AccessToken=t0k&group=g")
	if err != nil {
		t.Fatal(err)
	}
	got := registry.RedactURL(u)
	for _, secret := range []string{"hunter2", "s3cret", "t0k"} {
		if strings.Contains(got, secret) {
			t.Errorf("RedactURL = %q shows %q", got, secret)
		}
	}
	for _, kept := range []string{"bob", "h:8500", "dc=eu", "group=g"} {
		if !strings.Contains(got, kept) {
			t.Errorf("RedactURL = %q lost %q", got, kept)
		}
	}
	// The errors of Hosts and Open carry the redacted form.
	u, _ = url.Parse("consul:///ns?token=s3cret")
	if _, err := driver.Hosts(u, 8500); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Hosts error %v shows the token", err)
	}
	ctx := context.Background()
	if _, err := registry.Open(ctx, "nosuch://h/?token=s3cret"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open error %v shows the token", err)
	}
}

// TestRegisterEnvironmentWins is the Kubernetes NodePort case from issue 14: the
// program sets the port it binds (8080), the manifest sets the node IP and the
// NodePort in Dubbo's variables, and the variables win, each on its own, with
// one Info line saying what was advertised and why.
func TestRegisterEnvironmentWins(t *testing.T) {
	t.Setenv(address.EnvHost, "")
	t.Setenv(address.EnvPort, "")
	t.Setenv(address.EnvDubboHost, "192.0.2.10")
	t.Setenv(address.EnvDubboPort, "31080")
	var logs bytes.Buffer
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://env-wins", registry.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Register(ctx, registry.Instance{Service: "svc", Host: "10.244.1.7", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if in := r.Instance(); in.Host != "192.0.2.10" || in.Port != 31080 {
		t.Errorf("registered %s, want the node address 192.0.2.10:31080", in.Addr())
	}
	if n := strings.Count(logs.String(), "advertising"); n != 1 ||
		!strings.Contains(logs.String(), "port_from="+address.EnvDubboPort) || !strings.Contains(logs.String(), "configured=10.244.1.7:8080") {
		t.Errorf("want one Info line naming the source and the configured address, got %d:\n%s", n, logs.String())
	}
	// Only the port set: the configured host stays.
	t.Setenv(address.EnvDubboHost, "")
	r, err = c.Register(ctx, registry.Instance{Service: "svc", Host: "10.244.1.7", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if in := r.Instance(); in.Host != "10.244.1.7" || in.Port != 31080 {
		t.Errorf("registered %s, want 10.244.1.7:31080", in.Addr())
	}
	// A resolver that ignores the environment keeps what the program gave.
	c2, err := registry.Open(ctx, "mem://env-ignored", registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	r, err = c2.Register(ctx, registry.Instance{Service: "svc", Host: "10.244.1.7", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if in := r.Instance(); in.Addr() != "10.244.1.7:8080" {
		t.Errorf("IgnoreEnvironment registered %s, want 10.244.1.7:8080", in.Addr())
	}
}

// TestRegisterWithoutPortNamesPort: with no port anywhere the error names Port
// and the variables that would have supplied it (it used to name the ID).
func TestRegisterWithoutPortNamesPort(t *testing.T) {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://no-port", registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Register(ctx, registry.Instance{Service: "svc", Host: "10.0.0.1"})
	var fe *registry.FieldError
	if !errors.As(err, &fe) || fe.Field != "Port" || !strings.Contains(err.Error(), address.EnvPort) || !strings.Contains(err.Error(), address.EnvDubboPort) {
		t.Errorf("Register without a port = %v, want a FieldError naming Port and the variables", err)
	}
}
