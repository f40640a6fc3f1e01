package zk_test

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry"
)

// Provider URLs of one interface in several groups and versions on one host:port,
// as Java Dubbo 2.7.23 and 3.2.10 write them with interface-level registration
// (URL.encode of url.toFullString(), parameters sorted), and a triple provider of
// Dubbo 3.
const (
	dubboFmtSvc = "org.example.OrderService"
	dubbo27URL  = "dubbo://10.0.0.20:20880/org.example.OrderService?anyhost=true&application=order-provider" +
		"&deprecated=false&dubbo=2.0.2&dynamic=true&generic=false%s&interface=org.example.OrderService" +
		"&metadata-type=remote&methods=create,get&pid=4242&release=2.7.23&side=provider&timestamp=1700000000000%s"
	dubbo32URL = "%s://10.0.0.21:%s/org.example.OrderService?anyhost=true&application=order-provider" +
		"&background=false&deprecated=false&dubbo=2.0.2&dynamic=true&executor-management-mode=isolation&file-cache=true" +
		"&generic=false%s&interface=org.example.OrderService&methods=create,get&pid=4243" +
		"&prefer.serialization=fastjson2,hessian2&release=3.2.10&service-name-mapping=true&side=provider" +
		"&timestamp=1700000000001%s"
)

// dubboMatch is Dubbo's UrlUtils.isMatch(consumerUrl, providerUrl), by which a
// consumer's RegistryDirectory keeps a provider URL: the same interface, the
// provider category, not disabled, the consumer's group ("*", equal, or one of a
// comma list), version ("*" or equal) and classifier.
func dubboMatch(consumer, provider *url.URL) bool {
	cq, pq := consumer.Query(), provider.Query()
	itf := func(u *url.URL, q url.Values) string {
		if i := q.Get("interface"); i != "" {
			return i
		}
		return strings.TrimPrefix(u.Path, "/")
	}
	if ci, pi := itf(consumer, cq), itf(provider, pq); ci != "*" && pi != "*" && ci != pi {
		return false
	}
	if cat := pq.Get("category"); cat != "" && cat != "providers" {
		return false
	}
	if pq.Get("enabled") == "false" || pq.Get("disabled") == "true" {
		return false
	}
	cg, pg := cq.Get("group"), pq.Get("group")
	groupOK := cg == "*" || cg == pg || (cg != "" && slices.Contains(strings.Split(cg, ","), pg))
	cv := cq.Get("version")
	versionOK := cv == "*" || cv == pq.Get("version")
	cc, pc := cq.Get("classifier"), pq.Get("classifier")
	classifierOK := cc == "" || cc == "*" || cc == pc
	return groupOK && versionOK && classifierOK
}

