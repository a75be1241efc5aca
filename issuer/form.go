package issuer

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/issuer/protocol"
)

// parseForm parses an application/x-www-form-urlencoded POST body strictly
// (RFC 6749 §3.2, Appendix B): another content type, bad percent-encoding,
// a repeated parameter ("MUST NOT be included more than once", §3.1, §3.2)
// or an oversized value is invalid_request. The values are copies, never
// fasthttp's buffers.
func parseForm(c *fiber.Ctx) (url.Values, error) {
	v, err := formValues(c)
	if err != nil {
		return nil, err
	}
	if err := checkParams(v); err != nil {
		return nil, err
	}
	return v, nil
}

// formValues is parseForm without checkParams: the content type checked,
// the body read bounded and decoded.
func formValues(c *fiber.Ctx) (url.Values, error) {
	ct := c.Get(fiber.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != fiber.MIMEApplicationForm {
		return nil, protocol.ErrInvalidRequest.WithDescription("the request body must be application/x-www-form-urlencoded (RFC 6749 §3.2), got Content-Type %q", clip(ct, 64))
	}
	body, err := formBody(c)
	if err != nil {
		return nil, err
	}
	return decodeParams(body, "request body")
}

// parseFormLoose is parseForm without checkParams.
func parseFormLoose(c *fiber.Ctx) (url.Values, error) {
	ct := c.Get(fiber.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != fiber.MIMEApplicationForm {
		return nil, protocol.ErrInvalidRequest.WithDescription("the request body must be application/x-www-form-urlencoded, got Content-Type %q", clip(ct, 64))
	}
	body, err := formBody(c)
	if err != nil {
		return nil, err
	}
	return decodeParams(body, "request body")
}

// formBody reads the body as sent, at most bodyLimit bytes, through
// edge.ReadBody: never inflated (fiber's c.Body() decodes gzip, br and
// deflate without an output limit, so a few hundred bytes could grow into
// gigabytes before client authentication). A Content-Encoding is
// invalid_request with status 415 (RFC 9110 §15.5.16), an oversized body
// 413.
func formBody(c *fiber.Ctx) (string, error) {
	b, err := edge.ReadBody(c, bodyLimit)
	if err != nil {
		var ee *edge.Error
		if errors.As(err, &ee) {
			return "", protocol.ErrInvalidRequest.WithStatus(ee.Status).WithDescription("%s", ee.Description).WithCause(err)
		}
		return "", err
	}
	return string(b), nil
}

// formStatus is the status of a page answering a parseForm error: 400, or
// 413 and 415 for a body too large or compressed.
func formStatus(pe *protocol.Error) int {
	if pe.Status == 0 {
		return fiber.StatusBadRequest
	}
	return pe.Status
}

// parseQuery parses the URL query like parseForm parses a body.
func parseQuery(c *fiber.Ctx) (url.Values, error) {
	return parseParams(string(c.Request().URI().QueryString()), "query string")
}

func parseParams(raw, where string) (url.Values, error) {
	v, err := decodeParams(raw, where)
	if err != nil {
		return nil, err
	}
	if err := checkParams(v); err != nil {
		return nil, err
	}
	return v, nil
}

// decodeParams decodes form data, refusing only bad encoding.
func decodeParams(raw, where string) (url.Values, error) {
	v, err := url.ParseQuery(raw)
	if err != nil {
		return nil, protocol.ErrInvalidRequest.WithDescription("the %s is not valid application/x-www-form-urlencoded data", where)
	}
	return v, nil
}

// checkParams refuses repeated, oversized and non-UTF-8 parameters.
func checkParams(v url.Values) error {
	for k, vals := range v {
		if len(vals) > 1 {
			return protocol.ErrInvalidRequest.WithDescription("parameter %q is repeated; each parameter may appear once (RFC 6749 §3.1)", clip(k, 64))
		}
		if len(vals[0]) > maxParamLen {
			return protocol.ErrInvalidRequest.WithDescription("parameter %q is longer than %d bytes", clip(k, 64), maxParamLen)
		}
		if !utf8.ValidString(vals[0]) || !utf8.ValidString(k) {
			return protocol.ErrInvalidRequest.WithDescription("parameter %q is not valid UTF-8", clip(strings.ToValidUTF8(k, "?"), 64))
		}
	}
	return nil
}

// randomToken returns n random bytes from crypto/rand, base64url encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// safeToken reports whether s looks like one of our random tokens, so that
// a cookie value is checked before it reaches the store.
func safeToken(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// newFormRequest is a POST of an application/x-www-form-urlencoded body.
func newFormRequest(ctx context.Context, uri, body string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uri, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}

// drain reads (a bounded part of) a response body so that the connection
// can be reused.
func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10)) }

// canonicalSegments reports whether every segment of a compact JWS or JWE
// is canonical unpadded base64url (RFC 7515 §2, RFC 4648 §3.5: the unused
// bits of the last character are zero). go-jose decodes leniently, so two
// strings differing only in those bits would verify as the same token;
// refusing the non-canonical one keeps tokens non-malleable.
//
// This belongs in token.Parse; it is here until the token package does it.
func canonicalSegments(raw string) bool {
	for seg := range strings.SplitSeq(raw, ".") {
		if _, err := base64.RawURLEncoding.Strict().DecodeString(seg); err != nil {
			return false
		}
	}
	return true
}
