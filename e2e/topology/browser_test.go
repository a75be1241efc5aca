package topology

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
)

// The user the gateway tests sign in as (configured with its argon2id
// hash in the issuer's users list). Not issuerclient.DemoUser: the demo
// user exists only in the zero-config run, and these tests give bffgate a
// configuration file, whose redis section is what they test.
const (
	userName     = "topology"
	userPassword = "topology-password-0123456789"
	userSubject  = "topology-user-1"
)

// browser is one user's browser against one bffgate process: the
// gateway's and the issuer's cookies in one issuerclient.Jar (a browser
// keeps cookies per host, not per port, and the jar keeps the __Host-
// cookies that Go's cookiejar would drop on plain http).
type browser struct {
	t    testing.TB
	http *http.Client
	jar  issuerclient.Jar
}

func newBrowser(t testing.TB) *browser {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: t, http: &http.Client{
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

// do sends req with cookie (the whole jar when empty) and the gateway's
// anti-CSRF header, and keeps what the answer sets.
func (b *browser) do(req *http.Request, cookie string) (answer, error) {
	if cookie == "" {
		cookie = b.jar.Header()
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
	b.jar.Update(resp.Header)
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
			c := b.jar.HeaderWhere(func(k string) bool { return k == "__Host-bff" || strings.HasPrefix(k, "__Host-bff.") })
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
			f, err := issuerclient.ParseForm(a.body)
			if err != nil {
				return "", err
			}
			target, err := req.URL.Parse(f.Action)
			if err != nil {
				return "", err
			}
			f.Fields.Set("username", userName)
			f.Fields.Set("password", userPassword)
			next, method, form = target.String(), http.MethodPost, f.Fields
		default:
			return "", fmt.Errorf("login through %s stopped at %s %s: %s", gatewayURL, req.Method, req.URL.Path, a)
		}
	}
	return "", fmt.Errorf("login through %s: too many redirects", gatewayURL)
}

// clip shortens s for a failure message.
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
