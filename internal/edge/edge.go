// Package edge builds every fiber listener bffgate runs (the issuer, the
// gateway, the demo API) with the same hardening, so that no listener can
// forget a piece of it:
//
//   - Request values are copies (fiber's Immutable): fasthttp reuses its
//     request buffers once a handler returns, and a string that still
//     points into them (a metric label, a map key, a value handed to
//     another goroutine) changes under its holder.
//   - Ambiguous framing is refused with 400 and the connection closed:
//     Content-Length with Transfer-Encoding, a repeated Transfer-Encoding,
//     a transfer coding other than chunked, an obs-fold line (RFC 9112
//     §5.2, §6.1, §6.3), a field name that is not a token, in the header
//     or the trailer section (RFC 9110 §5.1). fasthttp v1.58 accepted the
//     first four (the fold even mis-measured the header section); v1.79
//     still accepts Content-Length with chunked, Transfer-Encoding:
//     identity, folds (which it joins) and names with a space inside:
//     that is how requests are smuggled past a proxy that reads them
//     differently.
//   - Errors met while reading a request are answered and logged by kind
//     (Error), never with fasthttp's error text, which quotes the request
//     bytes: cookies, an Authorization trailer. fiber's own handler copies
//     that text into the response body.
//   - Bodies are read raw and bounded (ReadBody): never decoded (fiber's
//     c.Body() inflates gzip, br and deflate, several layers deep, with no
//     output limit), and a Content-Encoding is refused with 415.
//   - A streamed body the handler did not read to its end closes the
//     connection: the rest of it would otherwise be parsed as the next
//     request on the connection.
//   - multipart/form-data is never pre-parsed (fasthttp would spool a
//     streamed upload of any declared size to temporary files before any
//     handler runs); no endpoint takes it.
//
// # Caveats
//
// Immutable costs an allocation per request value a handler reads
// (c.Get, c.Path, c.Cookies...). The gateway's proxy path reads headers
// through fasthttp's byte-slice API, so it costs little there: BenchmarkAPI
// in bff (a proxied call with a session) went from 233 to 238 allocations
// and about 70 more bytes per request, client side included, with the
// time per request within the run-to-run noise. One place that converted
// request values instead would leave every other handler (cookies, map
// keys, values handed to the single-flight refresh) to remember it.
package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/bffgate/bffgate/internal/obs"
)

// Config configures one listener.
type Config struct {
	// Fiber is the listener's fiber configuration. New sets the fields the
	// edge owns (Immutable, DisablePreParseMultipartForm) whatever they
	// hold; ErrorHandler answers the edge's errors too.
	Fiber fiber.Config
	// Obs is the listener's observability: its middleware runs first, and
	// refusals are counted in it. Required.
	Obs *obs.Obs
}

// drainLimit is how much of an unread body of known length the edge reads
// and discards after the handler to keep the connection; a larger rest
// closes it instead.
const drainLimit = 64 << 10

// New returns the fiber app for cfg: the hardened configuration, the
// fasthttp server's error handler and logger, and the first two
// middlewares (obs, then the framing and stream checks). The caller adds
// its routes.
func New(cfg Config) (*fiber.App, error) {
	if cfg.Obs == nil {
		return nil, errors.New("edge: Config.Obs is required")
	}
	fc := cfg.Fiber
	fc.Immutable = true
	fc.DisablePreParseMultipartForm = true
	app := fiber.New(fc)
	e := &edge{app: app, obs: cfg.Obs, log: cfg.Obs.Logger()}
	srv := app.Server()
	// fasthttp's parse errors quote the request (headers, cookies,
	// trailers); SecureErrorLogMessage leaves the bytes out of most of
	// them, and errorHandler and logger make sure none of the rest is
	// written anywhere.
	srv.SecureErrorLogMessage = true
	srv.ErrorHandler = e.serverError
	srv.Logger = serverLogger{log: e.log}
	srv.LogAllErrors = false
	app.Use(cfg.Obs.Middleware())
	app.Use(e.guard)
	return app, nil
}

