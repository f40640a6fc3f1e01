package testenv

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// LogCapture is a slog.Handler that keeps every record it is given, rendered as
// one text line with its attributes (and those of its logger's With), for tests
// that count log lines or look for secrets in them. Safe for concurrent use.
type LogCapture struct {
	level slog.Level
	root  *LogCapture // where records are kept; itself for the root
	attrs []slog.Attr
	group string

	mu    sync.Mutex
	lines []capturedLine
}

type capturedLine struct {
	level slog.Level
	text  string
}

// NewLogCapture returns a LogCapture that keeps records at level and above.
func NewLogCapture(level slog.Level) *LogCapture {
	c := &LogCapture{level: level}
	c.root = c
	return c
}

// Logger returns a logger writing to c.
func (c *LogCapture) Logger() *slog.Logger { return slog.New(c) }

// Enabled implements slog.Handler.
func (c *LogCapture) Enabled(_ context.Context, l slog.Level) bool { return l >= c.level }

// Handle implements slog.Handler: the record becomes one line as a text handler
// writes it.
func (c *LogCapture) Handle(ctx context.Context, r slog.Record) error {
	var b bytes.Buffer
	h := slog.Handler(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if len(c.attrs) > 0 {
		h = h.WithAttrs(c.attrs)
	}
	if c.group != "" {
		h = h.WithGroup(c.group)
	}
	if err := h.Handle(ctx, r); err != nil {
		return err
	}
	c.root.mu.Lock()
	c.root.lines = append(c.root.lines, capturedLine{r.Level, strings.TrimSuffix(b.String(), "\n")})
	c.root.mu.Unlock()
	return nil
}

// WithAttrs implements slog.Handler.
func (c *LogCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogCapture{level: c.level, root: c.root, attrs: append(append([]slog.Attr(nil), c.attrs...), as...), group: c.group}
}

// WithGroup implements slog.Handler.
func (c *LogCapture) WithGroup(name string) slog.Handler {
	g := name
	if c.group != "" {
		g = c.group + "." + name
	}
	return &LogCapture{level: c.level, root: c.root, attrs: c.attrs, group: g}
}

// Lines returns every line kept so far.
func (c *LogCapture) Lines() []string {
	c.root.mu.Lock()
	defer c.root.mu.Unlock()
	out := make([]string, len(c.root.lines))
	for i, l := range c.root.lines {
		out[i] = l.text
	}
	return out
}

// Count returns how many lines at minLevel or above contain substr.
func (c *LogCapture) Count(substr string, minLevel slog.Level) int {
	c.root.mu.Lock()
	defer c.root.mu.Unlock()
	n := 0
	for _, l := range c.root.lines {
		if l.level >= minLevel && strings.Contains(l.text, substr) {
			n++
		}
	}
	return n
}
