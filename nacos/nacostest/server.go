// Package nacostest is a small in-process Nacos naming server for tests, written
// from Nacos's documented client API for what the real server the tests use
// (Polaris's Nacos-compatible API) lacks: the v3 client endpoints, 404/410 answers
// by server version, the 20404/21003 "register again" heartbeat answers, the
// protect threshold, and auth with expiring tokens.
//
// It models, per namespace ("" and "public" are the same), group and service,
// instances identified by ip, port and cluster:
//
//   - Mode1x serves the v1 client API only (/nacos/v1/ns/instance POST, PUT, DELETE,
//     /instance/list, /instance/beat, /service/list, /nacos/v1/auth/login); v3 paths
//     answer 404.
//   - Mode30 (Nacos 3.0-3.1) serves the v1 client API and the v3 client API
//     (/nacos/v3/client/ns/instance POST with heartBeat, DELETE, /instance/list,
//     /nacos/v3/auth/user/login), and answers 410 to the admin-type v1 call
//     PUT /instance.
//   - Mode32 (Nacos 3.2+) serves only the v3 client API; v1 paths answer 404.
//
// Ephemeral instances turn unhealthy HealthTimeout after their last heartbeat and
// are deleted DeleteTimeout after it (Nacos: 15s and 30s); a v1 beat for an unknown
// instance answers code 20404 and a v3 heartBeat code 21003 (real Nacos 2.x may
// instead re-register an instance from a full v1 beat; either way the client's
// instance is back). The v1 list applies the protect threshold: when the healthy
// share is at or below it, every instance is returned healthy and
// reachProtectionThreshold is true. checksum is empty and lastRefTime is "now", as
// on Nacos 2.x. With WithAuth, every naming call needs a valid accessToken (403
// otherwise); tokens expire after the configured TTL.
//
// It also serves Nacos's v1 configuration API (/nacos/v1/cs/configs get, publish
// with the casMd5 header, delete, search, and the long-poll listener; see config.go)
// in Mode1x and Mode30.
//
// The server's state lives in memory; Restart drops ephemeral instances, as a real
// Nacos restart does, and keeps configurations.
package nacostest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Mode is the Nacos server version the test server behaves as.
type Mode string

// Modes.
const (
	Mode1x Mode = "1.x"
	Mode30 Mode = "3.0"
	Mode32 Mode = "3.2"
)

// Option configures a Server.
type Option func(*Server)

// WithMode sets the version mode (default Mode1x).
func WithMode(m Mode) Option { return func(s *Server) { s.mode = m } }

// WithCacheMillis sets the cacheMillis of v1 list answers (default 3000).
func WithCacheMillis(ms int64) Option { return func(s *Server) { s.cacheMillis = ms } }

// WithBeatInterval sets the clientBeatInterval of v1 beat answers (default 5s).
func WithBeatInterval(d time.Duration) Option { return func(s *Server) { s.beatInterval = d } }

// WithTimeouts sets after how long without heartbeat an ephemeral instance turns
// unhealthy and is deleted (default 15s and 30s).
func WithTimeouts(unhealthy, deleted time.Duration) Option {
	return func(s *Server) { s.healthTimeout, s.deleteTimeout = unhealthy, deleted }
}

// WithAuth turns auth on with one user whose tokens live ttl (rounded up to whole
// seconds in the tokenTtl answer).
func WithAuth(username, password string, ttl time.Duration) Option {
	return func(s *Server) { s.user, s.pass, s.tokenTTL = username, password, ttl }
}

// Instance is one registered instance as the server holds it.
type Instance struct {
	Namespace, Group, Service string
	IP                        string
	Port                      int
	Cluster                   string
	Weight                    float64
	Healthy                   bool
	Enabled                   bool
	Ephemeral                 bool
	Metadata                  map[string]string
	lastBeat                  time.Time
}

func (in *Instance) key() string {
	return in.Namespace + "|" + in.Group + "@@" + in.Service + "|" + in.IP + "#" + strconv.Itoa(in.Port) + "#" + in.Cluster
}