type edge struct {
	app *fiber.App
	obs *obs.Obs
	log *slog.Logger
}

// guard refuses ambiguous framing before any handler sees the request,
// and after the handler closes the connection when a streamed body was
// left unread.
func (e *edge) guard(c *fiber.Ctx) error {
	if err := checkFraming(c.Request().Header.RawHeaders()); err != nil {
		e.refuse(c.Context(), err)
		return err
	}
	// A body fasthttp read whole came with its trailer section; a
	// streamed one's is checked at its end (stream).
	if !c.Request().IsBodyStream() {
		if err := checkTrailers(&c.Request().Header); err != nil {
			e.refuse(c.Context(), err)
			return err
		}
	}
	err := c.Next()
	settle(c)
	return err
}

// refuse counts and logs a refusal and closes the connection after the
// answer: after a framing or parse error the connection's next bytes
// cannot be trusted to start a request.
func (e *edge) refuse(ctx *fasthttp.RequestCtx, err *Error) {
	ctx.SetConnectionClose()
	e.obs.Refused(err.Kind)
	e.log.Info("request refused", "reason", err.Kind, "status", err.Status, "remote", remoteAddr(ctx))
}

// serverError is the fasthttp server's ErrorHandler: the request could not
// be read. It answers through the app's ErrorHandler with an *Error, whose
// text is fixed, instead of fiber's default, which copies fasthttp's error
// text (and so the request) into the response.
func (e *edge) serverError(ctx *fasthttp.RequestCtx, err error) {
	ee := classify(err, len(ctx.Request.Header.RawHeaders()) > 0)
	e.refuse(ctx, ee)
	c := e.app.AcquireCtx(ctx)
	defer e.app.ReleaseCtx(c)
	if herr := e.app.ErrorHandler(c, ee); herr != nil {
		ctx.Response.Reset()
		ctx.SetStatusCode(ee.Status)
		ctx.SetContentType(fiber.MIMETextPlainCharsetUTF8)
		ctx.SetBodyString(ee.Description)
	}
}

// classify maps a fasthttp read error to its kind. headersRead tells a
// failure in the body or trailer from one in the header section (fasthttp
// forgets the raw headers when the header section fails to parse). Only
// typed errors are told apart; fasthttp's other parse errors are plain
// texts, and the rest is one kind per phase.
func classify(err error, headersRead bool) *Error {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		return ErrHeaderTooLarge
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return ErrBodyTooLarge
	case isTimeout(err):
		return ErrTimeout
	case errors.Is(err, fasthttp.ErrBadTrailer):
		return ErrForbiddenTrailer
	case headersRead:
		return ErrMalformedBody
	}
	return ErrMalformedHeader
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func remoteAddr(ctx *fasthttp.RequestCtx) string {
	if a := ctx.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// checkFraming scans the raw header section (as received, before fasthttp
// merges anything) for framing that two parsers could read differently
// (RFC 9112 §6.3): a line folded onto the previous one (obs-fold, §5.2),
// more than one Transfer-Encoding field, a transfer coding other than a
// single chunked, or Transfer-Encoding together with Content-Length
// (§6.1: "A server MAY reject ... Regardless, the server MUST close the
// connection after responding").
func checkFraming(raw []byte) *Error {
	var te, cl int
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break // end of the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			return ErrFraming
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue // fasthttp refused or dropped it already
		}
		if !isToken(name) {
			// A field name is a token (RFC 9110 §5.1): fasthttp v1.79
			// accepts a space inside one ("Content Length"), which a
			// server behind that drops spaces would read as another
			// field. (A space before the colon fasthttp refuses.)
			return ErrMalformedHeader
		}
		if c := line[0] | 0x20; c != 't' && c != 'c' {
			// Neither Transfer-Encoding nor Content-Length (no other
			// byte folds to their first letters, in bytes.EqualFold's
			// Unicode folding either): most lines leave here.
			continue
		}
		switch {
		case bytes.EqualFold(bytes.TrimRight(name, " \t"), []byte(fiber.HeaderTransferEncoding)):
			te++
			if !bytes.EqualFold(bytes.Trim(value, " \t"), []byte("chunked")) {
				return ErrFraming
			}
		case bytes.EqualFold(bytes.TrimRight(name, " \t"), []byte(fiber.HeaderContentLength)):
			cl++
		}
	}
	if te > 1 || te > 0 && cl > 0 {
		return ErrFraming
	}
	return nil
}

