package issuerclient

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// Tokens is a token response (RFC 6749 §5.1).
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
}

// Reply is one answer of the issuer's back-channel endpoints, read in full.
type Reply struct {
	Status int
	Body   []byte
	// Code is the RFC 6749 §5.2 error code of an error answer ("" for 200).
	Code string
}

// String describes the answer for a failure message. An error body is
// shown clipped; a 200 body only by its JSON member names, because it
// carries tokens, which never go into a message.
func (r Reply) String() string {
	if r.Status == http.StatusOK {
		var m map[string]json.RawMessage
		if json.Unmarshal(r.Body, &m) != nil {
			return fmt.Sprintf("HTTP 200 with %d bytes that are not a JSON object", len(r.Body))
		}
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		slices.Sort(names)
		return fmt.Sprintf("HTTP 200 with members %v", names)
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, clip(string(r.Body), 300))
}

// Client talks to one issuer process as the test's confidential client,
// and as the browser of one user (its SSO cookie), over real HTTP. Its
// methods may be called from several goroutines at once, except MustGrant
// and Introspect, which fail the test and so belong on its goroutine.
type Client struct {
	t    testing.TB
	base string
	cfg  Config
	http *http.Client
	jar  Jar
}

// New returns a client of the issuer listening at issuerURL (for a
// stack.Stack, its IssuerURL). It fails the test when cfg is incomplete,
// and closes its idle connections when the test ends.
func New(t testing.TB, issuerURL string, cfg Config) *Client {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	// 64 connections: the durability tests run several workers on one
	// Client, and a new connection per request would measure dialing.
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &Client{t: t, base: issuerURL, cfg: cfg, http: &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		// Redirects are followed by hand: the last one leaves the issuer
		// for the client's redirect URI, which only carries the code.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// IssuerURL is the URL the client sends its requests to.
func (c *Client) IssuerURL() string { return c.base }

// Post sends a client-authenticated form (client_secret_basic, RFC 6749
// §2.3.1) to path on the issuer. A non-nil error with a zero Reply is a
// transport error only: the request may or may not have been processed
// (the process died while it was in flight). An error answer that is not
// RFC 6749 §5.2 JSON returns the Reply and an error wrapping ErrNotJSON.
func (c *Client) Post(ctx context.Context, path string, form url.Values) (Reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return Reply{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 §2.3.1: the id and secret are form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret))
	resp, err := c.http.Do(req)
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Reply{}, err
	}
	r := Reply{Status: resp.StatusCode, Body: body}
	if resp.StatusCode != http.StatusOK {
		// Every error of a back-channel endpoint is RFC 6749 §5.2 JSON.
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		var e struct {
			Error string `json:"error"`
		}
		if mt != "application/json" || json.Unmarshal(body, &e) != nil || e.Error == "" {
			return r, fmt.Errorf("%w: POST %s answered %s with Content-Type %q, want an RFC 6749 §5.2 JSON error", ErrNotJSON, path, r, resp.Header.Get("Content-Type"))
		}
		r.Code = e.Error
	}
	return r, nil
}

// Refresh is the refresh_token grant (RFC 6749 §6). A refused refresh is
// a nil error with the Reply's Status and Code; a 200 without both an
// access and a refresh token is an error.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (Tokens, Reply, error) {
	r, err := c.Post(ctx, "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
	if err != nil || r.Status != http.StatusOK {
		return Tokens{}, r, err
	}
	var tk Tokens
	if err := json.Unmarshal(r.Body, &tk); err != nil || tk.AccessToken == "" || tk.RefreshToken == "" {
		return Tokens{}, r, fmt.Errorf("refresh answered 200 without an access and a refresh token: %s", r)
	}
	return tk, r, nil
}

// Revoke is the revocation endpoint (RFC 7009 §2.1); hint is the
// token_type_hint ("access_token" or "refresh_token").
func (c *Client) Revoke(ctx context.Context, token, hint string) (Reply, error) {
	return c.Post(ctx, "/revoke", url.Values{"token": {token}, "token_type_hint": {hint}})
}

