package issuer_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer"
)

func startDCR(t *testing.T, edit func(*issuer.DynamicRegistration)) *env {
	t.Helper()
	return start(t, envOptions{cfg: func(c *issuer.Config) {
		withResources(c)
		c.Registration = issuer.DynamicRegistration{Enabled: true}
		if edit != nil {
			edit(&c.Registration)
		}
	}})
}

// register posts client metadata to /register.
func (e *env) register(body any, header http.Header) oauthResponse {
	e.t.Helper()
	raw, ok := body.(string)
	if !ok {
		raw = string(mustJSON(body))
	}
	h := http.Header{"Content-Type": {"application/json"}}
	for k, v := range header {
		h[k] = v
	}
	return e.request(http.MethodPost, "/register", strings.NewReader(raw), h)
}

var sdkLikeMetadata = map[string]any{
	"redirect_uris": []string{"http://localhost:33418/callback"}, "client_name": "MCP CLI", "token_endpoint_auth_method": "none",
	"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"}, "scope": "openid mcp:tools",
}

// TestDynamicRegistration: an MCP client registers (RFC 7591) as the
// TypeScript SDK does, signs a user in through the consent page, gets a
// token for a resource and refreshes; RFC 7592 reads and deletes the
// registration with the registration access token, after which the
// client is unknown.
func TestDynamicRegistration(t *testing.T) {
	t.Parallel()
	e := startDCR(t, nil)
	md := e.request(http.MethodGet, "/.well-known/oauth-authorization-server", nil, nil)
	if md.str("registration_endpoint") != e.url+"/register" {
		t.Fatalf("registration_endpoint = %q", md.str("registration_endpoint"))
	}
	r := e.register(sdkLikeMetadata, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.raw)
	}
	id, regToken, regURI := r.str("client_id"), r.str("registration_access_token"), r.str("registration_client_uri")
	if !strings.HasPrefix(id, "dyn_") || len(regToken) < 40 || regURI != e.url+"/register/"+id || r.str("token_endpoint_auth_method") != "none" ||
		r.body["client_secret"] != nil || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("registration response: %s", r.raw)
	}
	if gt, _ := r.body["grant_types"].([]any); len(gt) != 2 {
		t.Errorf("grant_types = %v", r.body["grant_types"])
	}

	// The code flow on any loopback port, with the consent page.
	redirect := "http://localhost:50123/callback"
	b := e.browser()
	p := b.authorize(e.rawAuthURL(id, redirect, "openid mcp:tools", mcpResource, "s", testVerifier), aliceUser, alicePassword)
	if p.status != http.StatusOK || !strings.Contains(p.body, "MCP CLI") || !strings.Contains(p.body, `id="unverified"`) || !strings.Contains(p.body, "localhost:50123") {
		t.Fatalf("consent page: %d\n%s", p.status, clipText(p.body, 2000))
	}
	p = b.submit(p, url.Values{"decision": {"allow"}})
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("after allow: %v", p.location)
	}
	tok := e.post("/token", auth{id: id}, url.Values{"grant_type": {"authorization_code"}, "code": {p.location.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {testVerifier}})
	if tok.status != http.StatusOK || tok.str("refresh_token") == "" {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	if aud := audOf(t, tok.str("access_token")); len(aud) != 1 || aud[0] != mcpResource {
		t.Errorf("aud = %v", aud)
	}
	if rr := e.refresh(auth{id: id}, tok.str("refresh_token")); rr.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", rr.status, rr.raw)
	}

	// RFC 7592 read: the metadata, never the token again.
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	got := e.request(http.MethodGet, "/register/"+id, nil, bearer(regToken))
	if got.status != http.StatusOK || got.str("client_id") != id || got.str("client_name") != "MCP CLI" || got.body["registration_access_token"] != nil {
		t.Fatalf("read: %d %s", got.status, got.raw)
	}
	for name, h := range map[string]http.Header{"no token": nil, "wrong token": bearer("x" + regToken), "basic": {"Authorization": {basicAuth(id, regToken)}}} {
		if r := e.request(http.MethodGet, "/register/"+id, nil, h); r.status != http.StatusUnauthorized || r.str("error") != "invalid_token" {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	// Another client's token does not open this one.
	other := e.register(sdkLikeMetadata, nil)
	if r := e.request(http.MethodGet, "/register/"+id, nil, bearer(other.str("registration_access_token"))); r.status != http.StatusUnauthorized {
		t.Errorf("another client's token: %d", r.status)
	}
	if r := e.request(http.MethodGet, "/register/dyn_unknown", nil, bearer(regToken)); r.status != http.StatusUnauthorized {
		t.Errorf("unknown client: %d", r.status)
	}
	if r := e.request(http.MethodPut, "/register/"+id, strings.NewReader("{}"), bearer(regToken)); r.status != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", r.status)
	}
	// Delete: the client is gone.
	if r := e.request(http.MethodDelete, "/register/"+id, nil, bearer(regToken)); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if r := e.request(http.MethodGet, "/register/"+id, nil, bearer(regToken)); r.status != http.StatusUnauthorized {
		t.Errorf("read after delete: %d", r.status)
	}
	if p := e.browser().get(e.rawAuthURL(id, redirect, "openid", "", "s", testVerifier)); p.status != http.StatusBadRequest || !strings.Contains(p.body, "No application") {
		t.Errorf("authorize after delete: %d", p.status)
	}
}

// TestDynamicRegistrationRefused: RFC 7591 §3.2.2 errors for metadata
// the issuer does not register, and nothing stored.
func TestDynamicRegistrationRefused(t *testing.T) {
	t.Parallel()
	e := startDCR(t, func(d *issuer.DynamicRegistration) { d.RateLimit = 1000 })
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for k2, v2 := range sdkLikeMetadata {
			m[k2] = v2
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name string
		body any
		ct   string
		want string
	}{
		{"no redirect_uris", with("redirect_uris", nil), "", "invalid_redirect_uri"},
		{"http on a LAN host", with("redirect_uris", []string{"http://192.168.1.5/cb"}), "", "invalid_redirect_uri"},
		{"javascript", with("redirect_uris", []string{"javascript:alert(1)"}), "", "invalid_redirect_uri"},
		{"fragment", with("redirect_uris", []string{"https://app.example.test/cb#x"}), "", "invalid_redirect_uri"},
		{"wildcard", with("redirect_uris", []string{"https://*.example.test/cb"}), "", "invalid_redirect_uri"},
		{"confidential", with("token_endpoint_auth_method", "client_secret_basic"), "", "invalid_client_metadata"},
		{"private_key_jwt", with("jwks_uri", "https://x.example.test/jwks"), "", "invalid_client_metadata"},
		{"client_credentials", with("grant_types", []string{"client_credentials"}), "", "invalid_client_metadata"},
		{"implicit", with("response_types", []string{"token"}), "", "invalid_client_metadata"},
		{"unknown scope", with("scope", "admin"), "", "invalid_client_metadata"},
		{"control characters in the name", with("client_name", "a\nb"), "", "invalid_client_metadata"},
		{"not JSON", "{", "", "invalid_client_metadata"},
		{"array", "[]", "", "invalid_client_metadata"},
		{"form", "redirect_uris=https://a/cb", "application/x-www-form-urlencoded", "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h http.Header
			if tc.ct != "" {
				h = http.Header{"Content-Type": {tc.ct}}
			}
			r := e.register(tc.body, h)
			if r.status != http.StatusBadRequest || r.str("error") != tc.want {
				t.Fatalf("%d %s; want 400 %s", r.status, r.raw, tc.want)
			}
		})
	}
	// A gzip body is refused, not inflated.
	r := e.request(http.MethodPost, "/register", bytes.NewReader([]byte{0x1f, 0x8b, 0, 0}), http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}})
	if r.status != http.StatusUnsupportedMediaType {
		t.Errorf("gzip body: %d %s", r.status, r.raw)
	}
	// Without registration enabled, there is no endpoint.
	plain := start(t, envOptions{})
	if r := plain.register(sdkLikeMetadata, nil); r.status != http.StatusNotFound {
		t.Errorf("registration off: %d", r.status)
	}
	if md := plain.request(http.MethodGet, "/.well-known/oauth-authorization-server", nil, nil); md.body["registration_endpoint"] != nil {
		t.Error("registration off: registration_endpoint announced")
	}
}

