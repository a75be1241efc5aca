package obs

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// BenchmarkMiddleware is the per-request cost of the request id, the
// metrics and the access log around a handler that does nothing, called
// through fiber's handler without a network. The access log goes to a real
// file, as it goes to stderr in production: "direct" is one write system
// call a request, "buffered" goes through a LogBuffer.
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
				h = NewLogHandler(slog.NewJSONHandler(buf, nil), buf)
			} else {
				h = slog.NewJSONHandler(w, nil)
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
