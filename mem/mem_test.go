package mem_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/registrytest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// servers opened by the harness, so the fault hooks reach them.
var (
	mu      sync.Mutex
	servers = map[string]*mem.Server{}
)

func each(f func(*mem.Server)) {
	mu.Lock()
	defer mu.Unlock()
	for _, s := range servers {
		f(s)
	}
}

func harness() registrytest.Harness {
	return registrytest.Harness{
		Name: "mem",
		NewClient: func(t testing.TB, ns string) *registry.Client {
			c, err := registry.Open(context.Background(), "mem://"+ns)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			servers[ns] = mem.Lookup(ns)
			mu.Unlock()
			return c
		},
		ExpireSession: func(t testing.TB, c *registry.Client) { c.Conn().(*mem.Conn).ExpireSession() },
		DeleteInstance: func(t testing.TB, c *registry.Client, service, id string) {
			if !c.Conn().(*mem.Conn).Server().DeleteInstance(service, id) {
				t.Fatalf("DeleteInstance: no instance %s of %s", id, service)
			}
		},
		Restart: func(t testing.TB) { each((*mem.Server).Restart) },
		Cut: func(t testing.TB) func() {
			each((*mem.Server).Cut)
			return func() { each((*mem.Server).Heal) }
		},
		// Opened during the Cut the case makes: its server, new, is cut here too
		// (Cut reached only the servers opened before) and healed with the rest.
		NewLazyClient: func(t testing.TB, ns string) *registry.Client {
			s := mem.Lookup(ns)
			s.Cut()
			mu.Lock()
			servers[ns] = s
			mu.Unlock()
			c, err := registry.Open(context.Background(), "mem://"+ns, registry.WithLazyConnect(),
				registry.WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		UnreachableURL: func(t testing.TB) string {
			name := "unreachable-" + strings.ReplaceAll(t.Name(), "/", "-")
			mem.Lookup(name).Cut()
			t.Cleanup(mem.Lookup(name).Heal)
			return "mem://" + name
		},
	}
}

func TestRegistryConformance(t *testing.T) { registrytest.RunRegistry(t, harness()) }

func TestStoreConformance(t *testing.T) { registrytest.RunStore(t, harness()) }

func TestOpenRejects(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{"mem://", "mem://x?bogus=1", "mem://x/path"} {
		if _, err := registry.Open(ctx, u); err == nil {
			t.Errorf("Open(%q) succeeded", u)
		}
	}
}

// TestOpenRejectsBadName: the host is a NAME of URL-unreserved characters; a
// port or a percent escape was taken as part of the name.
func TestOpenRejectsBadName(t *testing.T) {
	ctx := context.Background()
	for u, part := range map[string]string{
		"mem://x:1": "port", "mem://x:": "port", "mem://%zz": "name", "mem:%zz": "name",
		"mem://a%20b": "name", "mem://a,b": "name", "mem://[::1]": "name",
	} {
		_, err := registry.Open(ctx, u)
		var fe *registry.FieldError
		if !errors.Is(err, registry.ErrInvalid) || !errors.As(err, &fe) || fe.Field != "url" || !strings.Contains(fe.Reason, part) {
			t.Errorf("Open(%q) = %v, want ErrInvalid naming the %s", u, err, part)
		}
	}
	for _, u := range []string{"mem://ok-Name_1.x~", "mem:opaque-ok", "mem://user:secret@with-user"} {
		c, err := registry.Open(ctx, u)
		if err != nil {
			t.Errorf("Open(%q): %v", u, err)
			continue
		}
		c.Close()
	}
}