// dubboProviders decodes the provider URLs under dir as Dubbo's ZookeeperRegistry
// does (URL.decode of each child's name).
func dubboProviders(t *testing.T, c *zk.Conn, dir string) []*url.URL {
	t.Helper()
	kids, _, err := c.Children(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []*url.URL
	for _, k := range kids {
		raw, err := url.QueryUnescape(k)
		if err != nil {
			t.Fatalf("provider node %s: %v", k, err)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("provider URL %s: %v", raw, err)
		}
		out = append(out, u)
	}
	return out
}

// Dubbo 2.7 and 3.x providers of one interface in several groups and versions on
// one host:port are each discovered with their group, version and metadata; and
// the providers regkit writes in several groups and versions on one host:port are
// each kept by exactly the Dubbo consumers of their group and version (Dubbo's
// URL match), with their address.
func TestDubboFormatsVersionsAndGroups(t *testing.T) {
	e := newEnv(t)
	ns := "/dubbo-formats"
	c := openURL(t, "zk://"+e.srv.Addr()+ns+"?layout=dubbo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := ns + "/dubbo/" + dubboFmtSvc + "/providers"
	// Dubbo's Curator client writes the provider's IP as the node's data.
	write := func(raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		createRaw(t, e.adm(t), dir+"/"+url.QueryEscape(raw), []byte(u.Hostname()), zk.FlagEphemeral)
	}
	gv := func(group, version string) (string, string) {
		g := ""
		if group != "" {
			g = "&group=" + group
		}
		return g, "&version=" + version
	}
	for _, p := range [][2]string{{"", "1.0.0"}, {"", "2.0.0"}, {"blue", "1.0.0"}} {
		g, v := gv(p[0], p[1])
		write(strings.Replace(strings.Replace(dubbo27URL, "%s", g, 1), "%s", v, 1))
	}
	for _, p := range [][3]string{{"dubbo", "green", "2.0.0"}, {"dubbo", "green", "3.0.0"}, {"dubbo", "", "3.0.0"}, {"tri", "green", "3.0.0"}} {
		g, v := gv(p[1], p[2])
		port := "20880"
		if p[0] == "tri" {
			port = "50051"
		}
		raw := strings.Replace(dubbo32URL, "%s", p[0], 1)
		raw = strings.Replace(raw, "%s", port, 1)
		raw = strings.Replace(raw, "%s", g, 1)
		write(strings.Replace(raw, "%s", v, 1))
	}
	md27 := func(kv ...string) map[string]string {
		m := map[string]string{"application": "order-provider", "deprecated": "false", "dubbo": "2.0.2", "dynamic": "true",
			"generic": "false", "metadata-type": "remote", "methods": "create,get", "pid": "4242", "release": "2.7.23"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	md32 := func(kv ...string) map[string]string {
		m := map[string]string{"application": "order-provider", "background": "false", "deprecated": "false", "dubbo": "2.0.2",
			"dynamic": "true", "executor-management-mode": "isolation", "file-cache": "true", "generic": "false",
			"methods": "create,get", "pid": "4243", "prefer.serialization": "fastjson2,hessian2", "release": "3.2.10",
			"service-name-mapping": "true"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	inst := func(id, host string, port int, md map[string]string) registry.Instance {
		return registry.Instance{ID: id, Service: dubboFmtSvc, Host: host, Port: port, Weight: 100, Healthy: true, Metadata: md}
	}
	want := []registry.Instance{
		inst("10.0.0.20:20880;group=blue;version=1.0.0", "10.0.0.20", 20880, md27("group", "blue", "version", "1.0.0")),
		inst("10.0.0.20:20880;version=1.0.0", "10.0.0.20", 20880, md27("version", "1.0.0")),
		inst("10.0.0.20:20880;version=2.0.0", "10.0.0.20", 20880, md27("version", "2.0.0")),
		inst("10.0.0.21:20880;group=green;version=2.0.0", "10.0.0.21", 20880, md32("group", "green", "version", "2.0.0")),
		inst("10.0.0.21:20880;group=green;version=3.0.0", "10.0.0.21", 20880, md32("group", "green", "version", "3.0.0")),
		inst("10.0.0.21:20880;version=3.0.0", "10.0.0.21", 20880, md32("version", "3.0.0")),
		inst("10.0.0.21:50051;group=green;version=3.0.0", "10.0.0.21", 50051, md32("group", "green", "version", "3.0.0", "protocol", "tri")),
	}
	waitInstances(t, c, dubboFmtSvc, want)

	// regkit's providers on one host:port: three group/version pairs.
	type gvp struct{ group, version string }
	ours := []gvp{{"", "1.0.0"}, {"", "2.0.0"}, {"blue", "1.0.0"}}
	for _, p := range ours {
		md := map[string]string{"application": "go-provider", "version": p.version}
		id := "10.1.0.30:20880"
		if p.group != "" {
			md["group"] = p.group
			id += ";group=" + p.group
		}
		// The default ID is Host:Port, one per host:port: several providers there
		// take the Dubbo layout's IDs.
		id += ";version=" + p.version
		if _, err := c.Register(ctx, registry.Instance{ID: id, Service: dubboFmtSvc, Host: "10.1.0.30", Port: 20880, Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	providers := dubboProviders(t, e.adm(t), dir)
	// Consumers as Dubbo writes their subscription URLs: one per group and
	// version, and wildcard ones.
	consumer := func(query string) *url.URL {
		u, err := url.Parse("consumer://10.2.0.1/" + dubboFmtSvc + "?application=consumer&category=providers,configurators,routers" +
			"&interface=" + dubboFmtSvc + "&side=consumer" + query)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		query string
		want  []gvp // regkit's providers this consumer keeps
	}{
		{"&version=1.0.0", []gvp{{"", "1.0.0"}}},
		{"&version=2.0.0", []gvp{{"", "2.0.0"}}},
		{"&group=blue&version=1.0.0", []gvp{{"blue", "1.0.0"}}},
		{"&group=blue&version=2.0.0", nil},
		{"&group=*&version=1.0.0", []gvp{{"", "1.0.0"}, {"blue", "1.0.0"}}},
		{"&group=blue,red&version=*", []gvp{{"blue", "1.0.0"}}},
	} {
		var got []gvp
		for _, p := range providers {
			if p.Hostname() != "10.1.0.30" || !dubboMatch(consumer(tc.query), p) {
				continue
			}
			q := p.Query()
			if p.Scheme != "dubbo" || p.Port() != "20880" || q.Get("side") != "provider" || q.Get("application") != "go-provider" || q.Has("regkit.id") {
				t.Errorf("consumer %s keeps %s", tc.query, p)
			}
			got = append(got, gvp{q.Get("group"), q.Get("version")})
		}
		slices.SortFunc(got, func(a, b gvp) int { return strings.Compare(a.group+"/"+a.version, b.group+"/"+b.version) })
		if !slices.Equal(got, tc.want) {
			t.Errorf("a Dubbo consumer with %s keeps regkit's providers %v, want %v", tc.query, got, tc.want)
		}
	}
}
