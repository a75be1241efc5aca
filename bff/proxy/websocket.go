package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// forwardWebSocket dials the upstream's WebSocket endpoint with the
// filtered handshake headers, then upgrades the browser's connection and
// relays messages both ways until either side closes.
//
// The upstream is dialled first so that a refused or failed upstream
// handshake still gets an HTTP answer (502/504, or the upstream's own
// status when it refuses the upgrade), and the subprotocol the upstream
// chose is the one offered to the browser.
func (p *Proxy) forwardWebSocket(c *fiber.Ctx, rt *route, bearer string, ident []Header) error {
	start := p.now()
	if !p.originAllowed(c) {
		// Browsers always send Origin on a WebSocket handshake (RFC 6455
		// §4.1) and cannot add other headers to it, so the Origin is
		// what tells the gateway's own pages from another site's
		// (Cross-Site WebSocket Hijacking). Refused before the upstream
		// is dialled.
		p.metrics.observe(rt.label, fiber.StatusForbidden, p.now().Sub(start))
		writeJSONError(c, fiber.StatusForbidden, "origin_refused",
			"a WebSocket through the gateway must come from its own origin or one of gateway.allowed_origins (the handshake's Origin header)")
		return nil
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	bufs := p.bufs.Get().(*buffers)
	defer p.bufs.Put(bufs)
	if _, err := p.buildRequest(c, rt, bearer, ident, req, bufs); err != nil {
		p.refuse(c, rt, err, start)
		return nil
	}

	// The handshake headers go as net/http headers; the Dialer writes its
	// own Upgrade, Connection and Sec-WebSocket-Key/-Version/-Extensions.
	hdr := http.Header{}
	req.Header.VisitAll(func(k, v []byte) {
		switch {
		case bytes.EqualFold(k, []byte("Sec-WebSocket-Key")), bytes.EqualFold(k, []byte("Sec-WebSocket-Version")),
			bytes.EqualFold(k, []byte("Sec-WebSocket-Extensions")), bytes.EqualFold(k, hHost),
			bytes.EqualFold(k, hContentLength):
			return
		case bytes.EqualFold(k, []byte("Sec-WebSocket-Protocol")):
			hdr["Sec-Websocket-Protocol"] = append(hdr["Sec-Websocket-Protocol"], string(v))
			return
		}
		hdr.Add(string(k), string(v))
	})
	target := req.URI()
	wsScheme := "ws://"
	if rt.scheme == "https" {
		wsScheme = "wss://"
	}
	urlStr := wsScheme + rt.host + string(target.RequestURI())

	dialer := websocket.Dialer{
		NetDialContext:   rt.client.dialer.DialContext,
		TLSClientConfig:  rt.client.tls,
		HandshakeTimeout: rt.Timeout,
		Proxy:            nil, // only the configured upstream, never an environment proxy
	}
	ctx, cancel := context.WithTimeout(context.Background(), rt.Timeout)
	up, resp, err := dialer.DialContext(ctx, urlStr, hdr)
	cancel()
	if err != nil {
		if resp != nil {
			// The upstream answered the handshake with a refusal: pass its
			// status through (the body is not kept by the dialer).
			defer resp.Body.Close()
			p.metrics.observe(rt.label, resp.StatusCode, p.now().Sub(start))
			writeJSONError(c, resp.StatusCode, "websocket_refused", "the API behind "+rt.Prefix+" refused the WebSocket upgrade")
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fasthttp.ErrTimeout
		}
		p.upstreamFailed(c, rt, err, start)
		return nil
	}

	upgrader := websocket.FastHTTPUpgrader{
		HandshakeTimeout: rt.Timeout,
		// Checked above (originAllowed), against WebSocketOrigins, which
		// the library's same-host rule would not know.
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
	}
	if sp := up.Subprotocol(); sp != "" {
		upgrader.Subprotocols = []string{sp}
	}
	label := rt.label
	err = upgrader.Upgrade(c.Context(), func(down *websocket.Conn) {
		p.metrics.observe(label, fiber.StatusSwitchingProtocols, p.now().Sub(start))
		relay(down, up)
	})
	if err != nil {
		// The upgrader has written its 4xx answer.
		up.Close()
		p.log.Info("websocket upgrade refused", slog.String("route", rt.Prefix), slog.Any("err", err))
	}
	return nil
}

// relay copies messages between two WebSocket connections until one side
// closes or fails, then passes the close on and closes both.
func relay(a, b *websocket.Conn) {
	done := make(chan error, 2)
	go func() { done <- copyMessages(b, a) }()
	go func() { done <- copyMessages(a, b) }()
	err := <-done
	code, text := websocket.CloseNormalClosure, ""
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code, text = ce.Code, ce.Text
		if code == websocket.CloseNoStatusReceived || code == websocket.CloseAbnormalClosure || code == websocket.CloseTLSHandshake {
			code, text = websocket.CloseNormalClosure, ""
		}
	} else if err != nil {
		code = websocket.CloseGoingAway
	}
	msg := websocket.FormatCloseMessage(code, text)
	deadline := time.Now().Add(time.Second)
	_ = a.WriteControl(websocket.CloseMessage, msg, deadline)
	_ = b.WriteControl(websocket.CloseMessage, msg, deadline)
	a.Close()
	b.Close()
	<-done
}

// copyMessages relays data messages from src to dst, frame by frame
// within a message, so large messages are not held whole.
func copyMessages(dst, src *websocket.Conn) error {
	buf := make([]byte, 8<<10)
	for {
		mt, r, err := src.NextReader()
		if err != nil {
			return err
		}
		w, err := dst.NextWriter(mt)
		if err != nil {
			return err
		}
		if _, err := io.CopyBuffer(w, r, buf); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
}

// originAllowed reports whether the handshake's Origin is one of
// Config.WebSocketOrigins or, without them, names the request's own host.
// A handshake without an Origin is refused: every browser sends one, and
// a client that is not a browser has no cookies to abuse, but then also
// no reason to omit it.
func (p *Proxy) originAllowed(c *fiber.Ctx) bool {
	origin := c.Request().Header.Peek(fiber.HeaderOrigin)
	if len(origin) == 0 {
		return false
	}
	if p.wsOrigins == nil {
		u, err := url.Parse(string(origin))
		return err == nil && u.Host != "" && strings.EqualFold(u.Host, string(c.Request().Host()))
	}
	n, ok := NormalizeOrigin(string(origin))
	return ok && p.wsOrigins[n]
}

// NormalizeOrigin returns scheme://host[:port] in lower case without a
// default port (RFC 6454 §6.1), or false when s is not an http(s) origin.
// The gateway's CSRF guard compares origins in this form too.
func NormalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return u.Scheme + "://" + host, true
}

// IsWebSocketUpgrade reports whether c is a WebSocket handshake, as
// websocket.FastHTTPIsWebSocketUpgrade does, looking first for an Upgrade
// field, which no other request carries: the proxied call that is no
// handshake (nearly all) costs one header lookup, not two lookups and a
// scan of the Connection tokens.
func IsWebSocketUpgrade(c *fiber.Ctx) bool {
	if len(c.Request().Header.Peek(fiber.HeaderUpgrade)) == 0 {
		return false
	}
	return websocket.FastHTTPIsWebSocketUpgrade(c.Context())
}
