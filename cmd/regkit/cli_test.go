package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos/nacostest"
)

// TestHelp: --help on every command, exit status 0, with the exit codes.
func TestHelp(t *testing.T) {
	for _, c := range []string{"", "ls", "watch", "register", "get", "put", "rm", "tree", "dns", "version", "sync"} {
		args := strings.Fields(c + " --help")
		r := regkit(t, "", args...)
		r.want(t, exitOK, "Usage:", "Exit status: 0 success")
	}
}

// TestUsageErrors: bad input is exit status 2 with an error naming the flag or
// argument, before any I/O (the URL points at nothing: a dial would be exit 1).
func TestUsageErrors(t *testing.T) {
	dead := deadURL(t)
	for _, tc := range []struct {
		url  string
		args []string
		want string
	}{
		{dead, []string{"lss"}, `unknown command "lss"`},
		{dead, []string{"ls", "--healthy"}, "--healthy needs a SERVICE"},
		{dead, []string{"ls", "a", "b"}, `unexpected argument "b"`},
		{dead, []string{"ls", "bad name"}, "invalid argument SERVICE"},
		{dead, []string{"ls", "greeter", "-o", "yaml"}, "-o/--output"},
		{dead, []string{"ls", "greeter", "--bogus"}, "unknown flag: --bogus"},
		{"", []string{"ls", "greeter"}, "give --url or set REGKIT_URL"},
		{"nope://h/x", []string{"ls", "greeter"}, `invalid REGKIT_URL "nope://h/x": unknown scheme "nope"`},
		{dead, []string{"ls", "greeter", "--url", "etcd://h:2379/x?colour=blue"}, "colour"},
		{dead, []string{"register", "greeter", "127.0.0.1"}, "invalid argument HOST:PORT"},
		{dead, []string{"register", "greeter", "127.0.0.1:99999"}, "port must be a number in 1-65535"},
		{dead, []string{"register", "greeter", "127.0.0.1:80", "--meta", "novalue"}, `invalid --meta "novalue"`},
		{dead, []string{"register", "greeter", "127.0.0.1:80", "--weight", "-1"}, "invalid --weight -1"},
		{dead, []string{"register", "greeter", "127.0.0.1:80", "--zone", "a b"}, "invalid --zone"},
		{dead, []string{"register", "greeter", "127.0.0.1:80", "--id", "a/b"}, "invalid --id"},
		{dead, []string{"get", "no-slash"}, "invalid argument KEY"},
		{dead, []string{"put", "/a", "v", "--create", "--version", "3"}, "--create and --version"},
		{dead, []string{"rm", "/"}, "needs -r"},
		{dead, []string{"tree", "/a//b"}, "invalid argument KEY"},
		{dead, []string{"dns"}, "missing argument SERVICE (or --all)"},
		{dead, []string{"dns", "--all", "greeter"}, "--all and a SERVICE list"},
		{dead, []string{"dns", "greeter", "--ttl", "1500ms"}, "invalid --ttl"},
		{dead, []string{"dns", "greeter", "--listen", "nowhere"}, "invalid --listen"},
		{dead, []string{"dns", "greeter", "--suffix", "bad..suffix"}, "suffix"},
		{dead, []string{"version", "extra"}, "takes no arguments"},
		{dead, []string{"watch", "greeter", "--metrics-addr", "nowhere"}, "invalid --metrics-addr"},
		{dead, []string{"dns", "greeter", "--metrics-addr", "127.0.0.1:70000"}, "invalid --metrics-addr"},
		{dead, []string{"sync", dead, "zk://127.0.0.1:1", "--metrics-addr", ":x"}, "invalid --metrics-addr"},
		{dead, []string{"watch", "greeter", "--metrics-addr", "127.0.0.1:+80"}, "invalid --metrics-addr"},
		{dead, []string{"register", "greeter", "127.0.0.1:+80"}, "invalid argument HOST:PORT"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			start := time.Now()
			r := regkit(t, tc.url, tc.args...)
			r.want(t, exitUsage)
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("stderr lacks %q and the usage hint:\n%s", tc.want, r.stderr)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v: did it try the backend?", d)
			}
		})
	}
}

