package bench

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Browser logs in through an authorization-code flow without a browser:
// it follows redirects itself and keeps cookies per origin (host:port).
// Browsers and Go's cookiejar keep them per host, so on 127.0.0.1 the
// gateway would get the issuer's cookies too; per origin, CookieHeader
// gives the one process's cookies alone, which is what wrk then sends. A
// Browser is used by one goroutine at a time.
type Browser struct {
	client *http.Client
	jar    map[string]map[string]string // origin host:port -> name -> value
}

// NewBrowser returns a Browser sending its requests with tr (nil means
// http.DefaultTransport); several Browsers may share one transport.
func NewBrowser(tr http.RoundTripper) *Browser {
	return &Browser{
		client: &http.Client{
			Transport:     tr,
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		jar: map[string]map[string]string{},
	}
}

// Page is the last response of a followed chain.
type Page struct {
	URL    *url.URL
	Status int
	Body   []byte
}

const maxHops = 12

// Follow sends one request and follows the redirects that answer it, as
// a browser would (303, and 302 after a POST, continue as GET).
func (b *Browser) Follow(method, rawURL string, form url.Values) (Page, error) {
	return b.follow(method, rawURL, form, "")
}

// follow is Follow, stopping at a redirect whose target starts with stop
// (when stop is not empty): that page's URL is the redirect's target and
// its status the redirect's.
func (b *Browser) follow(method, rawURL string, form url.Values, stop string) (Page, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Page{}, err
	}
	for hop := 0; hop < maxHops; hop++ {
		resp, body, err := b.do(method, u, form)
		if err != nil {
			return Page{}, err
		}
		loc := resp.Header.Get("Location")
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			if loc == "" {
				return Page{}, fmt.Errorf("%s %s: %d without a Location", method, u.Redacted(), resp.StatusCode)
			}
			next, err := u.Parse(loc)
			if err != nil {
				return Page{}, fmt.Errorf("%s %s: bad Location: %w", method, u.Redacted(), err)
			}
			if stop != "" && strings.HasPrefix(next.String(), stop) {
				return Page{URL: next, Status: resp.StatusCode}, nil
			}
			if resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusPermanentRedirect {
				method, form = http.MethodGet, nil
			}
			u = next
			continue
		}
		return Page{URL: u, Status: resp.StatusCode, Body: body}, nil
	}
	return Page{}, fmt.Errorf("%s: more than %d redirects", rawURL, maxHops)
}

func (b *Browser) do(method string, u *url.URL, form url.Values) (*http.Response, []byte, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u.String(), body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "text/html,application/json;q=0.9")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", u.Scheme+"://"+u.Host)
	}
	if c := b.CookieHeader(u.Host); c != "" {
		req.Header.Set("Cookie", c)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the body: %w", method, u.Path, err)
	}
	b.store(u.Host, resp.Cookies())
	return resp, data, nil
}

// store keeps the cookies a response set, and forgets those it cleared.
func (b *Browser) store(origin string, cookies []*http.Cookie) {
	m := b.jar[origin]
	if m == nil {
		m = map[string]string{}
		b.jar[origin] = m
	}
	now := time.Now()
	for _, c := range cookies {
		if c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(now)) {
			delete(m, c.Name)
			continue
		}
		m[c.Name] = c.Value
	}
}

// CookieHeader returns the Cookie header a browser would send to origin
// (host:port), cookies sorted by name.
func (b *Browser) CookieHeader(origin string) string {
	m := b.jar[origin]
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var s strings.Builder
	for i, n := range names {
		if i > 0 {
			s.WriteString("; ")
		}
		s.WriteString(n + "=" + m[n])
	}
	return s.String()
}

