package obs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

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

// The middleware's access lines are the same through slog's JSONHandler
// (a slog.Record) and through NewJSONHandler behind NewLogHandler (the
// line written from its fields), but for the time and the duration.
func TestAccessLogSameThroughEitherHandler(t *testing.T) {
	t.Parallel()
	var slogOut, obsOut bytes.Buffer
	obsBuf := NewLogBuffer(&obsOut, time.Hour, 0)
	loggers := []*slog.Logger{
		slog.New(slog.NewJSONHandler(&slogOut, nil)).With("component", "gateway"),
		slog.New(NewLogHandler(NewJSONHandler(obsBuf, nil), obsBuf)).With("component", "gateway"),
	}
	if ah, ok := loggers[1].Handler().(accessHandler); !ok || ah.(*flushHandler).ah == nil {
		t.Fatal("NewJSONHandler behind NewLogHandler, With an attribute, does not write access lines from their fields")
	}
	for _, log := range loggers {
		o, err := New(Config{Component: "gateway", Logger: log, AccessLog: true})
		if err != nil {
			t.Fatal(err)
		}
		// UnescapePath: the logged path then holds the bytes the
		// escaping rules are about.
		app := fiber.New(fiber.Config{UnescapePath: true})
		app.Use(o.Middleware())
		app.Get("/admin/*", func(c *fiber.Ctx) error { SetFrontend(c, "admin"); return c.SendString("ok") })
		app.Get("/fail", func(c *fiber.Ctx) error { return fiber.ErrBadGateway })
		app.Use(func(c *fiber.Ctx) error { SetRoute(c, "spa"); return c.SendString("spa") })
		for i, target := range []string{"/admin/x%22y%5C%E2%80%A8%FF", "/fail?code=secret", "/deep/link/%00/%3Cb%3E", "/"} {
			req := httptest.NewRequest("GET", target, nil)
			req.Header.Set(HeaderRequestID, fmt.Sprintf("req-%d", i))
			resp, err := app.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	if err := obsBuf.Close(); err != nil {
		t.Fatal(err)
	}
	varying := regexp.MustCompile(`"time":"[^"]*"|"duration":-?[0-9]+`)
	want := varying.ReplaceAllString(slogOut.String(), "")
	got := varying.ReplaceAllString(obsOut.String(), "")
	if got != want || strings.Count(got, "\n") != 4 {
		t.Fatalf("slog's JSONHandler wrote\n%s\nNewJSONHandler wrote\n%s", want, got)
	}
	if strings.Contains(got, "secret") || !strings.Contains(got, `"status":502`) || !strings.Contains(got, `\u2028`) {
		t.Fatalf("the lines are not the ones asked for:\n%s", got)
	}
}
