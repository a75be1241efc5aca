package edge

import (
	"fmt"

	"github.com/gofiber/fiber/v2"
)

// Error is a request refused at the edge, before or while its bytes are
// read. Kind and Description say what was wrong and what to do; neither
// ever holds a byte of the request, so a listener may answer and log them
// as they are.
//
// An Error unwraps to a *fiber.Error with the same status and text, so an
// error handler that only knows fiber's errors still answers the right
// status with a safe message. The package-level values are sentinels,
// never mutated; errors.Is compares Kind.
type Error struct {
	// Kind is a stable identifier ("invalid_framing", "body_too_large"...):
	// the metric label and log attribute of the refusal.
	Kind string
	// Status is the HTTP status of the answer.
	Status int
	// Description is the fixed text that explains the refusal.
	Description string
}

var (
	// ErrFraming: the message framing is ambiguous: Content-Length with
	// Transfer-Encoding, a repeated Transfer-Encoding, a transfer coding
	// other than chunked, or an obs-fold line (RFC 9112 §5.2, §6.1, §6.3).
	// Two parsers that disagree on where a request ends are how requests
	// are smuggled past a proxy, so such a request is refused, and its
	// connection closed, rather than guessed at.
	ErrFraming = &Error{Kind: "invalid_framing", Status: fiber.StatusBadRequest,
		Description: "the request's framing is ambiguous: send either Content-Length or a single Transfer-Encoding: chunked, never both, and no folded header lines (RFC 9112 §5.2, §6.1)"}
	// ErrMalformedHeader: the request line or a header field is not
	// valid HTTP/1.1.
	ErrMalformedHeader = &Error{Kind: "malformed_header", Status: fiber.StatusBadRequest,
		Description: "the request line or a header field is not valid HTTP/1.1 (RFC 9112 §3, §5)"}
	// ErrMalformedBody: the chunked body or its trailer section could not
	// be parsed, or the body ended early.
	ErrMalformedBody = &Error{Kind: "malformed_body", Status: fiber.StatusBadRequest,
		Description: "the request body is incomplete or its chunked encoding or trailer section is not valid (RFC 9112 §7.1)"}
	// ErrForbiddenTrailer: the Trailer header names a field that must not
	// be sent in a trailer (RFC 9110 §6.5.1), such as Authorization.
	ErrForbiddenTrailer = &Error{Kind: "forbidden_trailer", Status: fiber.StatusBadRequest,
		Description: "the request announces a trailer field that may not be sent in a trailer (such as Authorization, Content-Length or Host, RFC 9110 §6.5.1); send it as a header"}
	// ErrHeaderTooLarge: the header section does not fit the listener's
	// read buffer.
	ErrHeaderTooLarge = &Error{Kind: "header_too_large", Status: fiber.StatusRequestHeaderFieldsTooLarge,
		Description: "the request's header section is larger than this listener accepts; send fewer or smaller headers and cookies"}
	// ErrBodyTooLarge: the body is larger than the endpoint reads.
	ErrBodyTooLarge = &Error{Kind: "body_too_large", Status: fiber.StatusRequestEntityTooLarge,
		Description: "the request body is larger than this endpoint accepts"}
	// ErrTimeout: the request did not arrive within the read timeout.
	ErrTimeout = &Error{Kind: "timeout", Status: fiber.StatusRequestTimeout,
		Description: "the request was not received in time"}
	// ErrUnsupportedEncoding: the body has a Content-Encoding (gzip, br,
	// deflate...). Endpoints that read a body read it as sent; decoding
	// it would let a few hundred bytes grow into gigabytes before any
	// check (RFC 9110 §15.5.16: 415 for an unacceptable content coding).
	ErrUnsupportedEncoding = &Error{Kind: "unsupported_encoding", Status: fiber.StatusUnsupportedMediaType,
		Description: "this endpoint reads only an uncompressed request body: send it without Content-Encoding (or with Content-Encoding: identity)"}
)

func (e *Error) Error() string { return "edge: " + e.Description }

// Is reports whether target is an *Error of the same Kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind
}

// Unwrap gives the *fiber.Error an error handler that does not know this
// package answers with.
func (e *Error) Unwrap() error { return &fiber.Error{Code: e.Status, Message: e.Description} }

// bodyLimit is ErrBodyTooLarge naming the limit.
func bodyLimit(limit int) *Error {
	e := *ErrBodyTooLarge
	e.Description = fmt.Sprintf("the request body is larger than the %d bytes this endpoint accepts", limit)
	return &e
}