// tokenByte marks the bytes of a token (RFC 9110 §5.6.2): tchar.
var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isToken reports whether b is a non-empty token.
func isToken(b []byte) bool {
	for _, c := range b {
		if !tokenByte[c] {
			return false
		}
	}
	return len(b) > 0
}

// checkTrailers refuses a trailer section with a field name that is not
// a token (RFC 9110 §5.1, §6.5.1): fasthttp v1.79 accepts a space inside
// one, as in the header section (checkFraming). It sees the names the
// Trailer field announced and those received after the last chunk, so
// it runs once the body has been read.
func checkTrailers(h *fasthttp.RequestHeader) *Error {
	for _, k := range h.PeekTrailerKeys() {
		if !isToken(k) {
			return ErrMalformedBody
		}
	}
	return nil
}

// ReadBody returns a copy of the request body as it was sent, at most
// limit bytes: never decoded (a body with a Content-Encoding other than
// identity is ErrUnsupportedEncoding, before a byte is read), read from
// the stream when the listener streams bodies, and ErrBodyTooLarge past
// limit, checked against the declared Content-Length first. Read errors
// are an *Error (ErrMalformedBody, ErrForbiddenTrailer, ErrTimeout) that
// names no request byte. After an error the connection closes.
func ReadBody(c *fiber.Ctx, limit int) ([]byte, error) {
	b, err := readBody(c, limit)
	if err != nil {
		c.Context().SetConnectionClose()
	}
	return b, err
}

func readBody(c *fiber.Ctx, limit int) ([]byte, error) {
	if err := checkEncoding(&c.Request().Header); err != nil {
		return nil, err
	}
	req := c.Request()
	if n := req.Header.ContentLength(); n > limit {
		return nil, bodyLimit(limit)
	}
	if !req.IsBodyStream() {
		b := req.Body() // fasthttp's raw body: never decoded
		if len(b) > limit {
			return nil, bodyLimit(limit)
		}
		return bytes.Clone(b), nil
	}
	s := BodyStream(c)
	b, err := io.ReadAll(io.LimitReader(s, int64(limit)+1))
	if err != nil {
		return nil, err // an *Error: stream classifies
	}
	if len(b) > limit {
		// Read a little more of what the client is still sending: a
		// server that closes with unread bytes resets the connection,
		// and the reset can destroy the 413 before the client reads it.
		_, _ = io.Copy(io.Discard, io.LimitReader(s, drainLimit))
		return nil, bodyLimit(limit)
	}
	return b, nil
}

// checkEncoding refuses any Content-Encoding but identity.
func checkEncoding(h *fasthttp.RequestHeader) *Error {
	var bad bool
	h.VisitAll(func(k, v []byte) {
		if !bytes.EqualFold(k, []byte(fiber.HeaderContentEncoding)) {
			return
		}
		for _, coding := range strings.Split(string(v), ",") {
			if coding = strings.TrimSpace(coding); coding != "" && !strings.EqualFold(coding, "identity") {
				bad = true
			}
		}
	})
	if bad {
		return ErrUnsupportedEncoding
	}
	return nil
}

const localsStream = "edge.stream"

