// Command bareproxy is the load benchmark's bare reverse proxy: no
// sessions, no tokens, no CSRF check, only forwarding. It is built on the
// same stack as bffgate's gateway (fiber v2 serving, a fasthttp
// HostClient with a pooled keep-alive connection per upstream, the same
// pool size and idle timeout as bff/proxy's defaults), so its throughput
// is the physical limit of any proxy on this stack and the denominator of
// the c/b and d/b ratios.
//
// It forwards in place (the incoming fasthttp request is sent upstream and
// the upstream's response is written straight into the outgoing one), as
// fiber's own proxy middleware does: the cheapest correct forwarding this
// stack allows.
//
// It prints "listening on http://ADDR" once it accepts connections.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	upstream := flag.String("upstream", "", "upstream base URL, such as http://127.0.0.1:9000")
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		log.Fatalf("bareproxy: -upstream %q: want an http://host:port URL", *upstream)
	}
	hc := &fasthttp.HostClient{
		Addr:                      u.Host,
		MaxConns:                  512,             // bff/proxy.DefaultMaxConnsPerHost
		MaxIdleConnDuration:       4 * time.Second, // bff/proxy.DefaultIdleConnTimeout
		MaxConnWaitTimeout:        30 * time.Second,
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
		MaxIdemponentCallAttempts: 2,
	}
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ReadBufferSize:        16 << 10,
	})
	app.All("/*", func(c *fiber.Ctx) error {
		req := c.Request()
		// Hop-by-hop fields are the connection's, not the message's
		// (RFC 9110 §7.6.1); wrk sends none, a browser might.
		req.Header.Del(fiber.HeaderConnection)
		req.Header.Del("Keep-Alive")
		req.Header.Set(fiber.HeaderXForwardedFor, c.IP())
		req.SetHost(u.Host)
		if err := hc.Do(req, c.Response()); err != nil {
			c.Response().Reset()
			return c.Status(fiber.StatusBadGateway).JSON(fiber.Map{"error": "upstream_unavailable", "error_description": err.Error()})
		}
		c.Response().Header.Del(fiber.HeaderConnection)
		return nil
	})
	ln, err := net.Listen("tcp4", *addr)
	if err != nil {
		log.Fatalf("bareproxy: listen %s: %v", *addr, err)
	}
	fmt.Fprintf(os.Stdout, "listening on http://%s\n", ln.Addr())
	if err := app.Listener(ln); err != nil {
		log.Fatalf("bareproxy: %v", err)
	}
}