// TestDynamicRegistrationFlood: registrations are limited per client
// address (429 slow_down with Retry-After), across instances sharing the
// store, and allowed again after the window.
func TestDynamicRegistrationFlood(t *testing.T) {
	t.Parallel()
	e := startDCR(t, func(d *issuer.DynamicRegistration) { d.RateLimit = 3; d.RateWindow = time.Minute })
	for i := range 3 {
		if r := e.register(sdkLikeMetadata, nil); r.status != http.StatusCreated {
			t.Fatalf("registration %d: %d %s", i, r.status, r.raw)
		}
	}
	for range 5 {
		r := e.register(sdkLikeMetadata, nil)
		if r.status != http.StatusTooManyRequests || r.str("error") != "slow_down" || r.header.Get("Retry-After") == "" {
			t.Fatalf("flood: %d %s", r.status, r.raw)
		}
	}
	// A second instance on the same store counts the same address.
	second := start(t, envOptions{issuerURL: e.url, clock: e.clock, db: e.db, path: e.path, cfg: func(c *issuer.Config) {
		c.Registration = issuer.DynamicRegistration{Enabled: true, RateLimit: 3, RateWindow: time.Minute}
	}})
	if r := second.register(sdkLikeMetadata, nil); r.status != http.StatusTooManyRequests {
		t.Fatalf("second instance: %d %s", r.status, r.raw)
	}
	if v, _ := e.metric("bffgate_issuer_client_registrations_total", "result", "rate_limited"); v != 5 {
		t.Errorf("rate_limited counted %v", v)
	}
	e.clock.Advance(time.Minute + time.Second)
	if r := e.register(sdkLikeMetadata, nil); r.status != http.StatusCreated {
		t.Fatalf("after the window: %d %s", r.status, r.raw)
	}
}

