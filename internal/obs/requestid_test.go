package obs

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// Request ids are 24 hex digits that the middleware itself would accept
// from a client, distinct within an Obs (concurrent callers included)
// and between two Obs.
func TestRequestIDsUnique(t *testing.T) {
	t.Parallel()
	a, err := New(Config{Component: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Component: "b"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				id := string(a.appendRequestID(nil))
				mu.Lock()
				if seen[id] {
					t.Errorf("request id %s given twice", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for range 1000 {
		id := string(b.appendRequestID(nil))
		if seen[id] {
			t.Errorf("request id %s given by two Obs", id)
		}
		if len(id) != 24 || !validRequestID(id) {
			t.Errorf("request id %q: want 24 hex digits", id)
		}
		for _, c := range id {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				t.Errorf("request id %q: want hex digits", id)
				break
			}
		}
	}
}

// The middleware echoes a client's valid request id, replaces an invalid
// one, hands handlers the same id through RequestID, and logs it; the
// pooled per-request state carries nothing (id, route) into the next
// request.
func TestRequestIDHeader(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	o, err := New(Config{Component: "test", Logger: slog.New(slog.NewJSONHandler(&buf, nil)), AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{Immutable: true})
	app.Use(o.Middleware())
	var seen string
	app.Get("/named", func(c *fiber.Ctx) error {
		SetRoute(c, "named-route")
		seen = RequestID(c)
		return c.SendString("ok")
	})
	app.Get("/plain/:x", func(c *fiber.Ctx) error {
		seen = RequestID(c)
		return c.SendString("ok")
	})
	for _, tc := range []struct {
		name, path, sent, route string
		echoed                  bool
	}{
		{"valid id echoed", "/named", "abc-123_X.y", "named-route", true},
		{"no id", "/plain/1", "", "/plain/:x", false},
		{"id with a space replaced", "/named", "abc 123", "named-route", false},
		{"id of 65 bytes replaced", "/plain/2", strings.Repeat("a", 65), "/plain/:x", false},
		{"id of 64 bytes echoed", "/plain/3", strings.Repeat("b", 64), "/plain/:x", true},
	} {
		buf.Reset()
		req := httptest.NewRequest("GET", tc.path, nil)
		if tc.sent != "" {
			req.Header.Set(HeaderRequestID, tc.sent)
		}
		resp, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		got := resp.Header.Get(HeaderRequestID)
		switch {
		case tc.echoed && got != tc.sent:
			t.Errorf("%s: X-Request-Id %q, want the client's %q", tc.name, got, tc.sent)
		case !tc.echoed && (len(got) != 24 || got == tc.sent):
			t.Errorf("%s: X-Request-Id %q, want a new 24-digit id", tc.name, got)
		}
		if seen != got {
			t.Errorf("%s: RequestID gave the handler %q, the response says %q", tc.name, seen, got)
		}
		line := lines(&buf)[0]
		if ids := topLevel(t, line, "request_id"); len(ids) != 1 || ids[0] != got {
			t.Errorf("%s: access log request_id %v, want %q", tc.name, ids, got)
		}
		if routes := topLevel(t, line, "route"); len(routes) != 1 || routes[0] != tc.route {
			t.Errorf("%s: access log route %v, want %q", tc.name, routes, tc.route)
		}
	}
}