// Server is a running test server.
type Server struct {
	mode          Mode
	cacheMillis   int64
	beatInterval  time.Duration
	healthTimeout time.Duration
	deleteTimeout time.Duration
	user, pass    string
	tokenTTL      time.Duration
	noSearch      bool
	noListener    bool
	listenFloor   time.Duration

	mu        sync.Mutex
	addr      string
	srv       *http.Server
	done      chan struct{}
	instances map[string]*Instance
	threshold map[string]float64 // ns|group@@service -> protect threshold
	tokens    map[string]time.Time
	configs   map[string]*ConfigItem // tenant\x00group\x00dataId
	cfgSeq    int64
	cfgWake   chan struct{} // closed on every config change
	logins    int
	forbidden int
	beats     int
}

// Start starts a server on a free 127.0.0.1 port; t.Cleanup closes it.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{mode: Mode1x, cacheMillis: 3000, beatInterval: 5 * time.Second,
		healthTimeout: 15 * time.Second, deleteTimeout: 30 * time.Second,
		instances: map[string]*Instance{}, threshold: map[string]float64{}, tokens: map[string]time.Time{},
		configs: map[string]*ConfigItem{}}
	for _, o := range opts {
		o(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("nacostest: listen: %v", err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.Stop)
	return s
}

// SetMode switches the version mode of the running server (an upgrade behind the
// same address).
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

func (s *Server) getMode() Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// Addr is "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

func (s *Server) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.handle), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	s.mu.Lock()
	s.srv, s.done = srv, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// Stop closes the listener and every connection (a no-op when stopped).
func (s *Server) Stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
		<-done
	}
}

// Start listens again on the same address after Stop.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", s.addr)
		if err == nil {
			s.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nacostest: listen again on %s: %v", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond) // polling for the port, not a condition
	}
}

// Restart stops the server, drops every ephemeral instance (as a Nacos restart
// does) and starts it again on the same address.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.mu.Lock()
	for k, in := range s.instances {
		if in.Ephemeral {
			delete(s.instances, k)
		}
	}
	s.mu.Unlock()
	s.Start(t)
}

func normNS(ns string) string {
	if ns == "" {
		return "public"
	}
	return ns
}

// DropNamespace deletes every instance of namespace ns and returns how many.
func (s *Server) DropNamespace(ns string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, in := range s.instances {
		if in.Namespace == normNS(ns) {
			delete(s.instances, k)
			n++
		}
	}
	return n
}

// AddInstance puts an instance directly (e.g. a persistent, unhealthy one that no
// client keeps alive).
func (s *Server) AddInstance(in Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in.Namespace = normNS(in.Namespace)
	if in.Group == "" {
		in.Group = "DEFAULT_GROUP"
	}
	if in.Cluster == "" {
		in.Cluster = "DEFAULT"
	}
	in.lastBeat = time.Now()
	cp := in
	s.instances[cp.key()] = &cp
}

// SetProtectThreshold sets the protect threshold (0 to 1) of a service.
func (s *Server) SetProtectThreshold(ns, group, service string, threshold float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.threshold[normNS(ns)+"|"+group+"@@"+service] = threshold
}

// Instances returns the instances of a service (any order).
func (s *Server) Instances(ns, group, service string) []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	var out []Instance
	for _, in := range s.instances {
		if in.Namespace == normNS(ns) && in.Group == group && in.Service == service {
			out = append(out, *in)
		}
	}
	return out
}

// Stats are counters of what the server saw.
type Stats struct {
	Logins    int // successful logins
	Forbidden int // calls refused with 403
	Beats     int // heartbeats (v1 beat and v3 heartBeat) received
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Logins: s.logins, Forbidden: s.forbidden, Beats: s.beats}
}

// sweep applies heartbeat timeouts; s.mu is held.
func (s *Server) sweep() {
	now := time.Now()
	for k, in := range s.instances {
		if !in.Ephemeral {
			continue
		}
		switch idle := now.Sub(in.lastBeat); {
		case idle > s.deleteTimeout:
			delete(s.instances, k)
		case idle > s.healthTimeout:
			in.Healthy = false
		}
	}
}

