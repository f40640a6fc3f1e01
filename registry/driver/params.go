package driver

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/regkit/regkit/internal/decimal"
)

// Params reads a URL's query parameters for a driver and remembers which were read,
// so that Done can reject the unknown ones with an error naming them. Every error
// it reports is a *FieldError matching ErrInvalid; errors about the URL as a whole
// carry the URL redacted by RedactURL.
type Params struct {
	u    *url.URL
	q    url.Values
	used map[string]bool
	err  error
}

// NewParams starts reading u's query. A query that does not parse, a parameter
// given twice and a fragment ("#...") are remembered as the error Done returns.
func NewParams(u *url.URL) *Params {
	p := &Params{u: u, used: map[string]bool{}}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		p.err = invalid("url", RedactURL(u), "malformed query: "+err.Error())
	}
	p.q = q
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if len(q[k]) > 1 && p.err == nil {
			p.err = invalid("url", RedactURL(u), "query parameter "+strconv.Quote(k)+" is given more than once")
		}
	}
	if (u.Fragment != "" || u.RawFragment != "" || strings.HasSuffix(u.String(), "#")) && p.err == nil {
		p.err = invalid("url", RedactURL(u), "a backend URL takes no fragment (\"#...\")")
	}
	return p
}

func (p *Params) get(name string) (string, bool) {
	p.used[name] = true
	v, ok := p.q[name]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

func (p *Params) fail(name, v, reason string) {
	if p.err == nil {
		p.err = invalid(name, v, reason)
	}
}

// Has reports whether the URL gives the parameter (it counts as read).
func (p *Params) Has(name string) bool {
	_, ok := p.get(name)
	return ok
}

// NotWith rejects each of names that the URL gives, as not applying to the
// configuration the driver read so far: why says which ("applies to layout=curator
// only"). Done then returns an error naming the parameter and the redacted URL.
// Drivers call it for the parameters of a layout or mode other than the chosen one,
// so that they are rejected like unknown ones instead of being silently ignored.
func (p *Params) NotWith(why string, names ...string) {
	for _, n := range names {
		if p.Has(n) && p.err == nil {
			p.err = invalid("url", RedactURL(p.u), "query parameter "+strconv.Quote(n)+" does not apply here: "+why)
		}
	}
}

// String returns the parameter or def.
func (p *Params) String(name, def string) string {
	if v, ok := p.get(name); ok {
		return v
	}
	return def
}

// Duration returns the parameter parsed by time.ParseDuration, or def. A bad or
// signed value ("-3s", "+3s") is remembered as the error Done returns.
func (p *Params) Duration(name string, def time.Duration) time.Duration {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || v[0] == '+' || v[0] == '-' {
		p.fail(name, v, "want a non-negative duration such as 3s")
		return def
	}
	return d
}

// Int returns the parameter as a decimal integer, or def: digits, with a
// leading "-" for a negative number; anything else ("+5", " 5", "5.0", "0x10")
// is remembered as the error Done returns.
func (p *Params) Int(name string, def int) int {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || !decimal.Digits(strings.TrimPrefix(v, "-")) {
		p.fail(name, v, "want an integer")
		return def
	}
	return n
}

// Bool returns the parameter as a boolean (strconv.ParseBool), or def.
func (p *Params) Bool(name string, def bool) bool {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "want true or false")
		return def
	}
	return b
}

// OneOf returns the parameter, which must be one of allowed, or def.
func (p *Params) OneOf(name, def string, allowed ...string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	if !slices.Contains(allowed, v) {
		p.fail(name, v, "want one of "+strings.Join(allowed, ", "))
		return def
	}
	return v
}

