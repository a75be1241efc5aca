package issuerclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Answer is one response to a Browser, read in full.
type Answer struct {
	Status int
	Header http.Header
	// Body is the response body, up to 1 MiB.
	Body string
}

// String describes the answer for a failure message: the status, and the
// body clipped, or for an HTML page its visible text only, because the
// issuer's login form keeps its CSRF token and sealed request in
// attributes. The gateway's JSON answers (its errors, /bff/user's claims,
// the API's) carry no token and are shown as they are.
func (a Answer) String() string {
	if mt, _, _ := mime.ParseMediaType(a.Header.Get("Content-Type")); mt == "text/html" {
		return fmt.Sprintf("HTTP %d page text: %s", a.Status, pageText(a.Body, 300))
	}
	return fmt.Sprintf("HTTP %d %s", a.Status, clip(a.Body, 300))
}

// JSONError returns the error member of a JSON error body (the gateway's
// {"error": ...} answers), or "" when the body is not JSON with one.
func (a Answer) JSONError() string {
	mt, _, _ := mime.ParseMediaType(a.Header.Get("Content-Type"))
	var e struct {
		Error string `json:"error"`
	}
	if mt != "application/json" || json.Unmarshal([]byte(a.Body), &e) != nil {
		return ""
	}
	return e.Error
}

// Browser is one user's browser against bffgate's gateway and issuer,
// without a real browser: it follows no redirect by itself, keeps the
// gateway's and the issuer's cookies in one Jar (a browser keeps cookies
// per host, not per port, and the Jar keeps the __Host- cookies that Go's
// cookiejar drops on plain http), and sends the gateway's anti-CSRF
// header (X-CSRF: 1) on every request, as the SPA's fetch calls do.
//
// Its methods may be called from several goroutines at once; a login
// running on one while another sends requests mixes their cookies, as
// two tabs of one browser would.
type Browser struct {
	http *http.Client
	jar  Jar
}

// NewBrowser returns a browser with an empty jar. Its idle connections
// are closed when the test ends.
func NewBrowser(t testing.TB) *Browser {
	// 16 idle connections: the scale-out tests send bursts of calls from
	// several goroutines through one browser.
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &Browser{http: &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		// Redirects are followed by hand (GatewayLogin), or not at all: a
		// test asserts the redirect itself, such as logout's.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Do sends req with cookie as its Cookie header (the whole jar's when
// cookie is empty) and the gateway's anti-CSRF header, keeps the cookies
// the answer sets, and returns the answer read in full. A transport error
// names the request's URL with its query values removed (a callback's
// code is among them).
func (b *Browser) Do(req *http.Request, cookie string) (Answer, error) {
	if cookie == "" {
		cookie = b.jar.Header()
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	req.Header.Set("X-CSRF", "1")
	resp, err := b.http.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			redacted := *ue
			redacted.URL = redactURL(ue.URL)
			return Answer{}, &redacted
		}
		return Answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Answer{}, err
	}
	b.jar.Update(resp.Header)
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}, nil
}

// Call sends a request without a body to rawURL with Do: cookie is the
// Cookie header ("" for the jar's).
func (b *Browser) Call(ctx context.Context, method, rawURL, cookie string) (Answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return Answer{}, err
	}
	return b.Do(req, cookie)
}

// Get is Call with GET.
func (b *Browser) Get(ctx context.Context, rawURL, cookie string) (Answer, error) {
	return b.Call(ctx, http.MethodGet, rawURL, cookie)
}

// SessionCookie is the Cookie header of the gateway's session cookies in
// the jar: __Host-bff, or the __Host-bff.N chunks of a session too large
// for one cookie ("" when there is none).
func (b *Browser) SessionCookie() string {
	return b.jar.HeaderWhere(func(name string) bool {
		return name == "__Host-bff" || strings.HasPrefix(name, "__Host-bff.")
	})
}

// GatewayLogin signs in through the gateway at gatewayURL as a browser
// does: /bff/login?returnUrl=/, the redirects to the issuer, its login
// form posted once with username and password, and the redirect back to
// the gateway's /bff/callback. It returns the Cookie header of the
// session the callback set (SessionCookie); it fails unless the callback
// answers with a redirect and sets a session cookie.
//
// A refused login (a wrong password: the issuer shows its form again with
// 401) is an error with the page's visible text, never the form's fields.
func (b *Browser) GatewayLogin(ctx context.Context, gatewayURL, username, password string) (cookie string, err error) {
	next := gatewayURL + "/bff/login?returnUrl=%2F"
	method, form := http.MethodGet, url.Values(nil)
	posted := false
	// Ten steps are ample: the gateway's login, the issuer's authorize,
	// the form post and the callback, with a redirect or two more where a
	// deployment adds them.
	for range 10 {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, method, next, body)
		if err != nil {
			return "", err
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		a, err := b.Do(req, "")
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(req.URL.Path, "/bff/callback") {
			if a.Status/100 != 3 {
				return "", fmt.Errorf("the gateway's callback answered %s, want a redirect to the returnUrl", a)
			}
			c := b.SessionCookie()
			if c == "" {
				return "", fmt.Errorf("the gateway's callback at %s set no __Host-bff cookie", gatewayURL)
			}
			return c, nil
		}
		switch {
		case a.Status/100 == 3:
			if a.Header.Get("Location") == "" {
				// An empty Location resolves to the request's own URL: fail
				// here rather than loop to "too many redirects".
				return "", fmt.Errorf("login through %s: %s %s answered HTTP %d without a Location", gatewayURL, req.Method, req.URL.Path, a.Status)
			}
			loc, err := req.URL.Parse(a.Header.Get("Location"))
			if err != nil {
				// url.Parse's error quotes the URL, and a Location may
				// carry a code.
				return "", fmt.Errorf("login through %s: %s %s answered HTTP %d with an unparsable Location", gatewayURL, req.Method, req.URL.Path, a.Status)
			}
			next, method, form = loc.String(), http.MethodGet, nil
		case a.Status == http.StatusOK && strings.Contains(a.Body, `name="password"`):
			if posted {
				// Posting the same credentials again would only count
				// another failure against the user in the issuer's login
				// throttle.
				return "", fmt.Errorf("login through %s: the issuer showed its login form again after the credentials were posted: %s", gatewayURL, a)
			}
			f, err := ParseForm(a.Body)
			if err != nil {
				return "", err
			}
			target, err := req.URL.Parse(f.Action)
			if err != nil {
				return "", fmt.Errorf("login form action %q: %w", f.Action, err)
			}
			f.Fields.Set("username", username)
			f.Fields.Set("password", password)
			next, method, form = target.String(), http.MethodPost, f.Fields
			posted = true
		default:
			return "", fmt.Errorf("login through %s stopped at %s %s: %s", gatewayURL, req.Method, req.URL.Path, a)
		}
	}
	return "", fmt.Errorf("login through %s: too many redirects", gatewayURL)
}