// Introspect is the introspection endpoint (RFC 7662 §2.1): it reports
// whether the token is active. It fails the test unless the answer is 200
// with a JSON body that has the active member.
func (c *Client) Introspect(ctx context.Context, token, hint string) bool {
	c.t.Helper()
	r, err := c.Post(ctx, "/introspect", url.Values{"token": {token}, "token_type_hint": {hint}})
	if err != nil {
		c.t.Fatalf("introspect: %v", err)
	}
	if r.Status != http.StatusOK {
		c.t.Fatalf("introspect: %s, want 200", r)
	}
	var res struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal(r.Body, &res); err != nil || res.Active == nil {
		c.t.Fatalf("introspect: %s: no active member", r)
	}
	return *res.Active
}

// Get fetches rawURL with the browser's cookies, keeping those it sets.
// It returns the response, whose body is already read and closed, and
// that body (up to 1 MiB).
func (c *Client) Get(ctx context.Context, rawURL string) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", err
	}
	return c.send(req)
}

// send sends req with the jar's cookies and keeps what the answer sets.
func (c *Client) send(req *http.Request) (*http.Response, string, error) {
	if h := c.jar.Header(); h != "" {
		req.Header.Set("Cookie", h)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	c.jar.Update(resp.Header)
	return resp, string(body), err
}

// Grant runs one authorization code flow with PKCE (RFC 7636) for the
// client: the issuer's login form the first time, its SSO session
// afterwards, then the code exchange. It asks for openid, profile and
// offline_access, and fails unless it gets an access and a refresh token.
func (c *Client) Grant(ctx context.Context) (Tokens, error) {
	verifier := oauth2.GenerateVerifier()
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {c.cfg.ClientID},
		"redirect_uri":          {c.cfg.RedirectURI},
		"scope":                 {"openid profile offline_access"},
		"state":                 {rand.Text()},
		"nonce":                 {rand.Text()},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"},
	}
	resp, body, err := c.Get(ctx, c.base+"/authorize?"+q.Encode())
	if err != nil {
		return Tokens{}, err
	}
	if resp.StatusCode == http.StatusOK {
		// The login form: post it back with the user's credentials.
		f, err := ParseForm(body)
		if err != nil {
			return Tokens{}, err
		}
		target, err := resp.Request.URL.Parse(f.Action)
		if err != nil {
			return Tokens{}, fmt.Errorf("login form action %q: %w", f.Action, err)
		}
		f.Fields.Set("username", c.cfg.Username)
		f.Fields.Set("password", c.cfg.Password)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(f.Fields.Encode()))
		if err != nil {
			return Tokens{}, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, body, err = c.send(req); err != nil {
			return Tokens{}, err
		}
	}
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), c.cfg.RedirectURI+"?") {
		return Tokens{}, fmt.Errorf("authorization did not redirect to the client: HTTP %d Location %q, page text: %s", resp.StatusCode, redactURL(resp.Header.Get("Location")), pageText(body, 1000))
	}
	code := loc.Query().Get("code")
	if code == "" {
		// An error redirect (RFC 6749 §4.1.2.1): its error and description
		// say why, and carry no secret.
		return Tokens{}, fmt.Errorf("authorization redirected without a code: error %q: %s", loc.Query().Get("error"), loc.Query().Get("error_description"))
	}
	r, err := c.Post(ctx, "/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.cfg.RedirectURI}, "code_verifier": {verifier},
	})
	if err != nil {
		return Tokens{}, err
	}
	var tk Tokens
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &tk) != nil || tk.AccessToken == "" || tk.RefreshToken == "" {
		return Tokens{}, fmt.Errorf("code exchange: %s, want 200 with an access and a refresh token", r)
	}
	return tk, nil
}

// MustGrant is Grant that fails the test on error. Call it from the test's
// goroutine only (testing.TB.FailNow).
func (c *Client) MustGrant() Tokens {
	c.t.Helper()
	tk, err := c.Grant(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return tk
}

// redactURL shows a URL for a failure message with the names of its query
// parameters and fragment parameters but not their values (a code may be
// among them).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	names := func(q string) string {
		v, _ := url.ParseQuery(q)
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k+"=...")
		}
		slices.Sort(keys)
		return strings.Join(keys, "&")
	}
	out := *u
	out.RawQuery, out.Fragment, out.RawFragment = names(u.RawQuery), names(u.Fragment), ""
	out.User = nil
	return out.String()
}

// clip shortens s for a failure message.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
