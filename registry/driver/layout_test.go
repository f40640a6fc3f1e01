package driver_test

import (
	"errors"
	"testing"

	"github.com/regkit/regkit/registry/driver"
)

func TestValidInstanceID(t *testing.T) {
	for id, ok := range map[string]bool{
		"a": true, "10.0.0.1:80": true, "x-1:2.3": true, "a b": true, "ü": true, "a.b": true, "...": true,
		"": false, ".": false, "..": false, "a/b": false, `a\b`: false, "a@b": false, "a\x00b": false,
		"a\x7fb": false, "a\u0085b": false, "a\ue000b": false, "a\ufff0b": false, "a\xffb": false,
		string(make([]byte, 256)): false,
	} {
		err := driver.ValidInstanceID(id)
		var fe *driver.FieldError
		if ok && err != nil {
			t.Errorf("ValidInstanceID(%q) = %v, want nil", id, err)
		}
		if !ok && (!errors.As(err, &fe) || fe.Field != "ID" || !errors.Is(err, driver.ErrInvalid)) {
			t.Errorf("ValidInstanceID(%q) = %v, want a FieldError for ID", id, err)
		}
	}
}

func TestCleanRoot(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "/def"}, {"/", ""}, {"/a", "/a"}, {"/a/", "/a"}, {"/a/b", "/a/b"}, {"/a.b/c-d", "/a.b/c-d"},
	} {
		got, err := driver.CleanRoot("url", tc.in, "/def")
		if err != nil || got != tc.want {
			t.Errorf("CleanRoot(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"a", "a/b", "/a//b", "/a//b/", "//", "/a/./b", "/a/..", "/a\x01", "/a//"} {
		_, err := driver.CleanRoot("prefix", in, "/def")
		var fe *driver.FieldError
		if !errors.As(err, &fe) || fe.Field != "prefix" {
			t.Errorf("CleanRoot(%q) = %v, want a FieldError for prefix", in, err)
		}
	}
}

func TestSkipLogOncePerKey(t *testing.T) {
	var s driver.SkipLog
	for range 3 {
		s.Skip("/k", "bad") // must not panic; the Warn is once (checked by eye in -v)
	}
}
