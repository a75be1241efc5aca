package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/edge"
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
// out at once with Connection: close (edge.Discard).
const lingerBytes = 64 << 20

// refuse answers a request the proxy does not send (or stopped sending)
// upstream: 400 for a refused path, 413 for a body over the route's
// limit. The rest of the body is discarded or the connection closed
// (edge.Discard); a body whose reading failed (a malformed chunk, an
// upload cut off) cannot be read on, and its connection closes.
func (p *Proxy) refuse(c *fiber.Ctx, rt *route, err error, start time.Time) {
	var pe *PathError
	var be *bodyError
	if errors.As(err, &be) {
		c.Context().SetConnectionClose()
	} else {
		edge.Discard(c, lingerBytes)
	}
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
