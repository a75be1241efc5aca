package bff

import (
	"bytes"
	"html/template"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
)

// pageCSP allows the page's inline style only; no script, no frame.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// errorPage is the page a browser sees when a login cannot finish: what
// went wrong, what to do, and a link to start again. html/template escapes
// every value.
var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}code{background:#f3f3f3;padding:0 .2rem}a.button{display:inline-block;margin-top:1rem;padding:.5rem 1rem;background:#2457c5;color:#fff;border-radius:4px;text-decoration:none}</style>
</head><body>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{if .Code}}<p>Error code: <code>{{.Code}}</code></p>{{end}}
{{if .Link}}<p><a class="button" href="{{.Link}}">{{.LinkText}}</a></p>{{end}}
{{if .RequestID}}<p><small>Request id: <code>{{.RequestID}}</code> (quote it to the site's operator)</small></p>{{end}}
</body></html>
`))

type pageData struct {
	Title, Message, Code, Link, LinkText, RequestID string
}

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
// error page otherwise, with a link to link (the login, usually).
func failPage(c *fiber.Ctx, e *Error, title, link, linkText string) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	if wantsJSON(c) {
		m := e.body()
		if link != "" {
			m["login_url"] = link
		}
		return c.Status(e.Status).JSON(m)
	}
	var buf bytes.Buffer
	if err := errorPage.Execute(&buf, pageData{Title: title, Message: e.Description, Code: e.Code,
		Link: link, LinkText: linkText, RequestID: obs.RequestID(c)}); err != nil {
		return writeError(c, e)
	}
	c.Set("Content-Security-Policy", pageCSP)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(e.Status).Send(buf.Bytes())
}
