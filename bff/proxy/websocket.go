package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
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
func (p *Proxy) forwardWebSocket(c *fiber.Ctx, rt *route, bearer string) error {
	start := p.now()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	bp := p.scratch.Get().(*[]byte)
	defer p.scratch.Put(bp)
	if ok, _ := p.buildRequest(c, rt, bearer, req, bp); !ok {
		writeJSONError(c, fiber.StatusBadRequest, "invalid_path", "the request path is malformed or leaves the API route (dot segments, encoded slashes or control characters); fix the URL")
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
		// CheckOrigin nil: the library's same-host Origin check.
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