type httpErr struct {
	code int
	msg  string
}

func (e *httpErr) Error() string { return e.msg }

func bad(msg string) error { return &httpErr{http.StatusBadRequest, msg} }

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p := r.URL.Path
	mode := s.getMode()
	v1 := strings.HasPrefix(p, "/nacos/v1/")
	v3 := strings.HasPrefix(p, "/nacos/v3/")
	switch {
	case strings.HasPrefix(p, "/nacos/v2/") && mode == Mode30:
		http.Error(w, "api removed", http.StatusGone)
		return
	case v1 && mode == Mode32, v3 && mode == Mode1x, !v1 && !v3:
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	var out any
	var err error
	switch {
	case p == "/nacos/v1/auth/login" && r.Method == http.MethodPost,
		p == "/nacos/v3/auth/user/login" && r.Method == http.MethodPost:
		out, err = s.login(r)
	default:
		if err = s.authorize(r); err != nil {
			break
		}
		if strings.HasPrefix(p, "/nacos/v1/cs/") || p == "/nacos/v3/client/cs/config" {
			s.config(w, r)
			return
		}
		out, err = s.route(r, p)
	}
	var he *httpErr
	switch {
	case errors.As(err, &he):
		if he.code == http.StatusForbidden {
			s.mu.Lock()
			s.forbidden++
			s.mu.Unlock()
		}
		http.Error(w, he.msg, he.code)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		if str, ok := out.(string); ok {
			_, _ = w.Write([]byte(str))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}
}

func (s *Server) route(r *http.Request, p string) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	switch {
	case p == "/nacos/v1/ns/instance" && r.Method == http.MethodPost:
		return s.register(r, false)
	case p == "/nacos/v1/ns/instance" && r.Method == http.MethodPut:
		if s.mode != Mode1x {
			return nil, &httpErr{http.StatusGone, "admin api moved to /v3/admin"}
		}
		return s.register(r, false)
	case p == "/nacos/v1/ns/instance" && r.Method == http.MethodDelete:
		return s.deregister(r, false)
	case p == "/nacos/v1/ns/instance/list" && r.Method == http.MethodGet:
		return s.listV1(r)
	case p == "/nacos/v1/ns/instance/beat" && r.Method == http.MethodPut:
		return s.beatV1(r)
	case p == "/nacos/v1/ns/service/list" && r.Method == http.MethodGet:
		return s.serviceList(r)
	case p == "/nacos/v3/client/ns/instance" && r.Method == http.MethodPost:
		if r.Form.Get("heartBeat") == "true" {
			return s.beatV3(r)
		}
		if _, err := s.register(r, true); err != nil {
			return nil, err
		}
		return v3ok("ok"), nil
	case p == "/nacos/v3/client/ns/instance" && r.Method == http.MethodDelete:
		if _, err := s.deregister(r, true); err != nil {
			return nil, err
		}
		return v3ok("ok"), nil
	case p == "/nacos/v3/client/ns/instance/list" && r.Method == http.MethodGet:
		return s.listV3(r)
	}
	return nil, &httpErr{http.StatusNotFound, "no such api: " + r.Method + " " + p}
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) login(r *http.Request) (any, error) {
	if s.getMode() == Mode32 && r.URL.Path == "/nacos/v1/auth/login" {
		return nil, &httpErr{http.StatusNotFound, "404 page not found"}
	}
	if s.getMode() == Mode1x && r.URL.Path == "/nacos/v3/auth/user/login" {
		return nil, &httpErr{http.StatusNotFound, "404 page not found"}
	}
	if s.user == "" {
		return map[string]any{"accessToken": "", "tokenTtl": 18000, "globalAdmin": false}, nil
	}
	if r.Form.Get("username") != s.user || r.Form.Get("password") != s.pass {
		return nil, &httpErr{http.StatusForbidden, "unknown user!"}
	}
	tok := newToken()
	s.mu.Lock()
	s.tokens[tok] = time.Now().Add(s.tokenTTL)
	s.logins++
	s.mu.Unlock()
	secs := int64((s.tokenTTL + time.Second - 1) / time.Second)
	return map[string]any{"accessToken": tok, "tokenTtl": secs, "globalAdmin": false, "username": s.user}, nil
}

