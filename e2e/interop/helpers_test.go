package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
)

// testTimeout bounds each test's peer calls.
const testTimeout = 2 * time.Minute

// testContext is a context for peer calls that ends with the test (or
// after testTimeout).
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// agent is a plain-HTTP user agent with its own cookie jar. It never
// follows redirects by itself: the tests walk each hop so they can stop
// where a redirect leaves the server under test. Go's cookie jar, like
// browsers, sends Secure (__Host-) cookies to loopback over http.
type agent struct {
	t   *testing.T
	c   *http.Client
	jar *cookiejar.Jar
}

func newAgent(t *testing.T) *agent {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &agent{t: t, jar: jar, c: &http.Client{
		Jar:       jar,
		Timeout:   20 * time.Second,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// response is an HTTP response read in full.
type response struct {
	Status int
	Header http.Header
	Body   []byte
	URL    *url.URL
}

// Location resolves the Location header against the request URL.
func (r response) Location() *url.URL {
	loc := r.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := r.URL.Parse(loc)
	if err != nil {
		return nil
	}
	return u
}

// JSON decodes the body into v and says what it was when it is not JSON.
func (r response) JSON(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("%s answered %d with a body that is not JSON (%v): %.500s", r.URL.Redacted(), r.Status, err, r.Body)
	}
	return nil
}

// do sends one request; header may be nil.
func (a *agent) do(ctx context.Context, method, rawURL string, body io.Reader, header http.Header) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		return response{}, err
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read body: %w", method, req.URL.Redacted(), err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b, URL: req.URL}, nil
}

// get is do GET that fails the test on a transport error.
func (a *agent) get(ctx context.Context, rawURL string, header http.Header) response {
	a.t.Helper()
	r, err := a.do(ctx, http.MethodGet, rawURL, nil, header)
	if err != nil {
		a.t.Fatalf("GET %s: %v", rawURL, err)
	}
	return r
}

// postForm posts an application/x-www-form-urlencoded body.
func (a *agent) postForm(ctx context.Context, rawURL string, form url.Values, header http.Header) (response, error) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	return a.do(ctx, http.MethodPost, rawURL, strings.NewReader(form.Encode()), h)
}

// issuerSignIn opens authURL (an authorization request to bffgate's
// issuer) and signs in at the issuer's HTML login form with username and
// password when the form is shown (the issuer's SSO cookie in the agent's
// jar skips it). It follows redirects within the issuer and returns the
// redirect that leaves it: the client's redirect_uri with code, state and
// iss (or an error).
func (a *agent) issuerSignIn(ctx context.Context, authURL, username, password string) (*url.URL, error) {
	start, err := url.Parse(authURL)
	if err != nil {
		return nil, err
	}
	method, target := http.MethodGet, authURL
	var form url.Values
	for range 10 {
		var r response
		if method == http.MethodGet {
			r, err = a.do(ctx, method, target, nil, nil)
		} else {
			r, err = a.postForm(ctx, target, form, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("issuer sign-in: %s %s: %w", method, target, err)
		}
		switch {
		case r.Status/100 == 3:
			loc := r.Location()
			if loc == nil {
				return nil, fmt.Errorf("issuer sign-in: %d from %s without a usable Location", r.Status, r.URL.Path)
			}
			if loc.Host != start.Host {
				return loc, nil
			}
			method, target = http.MethodGet, loc.String()
		case r.Status == http.StatusOK && strings.Contains(string(r.Body), `name="password"`):
			f, err := issuerclient.ParseForm(string(r.Body))
			if err != nil {
				return nil, fmt.Errorf("issuer sign-in: login page at %s: %w", r.URL.Path, err)
			}
			if f.Method != http.MethodPost {
				return nil, fmt.Errorf("issuer sign-in: the login form's method is %q, want POST", f.Method)
			}
			if f.Fields.Get("csrf_token") == "" {
				return nil, fmt.Errorf("issuer sign-in: the login form carries no csrf_token field")
			}
			action, err := r.URL.Parse(f.Action)
			if err != nil {
				return nil, fmt.Errorf("issuer sign-in: form action %q: %w", f.Action, err)
			}
			form = f.Fields
			form.Set("username", username)
			form.Set("password", password)
			method, target = http.MethodPost, action.String()
		default:
			return nil, fmt.Errorf("issuer sign-in: %s %s answered %d:\n%.1500s", method, r.URL.Path, r.Status, r.Body)
		}
	}
	return nil, errors.New("issuer sign-in: more than 10 steps without leaving the issuer")
}

// eventually polls cond every 20 ms until it holds or limit passes, and
// reports whether it held. It waits for another process to act (a peer
// delivering a logout token), never for a token to expire.
func eventually(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// claimString returns m[k] when it is a string.
func claimString(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// audienceOf returns the aud claim as a list (a string or an array).
func audienceOf(m map[string]any) []string {
	switch v := m["aud"].(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// clip shortens s for a failure message (tokens never go into one whole).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
