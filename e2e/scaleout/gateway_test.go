package scaleout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
)

// user is a browser of one user: the gateway's and the issuer's cookies
// in one jar (a browser keeps cookies per host, not per port, and every
// process here is on 127.0.0.1).
type user struct {
	t    testing.TB
	http *http.Client
	jar  issuerclient.Jar
}

func newUser(t testing.TB) *user {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &user{t: t, http: &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// answer is a gateway response read in full.
type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) String() string {
	body := a.body
	if len(body) > 300 {
		body = body[:300] + "..."
	}
	return fmt.Sprintf("HTTP %d %s", a.status, body)
}

// jsonError returns the error member of a JSON error body, or "" when the
// body is not JSON with one.
func (a answer) jsonError() string {
	mt, _, _ := mime.ParseMediaType(a.header.Get("Content-Type"))
	var e struct {
		Error string `json:"error"`
	}
	if mt != "application/json" || json.Unmarshal([]byte(a.body), &e) != nil {
		return ""
	}
	return e.Error
}

// do sends req with the jar's cookies (or cookie, when not empty) and,
// for the gateway's API and session endpoints, the anti-CSRF header.
func (u *user) do(req *http.Request, cookie string) (answer, error) {
	if cookie == "" {
		cookie = u.jar.Header()
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	req.Header.Set("X-CSRF", "1")
	resp, err := u.http.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return answer{}, err
	}
	u.jar.Update(resp.Header)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body)}, nil
}

// call sends method to rawURL with the given cookie header ("" for the
// jar's).
func (u *user) call(ctx context.Context, method, rawURL, cookie string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return answer{}, err
	}
	return u.do(req, cookie)
}

// login signs in through the gateway at gatewayURL as a browser does:
// /bff/login, the issuer's form, the callback. It returns the Cookie
// header of the session (the __Host-bff cookie or its chunks).
func (u *user) login(ctx context.Context, gatewayURL string) (string, error) {
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
		a, err := u.do(req, "")
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(req.URL.Path, "/bff/callback") {
			if a.status/100 != 3 {
				return "", fmt.Errorf("the gateway's callback answered %s, want a redirect to the returnUrl", a)
			}
			return u.sessionCookie(), nil
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
			f.Fields.Set("username", issuerclient.DemoUser)
			f.Fields.Set("password", issuerclient.DemoPassword)
			next, method, form = target.String(), http.MethodPost, f.Fields
		default:
			return "", fmt.Errorf("login through %s stopped at %s %s: %s", gatewayURL, req.Method, req.URL.Path, a)
		}
	}
	return "", fmt.Errorf("login through %s: too many redirects", gatewayURL)
}

// sessionCookie is the Cookie header of the gateway's session cookies.
func (u *user) sessionCookie() string {
	return u.jar.HeaderWhere(func(name string) bool {
		return name == "__Host-bff" || strings.HasPrefix(name, "__Host-bff.")
	})
}

func (u *user) mustLogin(gatewayURL string) string {
	u.t.Helper()
	c, err := u.login(context.Background(), gatewayURL)
	if err != nil {
		u.t.Fatal(err)
	}
	if c == "" {
		u.t.Fatalf("login through %s set no __Host-bff cookie", gatewayURL)
	}
	return c
}

// whoami calls the demo API through the gateway at gatewayURL.
func (u *user) whoami(ctx context.Context, gatewayURL, cookie string) (answer, error) {
	return u.call(ctx, http.MethodGet, gatewayURL+"/api/whoami", cookie)
}
