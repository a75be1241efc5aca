package scaleout

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/oauth2"
)

// The confidential client the tests register at the issuer through
// BFFGATE_ISSUER_CLIENTS, and the zero-config demo user they sign in as.
const (
	clientID     = "e2e-scaleout"
	clientSecret = "e2e-scaleout-secret-0123456789abcdef"
	redirectURI  = "https://client.e2e.test/callback"
	userName     = "demo"
	userPassword = "demo"
)

// clientEnv registers the test client (a YAML/JSON list in the variable).
func clientEnv() string {
	b, err := json.Marshal([]map[string]any{{
		"id":            clientID,
		"secret":        clientSecret,
		"redirect_uris": []string{redirectURI},
		"grant_types":   []string{"authorization_code", "refresh_token"},
	}})
	if err != nil {
		panic(err)
	}
	return "BFFGATE_ISSUER_CLIENTS=" + string(b)
}

// tokens is a token response (RFC 6749 §5.1).
type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
}

// reply is one answer of the issuer's back-channel endpoints.
type reply struct {
	status int
	body   []byte
	// code is the RFC 6749 §5.2 error code of an error answer.
	code string
}

func (r reply) String() string {
	return fmt.Sprintf("HTTP %d %s", r.status, clip(string(r.body), 300))
}

// jar keeps the cookies one host sets. Go's cookiejar drops Secure
// cookies on plain http, and every issuer cookie is __Host- (Secure), so
// the tests keep them by hand, as a browser on http://127.0.0.1 does.
type jar struct {
	mu sync.Mutex
	m  map[string]string
}

func (j *jar) update(h http.Header) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.m == nil {
		j.m = map[string]string{}
	}
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.MaxAge < 0 || c.Value == "" || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			delete(j.m, c.Name)
			continue
		}
		j.m[c.Name] = c.Value
	}
}

func (j *jar) header() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var parts []string
	for k, v := range j.m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, "; ")
}

// client talks to one issuer process as the test client, and as the
// browser of one user (its SSO cookie), over real HTTP.
type client struct {
	t    testing.TB
	base string // the issuer's listen URL
	http *http.Client
	jar  jar
}

func newClient(t testing.TB, base string) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: base, http: &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		// Redirects are followed by hand: the last one leaves the issuer
		// for the client's redirect URI, which only carries the code.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// post sends a client-authenticated form (client_secret_basic) to path.
// err is a transport error only: the request may or may not have been
// processed (the process died while it was in flight).
func (c *client) post(ctx context.Context, path string, form url.Values) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return reply{}, err
	}
	r := reply{status: resp.StatusCode, body: body}
	if resp.StatusCode != http.StatusOK {
		// Every error of a back-channel endpoint is RFC 6749 §5.2 JSON.
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		var e struct {
			Error string `json:"error"`
		}
		if mt != "application/json" || json.Unmarshal(body, &e) != nil || e.Error == "" {
			return r, fmt.Errorf("%w: POST %s answered %s with Content-Type %q, want an RFC 6749 §5.2 JSON error", errNotJSON, path, r, resp.Header.Get("Content-Type"))
		}
		r.code = e.Error
	}
	return r, nil
}

// errNotJSON marks an error answer that is not the JSON the RFC requires.
var errNotJSON = errors.New("error answer is not JSON")

// refresh is the refresh_token grant (RFC 6749 §6).
func (c *client) refresh(ctx context.Context, rt string) (tokens, reply, error) {
	r, err := c.post(ctx, "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	if err != nil || r.status != http.StatusOK {
		return tokens{}, r, err
	}
	var tk tokens
	if err := json.Unmarshal(r.body, &tk); err != nil || tk.AccessToken == "" || tk.RefreshToken == "" {
		return tokens{}, r, fmt.Errorf("refresh answered 200 without an access and a refresh token: %s", r)
	}
	return tk, r, nil
}

// revoke is the revocation endpoint (RFC 7009 §2.1).
func (c *client) revoke(ctx context.Context, tok, hint string) (reply, error) {
	return c.post(ctx, "/revoke", url.Values{"token": {tok}, "token_type_hint": {hint}})
}

// introspect is the introspection endpoint (RFC 7662 §2.1). It fails the
// test unless the answer is 200 with a JSON body.
func (c *client) introspect(ctx context.Context, tok, hint string) bool {
	c.t.Helper()
	r, err := c.post(ctx, "/introspect", url.Values{"token": {tok}, "token_type_hint": {hint}})
	if err != nil {
		c.t.Fatalf("introspect: %v", err)
	}
	if r.status != http.StatusOK {
		c.t.Fatalf("introspect: %s, want 200", r)
	}
	var res struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal(r.body, &res); err != nil || res.Active == nil {
		c.t.Fatalf("introspect: %s: no active member", r)
	}
	return *res.Active
}

// get fetches rawURL with the browser's cookies, keeping what it sets.
func (c *client) get(ctx context.Context, rawURL string) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", err
	}
	return c.send(req)
}

func (c *client) send(req *http.Request) (*http.Response, string, error) {
	if h := c.jar.header(); h != "" {
		req.Header.Set("Cookie", h)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	c.jar.update(resp.Header)
	return resp, string(body), err
}

// grant runs one authorization code flow with PKCE (RFC 7636) for the
// test client: the issuer's login form the first time, its SSO session
// afterwards, then the code exchange.
func (c *client) grant(ctx context.Context) (tokens, error) {
	verifier := oauth2.GenerateVerifier()
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"scope":                 {"openid profile offline_access"},
		"state":                 {randomString()},
		"nonce":                 {randomString()},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"},
	}
	resp, body, err := c.get(ctx, c.base+"/authorize?"+q.Encode())
	if err != nil {
		return tokens{}, err
	}
	if resp.StatusCode == http.StatusOK {
		// The login form: post it back with the user's credentials.
		action, fields, err := parseForm(body)
		if err != nil {
			return tokens{}, err
		}
		target, err := resp.Request.URL.Parse(action)
		if err != nil {
			return tokens{}, fmt.Errorf("login form action %q: %w", action, err)
		}
		fields.Set("username", userName)
		fields.Set("password", userPassword)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(fields.Encode()))
		if err != nil {
			return tokens{}, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, body, err = c.send(req); err != nil {
			return tokens{}, err
		}
	}
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), redirectURI+"?") {
		return tokens{}, fmt.Errorf("authorization did not redirect to the client: HTTP %d Location %q\n%s", resp.StatusCode, resp.Header.Get("Location"), clip(body, 1000))
	}
	code := loc.Query().Get("code")
	if code == "" {
		return tokens{}, fmt.Errorf("authorization redirected without a code: %s", loc.RawQuery)
	}
	r, err := c.post(ctx, "/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}, "code_verifier": {verifier},
	})
	if err != nil {
		return tokens{}, err
	}
	var tk tokens
	if r.status != http.StatusOK || json.Unmarshal(r.body, &tk) != nil || tk.AccessToken == "" || tk.RefreshToken == "" {
		return tokens{}, fmt.Errorf("code exchange: %s, want 200 with an access and a refresh token", r)
	}
	return tk, nil
}

// mustGrant is grant that fails the test on error.
func (c *client) mustGrant() tokens {
	c.t.Helper()
	tk, err := c.grant(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return tk
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

func randomString() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
