package bff

import (
	"bytes"
	"crypto/subtle"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// csrfGuard enforces the anti-CSRF rules on API routes and gateway
// mutations.
//
// The custom header is the main defence (Duende BFF's X-CSRF: 1): an HTML
// form or a plain link cannot send it, and a cross-origin fetch can only
// send it after a CORS preflight that the gateway never approves. On top,
// requests the browser itself marks as cross-site are refused: Fetch
// Metadata's Sec-Fetch-Site: cross-site, or an Origin header that is not
// the public origin or one of AllowedOrigins. Requests without these
// headers (older browsers, curl) fall back on the custom header alone.
type csrfGuard struct {
	header, value string
	origins       map[string]bool
	reject        func(c *fiber.Ctx, reason string) error
}

// check returns "" when the request passes, or the reason it does not.
func (g *csrfGuard) check(c *fiber.Ctx) string {
	// The headers are read as fasthttp's bytes, not through c.Get, whose
	// copy (the edge's Immutable) is an allocation per header on every
	// proxied call; nothing here outlives the request.
	h := &c.Request().Header
	if site := h.Peek("Sec-Fetch-Site"); bytes.EqualFold(site, crossSite) {
		return "cross_site"
	}
	if origin := h.Peek(fiber.HeaderOrigin); len(origin) > 0 {
		norm, err := normalizeOrigin(string(origin))
		if err != nil || !g.origins[norm] {
			return "origin"
		}
	}
	got := h.Peek(g.header)
	if len(got) == 0 {
		return "header_missing"
	}
	if subtle.ConstantTimeCompare(got, []byte(g.value)) != 1 {
		return "header_value"
	}
	return ""
}

var crossSite = []byte("cross-site")

// checkUpgrade is check for a WebSocket handshake, which a browser sends
// with its cookies but without any header a page could add (RFC 6455
// §4.1), so the custom header cannot be asked for. The Origin, which
// every browser sends on a handshake, decides instead: it must be the
// public origin or one of AllowedOrigins, and a handshake without one is
// refused (Cross-Site WebSocket Hijacking: SameSite=Lax cookies still
// ride along from a page of the same site on another port).
func (g *csrfGuard) checkUpgrade(c *fiber.Ctx) string {
	if site := c.Get("Sec-Fetch-Site"); strings.EqualFold(site, "cross-site") {
		return "cross_site"
	}
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		return "origin_missing"
	}
	if norm, err := normalizeOrigin(origin); err != nil || !g.origins[norm] {
		return "origin"
	}
	return ""
}

// handler is the middleware form of check.
func (g *csrfGuard) handler(c *fiber.Ctx) error {
	if reason := g.check(c); reason != "" {
		return g.reject(c, reason)
	}
	return c.Next()
}

// csrfError is the 403 answered for reason.
func csrfError(header, value, reason string) *Error {
	switch reason {
	case "cross_site", "origin":
		return newError(fiber.StatusForbidden, "cross_site_request",
			"the browser marked this request as coming from another site; call the gateway from its own origin")
	case "origin_missing":
		return newError(fiber.StatusForbidden, "origin_missing",
			"a WebSocket upgrade must carry the Origin header of the gateway's own origin or one of gateway.allowed_origins (browsers send it)")
	case "header_value":
		return newError(fiber.StatusForbidden, "csrf_header_invalid",
			"the "+header+" header must be "+value)
	default:
		return newError(fiber.StatusForbidden, "csrf_header_missing",
			"send the anti-CSRF header "+header+": "+value+" with every API call and gateway request")
	}
}
