//go:build unix

package zk_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// countingListener accepts TCP connections on 127.0.0.1 and counts them (closing
// each at once): a stand-in Dubbo provider port that only shows who dialed it.
type countingListener struct {
	ln   net.Listener
	mu   sync.Mutex
	n    int
	done chan struct{}
}

func listenCounting(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			l.mu.Lock()
			l.n++
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-l.done })
	return l
}

func (l *countingListener) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

func (l *countingListener) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// regkit registers providers of one interface with layout=dubbo (several versions
// and groups on one host:port, one more host:port, a tri:// provider, metadata),
// and a live node-zookeeper-dubbo consumer (testenv.DubboJSPeer) picks, for each
// (version, group) it depends on, exactly the providers Java Dubbo's consumer
// would: its own discovery lists /dubbo/<interface>/providers, parses regkit's
// URLs and filters them by version, group and protocol; its Service dials the
// chosen host:port. Its watch follows a deregistration and a new registration.
// The other way: the consumer URLs it registers under /dubbo/<interface>/consumers
// are not instances to regkit. (The package is consumer-only: it cannot register
// a provider for regkit to read.)
func TestDubboJSPeer(t *testing.T) {
	e := newEnv(t)
	const chroot = "/dubbojs"
	const svc = "org.example.GreetService"
	c := openURL(t, "zk://"+e.srv.Addr()+chroot+"?layout=dubbo")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a, b := listenCounting(t), listenCounting(t)
	register := func(port int, kv ...string) registry.Registration {
		t.Helper()
		md := map[string]string{"application": "greet-go", "methods": "greet,bye", "region": "eu-1"}
		for i := 0; i < len(kv); i += 2 {
			md[kv[i]] = kv[i+1]
		}
		r, err := c.Register(ctx, registry.Instance{Service: svc, Host: "127.0.0.1", Port: port, Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	register(a.port(), "version", "1.0.0")
	register(a.port(), "version", "2.0.0")
	register(a.port(), "group", "blue", "version", "1.0.0")
	register(a.port(), "group", "blue", "version", "2.0.0")
	register(a.port()) // no version, no group
	register(a.port(), "group", "green", "version", "1.0.0", "protocol", "tri")
	regB := register(b.port(), "version", "1.0.0")

	deps := map[string]testenv.DubboJSDependency{
		"v1":     {Interface: svc, Version: "1.0.0"},
		"v2":     {Interface: svc, Version: "2.0.0"},
		"blue1":  {Interface: svc, Version: "1.0.0", Group: "blue"},
		"blue2":  {Interface: svc, Version: "2.0.0", Group: "blue"},
		"plain":  {Interface: svc},
		"green1": {Interface: svc, Version: "1.0.0", Group: "green"}, // tri:// only: not for this client
		"v3":     {Interface: svc, Version: "3.0.0"},
	}
	// The consumers directory exists, as a Java consumer that ran before leaves it:
	// node-zookeeper-dubbo 3.0.15 creates it for each dependency at once (exists,
	// then create), so all but one of its creates fail with NODE_EXISTS and only
	// that one consumer URL would be registered.
	consumers := chroot + "/dubbo/" + svc + "/consumers"
	createRaw(t, e.adm(t), consumers, nil, 0)
	peer := testenv.StartDubboJSPeer(t, e.srv.Addr()+chroot, "dubbo", deps)

	// chosen is what the peer chose for a dependency, as "host:port;group=G;version=V" sorted.
	chosen := func(key string) ([]string, error) {
		ps, _, err := peer.Chosen(key)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, p := range ps {
			q := func(k string) string { s, _ := p.Query[k].(string); return s }
			if p.Protocol != "dubbo:" || q("interface") != svc || q("side") != "provider" ||
				q("methods") != "greet,bye" || q("application") != "greet-go" || q("region") != "eu-1" {
				return nil, fmt.Errorf("%s: provider %+v: want dubbo:, interface %s, side=provider and regkit's metadata", key, p, svc)
			}
			out = append(out, p.Hostname+":"+strconv.Itoa(p.Port)+";group="+q("group")+";version="+q("version"))
		}
		slices.Sort(out)
		return out, nil
	}
	at := func(l *countingListener, group, version string) string {
		return "127.0.0.1:" + strconv.Itoa(l.port()) + ";group=" + group + ";version=" + version
	}
	want := map[string][]string{
		"v1":     {at(a, "", "1.0.0"), at(b, "", "1.0.0")},
		"v2":     {at(a, "", "2.0.0")},
		"blue1":  {at(a, "blue", "1.0.0")},
		"blue2":  {at(a, "blue", "2.0.0")},
		"plain":  {at(a, "", "")},
		"green1": nil,
		"v3":     nil,
	}
	check := func() error {
		for key, w := range want {
			got, err := chosen(key)
			if err != nil {
				return err
			}
			slices.Sort(w)
			if !slices.Equal(got, w) {
				return fmt.Errorf("node-zookeeper-dubbo chose for %s %+v:\n%q\nwant\n%q", key, deps[key], got, w)
			}
		}
		return nil
	}
	// regkit registered everything before the peer started: its first listing is
	// already right.
	if err := check(); err != nil {
		t.Fatal(err)
	}
	// Its Service dials the providers it chose.
	testenv.Eventually(t, 20*time.Second, "node-zookeeper-dubbo dials the chosen providers", func() error {
		if a.accepted() == 0 || b.accepted() == 0 {
			return fmt.Errorf("connections accepted: %d at %d, %d at %d", a.accepted(), a.port(), b.accepted(), b.port())
		}
		return nil
	})

	// Its watch follows regkit: B's provider goes, a version 3.0.0 comes.
	if err := regB.Close(); err != nil {
		t.Fatal(err)
	}
	register(a.port(), "version", "3.0.0", "application", "greet-go")
	want["v1"] = []string{at(a, "", "1.0.0")}
	want["v3"] = []string{at(a, "", "3.0.0")}
	testenv.Eventually(t, 30*time.Second, "node-zookeeper-dubbo follows regkit's changes", check)

	// The peer's consumer URLs: at /dubbo/<interface>/consumers, and no instances
	// to regkit.
	testenv.Eventually(t, 20*time.Second, "node-zookeeper-dubbo's consumer URLs", func() error {
		kids, _, err := e.adm(t).Children(consumers)
		if err != nil {
			return err
		}
		var got []string
		for _, k := range kids {
			raw, err := url.QueryUnescape(k)
			if err != nil {
				return err
			}
			u, err := url.Parse(raw)
			if err != nil {
				return err
			}
			q := u.Query()
			if u.Scheme != "consumer" || q.Get("side") != "consumer" || q.Get("interface") != svc {
				return fmt.Errorf("consumer node %s: want a consumer:// URL of %s with side=consumer", raw, svc)
			}
			got = append(got, "group="+q.Get("group")+";version="+q.Get("version"))
		}
		var want []string
		for _, d := range deps {
			want = append(want, "group="+d.Group+";version="+d.Version)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("consumer URLs for\n%q\nwant one for each dependency\n%q", got, want)
		}
		return nil
	})
	got, err := c.Instances(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 {
		t.Errorf("regkit lists %d instances of %s, want its 7 providers (consumer URLs are not instances): %+v", len(got), svc, got)
	}
	for _, in := range got {
		if in.Port != a.port() {
			t.Errorf("regkit lists %+v: not one of its providers", in)
		}
	}
}
