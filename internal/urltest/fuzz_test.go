package urltest_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	_ "github.com/regkit/regkit/mem"
	_ "github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
	_ "github.com/regkit/regkit/zk"
)

// FuzzParseURL feeds ParseURL arbitrary strings: it never panics, its errors match
// ErrInvalid, and what it accepts can be redacted and split into hosts without a
// panic, the redaction hiding the password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"etcd://h1:2379,h2:2379/prefix?dial_timeout=3s",
		"zk://user:pass@h1,h2:2182,[::1]:2181/chroot?layout=dubbo&group=g",
		"consul://127.0.0.1:8500/ns?token=secret&dc=dc1",
		"nacos://u:p@[fe80::1%25eth0]:8848/nacos?namespace=x&password=y",
		"mem://x", "::bad", "no-scheme", "zk://%zz/", "zk://a b/", "etcd://,/", "zk://@/",
		"zk://[::1/", "zk://h:99999999999999999999/", "zk://h/\x00", "zk://u:p@h1@h2/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := registry.ParseURL(raw)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalid) {
				t.Fatalf("ParseURL(%q) = %v, not matching ErrInvalid", raw, err)
			}
			var fe *registry.FieldError
			if !errors.As(err, &fe) || fe.Field != "url" {
				t.Fatalf("ParseURL(%q) = %v, want a FieldError for url", raw, err)
			}
			return
		}
		if u == nil {
			t.Fatalf("ParseURL(%q) = nil, nil", raw)
		}
		red := registry.RedactURL(u)
		if pw, ok := u.User.Password(); ok && pw != "" && pw != "xxxxx" {
			if strings.Contains(red, url.UserPassword(u.User.Username(), pw).String()+"@") {
				t.Fatalf("RedactURL(%q) = %q shows the password", raw, red)
			}
		}
		hosts, err := driver.Hosts(u, 1234)
		if err != nil && !errors.Is(err, registry.ErrInvalid) {
			t.Fatalf("Hosts(%q) = %v, not matching ErrInvalid", raw, err)
		}
		for _, h := range hosts {
			if h == "" {
				t.Fatalf("Hosts(%q) has an empty host: %q", raw, hosts)
			}
		}
	})
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// FuzzOpen opens URLs of every registered scheme whose path, query and user info
// are fuzzed and whose host is a closed loopback port: Open never panics, returns
// soon after its context ends (never hangs on a dead server), fails with an error
// matching ErrInvalid or ErrUnavailable (or a context error), and no error shows
// the password.
func FuzzOpen(f *testing.F) {
	const pw = "s3cr3t-PW-fuzz"
	seeds := []struct {
		scheme     uint8
		user, pass string
		rest       string
	}{
		{0, "", "", "/prefix?dial_timeout=1s&lease_ttl=10s"},
		{1, "alice", pw, "/chroot?layout=curator&payload=spring&base=/services"},
		{1, "", "", "/x?layout=dubbo&group=dubbo&session_timeout=2s&connect_timeout=1s&acl=open&protect=false"},
		{2, "", pw, "/ns?token=" + pw + "&dc=dc1&check_ttl=5s&wait=2s&timeout=1s"},
		{3, "nacos", pw, "/nacos?namespace=public&group=G&cluster=C&api=v3&timeout=1s&poll_interval=10ms"},
		{4, "", "", "?unknown=1"},
		{0, "", "", "/a//b"},
		{1, "", "", "/x?session_timeout=-1s"},
		{2, "", "", "/a/b?check_ttl=0"},
		{3, "", "", "?beat_interval=1ns"},
		{1, "", "", "?layout=dubbo&group=a/b"},
		{0, "", "", "/%2e%2e"},
		{1, "", "", "/\u00ff\xff?acl=creator"},
	}
	for _, s := range seeds {
		f.Add(s.scheme, s.user, s.pass, s.rest)
	}
	schemes := []string{"etcd", "zk", "consul", "nacos", "mem"}
	addr := closedAddr(f)
	f.Fuzz(func(t *testing.T, scheme uint8, user, pass, rest string) {
		if rest != "" && rest[0] != '/' && rest[0] != '?' {
			rest = "/" + rest // the host stays the closed port
		}
		ui := ""
		if user != "" || pass != "" {
			ui = url.UserPassword(user, pass).String() + "@"
		}
		raw := schemes[int(scheme)%len(schemes)] + "://" + ui + addr + rest
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		type result struct {
			c   *registry.Client
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := registry.Open(ctx, raw)
			done <- result{c, err}
		}()
		var c *registry.Client
		var err error
		start := time.Now()
		select {
		case r := <-done:
			c, err = r.c, r.err
		case <-time.After(15 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("Open(%q) still running 15s after its 300ms context:\n%s", raw, buf[:runtime.Stack(buf, true)])
		}
		if d := time.Since(start); d > 10*time.Second && os.Getenv("FUZZ_EXPLORE") == "" {
			t.Errorf("Open(%q) returned %v after its 300ms context ended", raw, d-300*time.Millisecond)
		}
		if err == nil {
			if c == nil {
				t.Fatalf("Open(%q) = nil, nil", raw)
			}
			c.Close()
			return
		}
		if !errors.Is(err, registry.ErrInvalid) && !errors.Is(err, registry.ErrUnavailable) &&
			!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, registry.ErrPermission) {
			t.Errorf("Open(%q) = %v: neither ErrInvalid nor ErrUnavailable", raw, err)
		}
		if os.Getenv("FUZZ_EXPLORE") == "" && len(pass) >= 8 && !strings.Contains(user+rest, pass) && strings.Contains(err.Error(), pass) {
			t.Errorf("Open(%q) error shows the password: %v", raw, err)
		}
	})
}
