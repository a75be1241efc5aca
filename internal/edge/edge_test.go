package edge_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/edge/edgetest"
	"github.com/bffgate/bffgate/internal/obs"
)

// newApp serves an edge app on loopback: POST /read reads its body with
// edge.ReadBody(limit), POST /ignore answers without reading it, GET
// /smuggled counts its hits.
func newApp(t *testing.T, stream bool, bodyLimit, limit int, logs io.Writer) (addr string, smuggled *atomic.Int64) {
	t.Helper()
	o, err := obs.New(obs.Config{Component: "test", Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	app, err := edge.New(edge.Config{Obs: o, Fiber: fiber.Config{DisableStartupMessage: true, StreamRequestBody: stream, BodyLimit: bodyLimit,
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			var ee *edge.Error
			if errors.As(err, &ee) {
				return c.Status(ee.Status).JSON(fiber.Map{"error": ee.Kind, "error_description": ee.Description})
			}
			return fiber.DefaultErrorHandler(c, err)
		}}})
	if err != nil {
		t.Fatal(err)
	}
	smuggled = &atomic.Int64{}
	app.Post("/read", func(c *fiber.Ctx) error {
		b, err := edge.ReadBody(c, limit)
		if err != nil {
			return err
		}
		return c.SendString(fmt.Sprintf("read %d", len(b)))
	})
	app.Post("/ignore", func(c *fiber.Ctx) error { return c.SendString("ignored") })
	app.Get("/smuggled", func(c *fiber.Ctx) error {
		smuggled.Add(1)
		return c.SendString("smuggled")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return ln.Addr().String(), smuggled
}

// A streamed body the handler does not read is not parsed as the next
// request: fasthttp would read a request hidden in it (request smuggling
// past any proxy that shares connections between clients).
func TestUnreadStreamedBody(t *testing.T) {
	t.Parallel()
	addr, smuggled := newApp(t, true, 16, 1024, io.Discard)
	hidden := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	// fasthttp reads a streamed body's first BodyLimit bytes ahead: the
	// hidden request starts there.
	padded := strings.Repeat("x", 16) + hidden
	cases := []struct{ name, raw string }{
		{"content_length", fmt.Sprintf("POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(hidden), hidden)},
		{"content_length_large", fmt.Sprintf("POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(padded), padded)},
		{"chunked", fmt.Sprintf("POST /ignore HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(hidden), hidden)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := edgetest.Exchange(t, addr, tc.raw)
			if r.Status != 200 || r.Body != "ignored" {
				t.Fatalf("answer %d %q", r.Status, r.Body)
			}
			if n := strings.Count(r.Raw, "HTTP/1.1 "); n != 1 {
				t.Fatalf("one request got %d answers: the rest of its body was read as another request: %q", n, r.Raw)
			}
		})
	}
	if n := smuggled.Load(); n != 0 {
		t.Fatalf("/smuggled was reached %d times from inside request bodies", n)
	}
}

func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = io.WriteString(zw, s)
	_ = zw.Close()
	return b.String()
}

// ReadBody reads the body as sent, bounded, whether fasthttp streams it
// or not.
func TestReadBody(t *testing.T) {
	t.Parallel()
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			t.Parallel()
			addr, _ := newApp(t, stream, 1<<20, 100, io.Discard)
			cases := []struct {
				name, headers, body string
				status              int
				want                string
			}{
				{"plain", "", "a=1", 200, "read 3"},
				{"at_limit", "", strings.Repeat("a", 100), 200, "read 100"},
				{"identity", "Content-Encoding: identity\r\n", "a=1", 200, "read 3"},
				{"over_limit", "", strings.Repeat("a", 101), 413, `"body_too_large"`},
				{"gzip", "Content-Encoding: gzip\r\n", gzipped("a=1"), 415, `"unsupported_encoding"`},
				{"gzip_upper", "Content-Encoding: GZIP\r\n", gzipped("a=1"), 415, `"unsupported_encoding"`},
				{"two_headers", "Content-Encoding: identity\r\nContent-Encoding: br\r\n", "a=1", 415, `"unsupported_encoding"`},
			}
			for _, tc := range cases {
				for _, chunked := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/chunked=%v", tc.name, chunked), func(t *testing.T) {
						framing := fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(tc.body), tc.body)
						if chunked {
							framing = fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(tc.body), tc.body)
						}
						r := edgetest.Exchange(t, addr, "POST /read HTTP/1.1\r\nHost: x\r\n"+tc.headers+framing)
						if r.Status != tc.status || !strings.Contains(r.Body, tc.want) {
							t.Fatalf("answer %d %s, want %d %s", r.Status, r.Body, tc.status, tc.want)
						}
						if tc.status != 200 && !r.Closed {
							t.Errorf("the connection stayed open after a refused body")
						}
					})
				}
			}
		})
	}
}

// A request fasthttp cannot parse is answered with its kind, and what
// the server logs names neither the cookie nor the trailer it carried.
func TestParseErrorsByKind(t *testing.T) {
	t.Parallel()
	var logs edgetest.LogBuffer
	addr, _ := newApp(t, false, 1<<20, 100, &logs)
	cases := []struct{ name, raw, kind string }{
		{"declared_trailer", "POST /read HTTP/1.1\r\nHost: x\r\nCookie: s=" + edgetest.CookieSecret + "\r\nTrailer: Authorization\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "forbidden_trailer"},
		{"trailer", "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nAuthorization: Bearer " + edgetest.ForgedBearer + "\r\n\r\n", "malformed_body"},
		{"header", "POST /read HTTP/1.1\r\nHost: x\r\nCookie: s=" + edgetest.CookieSecret + "\x7f\r\n\r\n", "malformed_header"},
		{"no_host", "GET /x HTTP/1.1\r\nCookie: s=" + edgetest.CookieSecret + "\r\n\r\n", "malformed_header"},
		{"too_large_header", "GET /smuggled HTTP/1.1\r\nHost: x\r\nCookie: s=" + edgetest.CookieSecret + strings.Repeat("x", 8<<10) + "\r\n\r\n", "header_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := edgetest.Exchange(t, addr, tc.raw)
			if !strings.Contains(r.Body, `"error":"`+tc.kind+`"`) {
				t.Errorf("answer %d %s, want kind %s", r.Status, r.Body, tc.kind)
			}
			if strings.Contains(r.Raw, edgetest.CookieSecret) || strings.Contains(r.Raw, edgetest.ForgedBearer) {
				t.Errorf("the answer reflects the request: %s", r.Raw)
			}
		})
	}
	if l := logs.String(); strings.Contains(l, edgetest.CookieSecret) || strings.Contains(l, edgetest.ForgedBearer) {
		t.Errorf("the log shows request bytes: %s", l)
	}
}
