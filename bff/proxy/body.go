package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
)

// limitedBody counts a request body of unknown length (chunked) as the
// upstream request reads it, and fails the read that would pass the
// route's MaxBodyBytes. fasthttp then stops writing the chunked body
// before its last chunk and closes the upstream connection, so the
// upstream never sees a complete request; Forward answers 413.
type limitedBody struct {
	r        io.Reader
	left     int64 // bytes still allowed
	exceeded bool
	srcErr   error // reading from the browser failed (not io.EOF)
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.exceeded {
		// Sticky: fasthttp's chunk writer reads again after a read that
		// returned data with an error.
		return 0, errBodyTooLarge
	}
	// Read one byte more than allowed, to tell "exactly the limit" from
	// "over it".
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF {
		l.srcErr = err
	}
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return n + int(l.left), errBodyTooLarge
	}
	return n, err
}

// lingerBytes is how much of a refused request's remaining body the
// proxy reads and discards before it answers, so that the connection
// stays in step (and a browser still uploading reads the 413 instead of
// a connection reset). A longer remainder is not read: the answer goes
// out at once with Connection: close.
const lingerBytes = 64 << 20

// trackedBody is the browser's streamed request body as the proxy reads
// it, remembering its end: fasthttp's stream of a chunked body, read
// again after its last chunk, would go on to read the next request off
// the connection.
type trackedBody struct {
	r   io.Reader
	eof bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

const bodyKey = "bffgate.proxy.body"

// requestBody returns the request's body stream, tracked, the same one
// for every caller of one request.
func requestBody(c *fiber.Ctx) *trackedBody {
	if tb, ok := c.Locals(bodyKey).(*trackedBody); ok {
		return tb
	}
	tb := &trackedBody{r: c.Context().RequestBodyStream()}
	c.Locals(bodyKey, tb)
	return tb
}

// finishBody leaves the browser's connection in step after the proxy (or
// a handler) stopped reading a streamed request body: fasthttp would
// otherwise read the rest of the body as the next request on the
// connection (a request smuggled inside a body). It discards a remainder
// of up to lingerBytes, or marks the connection to close after the
// answer. broken means the body's framing failed (a malformed chunk): it
// cannot be read on, and the connection closes.
func finishBody(c *fiber.Ctx, broken bool) {
	src := c.Request()
	cl := src.Header.ContentLength()
	if !src.IsBodyStream() || cl == 0 {
		return // read whole by the server, or none: nothing left on the wire
	}
	var r io.Reader
	tb, _ := c.Locals(bodyKey).(*trackedBody)
	switch {
	case broken || cl > lingerBytes:
		c.Context().SetConnectionClose()
		return
	case tb != nil:
		if tb.eof {
			return
		}
		r = tb
	case cl > 0:
		// Untracked, but a declared length: fasthttp's stream stops
		// there however often it is read.
		r = c.Context().RequestBodyStream()
	default:
		// Chunked and untracked: someone else may have read it to its
		// end, past which a read would take the next request.
		c.Context().SetConnectionClose()
		return
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r, lingerBytes+1))
	if err != nil || n > lingerBytes {
		c.Context().SetConnectionClose()
	}
}

// FinishBody leaves the browser's connection in step after a handler
// answered without reading all of a streamed request body (fiber's
// StreamRequestBody): it discards up to 64 MiB of what is left, or marks
// the connection to close after the answer. Without it fasthttp reads the
// rest of the body as the next request on the connection, so that a
// request hidden in the body of a refused one would be served. A body
// already read to its end costs nothing. Forward does this itself for
// the requests it refuses; the gateway calls it after every API or SPA
// answer.
func FinishBody(c *fiber.Ctx) { finishBody(c, false) }

// refuse answers a request the proxy does not send (or stopped sending)
// upstream: 400 for a refused path, 413 for a body over the route's
// limit. The rest of the body is discarded or the connection closed
// (finishBody).
func (p *Proxy) refuse(c *fiber.Ctx, rt *route, err error, start time.Time) {
	var pe *PathError
	var be *bodyError
	finishBody(c, errors.As(err, &be))
	switch {
	case errors.As(err, &be):
		p.metrics.observe(rt.label, fiber.StatusBadRequest, p.now().Sub(start))
		p.log.Info("request body could not be read from the client",
			slog.String("route", rt.Prefix), slog.String("method", c.Method()), slog.Any("err", be.err))
		writeJSONError(c, fiber.StatusBadRequest, "invalid_body",
			"the request body could not be read (malformed chunked encoding, or the upload stopped); send it again")
	case errors.As(err, &pe):
		p.metrics.observe(rt.label, fiber.StatusBadRequest, p.now().Sub(start))
		writeJSONError(c, fiber.StatusBadRequest, "invalid_path", pe.Error()+"; fix the URL")
	default:
		p.metrics.observe(rt.label, fiber.StatusRequestEntityTooLarge, p.now().Sub(start))
		p.log.Info("request body over the route's limit",
			slog.String("route", rt.Prefix), slog.String("method", c.Method()), slog.Int64("max_body_bytes", rt.MaxBodyBytes))
		writeJSONError(c, fiber.StatusRequestEntityTooLarge, "request_too_large",
			fmt.Sprintf("the request body is larger than the %d bytes the API behind %s accepts (gateway.routes[].max_body_bytes)", rt.MaxBodyBytes, rt.Prefix))
	}
}

// bodyError is a failure reading the browser's request body while it
// streamed to the upstream.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "proxy: reading the request body: " + e.err.Error() }

func (e *bodyError) Unwrap() error { return e.err }
