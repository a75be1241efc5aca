package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// startFastUpstream serves a small JSON answer with fasthttp, so that the
// benchmarks measure the gateway rather than the upstream.
func startFastUpstream(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"items":[1,2,3]}`)
	}}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

func runLoad(b *testing.B, target string) {
	hc := &fasthttp.HostClient{Addr: target, MaxConns: 64}
	b.ReportAllocs()
	b.SetParallelism(16) // 16 browsers per CPU: throughput, not one request's latency
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + target + "/api/items?page=1")
		req.Header.Set("Cookie", "__Host-bff=sealed-session; theme=dark")
		req.Header.Set("X-CSRF", "1")
		for pb.Next() {
			if err := hc.DoTimeout(req, resp, 5*time.Second); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
			}
		}
	})
}

func serveApp(b *testing.B, app *fiber.App) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	b.Cleanup(func() { _ = app.ShutdownWithTimeout(time.Second) })
	return ln.Addr().String()
}

// BenchmarkForward is the proxy's per-request path: match, header
// rewrite (cookies, bearer, X-Forwarded-*), pooled upstream call, copy
// back. Run with the browser-side client, gateway and upstream on
// loopback; compare with BenchmarkBareProxy.
func BenchmarkForward(b *testing.B) {
	up := startFastUpstream(b)
	p, err := New(Config{Routes: []Route{{Prefix: "/api", Upstream: "http://" + up}}, GatewayCookies: []string{"__Host-bff"}})
	if err != nil {
		b.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.All("/*", func(c *fiber.Ctx) error {
		r, ok := p.Match(c.Path())
		if !ok {
			return fiber.ErrNotFound
		}
		return p.Forward(c, r, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl")
	})
	runLoad(b, serveApp(b, app))
}

// BenchmarkBareProxy is the floor: fiber handing the request as is to a
// fasthttp HostClient (what fiber's own proxy middleware does), with no
// header hygiene and no streaming.
func BenchmarkBareProxy(b *testing.B) {
	up := startFastUpstream(b)
	hc := &fasthttp.HostClient{Addr: up}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.All("/*", func(c *fiber.Ctx) error {
		return hc.Do(c.Request(), c.Response())
	})
	runLoad(b, serveApp(b, app))
}
