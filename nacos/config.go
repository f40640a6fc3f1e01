package nacos

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// Config is Nacos's configuration API (the v1 client API under <context>/v1/cs,
// served by Nacos 1.x to 3.1 and by Polaris) on one connection, in the connection's
// group (URL "group") and tenant (URL "namespace"). It is usable on its own, and
// the coordination store (see the package doc, Store) is built on it. Safe for
// concurrent use.
type Config struct {
	c     *Conn
	owned bool // Close closes c

	mu          sync.Mutex
	casKnown    bool // casEnforced was probed
	casEnforced bool
	noListener  bool // the listener answered 404/410/501: Listen polls
	getV3       bool // the v1 API is gone: Get uses the v3 client API
}

// ConfigItem is one configuration as a search lists it.
type ConfigItem struct {
	DataID  string
	Group   string
	Content string
	MD5     string // computed from Content (searches do not return it)
	// ID is the server's database id of the configuration (increasing with
	// creation on Nacos), 0 when the server gives none.
	ID int64
}

// Config returns the configuration client of this connection.
func (c *Conn) Config() *Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg == nil {
		c.cfg = &Config{c: c}
	}
	return c.cfg
}

// ConfigOf returns the configuration client of a registry.Client opened with a
// nacos:// URL; registry.ErrNotSupported for any other backend.
func ConfigOf(cl *registry.Client) (*Config, error) {
	c, ok := cl.Conn().(*Conn)
	if !ok {
		return nil, fmt.Errorf("nacos: config: not a nacos client: %w", driver.ErrNotSupported)
	}
	return c.Config(), nil
}

// OpenConfig connects to the Nacos server of a nacos:// URL (all the URL
// parameters of the package doc apply) for its configuration API alone. Close it
// when done.
func OpenConfig(ctx context.Context, rawURL string) (*Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &driver.FieldError{Field: "url", Value: rawURL, Reason: err.Error()}
	}
	if u.Scheme != "nacos" {
		return nil, &driver.FieldError{Field: "url", Value: u.Redacted(), Reason: "scheme must be nacos"}
	}
	var cfg driver.Config
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	conn, err := drv{}.Open(ctx, u, cfg)
	if err != nil {
		return nil, err
	}
	f := conn.(*Conn).Config() // shares what Open probed
	f.owned = true
	return f, nil
}

// Close closes the connection of a Config from OpenConfig; for one from a
// registry.Client it does nothing (close the client).
func (f *Config) Close() error {
	if f.owned {
		return f.c.Close()
	}
	return nil
}

// Group is the Nacos group of every configuration of f.
func (f *Config) Group() string { return f.c.o.group }

// Tenant is the Nacos tenant (namespace id) of f; "" is public.
func (f *Config) Tenant() string { return f.c.o.namespace }

// MD5 is the lowercase hex MD5 of content, as Nacos computes it.
func MD5(content string) string {
	h := md5.Sum([]byte(content))
	return hex.EncodeToString(h[:])
}

func (f *Config) form(dataID string) url.Values {
	v := url.Values{"dataId": {dataID}, "group": {f.c.o.group}}
	if f.c.o.namespace != "" {
		v.Set("tenant", f.c.o.namespace)
	}
	return v
}

// Get reads a configuration: its content and MD5 (the server's Content-MD5
// header, or computed when absent). A missing one is registry.ErrNotFound. Reads
// come from the server's cache and may lag a write briefly (Polaris: about 1s).
// Where the v1 API is gone (Nacos 3.2: 404 other than "config data not exist", or
// 410), Get uses the v3 client API GET <context>/v3/client/cs/config (code 20004:
// not found) from then on.
func (f *Config) Get(ctx context.Context, dataID string) (content, md5 string, err error) {
	f.mu.Lock()
	v3 := f.getV3
	f.mu.Unlock()
	if v3 {
		return f.getV3Config(ctx, dataID)
	}
	var h http.Header
	b, err := f.c.doOpts(ctx, http.MethodGet, "/v1/cs/configs", f.form(dataID), false, &reqOpts{respHeader: &h})
	if err != nil {
		var he *httpError
		if errors.As(err, &he) && he.status == http.StatusNotFound && strings.Contains(he.body, "config data not exist") {
			return "", "", fmt.Errorf("nacos: config %s: %w", dataID, driver.ErrNotFound)
		}
		if isGone(err) {
			content, md5, err3 := f.getV3Config(ctx, dataID)
			if !isGone(err3) {
				f.mu.Lock()
				f.getV3 = true
				f.mu.Unlock()
				return content, md5, err3
			}
			return "", "", fmt.Errorf("nacos: config %s: %w", dataID, driver.ErrNotFound)
		}
		return "", "", wrap("config get "+dataID, err)
	}
	content = string(b)
	md5 = h.Get("Content-MD5")
	if md5 == "" {
		md5 = MD5(content)
	}
	return content, md5, nil
}

