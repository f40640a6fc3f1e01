package nacostest

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The configuration API, as Nacos 1.x-3.1 serve it at /nacos/v1/cs/configs:
//
//   - GET with dataId, group, tenant: the content as text/plain with a Content-MD5
//     header; 404 "config data not exist" when absent.
//   - GET with search=accurate or search=blur (dataId and group patterns where '*'
//     is SQL's '%', and '_' stays SQL's one-character wildcard, as Nacos passes them
//     to LIKE unescaped), pageNo, pageSize: a page {totalCount, pageNumber,
//     pagesAvailable, pageItems: [{id, dataId, group, tenant, content, ...}]} with
//     the database id as a string, as Nacos's ToStringSerializer writes it.
//   - POST dataId, group, tenant, content (blank content: 400): publish; the
//     casMd5 header (as Nacos's ConfigController reads it) makes it a
//     compare-and-set that inserts a missing config and refuses a present one whose
//     md5 differs with 500 "Cas publish fail, server md5 may have changed.".
//   - DELETE dataId, group, tenant: "true", also when absent.
//   - POST /listener with Listening-Configs = dataId^2group^2md5[^2tenant]^1 ...
//     (\x02, \x01) and the Long-Pulling-Timeout header (ms): answers at once with the
//     url-encoded list dataId^2group[^2tenant]^1 of the configs whose md5 differs
//     (absent configs have md5 ""), else holds the request until one changes or
//     max(10s, timeout-500ms) passes (Nacos's rule; WithListenTimeoutFloor changes
//     the 10s), answering "" then.
//
// In Mode30 and Mode32 it also serves the v3 client API's only configuration call,
// GET /nacos/v3/client/cs/config (namespaceId, groupName, dataId), answering
// {code: 0, data: {content, md5, ...}} or {code: 20004} with HTTP 200 when absent,
// as Nacos's Result.failure does; Mode32 has no v1 configuration API (404), so no
// publish, search or listener.
//
// WithoutConfigSearch makes the search answer 500 as Polaris does, and
// WithoutConfigListener makes the listener answer 404 (a server without it).
// Configs survive Restart, as they live in Nacos's database.

// WithoutConfigSearch makes search=blur/accurate answer 500 "dataId required", as
// Polaris does.
func WithoutConfigSearch() Option { return func(s *Server) { s.noSearch = true } }

// WithoutConfigListener makes the config listener answer 404.
func WithoutConfigListener() Option { return func(s *Server) { s.noListener = true } }

// WithListenTimeoutFloor sets the least time a listener request is held (Nacos:
// 10s).
func WithListenTimeoutFloor(d time.Duration) Option { return func(s *Server) { s.listenFloor = d } }

// ConfigItem is one stored configuration.
type ConfigItem struct {
	ID                    int64
	Tenant, Group, DataID string
	Content, MD5          string
	Created, LastModified time.Time
}

