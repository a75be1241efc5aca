package spa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/upstream"
)

// devProxy forwards requests to a dev server. It uses its own fasthttp
// HostClient (keep-alive, one upstream) rather than fiber's proxy
// middleware, whose package-level client would be shared by every caller
// in the process.
type devProxy struct {
	base   *url.URL
	idle   time.Duration
	client *fasthttp.HostClient
	dialer *websocket.Dialer
	log    *slog.Logger
}

func newDevProxy(base *url.URL, idle time.Duration, log *slog.Logger) *devProxy {
	host := base.Host
	if base.Port() == "" {
		if base.Scheme == "https" {
			host = net.JoinHostPort(base.Hostname(), "443")
		} else {
			host = net.JoinHostPort(base.Hostname(), "80")
		}
	}
	if idle <= 0 {
		idle = upstream.DefaultIdleTimeout
	}
	d := &devProxy{
		base: base,
		idle: idle,
		client: &fasthttp.HostClient{
			Addr:  host,
			IsTLS: base.Scheme == "https",
			// Vite on Node 18+ listens on "localhost", which is often ::1
			// only; fasthttp dials IPv4 alone unless told otherwise.
			DialDualStack: true,
			MaxConns:      256,
			// Under the dev server's keep-alive timeout (Node's is 5 s):
			// a connection kept longer is one Node may be closing just
			// as the next request goes out on it.
			MaxIdleConnDuration:           idle,
			ReadTimeout:                   devReadTimeout,
			WriteTimeout:                  30 * time.Second,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
		},
		dialer: &websocket.Dialer{HandshakeTimeout: 10 * time.Second},
		log:    log.With("spa_dev_url", base.String()),
	}
	// A GET that finds its reused connection closed is sent once more on
	// a new one (see internal/upstream).
	upstream.Configure(d.client, func(method []byte) {
		d.log.Debug("SPA dev server closed a kept-alive connection before answering; the request is sent again on a new one",
			"method", string(method), "dev_idle_timeout", idle)
	})
	return d
}

// devReadTimeout bounds the wait for the dev server's answer: a cold dev
// server compiles on the first request.
const devReadTimeout = 60 * time.Second

// hopHeaders are the hop-by-hop headers of RFC 9110 §7.6.1, never
// forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer", "Upgrade"}

func (d *devProxy) handle(c *fiber.Ctx) error {
	if websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
		return d.websocket(c)
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	c.Request().CopyTo(req)
	var body *borrowedStream
	if c.Request().IsBodyStream() {
		// CopyTo leaves a streamed body behind; such a request is
		// never sent twice. Read through the edge's stream: its errors
		// name no request byte, and a body read to its end keeps the
		// browser's connection.
		body = &borrowedStream{r: edge.BodyStream(c)}
		req.SetBodyStream(body, c.Request().Header.ContentLength())
	}
	stripHop(&req.Header)
	// The dev server serves modules; it has no use for the user's cookies
	// or credentials, and the session cookie should reach nothing but the
	// gateway.
	req.Header.Del(fiber.HeaderCookie)
	req.Header.Del(fiber.HeaderAuthorization)
	req.Header.Set(fiber.HeaderXForwardedFor, c.IP())
	req.Header.Set(fiber.HeaderXForwardedHost, c.Hostname())
	req.Header.Set(fiber.HeaderXForwardedProto, c.Protocol())
	req.URI().SetScheme(d.base.Scheme)
	req.URI().SetHost(d.base.Host)
	req.Header.SetHost(d.base.Host)

	// Headers set before this handler (the request id) survive the
	// upstream's response replacing ours.
	var before fasthttp.ResponseHeader
	c.Response().Header.CopyTo(&before)
	resp := c.Response()
	err := d.client.Do(req, resp)
	before.VisitAll(func(k, v []byte) {
		if len(resp.Header.PeekBytes(k)) == 0 && !isHopOrFraming(string(k)) {
			resp.Header.SetBytesKV(k, v)
		}
	})
	if err != nil {
		resp.ResetBody()
		c.Set(fiber.HeaderCacheControl, "no-store")
		c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
		var ee *edge.Error
		if body != nil && errors.As(body.err, &ee) {
			// The browser's body broke (a malformed chunk or trailer, an
			// upload cut off): not the dev server's fault.
			d.log.Info("request body could not be read from the client", "path", c.Path(), "method", c.Method(), "reason", ee.Kind)
			return c.Status(ee.Status).SendString(ee.Description + "\n")
		}
		status := fiber.StatusBadGateway
		if errors.Is(err, fasthttp.ErrTimeout) {
			status = fiber.StatusGatewayTimeout
		}
		d.log.Warn("SPA dev server request failed", "path", c.Path(), "method", c.Method(), "err", err)
		return c.Status(status).SendString(d.failureText(c.Method(), err))
	}
	stripHopResponse(&resp.Header)
	return nil
}