// codeResourceNotFound is the v3 answer code for a missing resource.
const codeResourceNotFound = 20004

// getV3Config is Get through the v3 client API.
func (f *Config) getV3Config(ctx context.Context, dataID string) (string, string, error) {
	form := url.Values{"namespaceId": {f.c.o.namespace}, "groupName": {f.c.o.group}, "dataId": {dataID}}
	b, err := f.c.do(ctx, http.MethodGet, "/v3/client/cs/config", form, false)
	if isGone(err) {
		return "", "", err
	}
	if err != nil {
		var he *httpError
		if errors.As(err, &he) && nacosCode([]byte(he.body)) == codeResourceNotFound {
			return "", "", fmt.Errorf("nacos: config %s: %w", dataID, driver.ErrNotFound)
		}
		return "", "", wrap("config get "+dataID, err)
	}
	var r struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			Content string `json:"content"`
			MD5     string `json:"md5"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", "", wrap("config get "+dataID, fmt.Errorf("bad answer %.100q: %w", b, err))
	}
	switch r.Code {
	case 0:
	case codeResourceNotFound:
		return "", "", fmt.Errorf("nacos: config %s: %w", dataID, driver.ErrNotFound)
	default:
		return "", "", wrap("config get "+dataID, fmt.Errorf("code %d: %s", r.Code, r.Message))
	}
	if r.Data.MD5 == "" {
		r.Data.MD5 = MD5(r.Data.Content)
	}
	return r.Data.Content, r.Data.MD5, nil
}

// casFailed reports a publish answer that means "the casMd5 did not match":
// 409, or Nacos 2.x's 500 "Cas publish fail, server md5 may have changed".
func casFailed(err error) bool {
	var he *httpError
	if !errors.As(err, &he) {
		return false
	}
	return he.status == http.StatusConflict ||
		(he.status == http.StatusInternalServerError && (strings.Contains(he.body, "Cas publish fail") || strings.Contains(he.body, "md5 may have changed")))
}

// publish sends one publish; cas "" is unconditional.
func (f *Config) publish(ctx context.Context, dataID, content, cas string) error {
	form := f.form(dataID)
	form.Set("content", content)
	var o *reqOpts
	if cas != "" {
		// Nacos's ConfigController reads casMd5 from the header; the form field is
		// sent too for servers that read parameters.
		o = &reqOpts{header: http.Header{"casMd5": {cas}}}
		form.Set("casMd5", cas)
	}
	b, err := f.c.doOpts(ctx, http.MethodPost, "/v1/cs/configs", form, false, o)
	if cas != "" && casFailed(err) {
		return fmt.Errorf("nacos: config publish %s: %w: %w", dataID, driver.ErrVersionConflict, err)
	}
	if isGone(err) {
		return fmt.Errorf("nacos: config publish %s: no v1 config API: %w: %w", dataID, driver.ErrNotSupported, err)
	}
	if he := (*httpError)(nil); errors.As(err, &he) && he.status == http.StatusBadRequest {
		return fmt.Errorf("nacos: config publish: %w", &driver.FieldError{Field: "config", Value: dataID, Reason: "server refused it: " + he.Error()})
	}
	if err != nil {
		return wrap("config publish "+dataID, err)
	}
	if strings.TrimSpace(string(b)) != "true" {
		if cas != "" {
			return fmt.Errorf("nacos: config publish %s: server answered %q: %w", dataID, b, driver.ErrVersionConflict)
		}
		return fmt.Errorf("nacos: config publish %s: server answered %q: %w", dataID, b, driver.ErrUnavailable)
	}
	return nil
}

// Publish writes a configuration. Nacos rejects empty content (and content of
// blanks only). With casMD5 non-empty the write is a compare-and-set: it fails
// with registry.ErrVersionConflict when the configuration's current MD5 differs.
// Nacos itself inserts a missing configuration whatever casMD5 says.
//
// Where the server enforces casMd5 (Nacos: see CASEnforced) the server decides
// atomically. Where it does not (Polaris ignores casMd5 and overwrites), Publish
// reads the current MD5 first and refuses on a mismatch, then publishes, then
// reads back until it sees its own content: another write landing between the
// read and the write is lost without an error (the race window, widened by the
// server's read cache), and a different content read back is reported as
// ErrVersionConflict although the write may have happened before it.
func (f *Config) Publish(ctx context.Context, dataID, content, casMD5 string) error {
	if casMD5 == "" {
		return f.publish(ctx, dataID, content, "")
	}
	enforced, err := f.CASEnforced(ctx)
	if err != nil {
		return err
	}
	if enforced {
		return f.publish(ctx, dataID, content, casMD5)
	}
	_, cur, err := f.Get(ctx, dataID)
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	if err == nil && cur != casMD5 {
		return fmt.Errorf("nacos: config publish %s: md5 is %s, not %s: %w", dataID, cur, casMD5, driver.ErrVersionConflict)
	}
	if err := f.publish(ctx, dataID, content, casMD5); err != nil {
		return err
	}
	return f.readBack(ctx, dataID, cur, MD5(content))
}

// readBack polls Get until it shows want (nil), another MD5 than before and want
// (ErrVersionConflict), or the request timeout passes with before still there
// (ErrVersionConflict: not applied).
func (f *Config) readBack(ctx context.Context, dataID, before, want string) error {
	deadline := time.Now().Add(f.c.o.timeout)
	for {
		_, got, err := f.Get(ctx, dataID)
		if errors.Is(err, driver.ErrNotFound) {
			got, err = "", nil
		}
		if err != nil {
			return err
		}
		switch {
		case got == want:
			return nil
		case got == "" && before != "":
			// Not found although it existed: a read cache behind (Polaris); wait.
		case got != before:
			return fmt.Errorf("nacos: config publish %s: read back md5 %s, not ours: %w", dataID, got, driver.ErrVersionConflict)
		case time.Now().After(deadline):
			return fmt.Errorf("nacos: config publish %s: server answered true but kept md5 %s: %w", dataID, got, driver.ErrVersionConflict)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return wrap("config publish "+dataID, ctx.Err())
		case <-t.C:
		}
	}
}

// CASEnforced reports whether the server refuses a publish whose casMd5 does not
// match (Nacos does; Polaris v1.18 ignores casMd5). The first call probes it by
// writing a configuration "regkit.casprobe.<random>" twice (the second time with a
// wrong casMd5) and deleting it; the answer is cached.
func (f *Config) CASEnforced(ctx context.Context) (bool, error) {
	f.mu.Lock()
	known, enforced := f.casKnown, f.casEnforced
	f.mu.Unlock()
	if known {
		return enforced, nil
	}
	rnd := make([]byte, 8)
	_, _ = rand.Read(rnd)
	probe := "regkit.casprobe." + hex.EncodeToString(rnd)
	if err := f.publish(ctx, probe, "a", ""); err != nil {
		return false, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.c.o.timeout)
		defer cancel()
		_ = f.Delete(dctx, probe)
	}()
	err := f.publish(ctx, probe, "b", MD5("not a"))
	switch {
	case errors.Is(err, driver.ErrVersionConflict):
		enforced = true
	case err == nil:
		enforced = false
	default:
		return false, err
	}
	f.mu.Lock()
	f.casKnown, f.casEnforced = true, enforced
	f.mu.Unlock()
	return enforced, nil
}

// Delete removes a configuration; deleting a missing one succeeds (Nacos answers
// true either way).
func (f *Config) Delete(ctx context.Context, dataID string) error {
	b, err := f.c.do(ctx, http.MethodDelete, "/v1/cs/configs", f.form(dataID), false)
	if isGone(err) {
		return fmt.Errorf("nacos: config delete %s: no v1 config API: %w: %w", dataID, driver.ErrNotSupported, err)
	}
	if err != nil {
		return wrap("config delete "+dataID, err)
	}
	if strings.TrimSpace(string(b)) != "true" {
		return fmt.Errorf("nacos: config delete %s: server answered %q: %w", dataID, b, driver.ErrUnavailable)
	}
	return nil
}

// searchPage is Nacos's Page<ConfigInfo>.
type searchPage struct {
	TotalCount     int `json:"totalCount"`
	PageNumber     int `json:"pageNumber"`
	PagesAvailable int `json:"pagesAvailable"`
	PageItems      []struct {
		ID      json.RawMessage `json:"id"` // a string on Nacos (ToStringSerializer), a number elsewhere
		DataID  string          `json:"dataId"`
		Group   string          `json:"group"`
		Content string          `json:"content"`
		MD5     string          `json:"md5"`
	} `json:"pageItems"`
}

// searchPageSize is the page size of searches (Nacos caps it at 500).
const searchPageSize = 200

// search lists the configurations matching the Nacos pattern (blur) or dataId
// (accurate), page by page.
func (f *Config) search(ctx context.Context, mode, pattern string) ([]ConfigItem, error) {
	var out []ConfigItem
	for page := 1; ; page++ {
		form := f.form(pattern)
		form.Set("search", mode)
		form.Set("tenant", f.c.o.namespace)
		form.Set("pageNo", strconv.Itoa(page))
		form.Set("pageSize", strconv.Itoa(searchPageSize))
		b, err := f.c.do(ctx, http.MethodGet, "/v1/cs/configs", form, false)
		if err != nil {
			var he *httpError
			if errors.As(err, &he) && (he.status == http.StatusNotFound || he.status == http.StatusGone || he.status == http.StatusNotImplemented ||
				he.status == http.StatusBadRequest || strings.Contains(he.body, "required")) {
				return nil, fmt.Errorf("nacos: config search: %w: %w", driver.ErrNotSupported, err)
			}
			return nil, wrap("config search", err)
		}
		var p searchPage
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("nacos: config search: %w: bad answer %.100q: %w", driver.ErrNotSupported, b, err)
		}
		for _, it := range p.PageItems {
			id, _ := strconv.ParseInt(strings.Trim(string(it.ID), `"`), 10, 64)
			out = append(out, ConfigItem{DataID: it.DataID, Group: it.Group, Content: it.Content, MD5: MD5(it.Content), ID: id})
		}
		if len(p.PageItems) < searchPageSize || page >= p.PagesAvailable {
			return out, nil
		}
	}
}

