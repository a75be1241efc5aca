package bff

import (
	"errors"
	"fmt"

	"github.com/gofiber/fiber/v2"
)

var (
	// ErrMissingPKCE means the provider's discovery document does not list
	// S256 in code_challenge_methods_supported and the configuration does
	// not set Provider.InsecureAllowMissingPKCE.
	ErrMissingPKCE = errors.New("bff: provider does not advertise PKCE S256 (code_challenge_methods_supported); set Provider.InsecureAllowMissingPKCE only if you know it enforces PKCE anyway")
	// ErrInvalidReturnURL means a login's returnUrl is not a local path.
	ErrInvalidReturnURL = errors.New("bff: invalid returnUrl")
)

// returnURLError says why a returnUrl was refused; it matches
// ErrInvalidReturnURL.
type returnURLError struct{ reason string }

func errReturnURL(reason string) error { return &returnURLError{reason: reason} }

func (e *returnURLError) Error() string {
	return fmt.Sprintf("the returnUrl was refused because %s; it must be a local path on this site, such as /orders", e.reason)
}

func (e *returnURLError) Is(target error) bool { return target == ErrInvalidReturnURL }

// Error is a gateway error answered as JSON
// {"error": Code, "error_description": Description} with Status. The
// description says what was wrong and what to do; it never holds a token,
// a code or a cookie value.
type Error struct {
	Status      int
	Code        string
	Description string
	// LoginURL is added as "login_url" on 401s so the SPA knows where to
	// send the user.
	LoginURL string
	// Route is added as "route" when the error is about one API route
	// (a refused token exchange).
	Route string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func (e *Error) body() fiber.Map {
	m := fiber.Map{"error": e.Code}
	if e.Description != "" {
		m["error_description"] = e.Description
	}
	if e.LoginURL != "" {
		m["login_url"] = e.LoginURL
	}
	if e.Route != "" {
		m["route"] = e.Route
	}
	return m
}

func newError(status int, code, desc string) *Error {
	return &Error{Status: status, Code: code, Description: desc}
}

// writeError writes e as JSON with Cache-Control: no-store.
func writeError(c *fiber.Ctx, e *Error) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(e.Status).JSON(e.body())
}

// errorHandler is the fiber app's error handler: every error leaves as
// JSON, and only fiber's own errors (404, 405, 413...) keep their status;
// anything else is a 500 with a generic description (the cause is logged
// by obs).
func errorHandler(c *fiber.Ctx, err error) error {
	var ge *Error
	if errors.As(err, &ge) {
		return writeError(c, ge)
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code := "server_error"
		switch {
		case fe.Code == fiber.StatusNotFound:
			code = "not_found"
		case fe.Code == fiber.StatusMethodNotAllowed:
			code = "method_not_allowed"
		case fe.Code == fiber.StatusRequestEntityTooLarge:
			code = "request_too_large"
		case fe.Code == fiber.StatusRequestHeaderFieldsTooLarge:
			code = "headers_too_large"
		case fe.Code == fiber.StatusUnsupportedMediaType:
			code = "unsupported_media_type"
		case fe.Code == fiber.StatusRequestTimeout:
			code = "request_timeout"
		case fe.Code < 500:
			code = "invalid_request"
		}
		return writeError(c, newError(fe.Code, code, fe.Message))
	}
	return writeError(c, newError(fiber.StatusInternalServerError, "server_error", "the gateway failed to answer; the error is in its log"))
}
