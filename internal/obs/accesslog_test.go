package obs

import (
	"bytes"
	"encoding/json"
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
	log := slog.New(slog.NewJSONHandler(&buf, nil)).With("component", "gateway")
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
	got := topLevel(t, ls[0], "component")
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

// A request one of several frontends served names it in its access line,
// once; others have no frontend key.
func TestAccessLogFrontend(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	o, err := New(Config{Component: "gateway", Logger: slog.New(slog.NewJSONHandler(&buf, nil)), AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New()
	app.Use(o.Middleware())
	app.Get("/admin", func(c *fiber.Ctx) error { SetFrontend(c, "admin"); return c.SendString("ok") })
	app.Get("/plain", func(c *fiber.Ctx) error { return c.SendString("ok") })
	for _, p := range []string{"/admin", "/plain"} {
		resp, err := app.Test(httptest.NewRequest("GET", p, nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	ls := lines(&buf)
	if len(ls) != 2 {
		t.Fatalf("%d lines: %q", len(ls), ls)
	}
	if got := topLevel(t, ls[0], "frontend"); len(got) != 1 || got[0] != "admin" {
		t.Fatalf("frontend %v in %s", got, ls[0])
	}
	if got := topLevel(t, ls[1], "frontend"); len(got) != 0 {
		t.Fatalf("frontend %v in %s", got, ls[1])
	}
}