// Search lists the configurations of f's group whose dataId starts with prefix,
// sorted by dataId, through Nacos's search=blur (the pattern prefix + "*"; Nacos
// hands it to SQL LIKE, where '_' matches any character, so the items are filtered
// again here). Pages are read one after the other: a configuration created or
// deleted meanwhile may be missed. Servers without search (Polaris answers
// "dataId required") give registry.ErrNotSupported.
func (f *Config) Search(ctx context.Context, prefix string) ([]ConfigItem, error) {
	items, err := f.search(ctx, "blur", prefix+"*")
	if err != nil {
		return nil, err
	}
	out := items[:0]
	for _, it := range items {
		if it.Group == f.c.o.group && strings.HasPrefix(it.DataID, prefix) {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b ConfigItem) int { return strings.Compare(a.DataID, b.DataID) })
	return out, nil
}

// Lookup reads one configuration through search=accurate, which on Nacos reads
// the database (not the cache Get reads) and gives the database id.
// registry.ErrNotFound when absent, registry.ErrNotSupported without search.
func (f *Config) Lookup(ctx context.Context, dataID string) (ConfigItem, error) {
	items, err := f.search(ctx, "accurate", dataID)
	if err != nil {
		return ConfigItem{}, err
	}
	for _, it := range items {
		if it.DataID == dataID && it.Group == f.c.o.group {
			return it, nil
		}
	}
	return ConfigItem{}, fmt.Errorf("nacos: config %s: %w", dataID, driver.ErrNotFound)
}