// TestBackendDown: an unreachable backend is exit status 1 within --timeout.
func TestBackendDown(t *testing.T) {
	dead := deadURL(t)
	for _, args := range [][]string{
		{"ls", "greeter"},
		{"get", "/a"},
		{"put", "/a", "v"},
		{"tree", "/"},
		{"register", "greeter", "127.0.0.1:8080"},
	} {
		t.Run(args[0], func(t *testing.T) {
			start := time.Now()
			r := regkit(t, dead, append(args, "--timeout", "2s")...)
			r.want(t, exitError)
			if !strings.HasPrefix(r.stderr, "regkit: ") {
				t.Errorf("stderr: %q", r.stderr)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("took %v with --timeout 2s", d)
			}
		})
	}
}

// backends are the real servers the inspection commands run against, each
// started by the (sub)test that asks for its URL; the URL's prefix, chroot,
// namespace or Nacos namespace is the test's own.
func backends(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"etcd": etcdURL,
		"zk": func(t *testing.T) string {
			zk := testenv.StartZooKeeper(t)
			return "zk://" + zk.Addr() + "/regkit-cli"
		},
		"consul": func(t *testing.T) string {
			// A long check TTL: only a deregistration removes an instance in time.
			return "consul://" + testenv.StartConsul(t).Addr() + "/" + testPrefix(t) + "?check_ttl=5m"
		},
		"nacos": func(t *testing.T) string {
			return nacosURL(t, nacostest.Start(t, nacostest.WithCacheMillis(200)))
		},
		"polaris": func(t *testing.T) string { // Polaris's Nacos API: no store
			return "nacos://" + testenv.StartPolaris(t).NacosAddr() + "?namespace=" + testPrefix(t) +
				"&poll_interval=200ms&beat_interval=500ms&presence_check=1s&timeout=10s"
		},
	}
}

// testPrefix is the test's name as one path segment.
func testPrefix(t *testing.T) string { return strings.ReplaceAll(t.Name(), "/", "_") }

// nacosURL is a URL of the Nacos server s with a namespace of the test's own,
// polling and heartbeating fast.
func nacosURL(t *testing.T, s *nacostest.Server) string {
	return "nacos://" + s.Addr() + "?namespace=" + testPrefix(t) + "&poll_interval=200ms&beat_interval=500ms&presence_check=1s"
}

// TestStore: put/get/tree/rm round trip, JSON, not found (3) and conflicts (4);
// on a backend without a store (Polaris's Nacos API) every store command is exit
// status 1, "not supported".
func TestStore(t *testing.T) {
	for name, urlFor := range backends(t) {
		t.Run(name, func(t *testing.T) {
			url := urlFor(t)
			if name == "polaris" {
				for _, args := range [][]string{{"get", "/a"}, {"put", "/a", "v"}, {"rm", "/a"}, {"tree", "/"}} {
					r := regkit(t, url, args...)
					r.want(t, exitError)
					if !strings.Contains(r.stderr, "not supported") {
						t.Fatalf("%q: stderr %q", args, r.stderr)
					}
				}
				return
			}
			regkit(t, url, "get", "/app/timeout").want(t, exitNotFound)
			regkit(t, url, "tree", "/app").want(t, exitNotFound)
			regkit(t, url, "rm", "/app").want(t, exitNotFound)

			regkit(t, url, "put", "/app/timeout", "3s").want(t, exitOK, "/app/timeout version=")
			regkit(t, url, "get", "/app/timeout").want(t, exitOK, "3s\n")
			regkitIn(t, url, strings.NewReader(`{"retries": 2}`), "put", "/app/rules").want(t, exitOK)
			regkit(t, url, "put", "/app/timeout", "5s").want(t, exitOK) // upsert

			var n nodeJSON
			r := regkit(t, url, "get", "/app/timeout", "-o", "json")
			r.want(t, exitOK)
			if err := json.Unmarshal([]byte(r.stdout), &n); err != nil || n.Key != "/app/timeout" || n.Value != "5s" || n.Version == 0 {
				t.Fatalf("get -o json: %v %+v\n%s", err, n, r.stdout)
			}
			// Compare-and-set: the old version conflicts, the current one writes.
			regkit(t, url, "put", "/app/timeout", "6s", "--version", "999999").want(t, exitConflict)
			regkit(t, url, "put", "/app/timeout", "6s", "--version", itoa(n.Version)).want(t, exitOK)
			regkit(t, url, "put", "/app/timeout", "7s", "--create").want(t, exitConflict)

			r = regkit(t, url, "tree", "/app")
			r.want(t, exitOK, "KEY", "/app/timeout", "6s", "/app/rules", `"{\"retries\": 2}"`)
			var nodes []nodeJSON
			r = regkit(t, url, "tree", "/app", "-o", "json")
			r.want(t, exitOK)
			if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil {
				t.Fatal(err, r.stdout)
			}
			keys := map[string]string{}
			for _, n := range nodes {
				keys[n.Key] = n.Value
			}
			if keys["/app/rules"] != `{"retries": 2}` || keys["/app/timeout"] != "6s" {
				t.Fatalf("tree -o json: %v", keys)
			}

			regkit(t, url, "rm", "/app").want(t, exitConflict) // has children
			regkit(t, url, "rm", "-r", "/app").want(t, exitOK, "deleted /app")
			regkit(t, url, "get", "/app/timeout").want(t, exitNotFound)
		})
	}
}

