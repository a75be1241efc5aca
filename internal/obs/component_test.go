package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// topLevel returns the values of every top-level member named key of the
// JSON object line, duplicates included (json.Unmarshal into a map would
// keep only the last).
func topLevel(t *testing.T, line, key string) []any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line %q is not a JSON object (%v)", line, err)
	}
	var vals []any
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("log line %q: member %v: %v", line, k, err)
		}
		if k == key {
			vals = append(vals, v)
		}
	}
	return vals
}

// lines splits a handler's output into its lines.
func lines(buf *bytes.Buffer) []string {
	return strings.Split(strings.TrimSpace(buf.String()), "\n")
}

// The access line of a listener whose logger already names the component,
// as cmd/bffgate's do, carries the key once.
func TestAccessLogComponentOnce(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(ComponentHandler(slog.NewJSONHandler(&buf, nil))).With(ComponentKey, "gateway")
	o, err := New(Config{Component: "gateway", Logger: log, AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New()
	app.Use(o.Middleware())
	app.Get("/ping", func(c *fiber.Ctx) error { return c.SendString("pong") })
	resp, err := app.Test(httptest.NewRequest("GET", "/ping?code=secret", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ls := lines(&buf)
	if len(ls) != 1 {
		t.Fatalf("one request logged %d lines, want 1: %q", len(ls), ls)
	}
	got := topLevel(t, ls[0], ComponentKey)
	if len(got) != 1 || got[0] != "gateway" {
		t.Fatalf("the access line has component %v, want it once, \"gateway\": %s", got, ls[0])
	}
	if msg := topLevel(t, ls[0], "msg"); len(msg) != 1 || msg[0] != "request" {
		t.Fatalf("the line is not the access line: %s", ls[0])
	}
	if strings.Contains(ls[0], "secret") {
		t.Fatalf("the access line shows the query string: %s", ls[0])
	}
}

func TestComponentHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want []any // the top-level component values of the line
		also map[string]any
	}{
		{"none", func(l *slog.Logger) { l.Info("m") }, nil, nil},
		{"once", func(l *slog.Logger) { l.With(ComponentKey, "issuer").Info("m") }, []any{"issuer"}, nil},
		{"same twice", func(l *slog.Logger) { l.With(ComponentKey, "gateway").With(ComponentKey, "gateway").Info("m") }, []any{"gateway"}, nil},
		{"innermost wins", func(l *slog.Logger) {
			l.With(ComponentKey, "gateway", "a", 1).With("b", 2).With(ComponentKey, "tokens.redis", "c", 3).Info("m")
		}, []any{"tokens.redis"}, map[string]any{"a": 1.0, "b": 2.0, "c": 3.0}},
		{"twice in one With", func(l *slog.Logger) { l.With(ComponentKey, "x", ComponentKey, "y").Info("m") }, []any{"y"}, nil},
		{"the line's own", func(l *slog.Logger) { l.With(ComponentKey, "gateway", "a", 1).Info("m", ComponentKey, "spa") }, []any{"spa"}, map[string]any{"a": 1.0}},
		{"the line's own, logger without", func(l *slog.Logger) { l.With("a", 1).Info("m", ComponentKey, "spa") }, []any{"spa"}, nil},
		{"inside a group", func(l *slog.Logger) {
			l.With(ComponentKey, "gateway").WithGroup("g").With(ComponentKey, "inner").Info("m")
		}, []any{"gateway"}, map[string]any{"g": map[string]any{ComponentKey: "inner"}}},
		{"siblings", func(l *slog.Logger) {
			gw := l.With(ComponentKey, "gateway")
			gw.With(ComponentKey, "session").Info("ignored")
			gw.Info("m")
		}, []any{"gateway"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			tt.log(slog.New(ComponentHandler(slog.NewJSONHandler(&buf, nil))))
			ls := lines(&buf)
			line := ls[len(ls)-1]
			if got := topLevel(t, line, ComponentKey); !equal(got, tt.want) {
				t.Errorf("component values %v, want %v: %s", got, tt.want, line)
			}
			for k, want := range tt.also {
				got := topLevel(t, line, k)
				if len(got) != 1 || !equalJSON(got[0], want) {
					t.Errorf("%s = %v, want once %v: %s", k, got, want, line)
				}
			}
		})
	}
}

// The text format gets the same: one component=.
func TestComponentHandlerText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	slog.New(ComponentHandler(slog.NewTextHandler(&buf, nil))).With(ComponentKey, "gateway").With(ComponentKey, "session").Info("m")
	if n := strings.Count(buf.String(), ComponentKey+"="); n != 1 || !strings.Contains(buf.String(), ComponentKey+"=session") {
		t.Fatalf("text line %q has %d component keys, want one, session", buf.String(), n)
	}
}

// Enabled and errors pass through to the wrapped handler.
func TestComponentHandlerPassesThrough(t *testing.T) {
	t.Parallel()
	h := ComponentHandler(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l := slog.New(h).With(ComponentKey, "x")
	if l.Enabled(t.Context(), slog.LevelInfo) || !l.Enabled(t.Context(), slog.LevelError) {
		t.Fatal("Enabled does not follow the wrapped handler's level")
	}
	want := errors.New("write failed")
	if err := ComponentHandler(failing{want}).WithAttrs([]slog.Attr{slog.String(ComponentKey, "x")}).Handle(t.Context(), slog.Record{}); !errors.Is(err, want) {
		t.Fatalf("Handle = %v, want the wrapped handler's error", err)
	}
}

// failing is a handler whose writes fail.
type failing struct{ err error }

func (failing) Enabled(context.Context, slog.Level) bool    { return true }
func (f failing) Handle(context.Context, slog.Record) error { return f.err }
func (f failing) WithAttrs([]slog.Attr) slog.Handler        { return f }
func (f failing) WithGroup(string) slog.Handler             { return f }

func equal(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