// DefaultListenTimeout is the Long-Pulling-Timeout Listen asks for (Nacos holds a
// listener at least 10s).
const DefaultListenTimeout = 30 * time.Second

// Listen waits until one of the configurations changes and returns the dataIds
// that did, or nil when wait passed without change. md5s maps each dataId to the
// MD5 the caller holds ("" for a configuration it believes absent). It uses the v1
// long-poll listener (POST /v1/cs/configs/listener with Listening-Configs =
// dataId^2group^2md5[^2tenant]^1..., header Long-Pulling-Timeout); on a server
// that answers it 404, 410 or 501 it polls Get every poll_interval instead, and
// keeps doing so for the life of f. wait <= 0 means DefaultListenTimeout. Listen
// answers at once when an MD5 is already stale.
func (f *Config) Listen(ctx context.Context, md5s map[string]string, wait time.Duration) ([]string, error) {
	if wait <= 0 {
		wait = DefaultListenTimeout
	}
	if len(md5s) == 0 {
		return nil, &driver.FieldError{Field: "md5s", Value: "", Reason: "nothing to listen to"}
	}
	f.mu.Lock()
	poll := f.noListener
	f.mu.Unlock()
	if !poll {
		changed, err := f.longPoll(ctx, md5s, wait)
		var he *httpError
		if errors.As(err, &he) && (he.status == http.StatusNotFound || he.status == http.StatusGone || he.status == http.StatusNotImplemented) {
			f.mu.Lock()
			f.noListener = true
			f.mu.Unlock()
		} else {
			if err != nil {
				return nil, wrap("config listen", err)
			}
			return changed, nil
		}
	}
	return f.pollChanges(ctx, md5s, wait)
}

