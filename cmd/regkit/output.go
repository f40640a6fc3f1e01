package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/regkit/regkit/registry"
)

// instanceJSON is an instance as -o json prints it.
type instanceJSON struct {
	ID       string            `json:"id"`
	Service  string            `json:"service"`
	Host     string            `json:"host"`
	Port     int               `json:"port"`
	Weight   int               `json:"weight"`
	Zone     string            `json:"zone,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Healthy  bool              `json:"healthy"`
}

func toJSON(in registry.Instance) instanceJSON {
	return instanceJSON{ID: in.ID, Service: in.Service, Host: in.Host, Port: in.Port, Weight: in.Weight,
		Zone: in.Zone, Metadata: in.Metadata, Healthy: in.Healthy}
}

func instancesJSON(list []registry.Instance) []instanceJSON {
	out := make([]instanceJSON, 0, len(list))
	for _, in := range list {
		out = append(out, toJSON(in))
	}
	return out
}

// nodeJSON is a store node as -o json prints it. Value is the value as a string
// (invalid UTF-8 is replaced), Base64 the exact bytes when it is not valid UTF-8.
type nodeJSON struct {
	Key            string `json:"key"`
	Value          string `json:"value"`
	ValueBytes     []byte `json:"value_bytes,omitempty"`
	Version        int64  `json:"version"`
	CreateRevision int64  `json:"create_revision"`
	Session        string `json:"session,omitempty"`
}

func toNodeJSON(n registry.Node) nodeJSON {
	j := nodeJSON{Key: n.Key, Value: string(n.Value), Version: n.Version, CreateRevision: n.CreateRevision, Session: n.Session}
	if !utf8.Valid(n.Value) {
		j.ValueBytes = n.Value
	}
	return j
}

// writeJSON prints v as one line of JSON, with <, > and & as themselves (routes
// read "a -> b"; HTML escaping is for pages, not for a terminal or jq).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) { fmt.Fprintln(t.tw, strings.Join(cols, "\t")) }
func (t *table) flush() error       { return t.tw.Flush() }

// formatMeta formats metadata as sorted k=v pairs, "-" when empty.
func formatMeta(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func healthWord(h bool) string {
	if h {
		return "healthy"
	}
	return "unhealthy"
}

// printable quotes a value for a table cell, cut to max runes.
func printable(v []byte, max int) string {
	s := string(v)
	q := strconv.Quote(s)
	plain := q[1:len(q)-1] == s && !strings.ContainsAny(s, " \t")
	if !plain {
		s = q
	}
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max-1]) + "…"
	}
	if s == "" {
		return `""`
	}
	return s
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}
