package testenv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
)

// EntryPointEnv is what RunEntryPoints needs of a backend.
type EntryPointEnv struct {
	// Open returns a new Client of the backend; RunEntryPoints closes it. It should
	// pin addresses (registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true})).
	Open func(t *testing.T) *registry.Client
	// Dump lists, with the backend's native client, every key, node or entry under
	// the Client's root, so that anything half-written by a refused call shows.
	Dump func(t *testing.T) []string
	// Store says whether the backend offers the coordination store.
	Store bool
	// Sessions says whether it offers sessions.
	Sessions bool
}

// field returns what a call's error must be: a *FieldError naming field (or a
// field starting with it, such as "Metadata[k]"), or matching sentinel.
type want struct {
	field    string
	sentinel error
}

func (w want) check(err error) error {
	if err == nil {
		return errors.New("no error")
	}
	if w.sentinel != nil {
		if !errors.Is(err, w.sentinel) {
			return fmt.Errorf("%v, want an error matching %v", err, w.sentinel)
		}
		return nil
	}
	var fe *registry.FieldError
	if !errors.As(err, &fe) || !errors.Is(err, registry.ErrInvalid) {
		return fmt.Errorf("%v, want a FieldError naming %s", err, w.field)
	}
	if !strings.HasPrefix(strings.ToLower(fe.Field), strings.ToLower(w.field)) {
		return fmt.Errorf("%v: names %q, want %q", err, fe.Field, w.field)
	}
	return nil
}

