package zk_test

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// createPath creates path and its missing parents with the native client, as
// another program would.
func createPath(t *testing.T, c *zk.Conn, path string, data []byte) {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := range parts {
		p := "/" + strings.Join(parts[:i+1], "/")
		var d []byte
		if i == len(parts)-1 {
			d = data
		}
		if _, err := c.Create(p, d, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			t.Fatalf("create %s: %v", p, err)
		}
	}
}

func openLogged(t *testing.T, rawURL string) (*registry.Client, *testenv.LogCapture) {
	t.Helper()
	logs := testenv.NewLogCapture(slog.LevelDebug)
	c := openURL(t, rawURL, registry.WithLogger(logs.Logger()),
		registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	return c, logs
}

// Garbage other clients wrote under the regkit layout's service directory is
// skipped (and logged once), and never breaks a list or a watch.
func TestGarbageRegkitLayout(t *testing.T) {
	e := newEnv(t)
	adm := e.adm(t)
	dir := "/g/services/orders"
	big := make([]byte, 900<<10) // near ZooKeeper's 1 MB node limit
	for i := range big {
		big[i] = 'x'
	}
	for name, data := range map[string]string{
		"garbage-notjson":  "not json {",
		"garbage-empty":    "",
		"garbage-otherid":  `{"id":"o9","service":"orders","host":"10.0.0.9","port":80,"weight":1}`,
		"garbage-othersvc": `{"id":"garbage-othersvc","service":"payments","host":"10.0.0.9","port":80,"weight":1}`,
		"garbage-port0":    `{"id":"garbage-port0","service":"orders","host":"10.0.0.9","port":0,"weight":1}`,
		"garbage-badhost":  `{"id":"garbage-badhost","service":"orders","host":"a b/c","port":80,"weight":1}`,
		"garbage-big":      string(big),
	} {
		createPath(t, adm, dir+"/"+name, []byte(data))
	}
	createPath(t, adm, dir+"/garbage-dir/child", []byte(`{"id":"child","service":"orders","host":"h","port":1}`))

	c, logs := openLogged(t, "zk://"+e.srv.Addr()+"/g")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "o1", Host: "10.0.0.1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckGarbageSkipped(t, c, "orders", []string{"o1"}, []string{
		"garbage-notjson", "garbage-empty", "garbage-otherid", "garbage-othersvc", "garbage-port0",
		"garbage-badhost", "garbage-big", "garbage-dir"}, logs)
}

// A provider URL with broken escaping, one of another interface and one without a
// port, under a Dubbo providers directory, are skipped beside a legitimate one.
func TestGarbageDubboLayout(t *testing.T) {
	e := newEnv(t)
	adm := e.adm(t)
	svc := "com.example.Greeter"
	dir := "/dubbo/" + svc + "/providers"
	for _, name := range []string{
		"dubbo%3A%2F%2F10.0.0.7%3A20880%2Fgarbage-escape%3Fa%3D%ZZ",                       // broken escaping
		url.QueryEscape("dubbo://10.0.0.8:20880/garbage-itf?interface=com.example.Other"), // another interface
		url.QueryEscape("dubbo://10.0.0.9/garbage-noport?interface=" + svc),               // no port
		url.QueryEscape("dubbo://10.0.0.6:0/garbage-port0?interface=" + svc),              // port 0
		"garbage-notaurl",
	} {
		createPath(t, adm, dir+"/"+name, nil)
	}
	c, logs := openLogged(t, "zk://"+e.srv.Addr()+"?layout=dubbo")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Register(ctx, registry.Instance{Service: svc, Host: "10.0.0.1", Port: 20880}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckGarbageSkipped(t, c, svc, []string{"10.0.0.1:20880"}, []string{
		"garbage-escape", "garbage-itf", "garbage-noport", "garbage-port0", "garbage-notaurl"}, logs)
}

// Non-JSON and foreign ServiceInstance nodes under a Curator service are skipped.
func TestGarbageCuratorLayout(t *testing.T) {
	e := newEnv(t)
	adm := e.adm(t)
	dir := "/services/orders"
	for name, data := range map[string]string{
		"garbage-notjson": "\x00\x01binary",
		"garbage-otherid": `{"name":"orders","id":"x9","address":"10.0.0.9","port":80}`,
		"garbage-noaddr":  `{"name":"orders","id":"garbage-noaddr","port":80}`,
		"garbage-port":    `{"name":"orders","id":"garbage-port","address":"10.0.0.9","port":-1,"sslPort":70000}`,
	} {
		createPath(t, adm, dir+"/"+name, []byte(data))
	}
	c, logs := openLogged(t, "zk://"+e.srv.Addr()+"?layout=curator")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "o1", Host: "10.0.0.1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckGarbageSkipped(t, c, "orders", []string{"o1"}, []string{
		"garbage-notjson", "garbage-otherid", "garbage-noaddr", "garbage-port"}, logs)
}
