package obs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// BenchmarkMiddleware is the per-request cost of the request id, the
// metrics and the access log around a handler that does nothing, called
// through fiber's handler without a network. The access log goes to a real
// file through NewJSONHandler, as it goes to stderr in production:
// "direct" is one write system call a request, "buffered" goes through a
// LogBuffer.
func BenchmarkMiddleware(b *testing.B) {
	for _, tc := range []struct {
		name      string
		accessLog bool
		buffered  bool
	}{
		{"log-off", false, false},
		{"log-direct", true, false},
		{"log-buffered", true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var w io.Writer = f
			var h slog.Handler
			if tc.buffered {
				buf := NewLogBuffer(f, 0, 0)
				defer buf.Close()
				h = NewLogHandler(NewJSONHandler(buf, nil), buf)
			} else {
				h = NewJSONHandler(w, nil)
			}
			o, err := New(Config{Component: "bench", Logger: slog.New(h), Registerer: prometheus.NewRegistry(), AccessLog: tc.accessLog})
			if err != nil {
				b.Fatal(err)
			}
			app := fiber.New(fiber.Config{Immutable: true})
			app.Use(o.Middleware())
			app.Get("/api/items", func(c *fiber.Ctx) error { return c.SendString("ok") })
			handler := app.Handler()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var ctx fasthttp.RequestCtx
				for pb.Next() {
					ctx.Request.Reset()
					ctx.Response.Reset()
					ctx.Request.SetRequestURI("/api/items")
					handler(&ctx)
					if ctx.Response.StatusCode() != 200 {
						b.Fatalf("status %d", ctx.Response.StatusCode())
					}
				}
			})
		})
	}
}

// BenchmarkAccessLine is the access line alone, as cmd/bffgate builds the
// logger (NewLogHandler over a LogBuffer, With "component"), with slog's
// JSONHandler ("slog": a slog.Record handed to Handle) and with
// NewJSONHandler ("obs": written from the line's fields). The buffer
// writes to io.Discard, so what is measured is building the line.
func BenchmarkAccessLine(b *testing.B) {
	for _, tc := range []struct {
		name string
		h    func(io.Writer) slog.Handler
	}{
		{"slog", func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }},
		{"obs", func(w io.Writer) slog.Handler { return NewJSONHandler(w, nil) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			buf := NewLogBuffer(io.Discard, 0, 0)
			defer buf.Close()
			log := slog.New(NewLogHandler(tc.h(buf), buf)).With("component", "gateway")
			o, err := New(Config{Component: "bench", Logger: log, AccessLog: true})
			if err != nil {
				b.Fatal(err)
			}
			var fctx fasthttp.RequestCtx
			fctx.Request.SetRequestURI("/api/items/42?code=secret")
			app := fiber.New()
			c := app.AcquireCtx(&fctx)
			defer app.ReleaseCtx(c)
			r := &request{route: "/api/"}
			r.n = len(o.appendRequestID(r.id[:0]))
			b.ReportAllocs()
			for b.Loop() {
				o.accessLine(c, slog.LevelInfo, r, "GET", r.route, 200, 1234567)
			}
		})
	}
}

// BenchmarkJSONHandler is an ordinary line through slog's JSONHandler and
// through NewJSONHandler's fast path ("fast": strings, an int, a
// duration) and slow one ("slow": an error takes it).
func BenchmarkJSONHandler(b *testing.B) {
	for _, tc := range []struct {
		name string
		h    func(io.Writer) slog.Handler
	}{
		{"slog", func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }},
		{"obs", func(w io.Writer) slog.Handler { return NewJSONHandler(w, nil) }},
	} {
		for _, path := range []string{"fast", "slow"} {
			b.Run(tc.name+"/"+path, func(b *testing.B) {
				log := slog.New(tc.h(io.Discard)).With("component", "gateway")
				var err any = 3 * time.Second
				if path == "slow" {
					err = errors.New("upstream refused")
				}
				b.ReportAllocs()
				for b.Loop() {
					log.LogAttrs(context.Background(), slog.LevelWarn, "token refresh failed",
						slog.String("frontend", "shop"), slog.Int("attempt", 2), slog.Any("err", err))
				}
			})
		}
	}
}
