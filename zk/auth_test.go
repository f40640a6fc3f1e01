package zk_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry"
)

func TestDigestAuthAndACL(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := "zk://" + e.srv.Addr()

	// acl=creator (the default with credentials): only the same digest identity.
	owner := openURL(t, base+"/secure", registry.WithCredentials("alice", "s3cret"))
	if _, err := owner.Register(ctx, registry.Instance{Service: "vault", ID: "v1", Host: "10.0.0.1", Port: 8200}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Store().Create(ctx, "/cfg/db", []byte("password")); err != nil {
		t.Fatal(err)
	}
	// A raw client without credentials is refused by the server.
	if _, _, err := e.adm(t).Get("/secure/cfg/db"); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("raw Get without auth = %v, want ErrNoAuth", err)
	}
	// Our client without credentials, and one with the wrong password, get
	// ErrPermission on reads and writes.
	anon := openURL(t, base+"/secure")
	wrong := openURL(t, "zk://alice:wrong@"+e.srv.Addr()+"/secure")
	for name, c := range map[string]*registry.Client{"anonymous": anon, "wrong password": wrong} {
		if _, err := c.Store().Get(ctx, "/cfg/db"); !errors.Is(err, registry.ErrPermission) {
			t.Errorf("%s: Get = %v, want ErrPermission", name, err)
		}
		if _, err := c.Store().Set(ctx, "/cfg/db", []byte("x"), registry.AnyVersion); !errors.Is(err, registry.ErrPermission) {
			t.Errorf("%s: Set = %v, want ErrPermission", name, err)
		}
		if _, err := c.Conn().List(ctx, "vault"); !errors.Is(err, registry.ErrPermission) {
			t.Errorf("%s: List = %v, want ErrPermission", name, err)
		}
	}
	// The same identity on another connection (URL user info) reads everything.
	same := openURL(t, "zk://alice:s3cret@"+e.srv.Addr()+"/secure")
	if n, err := same.Store().Get(ctx, "/cfg/db"); err != nil || string(n.Value) != "password" {
		t.Errorf("same identity Get = %q, %v", n.Value, err)
	}
	waitInstances(t, same, "vault", []registry.Instance{{ID: "v1", Service: "vault", Host: "10.0.0.1", Port: 8200,
		Weight: registry.DefaultWeight, Healthy: true}})

	// acl=creator-read: world may read, only the creator may write.
	pub := openURL(t, base+"/public?acl=creator-read", registry.WithCredentials("bob", "pw"))
	if _, err := pub.Store().Create(ctx, "/motd", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	reader := openURL(t, base+"/public")
	if n, err := reader.Store().Get(ctx, "/motd"); err != nil || string(n.Value) != "hello" {
		t.Errorf("world read of creator-read node = %q, %v", n.Value, err)
	}
	if _, err := reader.Store().Set(ctx, "/motd", []byte("x"), registry.AnyVersion); !errors.Is(err, registry.ErrPermission) {
		t.Errorf("world write of creator-read node = %v, want ErrPermission", err)
	}

	// An ACL that needs credentials without any is rejected before connecting.
	_, err := registry.Open(ctx, base+"/x?acl=creator")
	var fe *registry.FieldError
	if !errors.As(err, &fe) || fe.Field != "acl" {
		t.Errorf("acl=creator without credentials: %v, want a FieldError for acl", err)
	}
}

func TestURLValidation(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ url, field string }{
		{"zk://127.0.0.1:1/x?bogus=1", "url"},
		{"zk://127.0.0.1:1/x?layout=eureka", "layout"},
		{"zk://127.0.0.1:1/x?layout=curator&payload=eureka", "payload"},
		{"zk://127.0.0.1:1/x?layout=curator&payload=", "payload"},
		{"zk://127.0.0.1:1/x?session_timeout=10", "session_timeout"},
		{"zk://127.0.0.1:1/x?session_timeout=100ms", "session_timeout"},
		{"zk://127.0.0.1:1/x?protect=maybe", "protect"},
		{"zk://127.0.0.1:1/x?layout=dubbo&group=a/b", "group"},
		{"zk://127.0.0.1:1/x?layout=dubbo&group=..", "group"},
		{"zk://127.0.0.1:1/x?layout=dubbo&group=.", "group"},
		{"zk://127.0.0.1:1/x?layout=dubbo&group=a%01b", "group"},
		{"zk://127.0.0.1:1/a//b", "url"},
		{"zk:///x", "url"},
		{"zk://127.0.0.1:1/a//b/", "url"},
		{"zk://127.0.0.1:1/a/./b", "url"},
		{"zk://127.0.0.1:1/a/../b", "url"},
		{"zk://127.0.0.1:1/a%01b", "url"},
		{"zk://127.0.0.1:1/x?layout=curator&base=/a//b", "base"},
		{"zk://127.0.0.1:1/x?layout=curator&base=/a/..", "base"},
		{"zk://127.0.0.1:1/x?layout=curator&base=/", "base"},
	} {
		_, err := registry.Open(ctx, tc.url)
		var fe *registry.FieldError
		if !errors.Is(err, registry.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Open(%q) = %v, want a FieldError for %s", tc.url, err, tc.field)
		}
	}
	// Nothing listens on port 1: Open fails within connect_timeout, as unavailable.
	_, err := registry.Open(ctx, "zk://127.0.0.1:1/x?connect_timeout=1s")
	if !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Open of a dead server = %v, want ErrUnavailable", err)
	}
}

// A server that accepts connections but never answers (a hung process, a
// partition) must not stall connecting: the handshake is bounded by the session
// timeout divided by the number of servers, so the client moves on to the next
// server in time. (go-zookeeper alone waits 6.7 session timeouts.)
func TestHungServerDoesNotStallConnect(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // accepted, never answered
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	// go-zookeeper shuffles the servers: over four opens, the hung one comes first
	// in some of them (all four fail to connect within 5s without the bound).
	for i := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := registry.Open(ctx, "zk://"+ln.Addr().String()+","+e.srv.Addr()+"/hung?session_timeout=2s&connect_timeout=5s")
		cancel()
		if err != nil {
			t.Fatalf("open %d with a hung server in the list: %v", i, err)
		}
		c.Close()
	}
}