func (s *Server) authorize(r *http.Request) error {
	if s.user == "" {
		return nil
	}
	tok := r.Form.Get("accessToken")
	s.mu.Lock()
	exp, ok := s.tokens[tok]
	s.mu.Unlock()
	if !ok {
		return &httpErr{http.StatusForbidden, "user not found!"}
	}
	if time.Now().After(exp) {
		return &httpErr{http.StatusForbidden, "token expired!"}
	}
	return nil
}

// serviceOf reads namespace, group and service: v1 "group@@service" (or a plain
// name with groupName), v3 separate parameters.
func serviceOf(r *http.Request, v3 bool) (ns, group, service string, err error) {
	ns = normNS(r.Form.Get("namespaceId"))
	service = r.Form.Get("serviceName")
	group = r.Form.Get("groupName")
	if group == "" {
		group = "DEFAULT_GROUP"
	}
	if !v3 {
		if g, s, ok := strings.Cut(service, "@@"); ok {
			group, service = g, s
		}
	} else if strings.Contains(service, "@@") {
		return "", "", "", bad("serviceName must not contain @@ on v3")
	}
	if service == "" {
		return "", "", "", bad("Param 'serviceName' is required")
	}
	return ns, group, service, nil
}

func (s *Server) instanceOf(r *http.Request, v3 bool) (*Instance, error) {
	ns, group, service, err := serviceOf(r, v3)
	if err != nil {
		return nil, err
	}
	in := &Instance{Namespace: ns, Group: group, Service: service, IP: r.Form.Get("ip"),
		Cluster: r.Form.Get("clusterName"), Weight: 1, Healthy: true, Enabled: true, Ephemeral: true}
	if in.IP == "" {
		return nil, bad("Param 'ip' is required")
	}
	if in.Port, err = strconv.Atoi(r.Form.Get("port")); err != nil || in.Port < 1 || in.Port > 65535 {
		return nil, bad("Param 'port' is invalid")
	}
	if in.Cluster == "" {
		in.Cluster = "DEFAULT"
	}
	if w := r.Form.Get("weight"); w != "" {
		if in.Weight, err = strconv.ParseFloat(w, 64); err != nil || in.Weight < 0 || in.Weight > 10000 {
			return nil, bad("instance format invalid: weight")
		}
	}
	if e := r.Form.Get("ephemeral"); e != "" {
		in.Ephemeral = e == "true"
	}
	if e := r.Form.Get("enabled"); e != "" {
		in.Enabled = e == "true"
	}
	if m := r.Form.Get("metadata"); m != "" {
		if err := json.Unmarshal([]byte(m), &in.Metadata); err != nil {
			return nil, bad("instance format invalid: metadata")
		}
	}
	in.lastBeat = time.Now()
	return in, nil
}

func (s *Server) register(r *http.Request, v3 bool) (any, error) {
	in, err := s.instanceOf(r, v3)
	if err != nil {
		return nil, err
	}
	s.instances[in.key()] = in
	return "ok", nil
}

func (s *Server) deregister(r *http.Request, v3 bool) (any, error) {
	in, err := s.instanceOf(r, v3)
	if err != nil {
		return nil, err
	}
	delete(s.instances, in.key())
	return "ok", nil
}

func (s *Server) touch(ns, group, service, ip string, port int, cluster string) bool {
	if cluster == "" {
		cluster = "DEFAULT"
	}
	s.beats++
	k := (&Instance{Namespace: ns, Group: group, Service: service, IP: ip, Port: port, Cluster: cluster}).key()
	in, ok := s.instances[k]
	if !ok {
		return false
	}
	in.lastBeat = time.Now()
	if in.Ephemeral {
		in.Healthy = true
	}
	return true
}