// TestDynamicRegistrationInitialToken: with an initial access token,
// registration needs it.
func TestDynamicRegistrationInitialToken(t *testing.T) {
	t.Parallel()
	const iat = "initial-access-token-0123456789"
	e := startDCR(t, func(d *issuer.DynamicRegistration) { d.InitialAccessToken = iat })
	for _, h := range []http.Header{nil, {"Authorization": {"Bearer wrong-0123456789"}}, {"Authorization": {basicAuth("a", iat)}}} {
		if r := e.register(sdkLikeMetadata, h); r.status != http.StatusUnauthorized || r.str("error") != "invalid_token" {
			t.Fatalf("%v: %d %s", h, r.status, r.raw)
		}
	}
	if r := e.register(sdkLikeMetadata, http.Header{"Authorization": {"Bearer " + iat}}); r.status != http.StatusCreated {
		t.Fatalf("with the token: %d %s", r.status, r.raw)
	}
}

// TestDynamicRegistrationExpires: a registration unused for unused_ttl
// lapses; each use moves it.
func TestDynamicRegistrationExpires(t *testing.T) {
	t.Parallel()
	e := startDCR(t, func(d *issuer.DynamicRegistration) { d.UnusedTTL = 2 * time.Hour })
	r := e.register(sdkLikeMetadata, nil)
	id := r.str("client_id")
	redirect := "http://localhost:4000/callback"
	known := func() bool {
		p := e.browser().get(e.rawAuthURL(id, redirect, "openid", "", "s", testVerifier))
		return p.status == http.StatusOK
	}
	e.clock.Advance(90 * time.Minute)
	if !known() { // a use: moves the expiry to +2h from now
		t.Fatal("unknown before unused_ttl")
	}
	e.clock.Advance(90 * time.Minute)
	if !known() {
		t.Fatal("the use did not extend the registration")
	}
	e.clock.Advance(2*time.Hour + time.Minute)
	if known() {
		t.Fatal("known after unused_ttl without use")
	}
}