func (f *Config) longPoll(ctx context.Context, md5s map[string]string, wait time.Duration) ([]string, error) {
	ids := make([]string, 0, len(md5s))
	for id := range md5s {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var lc strings.Builder
	for _, id := range ids {
		lc.WriteString(id + "\x02" + f.c.o.group + "\x02" + md5s[id])
		if f.c.o.namespace != "" {
			lc.WriteString("\x02" + f.c.o.namespace)
		}
		lc.WriteString("\x01")
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	b, err := f.c.doOpts(lctx, http.MethodPost, "/v1/cs/configs/listener", url.Values{"Listening-Configs": {lc.String()}}, false,
		&reqOpts{long: true, header: http.Header{"Long-Pulling-Timeout": {strconv.FormatInt(wait.Milliseconds(), 10)}}})
	if err != nil {
		if ctx.Err() == nil && lctx.Err() != nil {
			return nil, nil // our own deadline: no change (servers hold at least 10s)
		}
		return nil, err
	}
	return parseChanged(string(b), f.c.o.group), nil
}

// parseChanged reads the listener's answer: url-encoded dataId^2group[^2tenant]^1...
func parseChanged(body, group string) []string {
	s, err := url.QueryUnescape(strings.TrimSpace(body))
	if err != nil {
		s = body
	}
	var out []string
	for _, line := range strings.Split(s, "\x01") {
		parts := strings.Split(line, "\x02")
		if len(parts) < 2 || parts[0] == "" || parts[1] != group {
			continue
		}
		if !slices.Contains(out, parts[0]) {
			out = append(out, parts[0])
		}
	}
	return out
}

// pollChanges is Listen on servers without a listener.
func (f *Config) pollChanges(ctx context.Context, md5s map[string]string, wait time.Duration) ([]string, error) {
	deadline := time.Now().Add(wait)
	for {
		var changed []string
		for id, want := range md5s {
			_, got, err := f.Get(ctx, id)
			if errors.Is(err, driver.ErrNotFound) {
				got, err = "", nil
			}
			if err != nil {
				return nil, err
			}
			if got != want {
				changed = append(changed, id)
			}
		}
		if len(changed) > 0 {
			slices.Sort(changed)
			return changed, nil
		}
		d := time.Until(deadline)
		if d <= 0 {
			return nil, nil
		}
		t := time.NewTimer(min(d, f.c.o.pollInterval))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, wrap("config listen", ctx.Err())
		case <-t.C:
		}
	}
}