// Done returns the first bad value met, or an error naming every parameter that was
// never read (an unknown parameter) together with the redacted URL and the
// parameters the driver knows, or nil.
func (p *Params) Done() error {
	if p.err != nil {
		return p.err
	}
	var unknown, known []string
	for k := range p.q {
		if !p.used[k] {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	for k := range p.used {
		known = append(known, k)
	}
	slices.Sort(unknown)
	slices.Sort(known)
	what := "unknown query parameter "
	if len(unknown) > 1 {
		what = "unknown query parameters "
	}
	reason := what + strings.Join(unknown, ", ")
	if len(known) > 0 {
		reason += " (known: " + strings.Join(known, ", ") + ")"
	} else {
		reason += " (this backend takes none)"
	}
	return invalid("url", RedactURL(p.u), reason)
}

// Hosts splits a URL host list "h1:2379,h2:2379" and adds defPort where a host has
// none. Each host must be an IP address (IPv6 in brackets) or a DNS name, and each
// port decimal digits (no sign) in 1-65535, so that a typo fails here instead of dialing until a
// timeout. Errors are *FieldError values naming the URL (redacted) and the host.
func Hosts(u *url.URL, defPort int) ([]string, error) {
	if u.Host == "" {
		return nil, invalid("url", RedactURL(u), "no host")
	}
	var out []string
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			return nil, invalid("url", RedactURL(u), "empty host in list")
		}
		if !strings.Contains(strings.TrimPrefix(strings.TrimSuffix(h, "]"), "["), ":") || strings.HasSuffix(h, "]") {
			h = h + ":" + strconv.Itoa(defPort)
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			return nil, invalid("url", RedactURL(u), "bad host "+strconv.Quote(h)+": "+err.Error())
		}
		if n, err := strconv.Atoi(port); err != nil || !decimal.Digits(port) || n < 1 || n > 65535 {
			return nil, invalid("url", RedactURL(u), "host "+strconv.Quote(h)+": port must be decimal digits in 1-65535")
		}
		if err := validHost(host); err != nil {
			return nil, invalid("url", RedactURL(u), "host "+strconv.Quote(h)+": "+err.Error())
		}
		out = append(out, h)
	}
	return out, nil
}

// ValidKey reports why key cannot be a store key, or nil. A key is "/" or a
// slash-separated absolute path of valid UTF-8 without empty, "." or ".." segments,
// trailing slash or control characters.
func ValidKey(key string) error {
	if key == "/" {
		return nil
	}
	if !strings.HasPrefix(key, "/") {
		return invalid("key", key, "key must start with '/'")
	}
	for _, seg := range strings.Split(key[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return invalid("key", key, "key has an empty, '.' or '..' segment")
		}
	}
	if !utf8.ValidString(key) {
		return invalid("key", key, "key is not valid UTF-8 (backends store text)")
	}
	if strings.IndexFunc(key, isControl) >= 0 {
		return invalid("key", key, "key has control characters")
	}
	return nil
}

// ParentKey returns the parent of a valid key ("/" for top-level keys and for "/").
func ParentKey(key string) string {
	i := strings.LastIndexByte(key, '/')
	if i <= 0 {
		return "/"
	}
	return key[:i]
}

// JoinKey joins a parent key and a child name.
func JoinKey(parent, name string) string {
	if parent == "/" {
		return "/" + name
	}
	return parent + "/" + name
}

// SequenceSuffix formats a sequence number as sequential keys carry it: 10 digits,
// zero-padded (ZooKeeper's format), so that keys sort in creation order.
func SequenceSuffix(n int64) string {
	s := strconv.FormatInt(n, 10)
	if len(s) < 10 {
		s = strings.Repeat("0", 10-len(s)) + s
	}
	return s
}

// secretParams are query parameters whose values RedactURL masks.
var secretParams = []string{"token", "password", "secret", "accesstoken", "access_token", "accesskey", "secretkey", "auth"}

// RedactRawURL is RedactURL for a string that may not parse as a URL (an error
// about a malformed URL still quotes it): the password of the user info and the
// values of secret query parameters are replaced by "xxxxx".
func RedactRawURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		scheme, rest = "", raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		if user, _, hasPw := strings.Cut(authority[:at], ":"); hasPw {
			authority = user + ":xxxxx" + authority[at:]
		}
	}
	if q := strings.IndexByte(tail, '?'); q >= 0 {
		parts := strings.Split(tail[q+1:], "&")
		for i, kv := range parts {
			k, _, hasV := strings.Cut(kv, "=")
			if hasV && slices.Contains(secretParams, strings.ToLower(k)) {
				parts[i] = k + "=xxxxx"
			}
		}
		tail = tail[:q+1] + strings.Join(parts, "&")
	}
	if ok {
		return scheme + "://" + authority + tail
	}
	return authority + tail
}

// RedactURL returns u as a string fit for error messages and logs: the password of
// the user info and the values of query parameters that carry secrets (token,
// password, secret, access tokens and keys; matched case-insensitively) are
// replaced by "xxxxx".
func RedactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	q := c.Query()
	changed := false
	for k := range q {
		if slices.Contains(secretParams, strings.ToLower(k)) {
			q[k] = []string{"xxxxx"}
			changed = true
		}
	}
	if changed {
		c.RawQuery = q.Encode()
	}
	return c.Redacted()
}
