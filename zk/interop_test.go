package zk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// createRaw creates path with its parents through a raw go-zookeeper connection, as
// a Java client would (parents persistent, the leaf with the given flags).
func createRaw(t testing.TB, c *zk.Conn, path string, data []byte, flags int32) {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := 1; i < len(parts); i++ {
		p := "/" + strings.Join(parts[:i], "/")
		if _, err := c.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			t.Fatalf("create parent %s: %v", p, err)
		}
	}
	if _, err := c.Create(path, data, flags, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
}

func openURL(t testing.TB, rawURL string, opts ...registry.Option) *registry.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts = append([]registry.Option{registry.WithRetryBackoff(50*time.Millisecond, time.Second),
		registry.WithRequestTimeout(10 * time.Second)}, opts...)
	c, err := registry.Open(ctx, rawURL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitInstances(t testing.TB, c *registry.Client, service string, want []registry.Instance) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, "instances of "+service, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := c.Instances(ctx, service)
		if err != nil {
			return err
		}
		if !slices.EqualFunc(got, want, registry.Instance.Equal) {
			return fmt.Errorf("got\n%+v\nwant\n%+v", got, want)
		}
		return nil
	})
}

// Curator x-discovery fixtures, byte for byte as Curator's JsonInstanceSerializer
// writes them: a Spring Cloud Zookeeper instance (ZookeeperInstance payload with
// metadata), a plain Curator instance with a custom payload class, and a disabled
// one with a null payload.
const (
	curatorSpring = `{"name":"orders","id":"6c5c1c0e-2f7b-4f1e-9c55-2d1f0f4c9a11","address":"10.0.0.7","port":8080,"sslPort":null,` +
		`"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"orders","name":"orders",` +
		`"metadata":{"instance_status":"UP","zone":"eu-1","weight":"5"}},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC",` +
		`"uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},` +
		`{"value":":","variable":false},{"value":"port","variable":true}]},"enabled":true}`
	curatorCustom = `{"name":"orders","id":"b2","address":"10.0.0.8","port":null,"sslPort":8443,` +
		`"payload":{"@class":"com.example.InstanceDetails","description":"billing v2"},"registrationTimeUTC":1700000000001,` +
		`"serviceType":"DYNAMIC","uriSpec":null}`
	curatorDisabled = `{"name":"orders","id":"c3","address":"10.0.0.9","port":9090,"sslPort":null,"payload":null,` +
		`"registrationTimeUTC":1700000000002,"serviceType":"STATIC","uriSpec":null,"enabled":false}`
)

