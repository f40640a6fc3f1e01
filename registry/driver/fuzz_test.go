package driver_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/regkit/regkit/registry/driver"
)

// FuzzParams reads an arbitrary query with every Params getter: no panic, and
// Done's error, if any, is a FieldError.
func FuzzParams(f *testing.F) {
	for _, q := range []string{
		"dial_timeout=3s&lease_ttl=10s", "n=1&b=true&o=a", "n=x", "d=-1s", "d=9999999999h",
		"b=maybe", "o=z", "unknown=1&n=2", "n=99999999999999999999", "%zz=1", "d=1s&d=2s", ";=;",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		u := &url.URL{Scheme: "x", Host: "h", RawQuery: q}
		p := driver.NewParams(u)
		if d := p.Duration("d", 0); d < 0 {
			t.Fatalf("Duration gave %v < 0 for %q", d, q)
		}
		p.Int("n", 0)
		p.Bool("b", false)
		p.String("s", "")
		p.OneOf("o", "a", "a", "b")
		if err := p.Done(); err != nil {
			var fe *driver.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, driver.ErrInvalid) {
				t.Fatalf("Done for %q = %v, want a FieldError", q, err)
			}
		}
	})
}

// FuzzHosts splits arbitrary host lists: no panic, no empty host, every host
// has a port, errors name the url.
func FuzzHosts(f *testing.F) {
	for _, h := range []string{"h1:2379,h2", "[::1]:2181,[::1]", "a,,b", ",", "", "[", "]", "h:", ":1", "[fe80::1%eth0]"} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, host string) {
		hosts, err := driver.Hosts(&url.URL{Scheme: "x", Host: host}, 2181)
		if err != nil {
			var fe *driver.FieldError
			if !errors.As(err, &fe) || fe.Field != "url" {
				t.Fatalf("Hosts(%q) = %v, want a FieldError for url", host, err)
			}
			return
		}
		if len(hosts) == 0 {
			t.Fatalf("Hosts(%q) = no hosts, no error", host)
		}
		for _, h := range hosts {
			if h == "" || !strings.Contains(h, ":") {
				t.Fatalf("Hosts(%q) = %q: a host without a port", host, hosts)
			}
		}
	})
}

// FuzzValidKey checks the store key helpers on arbitrary keys: a valid key's
// parent is valid and joining it with the last segment gives the key back.
func FuzzValidKey(f *testing.F) {
	for _, k := range []string{"/", "/a", "/a/b", "a", "/a/", "//", "/./a", "/a/..", "/a\x00b", "/\xff"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if err := driver.ValidKey(key); err != nil {
			if !errors.Is(err, driver.ErrInvalid) {
				t.Fatalf("ValidKey(%q) = %v, not ErrInvalid", key, err)
			}
			return
		}
		if key == "/" {
			return
		}
		parent := driver.ParentKey(key)
		if err := driver.ValidKey(parent); err != nil {
			t.Fatalf("ParentKey(%q) = %q, invalid: %v", key, parent, err)
		}
		last := key[strings.LastIndexByte(key, '/')+1:]
		if got := driver.JoinKey(parent, last); got != key {
			t.Fatalf("JoinKey(ParentKey(%q)) = %q", key, got)
		}
	})
}