// TestRegisterLsWatch: register holds the instance until SIGTERM and then
// deregisters it; ls and a live watch see it come and go.
func TestRegisterLsWatch(t *testing.T) {
	for name, urlFor := range backends(t) {
		t.Run(name, func(t *testing.T) {
			url := urlFor(t)
			regkit(t, url, "ls", "greeter").want(t, exitNotFound)

			w := start(t, url, "watch", "greeter", "--metrics-addr", "127.0.0.1:0")
			w.waitLine(t, 0, "first (empty) snapshot", "greeter seq=1 instances=0")
			// The watch's metrics: a fresh view is 0 seconds stale.
			m, err := scrape(waitMatch(t, w, `serving metrics on http://(\S+)/metrics`))
			if err != nil {
				t.Fatal(err)
			}
			if got := sample(m, "regkit_watch_staleness_seconds", `service="greeter"`); got != "0" {
				t.Fatalf("regkit_watch_staleness_seconds{service=\"greeter\"} = %q, want 0; /metrics:\n%s", got, m)
			}
			wj := start(t, url, "watch", "greeter", "-o", "json")
			wj.waitLine(t, 0, "first JSON snapshot", `"seq":1`)

			reg := start(t, url, "register", "greeter", "127.0.0.1:18080", "--id", "g1", "--zone", "eu-1",
				"--weight", "7", "--meta", "version=1.2", "--meta", "team=core")
			reg.waitLine(t, 0, "registered", "registered greeter/g1 at 127.0.0.1:18080")

			regkitUntil(t, url, exitOK, []string{"ls", "greeter"},
				"ID", "ADDRESS", "g1", "127.0.0.1:18080", "eu-1", "7", "healthy", "team=core,version=1.2")
			var list []instanceJSON
			r := regkit(t, url, "ls", "greeter", "-o", "json")
			r.want(t, exitOK)
			if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
				t.Fatal(err, r.stdout)
			}
			if len(list) != 1 || list[0].ID != "g1" || list[0].Port != 18080 || list[0].Weight != 7 ||
				list[0].Zone != "eu-1" || list[0].Metadata["version"] != "1.2" || !list[0].Healthy {
				t.Fatalf("ls -o json: %+v", list)
			}

			i := w.waitLine(t, 0, "watch sees it added", "+ g1 127.0.0.1:18080 zone=eu-1 weight=7 healthy")
			j := wj.waitLine(t, 0, "JSON watch sees it added", `"added":[{"id":"g1"`)

			if code := reg.stop(t); code != exitOK {
				t.Fatalf("register exited %d after SIGTERM; stderr:\n%s", code, reg.stderr.String())
			}
			if !strings.Contains(reg.stdout(), "deregistered greeter/g1") {
				t.Fatalf("register did not say it deregistered:\n%s", reg.stdout())
			}
			w.waitLine(t, i, "watch sees it removed", "- g1 127.0.0.1:18080")
			wj.waitLine(t, j, "JSON watch sees it removed", `"removed":[{"id":"g1"`)
			regkitUntil(t, url, exitNotFound, []string{"ls", "greeter"})

			if code := w.stop(t); code != exitOK {
				t.Fatalf("watch exited %d after SIGTERM", code)
			}
			if code := wj.stop(t); code != exitOK {
				t.Fatalf("watch -o json exited %d after SIGTERM", code)
			}
		})
	}
}

// TestVersion prints the backends compiled in.
func TestVersion(t *testing.T) {
	regkit(t, "", "version").want(t, exitOK, "backends: consul, etcd, mem, nacos, zk")
	var v versionInfo
	r := regkit(t, "", "version", "-o", "json")
	r.want(t, exitOK)
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || len(v.Backends) != 5 || v.Go == "" {
		t.Fatalf("%v %+v", err, v)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
