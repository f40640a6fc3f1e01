package driver

import (
	"log/slog"
	"strings"
	"sync"
	"unicode/utf8"
)

// ValidInstanceID reports why id cannot be an instance ID, or nil. The rule is one
// for every backend, the intersection of what each can store under a name of its
// own injectively: 1 to 255 bytes of valid UTF-8, not "." or ".." (ZooKeeper path
// segments), without '/' (the key separator of etcd and ZooKeeper), '\\', '@' (the
// separator of Consul service IDs), control characters (C0, DEL, C1) or the code
// points ZooKeeper refuses in paths (U+D800–U+F8FF, U+FFF0–U+FFFF).
func ValidInstanceID(id string) error {
	switch {
	case id == "":
		return invalid("ID", id, "instance id is empty")
	case id == "." || id == "..":
		return invalid("ID", id, "instance id must not be '.' or '..'")
	case len(id) > 255:
		return invalid("ID", id, "instance id must be at most 255 bytes")
	case !utf8.ValidString(id):
		return invalid("ID", id, "instance id must be valid UTF-8")
	case strings.ContainsAny(id, "/\\@") || strings.IndexFunc(id, badIDRune) >= 0:
		return invalid("ID", id, "instance id must not contain '/', '\\', '@', control characters or U+D800-U+F8FF, U+FFF0-U+FFFF")
	}
	return nil
}

func badIDRune(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || (r >= 0xd800 && r <= 0xf8ff) || (r >= 0xfff0 && r <= 0xffff)
}

// CleanRoot validates the path of a backend URL that names a key prefix or chroot
// (etcd's prefix, ZooKeeper's chroot) with one rule for every backend, and returns
// it without its trailing slash. An empty path gives def; "/" gives "" (the
// backend's root). Any other path must be absolute, with non-empty segments that
// are not "." or ".." and no control characters; one trailing slash is ignored
// ("/prod/" is "/prod"), so "/a//b/" and "/a/../b" are rejected. Errors are a
// *FieldError naming field.
func CleanRoot(field, path, def string) (string, error) {
	switch path {
	case "":
		return def, nil
	case "/":
		return "", nil
	}
	p := strings.TrimSuffix(path, "/")
	if !strings.HasPrefix(p, "/") {
		return "", invalid(field, path, "must be an absolute path")
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", invalid(field, path, "must not have empty, '.' or '..' segments")
		}
	}
	if !utf8.ValidString(p) || strings.IndexFunc(p, badIDRune) >= 0 {
		return "", invalid(field, path, "must not have control characters")
	}
	return p, nil
}

// maxSkipped bounds the keys a SkipLog remembers.
const maxSkipped = 1024

// SkipLog logs each skipped entry once: a driver reading an entry that is not a
// valid instance under the exact name it was read from (foreign data, garbage, a
// record naming another service or ID) skips it and reports it here, so that a
// list repeated after every change does not repeat the warning. It remembers at
// most 1024 keys; when full it forgets them all, so a long-lived garbage entry may
// be logged again after many others. The zero value logs to slog.Default; safe for
// concurrent use.
type SkipLog struct {
	// Logger receives one Warn per key; nil means slog.Default().
	Logger *slog.Logger

	mu   sync.Mutex
	seen map[string]struct{}
}

// Skip reports that the entry at key was skipped, and why; it logs at Warn the
// first time a key is reported and at Debug afterwards.
func (s *SkipLog) Skip(key, why string) {
	s.mu.Lock()
	_, seen := s.seen[key]
	if !seen {
		if s.seen == nil || len(s.seen) >= maxSkipped {
			s.seen = map[string]struct{}{}
		}
		s.seen[key] = struct{}{}
	}
	s.mu.Unlock()
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	if seen {
		log.Debug("registry: skipping an entry that is not a valid instance", "key", key, "why", why)
		return
	}
	log.Warn("registry: skipping an entry that is not a valid instance (logged once per key)", "key", key, "why", why)
}