// RunEntryPoints is the hostile-input table at every public entry point
// (Register, Instances, Watch, the Store's Create/Get/Set/Delete/Children/Watch,
// NewSession) with every field at its limits, cancelled contexts and calls after
// Close: each row must fail with an error naming the field (a *FieldError) or
// matching the sentinel (context.Canceled, ErrClosed), never panic, and leave
// nothing on the server (env.Dump is the same before and after).
func RunEntryPoints(t *testing.T, env EntryPointEnv) {
	c := env.Open(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done, stop := context.WithCancel(context.Background())
	stop()

	before := env.Dump(t)
	long := strings.Repeat("a", 300)
	bigMD := map[string]string{"big": strings.Repeat("m", 1<<20)}
	ok := registry.Instance{Service: "hostile", ID: "ok", Host: "10.0.0.1", Port: 8080}
	with := func(f func(*registry.Instance)) registry.Instance { in := ok.Clone(); f(&in); return in }
	type row struct {
		name string
		call func(ctx context.Context, c *registry.Client) error
		want want
	}
	register := func(in registry.Instance) func(context.Context, *registry.Client) error {
		return func(ctx context.Context, c *registry.Client) error {
			r, err := c.Register(ctx, in)
			if err == nil {
				r.Close()
			}
			return err
		}
	}
	rows := []row{
		{"Register service with /", register(with(func(i *registry.Instance) { i.Service = "a/b" })), want{field: "Service"}},
		{"Register service ..", register(with(func(i *registry.Instance) { i.Service = ".." })), want{field: "Service"}},
		{"Register service NUL", register(with(func(i *registry.Instance) { i.Service = "a\x00b" })), want{field: "Service"}},
		{"Register service space", register(with(func(i *registry.Instance) { i.Service = "a b" })), want{field: "Service"}},
		{"Register service 300", register(with(func(i *registry.Instance) { i.Service = long })), want{field: "Service"}},
		{"Register service non-UTF-8", register(with(func(i *registry.Instance) { i.Service = "a\xff" })), want{field: "Service"}},
		{"Register ID with /", register(with(func(i *registry.Instance) { i.ID = "a/b" })), want{field: "ID"}},
		{"Register ID ..", register(with(func(i *registry.Instance) { i.ID = ".." })), want{field: "ID"}},
		{"Register ID NUL", register(with(func(i *registry.Instance) { i.ID = "a\x00" })), want{field: "ID"}},
		{"Register ID 300", register(with(func(i *registry.Instance) { i.ID = long })), want{field: "ID"}},
		{"Register ID non-UTF-8", register(with(func(i *registry.Instance) { i.ID = "id\xff" })), want{field: "ID"}},
		{"Register host with space", register(with(func(i *registry.Instance) { i.Host = "a b" })), want{field: "Host"}},
		{"Register host NUL", register(with(func(i *registry.Instance) { i.Host = "h\x00" })), want{field: "Host"}},
		{"Register port 0", register(with(func(i *registry.Instance) { i.Port = 0 })), want{field: "Port"}},
		{"Register port 65536", register(with(func(i *registry.Instance) { i.Port = 65536 })), want{field: "Port"}},
		{"Register port -1", register(with(func(i *registry.Instance) { i.Port = -1 })), want{field: "Port"}},
		{"Register weight -1", register(with(func(i *registry.Instance) { i.Weight = -1 })), want{field: "Weight"}},
		{"Register zone space", register(with(func(i *registry.Instance) { i.Zone = "a b" })), want{field: "Zone"}},
		{"Register metadata empty key", register(with(func(i *registry.Instance) { i.Metadata = map[string]string{"": "v"} })), want{field: "Metadata"}},
		{"Register metadata non-UTF-8", register(with(func(i *registry.Instance) { i.Metadata = map[string]string{"k": "v\xff\xfe"} })), want{field: "Metadata"}},
		{"Register metadata key non-UTF-8", register(with(func(i *registry.Instance) { i.Metadata = map[string]string{"k\xff": "v"} })), want{field: "Metadata"}},
		{"Register metadata 1 MB", register(with(func(i *registry.Instance) { i.Metadata = bigMD })), want{field: "Metadata"}},
		{"Register cancelled ctx", func(_ context.Context, c *registry.Client) error { return register(ok)(done, c) }, want{sentinel: context.Canceled}},
		{"Instances service with /", func(ctx context.Context, c *registry.Client) error { _, err := c.Instances(ctx, "a/b"); return err }, want{field: "Service"}},
		{"Instances service 300", func(ctx context.Context, c *registry.Client) error { _, err := c.Instances(ctx, long); return err }, want{field: "Service"}},
		{"Instances cancelled ctx", func(_ context.Context, c *registry.Client) error { _, err := c.Instances(done, "hostile"); return err }, want{sentinel: context.Canceled}},
		{"Watch service ..", func(ctx context.Context, c *registry.Client) error {
			w, err := c.Watch(ctx, "..")
			if err == nil {
				w.Close()
			}
			return err
		}, want{field: "Service"}},
		{"Watch service NUL", func(ctx context.Context, c *registry.Client) error {
			w, err := c.Watch(ctx, "a\x00")
			if err == nil {
				w.Close()
			}
			return err
		}, want{field: "Service"}},
		{"Watch cancelled ctx", func(_ context.Context, c *registry.Client) error {
			w, err := c.Watch(done, "hostile")
			if err == nil {
				_, err = w.Next(done)
				w.Close()
			}
			return err
		}, want{sentinel: context.Canceled}},
	}
	if env.Store {
		st := func(f func(ctx context.Context, s *registry.Store) error) func(context.Context, *registry.Client) error {
			return func(ctx context.Context, c *registry.Client) error { return f(ctx, c.Store()) }
		}
		for _, k := range []struct{ name, key string }{
			{"relative", "a"}, {"dotdot", "/a/../b"}, {"empty segment", "/a//b"}, {"NUL", "/a\x00b"},
			{"trailing slash", "/a/"}, {"non-UTF-8", "/a\xff"},
		} {
			key := k.key
			rows = append(rows,
				row{"Store.Create key " + k.name, st(func(ctx context.Context, s *registry.Store) error { _, err := s.Create(ctx, key, nil); return err }), want{field: "key"}},
				row{"Store.Get key " + k.name, st(func(ctx context.Context, s *registry.Store) error { _, err := s.Get(ctx, key); return err }), want{field: "key"}},
				row{"Store.Set key " + k.name, st(func(ctx context.Context, s *registry.Store) error {
					_, err := s.Set(ctx, key, nil, registry.AnyVersion)
					return err
				}), want{field: "key"}},
				row{"Store.Delete key " + k.name, st(func(ctx context.Context, s *registry.Store) error { return s.Delete(ctx, key) }), want{field: "key"}},
				row{"Store.Children key " + k.name, st(func(ctx context.Context, s *registry.Store) error { _, err := s.Children(ctx, key); return err }), want{field: "key"}},
				row{"Store.Watch key " + k.name, st(func(ctx context.Context, s *registry.Store) error {
					w, err := s.Watch(ctx, key)
					if err == nil {
						w.Close()
					}
					return err
				}), want{field: "key"}},
			)
		}
		rows = append(rows,
			row{"Store.Create value 2 MB", st(func(ctx context.Context, s *registry.Store) error {
				_, err := s.Create(ctx, "/hostile/big", make([]byte, 2<<20))
				return err
			}), want{field: "value"}},
			row{"Store.Create cancelled ctx", st(func(_ context.Context, s *registry.Store) error {
				_, err := s.Create(done, "/hostile/c", nil)
				return err
			}), want{sentinel: context.Canceled}},
			row{"Store.Get cancelled ctx", st(func(_ context.Context, s *registry.Store) error { _, err := s.Get(done, "/hostile/c"); return err }), want{sentinel: context.Canceled}},
		)
	}
	if env.Sessions {
		rows = append(rows,
			row{"NewSession TTL -1s", func(ctx context.Context, c *registry.Client) error {
				s, err := c.NewSession(ctx, registry.WithTTL(-time.Second))
				if err == nil {
					closeSession(s)
				}
				return err
			}, want{field: "TTL"}},
			row{"NewSession cancelled ctx", func(_ context.Context, c *registry.Client) error {
				s, err := c.NewSession(done)
				if err == nil {
					closeSession(s)
				}
				return err
			}, want{sentinel: context.Canceled}},
		)
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if err := r.want.check(r.call(ctx, c)); err != nil {
				t.Error(err)
			}
		})
	}
	if env.Sessions {
		// A TTL below the backend's minimum is either refused naming TTL or
		// raised to the minimum (as the backend documents); never a panic.
		t.Run("NewSession TTL 1ms", func(t *testing.T) {
			s, err := c.NewSession(ctx, registry.WithTTL(time.Millisecond))
			if err == nil {
				closeSession(s)
				return
			}
			if e := (want{field: "TTL"}).check(err); e != nil {
				t.Error(e)
			}
		})
	}
	if after := env.Dump(t); !slices.Equal(before, after) {
		t.Errorf("refused calls left entries on the server:\nbefore %q\nafter  %q", before, after)
	}

	// Every entry point after Close.
	c2 := env.Open(t)
	c2.Close()
	closed := []row{
		{"Register after Close", register(ok), want{sentinel: registry.ErrClosed}},
		{"Instances after Close", func(ctx context.Context, c *registry.Client) error { _, err := c.Instances(ctx, "hostile"); return err }, want{sentinel: registry.ErrClosed}},
		{"Watch after Close", func(ctx context.Context, c *registry.Client) error {
			w, err := c.Watch(ctx, "hostile")
			if err == nil {
				w.Close()
			}
			return err
		}, want{sentinel: registry.ErrClosed}},
	}
	if env.Store {
		closed = append(closed,
			row{"Store.Create after Close", func(ctx context.Context, c *registry.Client) error {
				_, err := c.Store().Create(ctx, "/x", nil)
				return err
			}, want{sentinel: registry.ErrClosed}},
			row{"Store.Get after Close", func(ctx context.Context, c *registry.Client) error { _, err := c.Store().Get(ctx, "/x"); return err }, want{sentinel: registry.ErrClosed}},
			row{"Store.Set after Close", func(ctx context.Context, c *registry.Client) error {
				_, err := c.Store().Set(ctx, "/x", nil, registry.AnyVersion)
				return err
			}, want{sentinel: registry.ErrClosed}},
			row{"Store.Delete after Close", func(ctx context.Context, c *registry.Client) error { return c.Store().Delete(ctx, "/x") }, want{sentinel: registry.ErrClosed}},
			row{"Store.Children after Close", func(ctx context.Context, c *registry.Client) error {
				_, err := c.Store().Children(ctx, "/")
				return err
			}, want{sentinel: registry.ErrClosed}},
			row{"Store.Watch after Close", func(ctx context.Context, c *registry.Client) error {
				w, err := c.Store().Watch(ctx, "/")
				if err == nil {
					w.Close()
				}
				return err
			}, want{sentinel: registry.ErrClosed}},
		)
	}
	if env.Sessions {
		closed = append(closed, row{"NewSession after Close", func(ctx context.Context, c *registry.Client) error {
			s, err := c.NewSession(ctx)
			if err == nil {
				closeSession(s)
			}
			return err
		}, want{sentinel: registry.ErrClosed}})
	}
	for _, r := range closed {
		t.Run(r.name, func(t *testing.T) {
			if err := r.want.check(r.call(ctx, c2)); err != nil {
				t.Error(err)
			}
		})
	}
}

// closeSession closes s whatever the shape of its Close (with or without a
// context).
func closeSession(s any) {
	switch x := s.(type) {
	case interface{ Close(context.Context) error }:
		x.Close(context.Background())
	case interface{ Close() error }:
		x.Close()
	}
}