func cfgKey(tenant, group, dataID string) string {
	if tenant == "public" {
		tenant = ""
	}
	return tenant + "\x00" + group + "\x00" + dataID
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// Configs returns every stored configuration of tenant ("" and "public" are the
// same), sorted by dataId.
func (s *Server) Configs(tenant string) []ConfigItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tenant == "public" {
		tenant = ""
	}
	var out []ConfigItem
	for _, c := range s.configs {
		if c.Tenant == tenant {
			out = append(out, *c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DataID < out[j].DataID })
	return out
}

// PublishConfig stores a configuration directly (as another client would).
func (s *Server) PublishConfig(tenant, group, dataID, content string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putConfig(tenant, group, dataID, content)
}

// putConfig stores a config; s.mu is held.
func (s *Server) putConfig(tenant, group, dataID, content string) {
	if tenant == "public" {
		tenant = ""
	}
	k := cfgKey(tenant, group, dataID)
	now := time.Now()
	c, ok := s.configs[k]
	if !ok {
		s.cfgSeq++
		c = &ConfigItem{ID: s.cfgSeq, Tenant: tenant, Group: group, DataID: dataID, Created: now}
		s.configs[k] = c
	}
	c.Content, c.MD5, c.LastModified = content, md5hex(content), now
	s.cfgChanged()
}

// cfgChanged wakes every held listener; s.mu is held.
func (s *Server) cfgChanged() {
	if s.cfgWake != nil {
		close(s.cfgWake)
	}
	s.cfgWake = make(chan struct{})
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// config serves /nacos/v1/cs/...; auth was checked.
func (s *Server) config(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	f := r.Form
	switch {
	case p == "/nacos/v3/client/cs/config" && r.Method == http.MethodGet:
		s.getV3(w, r)
	case p == "/nacos/v1/cs/configs/listener" && r.Method == http.MethodPost:
		if s.noListener {
			writeText(w, http.StatusNotFound, "404 page not found")
			return
		}
		s.listen(w, r)
	case p == "/nacos/v1/cs/configs" && r.Method == http.MethodGet && f.Get("search") != "":
		s.search(w, r)
	case p == "/nacos/v1/cs/configs" && r.Method == http.MethodGet:
		if f.Get("dataId") == "" || f.Get("group") == "" {
			writeText(w, http.StatusBadRequest, "caused: Param 'dataId' and 'group' are required")
			return
		}
		s.mu.Lock()
		c, ok := s.configs[cfgKey(f.Get("tenant"), f.Get("group"), f.Get("dataId"))]
		var cp ConfigItem
		if ok {
			cp = *c
		}
		s.mu.Unlock()
		if !ok {
			writeText(w, http.StatusNotFound, "config data not exist")
			return
		}
		w.Header().Set("Content-MD5", cp.MD5)
		w.Header().Set("Last-Modified", cp.LastModified.UTC().Format(http.TimeFormat))
		writeText(w, http.StatusOK, cp.Content)
	case p == "/nacos/v1/cs/configs" && r.Method == http.MethodPost:
		dataID, group, content := f.Get("dataId"), f.Get("group"), f.Get("content")
		if dataID == "" || group == "" || strings.TrimSpace(content) == "" {
			writeText(w, http.StatusBadRequest, "caused: invalid param: dataId, group and content are required")
			return
		}
		if !validDataID.MatchString(dataID) {
			writeText(w, http.StatusBadRequest, "caused: invalid dataId : "+dataID)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if cas := r.Header.Get("casMd5"); cas != "" {
			if c, ok := s.configs[cfgKey(f.Get("tenant"), group, dataID)]; ok && c.MD5 != cas {
				writeText(w, http.StatusInternalServerError, "caused: Cas publish fail, server md5 may have changed.")
				return
			}
		}
		s.putConfig(f.Get("tenant"), group, dataID, content)
		writeText(w, http.StatusOK, "true")
	case p == "/nacos/v1/cs/configs" && r.Method == http.MethodDelete:
		if f.Get("dataId") == "" || f.Get("group") == "" {
			writeText(w, http.StatusBadRequest, "caused: Param 'dataId' and 'group' are required")
			return
		}
		s.mu.Lock()
		k := cfgKey(f.Get("tenant"), f.Get("group"), f.Get("dataId"))
		if _, ok := s.configs[k]; ok {
			delete(s.configs, k)
			s.cfgChanged()
		}
		s.mu.Unlock()
		writeText(w, http.StatusOK, "true")
	default:
		writeText(w, http.StatusNotFound, "no such api: "+r.Method+" "+p)
	}
}

// validDataID is Nacos's ParamUtils.isValid: letters, digits and _-.: .
var validDataID = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)

// likePattern turns a Nacos search pattern into a regexp as SQL LIKE reads it
// after Nacos replaced '*' by '%': '%' any run, '_' any one character.
func likePattern(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range p {
		switch r {
		case '*', '%':
			b.WriteString(".*")
		case '_':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	f := r.Form
	if s.noSearch {
		writeText(w, http.StatusInternalServerError, "key: dataId required")
		return
	}
	mode := f.Get("search")
	tenant := f.Get("tenant")
	if tenant == "public" {
		tenant = ""
	}
	pageNo, _ := strconv.Atoi(f.Get("pageNo"))
	pageSize, _ := strconv.Atoi(f.Get("pageSize"))
	if pageNo < 1 {
		pageNo = 1
	}
	if pageSize < 1 {
		pageSize = 100
	}
	if pageSize > 500 {
		pageSize = 500
	}
	var match func(c *ConfigItem) bool
	switch mode {
	case "accurate":
		match = func(c *ConfigItem) bool {
			return (f.Get("dataId") == "" || c.DataID == f.Get("dataId")) && (f.Get("group") == "" || c.Group == f.Get("group"))
		}
	case "blur":
		d, g := likePattern(f.Get("dataId")), likePattern(f.Get("group"))
		match = func(c *ConfigItem) bool {
			return (f.Get("dataId") == "" || d.MatchString(c.DataID)) && (f.Get("group") == "" || g.MatchString(c.Group))
		}
	default:
		writeText(w, http.StatusBadRequest, "caused: search must be accurate or blur")
		return
	}
	s.mu.Lock()
	var all []ConfigItem
	for _, c := range s.configs {
		if c.Tenant == tenant && match(c) {
			all = append(all, *c)
		}
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	items := []any{}
	for i := (pageNo - 1) * pageSize; i < len(all) && i < pageNo*pageSize; i++ {
		c := all[i]
		items = append(items, map[string]any{"id": strconv.FormatInt(c.ID, 10), "dataId": c.DataID, "group": c.Group,
			"tenant": c.Tenant, "appName": "", "content": c.Content, "type": "text"})
	}
	pages := (len(all) + pageSize - 1) / pageSize
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"totalCount": len(all), "pageNumber": pageNo,
		"pagesAvailable": pages, "pageItems": items})
}

type listenItem struct{ dataID, group, md5, tenant string }

func (s *Server) listen(w http.ResponseWriter, r *http.Request) {
	lc := r.Form.Get("Listening-Configs")
	if lc == "" {
		writeText(w, http.StatusBadRequest, "invalid probeModify")
		return
	}
	var items []listenItem
	for _, line := range strings.Split(lc, "\x01") {
		if line == "" {
			continue
		}
		parts := strings.Split(line, "\x02")
		if len(parts) < 3 {
			writeText(w, http.StatusBadRequest, "invalid probeModify")
			return
		}
		it := listenItem{dataID: parts[0], group: parts[1], md5: parts[2]}
		if len(parts) > 3 {
			it.tenant = parts[3]
		}
		items = append(items, it)
	}
	timeout := 30 * time.Second
	if ms, err := strconv.ParseInt(r.Header.Get("Long-Pulling-Timeout"), 10, 64); err == nil {
		timeout = time.Duration(ms)*time.Millisecond - 500*time.Millisecond
	}
	floor := s.listenFloor
	if floor == 0 {
		floor = 10 * time.Second
	}
	if timeout < floor {
		timeout = floor
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var changed strings.Builder
		for _, it := range items {
			cur := ""
			if c, ok := s.configs[cfgKey(it.tenant, it.group, it.dataID)]; ok {
				cur = c.MD5
			}
			if cur != it.md5 {
				changed.WriteString(it.dataID + "\x02" + it.group)
				if it.tenant != "" {
					changed.WriteString("\x02" + it.tenant)
				}
				changed.WriteString("\x01")
			}
		}
		if s.cfgWake == nil {
			s.cfgWake = make(chan struct{})
		}
		wake := s.cfgWake
		s.mu.Unlock()
		if changed.Len() > 0 {
			writeText(w, http.StatusOK, url.QueryEscape(changed.String()))
			return
		}
		select {
		case <-wake:
		case <-timer.C:
			writeText(w, http.StatusOK, "")
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) getV3(w http.ResponseWriter, r *http.Request) {
	f := r.Form
	w.Header().Set("Content-Type", "application/json")
	if f.Get("dataId") == "" || f.Get("groupName") == "" {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{"code": 10000, "message": "parameter missing", "data": nil})
		return
	}
	s.mu.Lock()
	c, ok := s.configs[cfgKey(f.Get("namespaceId"), f.Get("groupName"), f.Get("dataId"))]
	var cp ConfigItem
	if ok {
		cp = *c
	}
	s.mu.Unlock()
	if !ok {
		_ = json.NewEncoder(w).Encode(map[string]any{"code": 20004, "message": "resource not found", "data": nil})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"code": 0, "message": "success", "data": map[string]any{
		"content": cp.Content, "md5": cp.MD5, "contentType": "text", "lastModified": cp.LastModified.UnixMilli(), "beta": false}})
}