// Login starts the flow at startURL (the gateway's login URL, or any
// protected URL of oauth2-proxy), fills in the issuer's login form and
// follows the redirects back to the application. It returns the last
// page, on the application's origin.
func (b *Browser) Login(startURL, username, password string) (Page, error) {
	form, err := b.Follow(http.MethodGet, startURL, nil)
	if err != nil {
		return Page{}, fmt.Errorf("login: opening %s: %w", startURL, err)
	}
	if form.Status != http.StatusOK {
		return Page{}, fmt.Errorf("login: %s led to %s with status %d, want the issuer's login form: %.300s", startURL, form.URL.Redacted(), form.Status, form.Body)
	}
	action, fields, err := ParseLoginForm(form.Body, form.URL)
	if err != nil {
		return Page{}, fmt.Errorf("login: %s: %w", form.URL.Redacted(), err)
	}
	fields.Set("username", username)
	fields.Set("password", password)
	last, err := b.Follow(http.MethodPost, action.String(), fields)
	if err != nil {
		return Page{}, fmt.Errorf("login: posting the form: %w", err)
	}
	if last.URL.Host == action.Host && bytes.Contains(last.Body, []byte(`id="login-error"`)) {
		return Page{}, fmt.Errorf("login: the issuer refused the credentials of %q: %s", username, loginError(last.Body))
	}
	return last, nil
}

// Authorize sends the browser to authURL (an authorization request of a
// client whose redirect URI is redirectURI), signs in with username and
// password when the issuer shows its login form, and returns the redirect
// to redirectURI, which it does not follow (nothing need listen there):
// the code, or the error, is in its query.
func (b *Browser) Authorize(authURL, redirectURI, username, password string) (*url.URL, error) {
	p, err := b.follow(http.MethodGet, authURL, nil, redirectURI)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	if strings.HasPrefix(p.URL.String(), redirectURI) {
		return p.URL, nil
	}
	if p.Status != http.StatusOK {
		return nil, fmt.Errorf("authorize: %s answered %d, want the login form or a redirect to %s: %.300s", p.URL.Redacted(), p.Status, redirectURI, p.Body)
	}
	action, fields, err := ParseLoginForm(p.Body, p.URL)
	if err != nil {
		return nil, fmt.Errorf("authorize: %s: %w", p.URL.Redacted(), err)
	}
	fields.Set("username", username)
	fields.Set("password", password)
	last, err := b.follow(http.MethodPost, action.String(), fields, redirectURI)
	if err != nil {
		return nil, fmt.Errorf("authorize: posting the form: %w", err)
	}
	if !strings.HasPrefix(last.URL.String(), redirectURI) {
		return nil, fmt.Errorf("authorize: after the login form the issuer answered %d at %s, want a redirect to %s: %s", last.Status, last.URL.Redacted(), redirectURI, loginError(last.Body))
	}
	return last.URL, nil
}

var (
	formRe   = regexp.MustCompile(`<form\b[^>]*\baction="([^"]*)"`)
	hiddenRe = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
	errorRe  = regexp.MustCompile(`id="login-error">([^<]*)<`)
)

// ParseLoginForm reads the issuer's login page (web/templates/login.html):
// the form's action, resolved against the page's URL, and its hidden
// fields (the sealed authorization request and the CSRF token).
func ParseLoginForm(page []byte, base *url.URL) (*url.URL, url.Values, error) {
	m := formRe.FindSubmatch(page)
	if m == nil {
		return nil, nil, errors.New("the page has no <form action=...>: not the issuer's login page")
	}
	action, err := base.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		return nil, nil, fmt.Errorf("form action %q: %w", m[1], err)
	}
	fields := url.Values{}
	for _, h := range hiddenRe.FindAllSubmatch(page, -1) {
		fields.Add(html.UnescapeString(string(h[1])), html.UnescapeString(string(h[2])))
	}
	if len(fields) == 0 {
		return nil, nil, errors.New("the login form has no hidden fields (request, csrf_token)")
	}
	return action, fields, nil
}

func loginError(page []byte) string {
	if m := errorRe.FindSubmatch(page); m != nil {
		return html.UnescapeString(string(m[1]))
	}
	return "(no message)"
}
