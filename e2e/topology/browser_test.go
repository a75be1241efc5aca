package topology

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// The user the gateway tests sign in as (configured with its argon2id
// hash in the issuer's users list).
const (
	userName     = "topology"
	userPassword = "topology-password-0123456789"
	userSubject  = "topology-user-1"
)

// browser is one user's browser against one bffgate process: the
// gateway's and the issuer's cookies in one jar (a browser keeps cookies
// per host, not per port). Go's cookiejar drops Secure cookies on plain
// http, and the issuer's and gateway's cookies are __Host- (Secure), so the
// jar is kept by hand, as a browser on http://127.0.0.1 keeps it.
type browser struct {
	t    testing.TB
	http *http.Client

	mu  sync.Mutex
	jar map[string]string
}

func newBrowser(t testing.TB) *browser {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: t, jar: map[string]string{}, http: &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// answer is a response read in full.
type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) String() string { return fmt.Sprintf("HTTP %d %s", a.status, clip(a.body, 300)) }

func (b *browser) keep(h http.Header) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.MaxAge < 0 || c.Value == "" || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			delete(b.jar, c.Name)
			continue
		}
		b.jar[c.Name] = c.Value
	}
}

// cookies is the Cookie header of the jar's cookies whose name passes keep.
func (b *browser) cookies(keep func(name string) bool) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var parts []string
	for k, v := range b.jar {
		if keep(k) {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, "; ")
}

// do sends req with cookie (the whole jar when empty) and the gateway's
// anti-CSRF header, and keeps what the answer sets.
func (b *browser) do(req *http.Request, cookie string) (answer, error) {
	if cookie == "" {
		cookie = b.cookies(func(string) bool { return true })
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	req.Header.Set("X-CSRF", "1")
	resp, err := b.http.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return answer{}, err
	}
	b.keep(resp.Header)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body)}, nil
}

// get fetches rawURL with the session cookie given (the jar when empty).
func (b *browser) get(ctx context.Context, rawURL, cookie string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return answer{}, err
	}
	return b.do(req, cookie)
}

// login signs in through the gateway at gatewayURL as a browser does:
// /bff/login, the issuer's form, the gateway's callback. It returns the
// Cookie header of the gateway's session (__Host-bff and any chunks).
func (b *browser) login(ctx context.Context, gatewayURL string) (string, error) {
	next := gatewayURL + "/bff/login?returnUrl=%2F"
	method, form := http.MethodGet, url.Values(nil)
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
		a, err := b.do(req, "")
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(req.URL.Path, "/bff/callback") {
			if a.status/100 != 3 {
				return "", fmt.Errorf("the gateway's callback answered %s, want a redirect to the returnUrl", a)
			}
			c := b.cookies(func(k string) bool { return k == "__Host-bff" || strings.HasPrefix(k, "__Host-bff.") })
			if c == "" {
				return "", fmt.Errorf("the gateway's callback set no __Host-bff cookie")
			}
			return c, nil
		}
		switch {
		case a.status/100 == 3:
			loc, err := req.URL.Parse(a.header.Get("Location"))
			if err != nil {
				return "", err
			}
			next, method, form = loc.String(), http.MethodGet, nil
		case a.status == http.StatusOK && strings.Contains(a.body, `name="password"`):
			action, fields, err := parseForm(a.body)
			if err != nil {
				return "", err
			}
			target, err := req.URL.Parse(action)
			if err != nil {
				return "", err
			}
			fields.Set("username", userName)
			fields.Set("password", userPassword)
			next, method, form = target.String(), http.MethodPost, fields
		default:
			return "", fmt.Errorf("login through %s stopped at %s %s: %s", gatewayURL, req.Method, req.URL.Path, a)
		}
	}
	return "", fmt.Errorf("login through %s: too many redirects", gatewayURL)
}

// parseForm returns the action and the fields of the first form of a page.
func parseForm(page string) (string, url.Values, error) {
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		return "", nil, err
	}
	var (
		action string
		found  bool
		fields = url.Values{}
	)
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			attr := func(k string) string {
				for _, a := range n.Attr {
					if a.Key == k {
						return a.Val
					}
				}
				return ""
			}
			switch {
			case n.Data == "form" && !found:
				found, action = true, attr("action")
			case n.Data == "input" && found && attr("name") != "":
				fields.Set(attr("name"), attr("value"))
			}
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch)
		}
	}
	walk(doc)
	if !found {
		return "", nil, fmt.Errorf("no form in the page:\n%s", clip(page, 1000))
	}
	return action, fields, nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// whoamiSubject returns the subject of the demo API's /api/whoami
// answer ("" when there is none).
func whoamiSubject(body string) string {
	var v struct {
		Subject string `json:"subject"`
	}
	_ = json.Unmarshal([]byte(body), &v)
	return v.Subject
}

// userSub returns the sub claim of the gateway's /bff/user answer, a
// list of {type, value} claims ("" when there is none).
func userSub(body string) string {
	var claims []struct {
		Type  string `json:"type"`
		Value any    `json:"value"`
	}
	_ = json.Unmarshal([]byte(body), &claims)
	for _, c := range claims {
		if s, ok := c.Value.(string); ok && c.Type == "sub" {
			return s
		}
	}
	return ""
}
