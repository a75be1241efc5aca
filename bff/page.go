package bff

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/web"
)

// wantsJSON reports whether the request asks for JSON rather than a page
// (an Accept header preferring application/json, or a fetch).
func wantsJSON(c *fiber.Ctx) bool {
	acc := c.Get(fiber.HeaderAccept)
	if strings.Contains(acc, "json") && !strings.Contains(acc, "text/html") {
		return true
	}
	return c.Accepts(fiber.MIMETextHTML, fiber.MIMEApplicationJSON) == fiber.MIMEApplicationJSON && acc != "" && acc != "*/*"
}

// failPage answers e as JSON when the request asks for JSON, and as the
// error page otherwise, with a link to link (the login, usually). The page
// is the embedded issuer's error page (package web): one look for both
// servers, the same Content-Security-Policy (no script, the one inlined
// stylesheet by hash, no framing).
func (g *Gateway) failPage(c *fiber.Ctx, e *Error, title, link, linkText string) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	if wantsJSON(c) {
		m := e.body()
		if link != "" {
			m["login_url"] = link
		}
		return c.Status(e.Status).JSON(m)
	}
	var buf bytes.Buffer
	if err := g.pages.Error(&buf, web.Error{Title: title, Message: sentence(e.Description), Code: e.Code,
		Link: link, LinkText: linkText, RequestID: obs.RequestID(c)}); err != nil {
		return writeError(c, e)
	}
	c.Set("Content-Security-Policy", g.pages.ContentSecurityPolicy())
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(e.Status).Send(buf.Bytes())
}

// sentence makes a description read as a sentence on a page: a capital
// first letter and a full stop. The JSON error_description keeps the text
// as written.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, "?") && !strings.HasSuffix(s, "!") {
		s += "."
	}
	return s
}