// BodyStream returns the request body stream (nil when the body is not
// streamed), wrapped so that the edge learns whether it was read to its
// end: a handler that streams a body onward (the proxy) reads it through
// this, or the connection closes after the answer.
func BodyStream(c *fiber.Ctx) io.Reader {
	if t, ok := c.Locals(localsStream).(*stream); ok {
		return t
	}
	r := c.Context().RequestBodyStream()
	if r == nil {
		return nil
	}
	t := &stream{r: r, h: &c.Request().Header}
	c.Locals(localsStream, t)
	return t
}

// stream records whether its reader reached io.EOF, and turns a read
// error into its *Error: fasthttp's texts for a bad chunk or trailer quote
// the request (an invalid trailer key with the credential in it), and the
// reader's consumer (the proxy's upstream client) logs what it gets.
type stream struct {
	r    io.Reader
	h    *fasthttp.RequestHeader // the request's, for its trailer section
	done bool
	err  error
}

func (s *stream) Read(p []byte) (int, error) {
	if s.done {
		return 0, io.EOF
	}
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	switch {
	case err == io.EOF:
		if e := checkTrailers(s.h); e != nil {
			s.err = e
			return n, e
		}
		s.done = true
	case err != nil:
		s.err = classify(err, true)
		return n, s.err
	}
	return n, err
}

// settle runs after the handler. A body fasthttp streams (the gateway's
// chunked or large bodies) and that nobody read to its end would be read
// as the next request on the connection: it is drained when little is
// left, else the connection closes (see discard).
func settle(c *fiber.Ctx) {
	if c.Request().IsBodyStream() {
		discard(c, drainLimit)
	}
}

// Discard reads and discards what is left of a streamed request body, at
// most limit bytes, so that a handler answering before it read the body
// (a refusal) keeps the connection in step, and a client still uploading
// reads the answer rather than a reset. A longer rest, or a body whose
// framing broke, closes the connection after the answer instead. The
// caller reads the body through BodyStream only, or not at all; the edge
// then has nothing left to settle.
func Discard(c *fiber.Ctx, limit int64) {
	if c.Request().IsBodyStream() {
		BodyStream(c)
		discard(c, limit)
	}
}

// discard is Discard and settle's one rule. Reading a stream of known
// length past its end returns EOF at once, so one a handler read directly
// is safe to drain too. A chunked one is not: past its last chunk the next
// Read would wait for the next request's bytes; it is drained only
// through BodyStream's reader, which knows where the body ended.
func discard(c *fiber.Ctx, limit int64) {
	req := c.Request()
	cl := int64(req.Header.ContentLength())
	t, _ := c.Locals(localsStream).(*stream)
	var r io.Reader
	switch {
	case t != nil && t.done, c.Context().Response.ConnectionClose():
		return // nothing left, or the connection closes anyway
	case t != nil && t.err == nil:
		r = t
	case t == nil && cl >= 0:
		r = c.Context().RequestBodyStream()
	}
	if r != nil && cl <= limit {
		if n, err := io.Copy(io.Discard, io.LimitReader(r, limit+1)); err == nil && n <= limit {
			return
		}
	}
	c.Context().SetConnectionClose()
}

// serverLogger is the fasthttp server's Logger. fasthttp logs connection
// errors with the request bytes its error texts quote; this writes the
// message with every string argument redacted and every error replaced
// by its kind. A client's malformed request was answered and logged by
// serverError already, so its connection error is at Debug; anything
// else (accept failures, the concurrency limit) at Warn.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Printf(format string, args ...any) {
	level := slog.LevelWarn
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case error:
			k := classify(v, false)
			var ne net.Error
			if errors.As(v, &ne) && !ne.Timeout() {
				safe[i] = "<network error>"
				continue
			}
			level = slog.LevelDebug
			safe[i] = "<" + k.Kind + ">"
		case net.Addr:
			safe[i] = v.String()
		case int, int64, uint64, uint32, int32, uint, float64, bool:
			safe[i] = v
		default:
			safe[i] = "<redacted>"
		}
	}
	l.log.Log(context.Background(), level, "http server: "+fmt.Sprintf(format, safe...))
}
