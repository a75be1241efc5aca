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
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return n + int(l.left), errBodyTooLarge
	}
	return n, err
}

// refuse answers a request the proxy does not send (or stopped sending)
// upstream: 400 for a refused path, 413 for a body over the route's
// limit. Both may leave part of the browser's body unread on the
// connection, which is therefore closed after the answer: otherwise the
// rest of the body would be read as the next request.
func (p *Proxy) refuse(c *fiber.Ctx, rt *route, err error, start time.Time) {
	c.Context().SetConnectionClose()
	var pe *PathError
	switch {
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
