package cache

import (
	"context"
	"os"
	"testing"

	"github.com/regkit/regkit/registry"
)

// noBackend is a Discovery that never answers, so that a Cache only reads files.
type noBackend struct{}

func (noBackend) Instances(context.Context, string) ([]registry.Instance, error) {
	return nil, registry.ErrUnavailable
}

func (noBackend) Watch(context.Context, string) (registry.Watcher, error) {
	return nil, registry.ErrUnavailable
}

// FuzzLoadFile reads arbitrary bytes as a service's snapshot file (a truncated
// write, a file edited by hand, another program's file): no panic, and what it
// serves are valid instances of that service, sorted, without duplicate IDs.
func FuzzLoadFile(f *testing.F) {
	for _, s := range []string{
		`{"service":"orders","saved":"2024-01-02T03:04:05Z","revision":7,"instances":[{"ID":"a","Service":"orders","Host":"10.0.0.1","Port":80,"Weight":100,"Healthy":true}]}`,
		`{"service":"orders","instances":[{"ID":"b","Service":"orders","Host":"h","Port":1},{"ID":"a","Service":"orders","Host":"h","Port":2}]}`,
		`{"service":"orders","instances":[{"ID":"a","Service":"payments","Host":"h","Port":1}]}`,
		`{"service":"orders","instances":[{"ID":"","Service":"orders","Host":"","Port":0,"Weight":-1}]}`,
		`{"service":"orders","instances":[{"ID":"a","Service":"orders","Host":"h","Port":1},{"ID":"a","Service":"orders","Host":"h2","Port":2}]}`,
		`{"service":"orders","instances":[null]}`,
		`{"service":"orders","instances":null}`,
		`{"service":"other"}`,
		`{"service":"orders","saved":"not a time"}`,
		`{"service":"orders","revision":-1}`,
		`{"service":"orders","instances":[{"ID":"a","Service":"orders","Host":"h","Port":1,"Metadata":{"":"x"}}]}`,
		`{"service":"orders","instances":[`,
		"", "null", "[]", "\xff",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	c, err := New(noBackend{}, WithSnapshotDir(dir))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	const service = "orders"
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(c.filePath(service), data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := c.loadFile(service)
		if err != nil {
			return
		}
		if s == nil {
			t.Fatal("loadFile = nil, nil")
		}
		if s.Service != service || !s.Stale {
			t.Fatalf("loadFile: service %q stale %v", s.Service, s.Stale)
		}
		seen := map[string]bool{}
		for i, in := range s.Instances {
			if err := in.Validate(); err != nil {
				t.Fatalf("loadFile served an invalid instance %+v: %v", in, err)
			}
			if in.Service != service {
				t.Fatalf("loadFile served an instance of %q for %q", in.Service, service)
			}
			if seen[in.ID] {
				t.Fatalf("loadFile served ID %q twice", in.ID)
			}
			seen[in.ID] = true
			if i > 0 && s.Instances[i-1].ID > in.ID {
				t.Fatalf("loadFile: instances not sorted by ID")
			}
		}
	})
}