// failureText says why the dev server gave no answer, for the developer
// looking at the browser.
func (d *devProxy) failureText(method string, err error) string {
	var (
		ce *upstream.ClosedError
		oe *net.OpError
	)
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return fmt.Sprintf("The SPA dev server at %s did not answer within %s (a cold dev server compiles on the first request; is it stuck?).\n", d.base, devReadTimeout)
	case errors.As(err, &ce) && ce.Reused && !upstream.Idempotent([]byte(method)):
		return fmt.Sprintf("The SPA dev server at %s closed an idle kept-alive connection as the gateway reused it, and a %s is not sent twice; retry it. "+
			"If this recurs, set gateway.spa.dev_idle_timeout (now %s) below the dev server's keep-alive timeout.\n", d.base, method, d.idle)
	case errors.As(err, &ce) && ce.Reused:
		return fmt.Sprintf("The SPA dev server at %s closed an idle kept-alive connection as the gateway reused it, and closed a new connection without answering too (%v). Did it restart?\n", d.base, ce.Err)
	case errors.As(err, &ce):
		return fmt.Sprintf("The SPA dev server at %s closed the connection without answering (%v). Did it crash or restart?\n", d.base, ce.Err)
	case errors.As(err, &oe) && oe.Op == "dial", errors.Is(err, fasthttp.ErrDialTimeout):
		return fmt.Sprintf("The SPA dev server at %s cannot be reached (%v). Is it running (npm run dev)?\n", d.base, err)
	}
	return fmt.Sprintf("The SPA dev server at %s did not answer (%v). Is it running (npm run dev)?\n", d.base, err)
}

// borrowedStream hides the concrete type of a reader the upstream request
// reads but does not own (fasthttp would return its own stream type to a
// pool when it closes it, and the server's request releases this one),
// and keeps the first read error, which tells a failure of the browser's
// body from one of the dev server.
type borrowedStream struct {
	r   io.Reader
	err error
}

