// Package urltest checks, across every backend, that Open validates a URL before
// dialing. It holds tests only.
package urltest_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	_ "github.com/regkit/regkit/mem"
	_ "github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/registry"
	_ "github.com/regkit/regkit/zk"
)

// TestOpenValidatesURLBeforeDialing is issue 14.1's URL example and its kind on
// every backend: bad ports, repeated parameters, fragments and parameters of
// another layout or mode fail Open at once with an ErrInvalid naming the URL
// (redacted) and the offending part, before any dial. etcd://127.0.0.1:99999 used
// to dial until its timeout.
func TestOpenValidatesURLBeforeDialing(t *testing.T) {
	// Every well-formed host:port below is a listener that counts the
	// connections made to it: a driver that dialed before validating shows.
	ln, accepted := countingListener(t)
	for _, tc := range []struct{ url, want string }{
		{"etcd://127.0.0.1:99999", "port"},
		{"etcd://127.0.0.1:0/p", "port"},
		{"etcd://127.0.0.1:x/p", "port"},
		{"zk://127.0.0.1:99999/x", "port"},
		{"consul://127.0.0.1:70000", "port"},
		{"nacos://127.0.0.1:2379,127.0.0.1:99999", "port"},
		{"etcd://bad_host!:2379/p", "host"},
		{"etcd://127.0.0.1:2379/p?dial_timeout=1s&dial_timeout=2s", `"dial_timeout" is given more than once`},
		{"mem://x?a=1&a=1", `"a" is given more than once`},
		{"mem://x#frag", "fragment"},
		{"etcd://127.0.0.1:2379/p#frag", "fragment"},
		{"zk://127.0.0.1:2181/?layout=curator&group=g", `"group" does not apply`},
		{"zk://127.0.0.1:2181/?base=/s", `"base" does not apply`},
		{"zk://127.0.0.1:2181/?layout=dubbo&base=/s", `"base" does not apply`},
		{"nacos://127.0.0.1:8848?ephemeral=false&beat_interval=1s", `"beat_interval" does not apply`},
		{"etcd://127.0.0.1:2379/p?foo=1&token=s3cret", `unknown query parameters "foo", "token"`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := registry.Open(ctx, strings.NewReplacer("127.0.0.1:2379", ln, "127.0.0.1:2181", ln, "127.0.0.1:8848", ln).Replace(tc.url))
		cancel()
		var fe *registry.FieldError
		if !errors.Is(err, registry.ErrInvalid) || !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want ErrInvalid mentioning %q", tc.url, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) = %v shows the token", tc.url, err)
		}
	}
	if n := accepted(); n != 0 {
		t.Errorf("%d connections reached a backend address of a URL Open refused: it dialed before validating", n)
	}
}

// countingListener is a TCP listener on loopback that accepts and closes
// connections; accepted reports how many it has accepted so far. It is closed
// when t ends.
func countingListener(t *testing.T) (addr string, accepted func() int64) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String(), n.Load
}
