package bff

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/internal/redistest"
	sredis "github.com/bffgate/bffgate/session/redis"
)

// BenchmarkHandler is the gateway's own cost of one proxied
// GET /api/items with a session, per session store: the request is parsed
// from the bytes a browser sends (its cookies, the anti-CSRF header and
// the usual browser headers) and handed to the gateway's fiber handler in
// this process, which sends it over loopback to a small fasthttp upstream;
// the response is serialised to io.Discard. No HTTP client runs, so what
// is measured is the gateway (and the upstream's small share), not the
// client. The login is the embedded issuer's with RS256 tokens, so the
// cookie store's session is two cookies.
//
// Sub-benchmarks, per session store (cookie, bolt, redis): log is the
// gateway with the access log on (JSON into an obs.LogBuffer, as
// cmd/bffgate builds it), nolog with it off, and bare is fiber handing the
// same request bytes to a fasthttp HostClient (the floor: the cookie
// store's 4 KB Cookie header costs fasthttp's parser there too). redis
// needs BFFGATE_TEST_REDIS_URL and uses the near cache, as the gateway's
// default does.
//
// cpu-µs/op is the process's user and system CPU per request (the
// upstream's share included; Redis's own is not), steadier on a shared
// machine than ns/op, which is mostly the loopback round trip's latency.
func BenchmarkHandler(b *testing.B) {
	up := startBenchUpstream(b)
	for _, kind := range []string{"cookie", "bolt", "redis"} {
		b.Run(kind, func(b *testing.B) {
			e, cookie := handlerEnv(b, kind, true, up)
			raw := browserRequest(strings.TrimPrefix(e.gwURL, "http://"), cookie)
			b.Run("bare", func(b *testing.B) {
				hc := &fasthttp.HostClient{Addr: up}
				app := fiber.New(fiber.Config{DisableStartupMessage: true, ReadBufferSize: 64 << 10})
				app.All("/*", func(c *fiber.Ctx) error { return hc.Do(c.Request(), c.Response()) })
				runHandler(b, app, raw)
			})
			b.Run("log", func(b *testing.B) { runHandler(b, e.gw.App(), raw) })
			b.Run("nolog", func(b *testing.B) {
				e, cookie := handlerEnv(b, kind, false, up)
				runHandler(b, e.gw.App(), browserRequest(strings.TrimPrefix(e.gwURL, "http://"), cookie))
			})
		})
	}
}

// handlerEnv starts a gateway with the store of kind, its /api/ route on
// the upstream at up, signs alice in, and returns the env and her
// cookies as a browser sends them.
func handlerEnv(b *testing.B, kind string, accessLog bool, up string) (*env, string) {
	sk := kindBolt
	if kind == "cookie" {
		sk = kindCookie
	}
	o := envOptions{gateway: func(c *Config) {
		for i := range c.Routes {
			if c.Routes[i].Prefix == "/api/" {
				c.Routes[i].Upstream = "http://" + up
			}
		}
		if accessLog {
			buf := obs.NewLogBuffer(io.Discard, 0, 0)
			b.Cleanup(func() { buf.Close() })
			c.Logger = slog.New(obs.NewLogHandler(obs.NewJSONHandler(buf, nil), buf))
			c.AccessLog = true
		}
	}}
	if kind == "redis" {
		client := redistest.Client(b)
		o.beforeGateway = func(e *env) {
			reg := prometheus.NewRegistry()
			st, err := sredis.New(client, sredis.Config{Prefix: redistest.Prefix(b, client, ""), Now: e.clock.Now,
				Registerer: reg, Cache: sredis.CacheConfig{Entries: sredis.DefaultCacheEntries}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { st.Run(ctx) })
			b.Cleanup(func() { cancel(); wg.Wait() })
			for deadline := time.Now().Add(20 * time.Second); gaugeValue(b, reg, "bffgate_session_redis_cache_verified") != 1; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatal("the near cache's channel was not verified within 20 s")
				}
			}
			e.store = st
		}
	}
	e := newEnv(b, sk, o)
	br := e.browser()
	if p := br.login("alice", alicePassword, "/home"); p.status != 200 {
		b.Fatalf("login: %d", p.status)
	}
	return e, br.cookieHeader()
}

func gaugeValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	fams, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// startBenchUpstream serves a small JSON answer with fasthttp on
// loopback, so that the upstream's share of the CPU stays small.
func startBenchUpstream(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{ReadBufferSize: 64 << 10, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"items":[{"id":1,"name":"one"},{"id":2,"name":"two"}]}`)
	}}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// browserRequest is GET /api/items as a browser's fetch sends it.
func browserRequest(host, cookie string) []byte {
	return []byte("GET /api/items?page=1 HTTP/1.1\r\n" +
		"Host: " + host + "\r\n" +
		"Connection: keep-alive\r\n" +
		"sec-ch-ua: \"Chromium\";v=\"156\", \"Not-A.Brand\";v=\"24\"\r\n" +
		"sec-ch-ua-mobile: ?0\r\n" +
		"sec-ch-ua-platform: \"Linux\"\r\n" +
		"X-CSRF: 1\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n" +
		"Accept: application/json\r\n" +
		"Sec-Fetch-Site: same-origin\r\n" +
		"Sec-Fetch-Mode: cors\r\n" +
		"Sec-Fetch-Dest: empty\r\n" +
		"Referer: http://" + host + "/home\r\n" +
		"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
		"Accept-Language: en-US,en;q=0.9\r\n" +
		"Cookie: " + cookie + "\r\n" +
		"\r\n")
}

// runHandler parses raw and serves it with app's handler b.N times, as
// fasthttp's server does for requests on one kept-alive connection.
func runHandler(b *testing.B, app *fiber.App, raw []byte) {
	handler := app.Handler()
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	rd := bytes.NewReader(raw)
	br := bufio.NewReaderSize(rd, 64<<10)
	bw := bufio.NewWriterSize(io.Discard, 16<<10)
	serve := func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.ResetUserValues()
		rd.Reset(raw)
		br.Reset(rd)
		if err := ctx.Request.Read(br); err != nil {
			b.Fatal(err)
		}
		handler(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if err := ctx.Response.Write(bw); err != nil {
			b.Fatal(err)
		}
		if err := bw.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	serve() // warm the caches: the first request decodes the session
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		serve()
		n++
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/1e3/float64(n), "cpu-µs/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