func (s *Server) beatV1(r *http.Request) (any, error) {
	ns, group, service, err := serviceOf(r, false)
	if err != nil {
		return nil, err
	}
	ip, cluster := r.Form.Get("ip"), r.Form.Get("clusterName")
	port, _ := strconv.Atoi(r.Form.Get("port"))
	if b := r.Form.Get("beat"); b != "" {
		var beat struct {
			IP      string `json:"ip"`
			Port    int    `json:"port"`
			Cluster string `json:"cluster"`
		}
		if err := json.Unmarshal([]byte(b), &beat); err != nil {
			return nil, bad("beat format invalid")
		}
		ip, port, cluster = beat.IP, beat.Port, beat.Cluster
	}
	code := 10200
	if !s.touch(ns, group, service, ip, port, cluster) {
		code = 20404
	}
	return map[string]any{"clientBeatInterval": s.beatInterval.Milliseconds(), "code": code, "lightBeatEnabled": true}, nil
}

func v3ok(data any) map[string]any {
	return map[string]any{"code": 0, "message": "success", "data": data}
}

func (s *Server) beatV3(r *http.Request) (any, error) {
	in, err := s.instanceOf(r, true)
	if err != nil {
		return nil, err
	}
	if !s.touch(in.Namespace, in.Group, in.Service, in.IP, in.Port, in.Cluster) {
		return map[string]any{"code": 21003, "message": "instance not found", "data": nil}, nil
	}
	return v3ok("ok"), nil
}

func hostJSON(in *Instance, healthy bool) map[string]any {
	md := in.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return map[string]any{
		"instanceId": fmt.Sprintf("%s#%d#%s#%s@@%s", in.IP, in.Port, in.Cluster, in.Group, in.Service),
		"ip":         in.IP, "port": in.Port, "weight": in.Weight, "healthy": healthy, "enabled": in.Enabled,
		"ephemeral": in.Ephemeral, "clusterName": in.Cluster, "serviceName": in.Group + "@@" + in.Service,
		"metadata": md,
	}
}

func (s *Server) selected(ns, group, service string) []*Instance {
	var out []*Instance
	for _, in := range s.instances {
		if in.Namespace == ns && in.Group == group && in.Service == service && in.Enabled {
			out = append(out, in)
		}
	}
	return out
}

func (s *Server) listV1(r *http.Request) (any, error) {
	ns, group, service, err := serviceOf(r, false)
	if err != nil {
		return nil, err
	}
	list := s.selected(ns, group, service)
	healthy := 0
	for _, in := range list {
		if in.Healthy {
			healthy++
		}
	}
	protect := false
	if t := s.threshold[ns+"|"+group+"@@"+service]; t > 0 && len(list) > 0 && float64(healthy)/float64(len(list)) <= t {
		protect = true
	}
	healthyOnly := r.Form.Get("healthyOnly") == "true"
	hosts := []any{}
	for _, in := range list {
		if healthyOnly && !in.Healthy && !protect {
			continue
		}
		hosts = append(hosts, hostJSON(in, in.Healthy || protect))
	}
	return map[string]any{
		"name": group + "@@" + service, "groupName": group, "clusters": "", "hosts": hosts,
		"checksum": "", "cacheMillis": s.cacheMillis, "lastRefTime": time.Now().UnixMilli(),
		"reachProtectionThreshold": protect,
	}, nil
}

func (s *Server) listV3(r *http.Request) (any, error) {
	ns, group, service, err := serviceOf(r, true)
	if err != nil {
		return nil, err
	}
	hosts := []any{}
	for _, in := range s.selected(ns, group, service) {
		hosts = append(hosts, hostJSON(in, in.Healthy))
	}
	return v3ok(hosts), nil
}

func (s *Server) serviceList(r *http.Request) (any, error) {
	ns := normNS(r.Form.Get("namespaceId"))
	group := r.Form.Get("groupName")
	if group == "" {
		group = "DEFAULT_GROUP"
	}
	set := map[string]bool{}
	for _, in := range s.instances {
		if in.Namespace == ns && in.Group == group {
			set[in.Service] = true
		}
	}
	doms := []string{}
	for name := range set {
		doms = append(doms, name)
	}
	sort.Strings(doms)
	return map[string]any{"count": len(doms), "doms": doms}, nil
}
