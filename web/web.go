// Package web renders bffgate's server-side pages: the embedded issuer's
// login form, logout confirmation and logged-out page, the error page shown
// when a redirect back to the client is not allowed (an unknown client or
// an unregistered redirect_uri, RFC 6749 §4.1.2.1), and the gateway's error
// page (a sign-in that cannot finish). Both servers use the same templates
// and stylesheet, so a user moving between them sees one product.
//
// The pages are html/template files embedded in the binary, behind a small
// API (as dex's web package): the issuer passes typed data, the package
// escapes it. The pages use no JavaScript and no external asset: the one
// stylesheet is inlined, and ContentSecurityPolicy returns a policy that
// allows exactly that stylesheet by its hash and nothing else.
//
// # Security
//
// Every value is escaped by html/template for its context. Hidden form
// fields carry what the issuer sealed (securecookie); the package never
// sees a password, code or token. Pages are rendered into a buffer first,
// so a template error never leaves half a page on the wire.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"io/fs"
)

//go:embed templates/*.html templates/*.css
var files embed.FS

// FS returns the embedded templates and stylesheet (read-only).
func FS() fs.FS {
	sub, err := fs.Sub(files, "templates")
	if err != nil { // cannot happen: the directory is embedded
		return files
	}
	return sub
}

// Config configures the pages.
type Config struct {
	// Product is the name shown in page titles; "" means "bffgate".
	Product string
	// Lang is the pages' language (the html lang attribute, BCP 47);
	// "" means "en". The texts themselves are English.
	Lang string
}

// Pages renders the issuer's pages. It is safe for concurrent use.
type Pages struct {
	product string
	lang    string
	css     template.CSS
	csp     string
	login   *template.Template
	errPage *template.Template
	logout  *template.Template
	consent *template.Template
}

// Field is one hidden form field.
type Field struct {
	Name, Value string
}

// Login is the data of the login form.
type Login struct {
	// Action is the URL the form posts to.
	Action string
	// Fields are hidden fields posted back (the sealed authorization
	// request).
	Fields []Field
	// ClientName names the application asking (the client id).
	ClientName string
	// Scopes lists the scopes requested, shown to the user.
	Scopes []string
	// Username pre-fills the username after a failed attempt.
	Username string
	// Error is shown above the form (e.g. "Wrong username or password.").
	Error string
}

// Error is the data of an error page.
type Error struct {
	// Title is the heading, e.g. "Unknown application".
	Title string
	// Message says what went wrong and what to do.
	Message string
	// Mismatch, when set, explains a redirect_uri that is not registered.
	Mismatch *RedirectMismatch
	// RequestID is shown so that a user can quote it to an operator.
	RequestID string
	// Code, when set, is the machine-readable error code shown under the
	// message (the gateway's "error" field).
	Code string
	// Link, when set, is a local URL offered as the way on ("Sign in
	// again"), labelled LinkText.
	Link, LinkText string
}

// RedirectMismatch explains why a redirect_uri was refused.
type RedirectMismatch struct {
	// Requested is the redirect_uri of the request.
	Requested string
	// Registered are the client's registered redirect URIs.
	Registered []string
	// Differences says how Requested differs from the closest registered
	// URI ("the port differs: 8081 requested, 8080 registered").
	Differences []string
}

// Logout is the data of the logout page.
type Logout struct {
	// Confirm asks the user to confirm (a form posting to Action with
	// Fields); otherwise the page says the user is signed out.
	Confirm bool
	Action  string
	Fields  []Field
	// ClientName names the application the user signs out of, if known.
	ClientName string
}

type page struct {
	Lang, Product, PageTitle string
	CSS                      template.CSS
	Data                     any
}

// New parses the embedded templates.
func New(cfg Config) (*Pages, error) {
	if cfg.Product == "" {
		cfg.Product = "bffgate"
	}
	if cfg.Lang == "" {
		cfg.Lang = "en"
	}
	css, err := fs.ReadFile(files, "templates/style.css")
	if err != nil {
		return nil, fmt.Errorf("web: read stylesheet: %w", err)
	}
	sum := sha256.Sum256(css)
	p := &Pages{
		product: cfg.Product,
		lang:    cfg.Lang,
		css:     template.CSS(css), // our own embedded file, not input
		csp: "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
			"'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'",
	}
	layout, err := template.ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("web: parse layout: %w", err)
	}
	for _, t := range []struct {
		dst  **template.Template
		file string
	}{{&p.login, "login.html"}, {&p.errPage, "error.html"}, {&p.logout, "logout.html"}, {&p.consent, "consent.html"}} {
		c, err := layout.Clone()
		if err != nil {
			return nil, fmt.Errorf("web: %s: %w", t.file, err)
		}
		if *t.dst, err = c.ParseFS(files, "templates/"+t.file); err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", t.file, err)
		}
	}
	return p, nil
}

// ContentSecurityPolicy is the Content-Security-Policy header value for
// every page: nothing but the inlined stylesheet loads, no script runs,
// and no site can frame the pages (clickjacking of the login form). It has
// no form-action directive on purpose: browsers apply form-action to the
// redirect that follows a form post, and the login form's post redirects
// to the client.
func (p *Pages) ContentSecurityPolicy() string { return p.csp }

// Login renders the login form.
func (p *Pages) Login(w io.Writer, d Login) error {
	return p.render(w, p.login, "Sign in", d)
}

// Error renders an error page; the caller sets the HTTP status.
func (p *Pages) Error(w io.Writer, d Error) error {
	title := d.Title
	if title == "" {
		title = "Error"
	}
	return p.render(w, p.errPage, title, d)
}

// Consent is the data of the consent page an agent's authorization
// request shows: who asks (an agent, not the user's own application), for
// whom and for what.
type Consent struct {
	// Action is the URL the form posts to, with Fields.
	Action string
	Fields []Field
	// ClientName is the agent's client id; Kind "agent" or "workload".
	ClientName, Kind string
	// Username is the signed-in user the agent would act for.
	Username string
	// Scopes and Audience are what its tokens would carry.
	Scopes, Audience []string
	// ClientID is shown beside ClientName when they differ (a client
	// that named itself); RedirectHost is where the browser returns to
	// (the host a metadata document's client must be shown with).
	ClientID, RedirectHost string
	// Resource names the resource (RFC 8707) the tokens would be for.
	Resource string
	// Unverified warns that the client named itself and no operator
	// vouched for it.
	Unverified bool
}

// Consent renders the consent page.
func (p *Pages) Consent(w io.Writer, d Consent) error {
	return p.render(w, p.consent, "Allow "+d.ClientName+"?", d)
}

// Logout renders the logout confirmation or the signed-out page.
func (p *Pages) Logout(w io.Writer, d Logout) error {
	title := "Signed out"
	if d.Confirm {
		title = "Sign out"
	}
	return p.render(w, p.logout, title, d)
}

func (p *Pages) render(w io.Writer, t *template.Template, title string, data any) error {
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", page{Lang: p.lang, Product: p.product, PageTitle: title, CSS: p.css, Data: data}); err != nil {
		return fmt.Errorf("web: render %s: %w", title, err)
	}
	_, err := buf.WriteTo(w)
	return err
}