func (b *borrowedStream) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// isHopOrFraming reports whether a header describes the message rather
// than the resource, and so must come from the upstream's answer alone.
func isHopOrFraming(name string) bool {
	switch strings.ToLower(name) {
	case "content-type", "content-length", "content-encoding", "transfer-encoding", "date", "server", "set-cookie":
		return true
	}
	for _, h := range hopHeaders {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

func stripHop(h *fasthttp.RequestHeader) {
	for _, name := range connectionTokens(string(h.Peek("Connection"))) {
		h.Del(name)
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func stripHopResponse(h *fasthttp.ResponseHeader) {
	for _, name := range connectionTokens(string(h.Peek("Connection"))) {
		h.Del(name)
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// connectionTokens lists the header names a Connection header declares
// hop-by-hop.
func connectionTokens(v string) []string {
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, "close") && !strings.EqualFold(t, "keep-alive") {
			out = append(out, t)
		}
	}
	return out
}

// websocket proxies an upgrade (hot module reload): it dials the dev
// server first, so the browser gets the dev server's answer (its status
// on refusal, its chosen subprotocol on success), then upgrades the
// browser's connection and copies frames both ways until either side
// closes.
func (d *devProxy) websocket(c *fiber.Ctx) error {
	ctx := c.Context()
	// Same-origin only: a page on another site must not open the dev
	// server's socket through the user's browser.
	if !sameOrigin(string(ctx.Request.Header.Peek("Origin")), string(ctx.Host())) {
		return c.Status(fiber.StatusForbidden).SendString("WebSocket upgrade refused: the Origin is not this site\n")
	}
	scheme := "ws"
	if d.base.Scheme == "https" {
		scheme = "wss"
	}
	target := scheme + "://" + d.base.Host + string(ctx.URI().RequestURI())
	hdr := http.Header{}
	for _, name := range []string{"Origin", "User-Agent", "Sec-WebSocket-Protocol", "Accept-Language"} {
		if v := ctx.Request.Header.Peek(name); len(v) > 0 {
			hdr.Set(name, string(v))
		}
	}
	hdr.Set("X-Forwarded-For", c.IP())
	hdr.Set("X-Forwarded-Host", c.Hostname())
	hdr.Set("X-Forwarded-Proto", c.Protocol())

	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	up, resp, err := d.dialer.DialContext(dctx, target, hdr)
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			d.log.Warn("SPA dev server refused the WebSocket upgrade", "path", c.Path(), "status", resp.StatusCode)
			return c.Status(resp.StatusCode).SendString(fmt.Sprintf("The SPA dev server refused the WebSocket upgrade (status %d).\n", resp.StatusCode))
		}
		d.log.Warn("SPA dev server WebSocket dial failed", "path", c.Path(), "err", err)
		return c.Status(fiber.StatusBadGateway).SendString(fmt.Sprintf("The SPA dev server at %s did not accept a WebSocket (%v). Is it running?\n", d.base, err))
	}
	upgrader := &websocket.FastHTTPUpgrader{
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true }, // checked above
	}
	if p := up.Subprotocol(); p != "" {
		upgrader.Subprotocols = []string{p}
	}
	if err := upgrader.Upgrade(ctx, func(down *websocket.Conn) { pipe(down, up) }); err != nil {
		// The upgrader has written the error response.
		_ = up.Close()
		d.log.Info("WebSocket upgrade from the browser failed", "path", c.Path(), "err", err)
	}
	return nil
}

// sameOrigin reports whether origin (absent for non-browser clients) names
// host.
func sameOrigin(origin, host string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, host)
}

// pipe copies messages between the browser and the dev server until one
// side ends, then closes both, passing the close code on.
func pipe(down, up *websocket.Conn) {
	errc := make(chan error, 2)
	go copyMessages(up, down, errc)
	go copyMessages(down, up, errc)
	<-errc
	_ = down.Close()
	_ = up.Close()
	<-errc
}

func copyMessages(dst, src *websocket.Conn, errc chan<- error) {
	for {
		mt, r, err := src.NextReader()
		if err != nil {
			code, text := websocket.CloseGoingAway, ""
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code, text = ce.Code, ce.Text
			}
			var msg []byte
			switch code {
			case websocket.CloseNoStatusReceived:
				msg = websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			case websocket.CloseAbnormalClosure, websocket.CloseTLSHandshake:
				msg = websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
			default:
				msg = websocket.FormatCloseMessage(code, text)
			}
			_ = dst.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			errc <- err
			return
		}
		w, err := dst.NextWriter(mt)
		if err != nil {
			errc <- err
			return
		}
		if _, err := io.Copy(w, r); err != nil {
			_ = w.Close()
			errc <- err
			return
		}
		if err := w.Close(); err != nil {
			errc <- err
			return
		}
	}
}