func TestCuratorInterop(t *testing.T) {
	e := newEnv(t)
	ns := "/curator-interop"
	c := openURL(t, "zk://"+e.srv.Addr()+ns+"?layout=curator&base=/services")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}

	// Java services registered by Curator are discovered from Go.
	dir := ns + "/services/orders"
	createRaw(t, e.adm(t), dir+"/6c5c1c0e-2f7b-4f1e-9c55-2d1f0f4c9a11", []byte(curatorSpring), zk.FlagEphemeral)
	createRaw(t, e.adm(t), dir+"/b2", []byte(curatorCustom), zk.FlagEphemeral)
	createRaw(t, e.adm(t), dir+"/c3", []byte(curatorDisabled), 0)
	want := []registry.Instance{
		{ID: "6c5c1c0e-2f7b-4f1e-9c55-2d1f0f4c9a11", Service: "orders", Host: "10.0.0.7", Port: 8080, Weight: 5, Zone: "eu-1",
			Metadata: map[string]string{"instance_status": "UP"}, Healthy: true},
		{ID: "b2", Service: "orders", Host: "10.0.0.8", Port: 8443, Weight: registry.DefaultWeight,
			Metadata: map[string]string{"payload.description": "billing v2"}, Healthy: true},
		{ID: "c3", Service: "orders", Host: "10.0.0.9", Port: 9090, Weight: registry.DefaultWeight, Healthy: false},
	}
	waitInstances(t, c, "orders", want)
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch never showed the Curator instances: %v", err)
		}
		if slices.EqualFunc(s.Instances, want, registry.Instance.Equal) {
			break
		}
	}

	// Our registration, read back raw as Curator would parse it. The service's Java
	// instances carry payloads of several classes, so payload=auto writes null.
	reg, err := c.Register(ctx, registry.Instance{Service: "orders", ID: "go-1", Host: "10.1.0.1", Port: 7000, Weight: 9,
		Zone: "eu-2", Metadata: map[string]string{"version": "v3"}})
	if err != nil {
		t.Fatal(err)
	}
	b, st, err := e.adm(t).Get(dir + "/go-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.EphemeralOwner == 0 {
		t.Error("our Curator registration is not ephemeral")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	for _, k := range []string{"name", "id", "address", "port", "sslPort", "payload", "registrationTimeUTC", "serviceType", "uriSpec"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("Curator field %q missing in %s", k, b)
		}
	}
	// Curator's own default (compatible) serialization writes no "enabled": readers
	// older than Curator 4 fail on an unknown field.
	if _, ok := raw["enabled"]; ok {
		t.Errorf(`"enabled" written (Curator < 4 readers fail on it): %s`, b)
	}
	if string(raw["payload"]) != "null" {
		t.Errorf("payload=auto among mixed payload classes wrote payload %s, want null", raw["payload"])
	}
	type written struct {
		Name, ID, Address, ServiceType string
		Port                           int
		SSLPort                        *int
		RegistrationTimeUTC            int64
		Payload                        *struct {
			Class    string `json:"@class"`
			Name     string
			Metadata map[string]string
		}
	}
	var si written
	if err := json.Unmarshal(b, &si); err != nil {
		t.Fatal(err)
	}
	if si.Name != "orders" || si.ID != "go-1" || si.Address != "10.1.0.1" || si.Port != 7000 || si.SSLPort != nil ||
		si.ServiceType != "DYNAMIC" || si.RegistrationTimeUTC <= 0 || si.Payload != nil {
		t.Errorf("Curator ServiceInstance written = %s", b)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	waitInstances(t, c, "orders", want)

	// payload=spring writes Spring Cloud Zookeeper's ZookeeperInstance, whatever the
	// service holds.
	cs := openURL(t, "zk://"+e.srv.Addr()+ns+"?layout=curator&base=/services&payload=spring")
	reg, err = cs.Register(ctx, registry.Instance{Service: "orders", ID: "go-2", Host: "10.1.0.2", Port: 7000, Weight: 9,
		Zone: "eu-2", Metadata: map[string]string{"version": "v3"}})
	if err != nil {
		t.Fatal(err)
	}
	if b, _, err = e.adm(t).Get(dir + "/go-2"); err != nil {
		t.Fatal(err)
	}
	si = written{}
	if err := json.Unmarshal(b, &si); err != nil {
		t.Fatal(err)
	}
	if si.Payload == nil || si.Payload.Class != "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance" || si.Payload.Name != "orders" ||
		si.Payload.Metadata["version"] != "v3" || si.Payload.Metadata["weight"] != "9" || si.Payload.Metadata["zone"] != "eu-2" {
		t.Errorf("payload=spring wrote %s", b)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
}

// Dubbo 2.x provider URLs as Dubbo's ZookeeperRegistry writes them: URL.encode (Java's
// URLEncoder) of the full provider URL, parameters sorted.
const (
	dubboPlain = "dubbo%3A%2F%2F10.0.0.1%3A20880%2Forg.example.DemoService%3Fanyhost%3Dtrue%26application%3Ddemo-provider" +
		"%26deprecated%3Dfalse%26dubbo%3D2.0.2%26dynamic%3Dtrue%26generic%3Dfalse%26interface%3Dorg.example.DemoService" +
		"%26methods%3DsayHello%2CsayHelloAsync%26pid%3D4242%26release%3D2.7.23%26side%3Dprovider%26timestamp%3D1700000000000"
	dubboTri = "tri%3A%2F%2F10.0.0.2%3A50051%2Forg.example.DemoService%3Fapplication%3Ddemo-provider%26interface%3Dorg.example.DemoService" +
		"%26side%3Dprovider%26timestamp%3D1700000000001%26weight%3D50%26zone%3Deu-1"
	dubboDisabled = "dubbo%3A%2F%2F10.0.0.3%3A20880%2Forg.example.DemoService%3Fapplication%3Ddemo-provider%26disabled%3Dtrue" +
		"%26interface%3Dorg.example.DemoService%26side%3Dprovider%26timestamp%3D1700000000002"
)

func TestDubboInterop(t *testing.T) {
	e := newEnv(t)
	ns := "/dubbo-interop"
	c := openURL(t, "zk://"+e.srv.Addr()+ns+"?layout=dubbo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const svc = "org.example.DemoService"
	w, err := c.Watch(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	dir := ns + "/dubbo/" + svc + "/providers"
	// Dubbo's Curator client writes the local IP as data when none is given.
	createRaw(t, e.adm(t), dir+"/"+dubboPlain, []byte("10.0.0.1"), zk.FlagEphemeral)
	createRaw(t, e.adm(t), dir+"/"+dubboTri, []byte("10.0.0.2"), zk.FlagEphemeral)
	createRaw(t, e.adm(t), dir+"/"+dubboDisabled, []byte("10.0.0.3"), zk.FlagEphemeral)
	// A consumer entry elsewhere in the Dubbo tree is not a provider.
	createRaw(t, e.adm(t), ns+"/dubbo/"+svc+"/consumers/consumer%3A%2F%2F10.0.0.5%2Forg.example.DemoService%3Fside%3Dconsumer", nil, zk.FlagEphemeral)
	want := []registry.Instance{
		{ID: "10.0.0.1:20880", Service: svc, Host: "10.0.0.1", Port: 20880, Weight: 100, Healthy: true,
			Metadata: map[string]string{"application": "demo-provider", "deprecated": "false", "dubbo": "2.0.2", "dynamic": "true",
				"generic": "false", "methods": "sayHello,sayHelloAsync", "pid": "4242", "release": "2.7.23"}},
		{ID: "10.0.0.2:50051", Service: svc, Host: "10.0.0.2", Port: 50051, Weight: 50, Zone: "eu-1", Healthy: true,
			Metadata: map[string]string{"application": "demo-provider", "protocol": "tri"}},
		{ID: "10.0.0.3:20880", Service: svc, Host: "10.0.0.3", Port: 20880, Weight: 100, Healthy: false,
			Metadata: map[string]string{"application": "demo-provider", "disabled": "true"}},
	}
	waitInstances(t, c, svc, want)
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch never showed the Dubbo providers: %v", err)
		}
		if slices.EqualFunc(s.Instances, want, registry.Instance.Equal) {
			break
		}
	}

	// Our registration, read back raw as Dubbo would parse it.
	reg, err := c.Register(ctx, registry.Instance{Service: svc, Host: "10.1.0.1", Port: 20881, Weight: 7, Zone: "z1",
		Metadata: map[string]string{"application": "go-provider", "methods": "sayHello"}})
	if err != nil {
		t.Fatal(err)
	}
	kids, _, err := e.adm(t).Children(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, k := range kids {
		if strings.Contains(k, "10.1.0.1") {
			ours = append(ours, k)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("our provider nodes: %v", ours)
	}
	if strings.ContainsAny(ours[0], "/:?&=") {
		t.Errorf("node name is not URL-encoded: %s", ours[0])
	}
	dec, err := url.QueryUnescape(ours[0])
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dec)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "dubbo" || u.Host != "10.1.0.1:20881" || u.Path != "/"+svc || q.Get("interface") != svc ||
		q.Get("side") != "provider" || q.Get("weight") != "7" || q.Get("zone") != "z1" || q.Get("application") != "go-provider" ||
		q.Get("methods") != "sayHello" || q.Get("timestamp") == "" || q.Has("regkit.id") {
		t.Errorf("provider URL written = %s", dec)
	}
	_, st, err := e.adm(t).Get(dir + "/" + ours[0])
	if err != nil || st.EphemeralOwner == 0 {
		t.Errorf("our provider node: ephemeral owner %v, %v", st, err)
	}
	// Updating the metadata replaces the URL node (the name changes).
	up := reg.Instance()
	up.Metadata["methods"] = "sayHello,bye"
	if err := reg.Update(ctx, up); err != nil {
		t.Fatal(err)
	}
	kids, _, _ = e.adm(t).Children(dir)
	n := 0
	for _, k := range kids {
		if strings.Contains(k, "10.1.0.1") {
			n++
			if !strings.Contains(k, "bye") {
				t.Errorf("stale provider node left: %s", k)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d provider nodes for the re-registered instance, want 1", n)
	}
}

// One Dubbo interface exported in several versions and groups on one host:port, as
// Java Dubbo 2.7/3.x writes it (interface-level registration): each provider URL is
// an instance of its own, with its group and version in Metadata; and a regkit put
// of the same host, port, group and version never deletes the Java provider's URL
// (only the URLs its own session wrote).
func TestDubboVersionsAndGroups(t *testing.T) {
	e := newEnv(t)
	ns := "/dubbo-versions"
	c := openURL(t, "zk://"+e.srv.Addr()+ns+"?layout=dubbo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const svc = "org.example.GreetService"
	dir := ns + "/dubbo/" + svc + "/providers"
	java := func(query string) string {
		return url.QueryEscape("dubbo://10.0.0.9:20880/" + svc + "?application=greet&interface=" + svc + query +
			"&methods=greet&side=provider&timestamp=1700000000000")
	}
	v1, v2, g1 := java("&version=1.0.0"), java("&version=2.0.0"), java("&group=blue&version=1.0.0")
	for _, n := range []string{v1, v2, g1} {
		createRaw(t, e.adm(t), dir+"/"+n, []byte("10.0.0.9"), zk.FlagEphemeral)
	}
	javaInst := func(id string, md ...string) registry.Instance {
		m := map[string]string{"application": "greet", "methods": "greet"}
		for i := 0; i < len(md); i += 2 {
			m[md[i]] = md[i+1]
		}
		return registry.Instance{ID: id, Service: svc, Host: "10.0.0.9", Port: 20880, Weight: 100, Healthy: true, Metadata: m}
	}
	want := []registry.Instance{
		javaInst("10.0.0.9:20880;group=blue;version=1.0.0", "group", "blue", "version", "1.0.0"),
		javaInst("10.0.0.9:20880;version=1.0.0", "version", "1.0.0"),
		javaInst("10.0.0.9:20880;version=2.0.0", "version", "2.0.0"),
	}
	waitInstances(t, c, svc, want)

	// regkit registers the same host, port and version as a live Java provider
	// (the same ID by mistake): the ID is the Java provider's, so Register fails
	// with ErrExists and its URL stays.
	same := registry.Instance{ID: "10.0.0.9:20880;version=1.0.0", Service: svc, Host: "10.0.0.9", Port: 20880,
		Metadata: map[string]string{"version": "1.0.0", "application": "go"}}
	if r, err := c.Register(ctx, same); !errors.Is(err, registry.ErrExists) {
		if r != nil {
			_ = r.Close()
		}
		t.Fatalf("Register of a live Java provider's ID = %v, want ErrExists", err)
	}
	// Another version on the same address is another instance.
	ours := registry.Instance{ID: "10.0.0.9:20880;version=1.5.0", Service: svc, Host: "10.0.0.9", Port: 20880,
		Metadata: map[string]string{"version": "1.5.0", "application": "go"}}
	reg, err := c.Register(ctx, ours)
	if err != nil {
		t.Fatal(err)
	}
	javaLeft := func(when string) {
		t.Helper()
		kids, _, err := e.adm(t).Children(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{v1, v2, g1} {
			if !slices.Contains(kids, n) {
				t.Errorf("%s: the Java provider URL %s was deleted", when, n)
			}
		}
	}
	javaLeft("after the put")
	// Re-put with new metadata: our old URL goes, the Java ones stay.
	ours.Metadata["methods"] = "greet,bye"
	if err := reg.Update(ctx, ours); err != nil {
		t.Fatal(err)
	}
	javaLeft("after the re-put")
	kids, _, _ := e.adm(t).Children(dir)
	n := 0
	for _, k := range kids {
		if strings.Contains(k, "application%3Dgo") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d URLs of ours after the re-put, want 1", n)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	javaLeft("after deregistration")
	waitInstances(t, c, svc, want)

	// A regkit instance with a version and no ID gets the URL's own identity,
	// Host:Port;version=V, as a Java provider's URL has.
	def := registry.Instance{Service: svc, Host: "10.0.0.10", Port: 20880, Metadata: map[string]string{"version": "3.0.0"}}
	reg, err = c.Register(ctx, def)
	if err != nil {
		t.Fatal(err)
	}
	got := reg.Instance()
	got.Healthy = true
	waitInstances(t, c, svc, append([]registry.Instance{got}, want...))
	if got.ID != "10.0.0.10:20880;version=3.0.0" {
		t.Errorf("default ID = %q, want 10.0.0.10:20880;version=3.0.0", got.ID)
	}
}
