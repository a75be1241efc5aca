package issuer_test

import (
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/audit"
	"github.com/bffgate/bffgate/issuer/trust"
)

const (
	agentID     = "agent-1"
	agentURIID  = "agent-uri"
	spiffeAgent = "spiffe://example.org/agents/mailer"
	otherTD     = "spiffe://other.test/agents/mailer"
	epTD        = "spiffe://endpoint.test/agents/sync"

	agentRedirect = "https://agent.example.test/callback"
)

// signer is a test key pair.
type signer struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newSigner(t testing.TB, kid string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, priv: k}
}

func (s signer) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: s.priv.Public(), KeyID: s.kid, Algorithm: "ES256", Use: "sig"}
}

func jwksOf(keys ...jose.JSONWebKey) map[string]any {
	var m map[string]any
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	json.Unmarshal(b, &m)
	return m
}

// sign makes a JWT of claims with s (ES256, kid).
func (s signer) sign(t testing.TB, claims any, extraHeader map[jose.HeaderKey]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if s.kid != "" {
		opts = opts.WithHeader("kid", s.kid)
	}
	for k, v := range extraHeader {
		opts = opts.WithHeader(k, v)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// agentEnv is an issuer with agent clients: agent-1 (inline JWK set),
// agent-uri (a jwks_uri), a SPIFFE agent of example.org (bundle file) and
// one of endpoint.test (bundle endpoint).
type agentEnv struct {
	*env
	key, uriKey, tdKey, epKey signer
	jwksHits, bundleHits      atomic.Int32
	jwksDown                  atomic.Bool
	auditPath                 string
}

func startAgents(t testing.TB, edit func(*issuer.Config)) *agentEnv {
	t.Helper()
	a := &agentEnv{key: newSigner(t, "k1"), uriKey: newSigner(t, "u1"), tdKey: newSigner(t, "td1"), epKey: newSigner(t, "ep1")}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.jwksHits.Add(1)
		if a.jwksDown.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=600")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{a.uriKey.public()}})
	}))
	t.Cleanup(jwks.Close)
	dir := t.TempDir()
	bundleFile := filepath.Join(dir, "example.org.bundle.json")
	td := spiffeid.RequireTrustDomainFromString("example.org")
	b := spiffebundle.FromJWTAuthorities(td, map[string]crypto.PublicKey{a.tdKey.kid: a.tdKey.priv.Public()})
	b.SetRefreshHint(time.Minute)
	raw, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundleFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	epBundle := spiffebundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString("endpoint.test"),
		map[string]crypto.PublicKey{a.epKey.kid: a.epKey.priv.Public()})
	epRaw, _ := epBundle.Marshal()
	bundles := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.bundleHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(epRaw)
	}))
	t.Cleanup(bundles.Close)
	a.auditPath = filepath.Join(dir, "audit.log")
	a.env = start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Clients = append(c.Clients,
			issuer.Client{ID: agentID, Kind: issuer.KindAgent, JWKS: jwksOf(a.key.public()),
				GrantTypes:   []string{issuer.GrantClientCredentials, issuer.GrantAuthorizationCode, issuer.GrantRefreshToken},
				RedirectURIs: []string{agentRedirect}, Audience: []string{"mail-api"}},
			issuer.Client{ID: agentURIID, Kind: issuer.KindAgent, JWKSURI: jwks.URL,
				GrantTypes: []string{issuer.GrantClientCredentials}, Scopes: []string{"profile"}},
			issuer.Client{ID: spiffeAgent, Kind: issuer.KindWorkload,
				GrantTypes: []string{issuer.GrantClientCredentials}, Scopes: []string{"profile"}},
			issuer.Client{ID: epTD, Kind: issuer.KindWorkload,
				GrantTypes: []string{issuer.GrantClientCredentials}, Scopes: []string{"profile"}},
		)
		c.SPIFFE.TrustDomains = []issuer.TrustDomain{
			{Name: "example.org", BundleFile: bundleFile},
			{Name: "endpoint.test", BundleEndpoint: bundles.URL},
		}
		c.Audit.File = a.auditPath
		if edit != nil {
			edit(c)
		}
	}})
	return a
}

// claims are assertion claims for client id at the env's issuer.
func (a *agentEnv) claims(id string) map[string]any {
	now := a.clock.Now()
	return map[string]any{"iss": id, "sub": id, "aud": a.url, "exp": now.Add(time.Minute).Unix(),
		"iat": now.Unix(), "jti": base64.RawURLEncoding.EncodeToString([]byte(time.Now().String() + id + randomSuffix()))}
}

var suffix atomic.Int64

func randomSuffix() string {
	return string(rune('a'+suffix.Add(1)%26)) + time.Now().Format("150405.000000000")
}

// postAssertion posts form to path authenticated with an assertion of typ.
func (a *agentEnv) postAssertion(path, id, typ, assertion string, form url.Values) oauthResponse {
	a.t.Helper()
	form = cloneValues(form)
	if id != "" {
		form.Set("client_id", id)
	}
	form.Set("client_assertion_type", typ)
	form.Set("client_assertion", assertion)
	return a.request(http.MethodPost, path, strings.NewReader(form.Encode()), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
}

var ccForm = url.Values{"grant_type": {"client_credentials"}, "scope": {"profile"}}

func TestPrivateKeyJWTGrants(t *testing.T) {
	a := startAgents(t, nil)
	r := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), ccForm)
	if r.status != 200 {
		t.Fatalf("client_credentials with private_key_jwt: %d %s", r.status, r.raw)
	}
	at := r.str("access_token")
	if p := payload(t, at); p["sub"] != issuer.ClientSubject(agentID) || p["client_id"] != agentID {
		t.Fatalf("token sub/client_id = %v/%v; want %q/%q", p["sub"], p["client_id"], issuer.ClientSubject(agentID), agentID)
	}
	// Without client_id: the client is the assertion's sub (RFC 7523 §3).
	if r := a.postAssertion("/token", "", issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), ccForm); r.status != 200 {
		t.Fatalf("without client_id: %d %s", r.status, r.raw)
	}
	// aud = the token endpoint URL is accepted too (OpenID Connect Core §9).
	c := a.claims(agentID)
	c["aud"] = a.url + "/token"
	if r := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, c, nil), ccForm); r.status != 200 {
		t.Fatalf("aud = token endpoint: %d %s", r.status, r.raw)
	}
	// Introspection and revocation by the agent itself, authenticated the same way.
	c = a.claims(agentID)
	c["aud"] = a.url + "/introspect"
	r = a.postAssertion("/introspect", agentID, issuer.AssertionTypeJWT, a.key.sign(t, c, nil), url.Values{"token": {at}})
	wantActive(t, r)
	if r.str("gty") != "client_credentials" || r.str("sub") != issuer.ClientSubject(agentID) {
		t.Fatalf("introspection = %s", r.raw)
	}
	r = a.postAssertion("/revoke", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{"token": {at}})
	if r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	wantInactive(t, a.postAssertion("/introspect", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{"token": {at}}))
	// A jwks_uri client.
	if r := a.postAssertion("/token", agentURIID, issuer.AssertionTypeJWT, a.uriKey.sign(t, a.claims(agentURIID), nil), ccForm); r.status != 200 {
		t.Fatalf("jwks_uri client: %d %s", r.status, r.raw)
	}
	// Discovery advertises the methods and algorithms.
	d := a.request(http.MethodGet, "/.well-known/openid-configuration", nil, nil)
	for _, k := range []string{"token_endpoint_auth_methods_supported", "introspection_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"} {
		if !strings.Contains(string(mustJSON(d.body[k])), "private_key_jwt") || !strings.Contains(string(mustJSON(d.body[k])), "spiffe_jwt") {
			t.Errorf("discovery %s = %v", k, d.body[k])
		}
	}
	if algs := string(mustJSON(d.body["token_endpoint_auth_signing_alg_values_supported"])); !strings.Contains(algs, "ES256") || strings.Contains(algs, "HS") || strings.Contains(algs, "none") {
		t.Errorf("token_endpoint_auth_signing_alg_values_supported = %s", algs)
	}
}

func TestPrivateKeyJWTRefused(t *testing.T) {
	a := startAgents(t, nil)
	pubDER, _ := x509.MarshalPKIXPublicKey(a.key.priv.Public())
	other := newSigner(t, "k1") // same kid, another key
	stranger := newSigner(t, "k9")
	hs := func(key []byte, claims any) string {
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := jwt.Signed(sig).Claims(claims).Serialize()
		return raw
	}
	none := func(claims any) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`))
		return h + "." + base64.RawURLEncoding.EncodeToString(mustJSON(claims)) + "."
	}
	with := func(k string, v any) map[string]any {
		c := a.claims(agentID)
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	now := a.clock.Now()
	replayed := a.key.sign(t, a.claims(agentID), nil)
	if r := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, replayed, ccForm); r.status != 200 {
		t.Fatalf("first use: %d %s", r.status, r.raw)
	}
	tests := []struct {
		name      string
		assertion string
		typ       string
		want      string // in error_description
	}{
		{"expired", a.key.sign(t, with("exp", now.Add(-time.Minute).Unix()), nil), "", "expired"},
		{"not yet valid", a.key.sign(t, with("nbf", now.Add(time.Hour).Unix()), nil), "", "nbf"},
		{"iat in the future", a.key.sign(t, with("iat", now.Add(time.Hour).Unix()), nil), "", "iat is in the future"},
		{"exp too far", a.key.sign(t, with("exp", now.Add(time.Hour).Unix()), nil), "", "more than 5m0s ahead"},
		{"replayed", replayed, "", "already used"},
		{"wrong aud", a.key.sign(t, with("aud", "https://elsewhere.example"), nil), "", "aud must name this issuer"},
		{"wrong iss", a.key.sign(t, with("iss", "someone"), nil), "", "iss must be the client_id"},
		{"wrong sub", a.key.sign(t, with("sub", otherID), nil), "", "sub must be the client_id"},
		{"no jti", a.key.sign(t, with("jti", nil), nil), "", "no jti"},
		{"unknown key", stranger.sign(t, a.claims(agentID), nil), "", `key 'k9', which is not in the registered key set`},
		{"key not in the set under a known kid", other.sign(t, a.claims(agentID), nil), "", "signature does not verify"},
		{"alg none", none(a.claims(agentID)), "", "unsigned"},
		{"HS256 keyed with the public key", hs(pubDER, a.claims(agentID)), "", "symmetric algorithm"},
		{"not a JWT", "not.a.jwt", "", "not"},
		{"unknown assertion type", a.key.sign(t, a.claims(agentID), nil), "urn:example:other", "not supported"},
		{"SVID type for a private_key_jwt client", a.key.sign(t, a.claims(agentID), nil), issuer.AssertionTypeSPIFFE, "does not authenticate with spiffe_jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ := tc.typ
			if typ == "" {
				typ = issuer.AssertionTypeJWT
			}
			r := a.postAssertion("/token", agentID, typ, tc.assertion, ccForm)
			wantError(t, r, http.StatusUnauthorized, "invalid_client")
			if d := r.str("error_description"); !strings.Contains(d, tc.want) {
				t.Fatalf("error_description = %q; want it to contain %q", d, tc.want)
			}
		})
	}
	t.Run("assertion and secret", func(t *testing.T) {
		form := cloneValues(ccForm)
		form.Set("client_secret", "x")
		r := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), form)
		wantError(t, r, http.StatusBadRequest, "invalid_request")
	})
	t.Run("no assertion", func(t *testing.T) {
		r := a.post("/token", auth{id: agentID}, ccForm)
		wantError(t, r, http.StatusUnauthorized, "invalid_client")
		if !strings.Contains(r.str("error_description"), "private_key_jwt") {
			t.Fatalf("error_description = %q", r.str("error_description"))
		}
	})
}

func TestJWKSURIRefetchAndFailure(t *testing.T) {
	a := startAgents(t, nil)
	ok := func() oauthResponse {
		return a.postAssertion("/token", agentURIID, issuer.AssertionTypeJWT, a.uriKey.sign(t, a.claims(agentURIID), nil), ccForm)
	}
	if r := ok(); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if n := a.jwksHits.Load(); n != 1 {
		t.Fatalf("jwks_uri fetched %d times; want 1", n)
	}
	// Cached per max-age: no refetch for a known kid.
	ok()
	// An unknown kid refetches, at most once a minute.
	a.clock.Advance(61 * time.Second)
	stranger := newSigner(t, "nope")
	for range 3 {
		r := a.postAssertion("/token", agentURIID, issuer.AssertionTypeJWT, stranger.sign(t, a.claims(agentURIID), nil), ccForm)
		wantError(t, r, http.StatusUnauthorized, "invalid_client")
	}
	if n := a.jwksHits.Load(); n != 2 {
		t.Fatalf("jwks_uri fetched %d times after three unknown kids within a minute; want 2", n)
	}
	a.clock.Advance(61 * time.Second)
	a.postAssertion("/token", agentURIID, issuer.AssertionTypeJWT, stranger.sign(t, a.claims(agentURIID), nil), ccForm)
	if n := a.jwksHits.Load(); n != 3 {
		t.Fatalf("jwks_uri fetched %d times a minute later; want 3", n)
	}
}

func TestJWKSURIUnreachable(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	key := newSigner(t, "d1")
	a := startAgents(t, func(c *issuer.Config) {
		c.Clients = append(c.Clients, issuer.Client{ID: "agent-dead", Kind: issuer.KindAgent, JWKSURI: deadURL + "/jwks",
			GrantTypes: []string{issuer.GrantClientCredentials}, Scopes: []string{"profile"}},
			issuer.Client{ID: "spiffe://dead.test/agent", Kind: issuer.KindWorkload,
				GrantTypes: []string{issuer.GrantClientCredentials}, Scopes: []string{"profile"}})
		c.SPIFFE.TrustDomains = append(c.SPIFFE.TrustDomains, issuer.TrustDomain{Name: "dead.test", BundleEndpoint: deadURL + "/bundle"})
	})
	start := time.Now()
	r := a.postAssertion("/token", "agent-dead", issuer.AssertionTypeJWT, key.sign(t, a.claims("agent-dead"), nil), ccForm)
	wantError(t, r, http.StatusUnauthorized, "invalid_client")
	if !strings.Contains(r.str("error_description"), "jwks_uri could not be fetched") {
		t.Fatalf("error_description = %q", r.str("error_description"))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the answer took %s, past the fetch timeout", d)
	}
	// An unreachable bundle endpoint: the same, for a JWT-SVID.
	now := a.clock.Now()
	svid := key.sign(t, map[string]any{"sub": "spiffe://dead.test/agent", "aud": a.url, "exp": now.Add(time.Minute).Unix()}, nil)
	r = a.postAssertion("/token", "spiffe://dead.test/agent", issuer.AssertionTypeSPIFFE, svid, ccForm)
	wantError(t, r, http.StatusUnauthorized, "invalid_client")
	if !strings.Contains(r.str("error_description"), "bundle of the JWT-SVID's trust domain could not be fetched") {
		t.Fatalf("error_description = %q", r.str("error_description"))
	}
}

func TestSPIFFEClientAuth(t *testing.T) {
	a := startAgents(t, nil)
	svid := func(s signer, id string, edit func(map[string]any)) string {
		now := a.clock.Now()
		c := map[string]any{"sub": id, "aud": []string{a.url}, "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}
		if edit != nil {
			edit(c)
		}
		return s.sign(t, c, nil)
	}
	// Twice the same SVID: the Workload API reuses one until near expiry.
	good := svid(a.tdKey, spiffeAgent, nil)
	for i := range 2 {
		r := a.postAssertion("/token", spiffeAgent, issuer.AssertionTypeSPIFFE, good, ccForm)
		if r.status != 200 {
			t.Fatalf("JWT-SVID (use %d): %d %s", i+1, r.status, r.raw)
		}
		if p := payload(t, r.str("access_token")); p["client_id"] != spiffeAgent || p["sub"] != issuer.ClientSubject(spiffeAgent) {
			t.Fatalf("token = %v", p)
		}
	}
	// A bundle endpoint.
	if r := a.postAssertion("/token", epTD, issuer.AssertionTypeSPIFFE, svid(a.epKey, epTD, nil), ccForm); r.status != 200 {
		t.Fatalf("bundle endpoint: %d %s", r.status, r.raw)
	}
	if a.bundleHits.Load() != 1 {
		t.Fatalf("bundle endpoint fetched %d times", a.bundleHits.Load())
	}
	otherKey := newSigner(t, "td1")
	tests := []struct {
		name, client, assertion, want string
	}{
		{"another trust domain", spiffeAgent, svid(a.tdKey, otherTD, nil), "does not trust"},
		{"untrusted trust domain as client", otherTD, svid(a.tdKey, otherTD, nil), "is unknown"},
		{"unknown SPIFFE ID", "spiffe://example.org/agents/nobody", svid(a.tdKey, "spiffe://example.org/agents/nobody", nil), "is unknown"},
		{"another SPIFFE ID of the domain", spiffeAgent, svid(a.tdKey, "spiffe://example.org/agents/other", nil), "not the client_id"},
		{"key not in the bundle", spiffeAgent, svid(otherKey, spiffeAgent, nil), "does not verify"},
		{"expired", spiffeAgent, svid(a.tdKey, spiffeAgent, func(c map[string]any) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), "expired"},
		{"wrong aud", spiffeAgent, svid(a.tdKey, spiffeAgent, func(c map[string]any) { c["aud"] = []string{"https://elsewhere"} }), "audience"},
		{"too long-lived", spiffeAgent, svid(a.tdKey, spiffeAgent, func(c map[string]any) { c["exp"] = a.clock.Now().Add(48 * time.Hour).Unix() }), "ahead"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := a.postAssertion("/token", tc.client, issuer.AssertionTypeSPIFFE, tc.assertion, ccForm)
			wantError(t, r, http.StatusUnauthorized, "invalid_client")
			if d := r.str("error_description"); !strings.Contains(d, tc.want) {
				t.Fatalf("error_description = %q; want it to contain %q", d, tc.want)
			}
		})
	}
}

func TestAgentConfigRefusesSecret(t *testing.T) {
	cfg := baseConfig()
	cfg.Issuer = "http://127.0.0.1:9"
	cfg.Clients = append(cfg.Clients, issuer.Client{ID: "bot", Kind: issuer.KindAgent, Secret: "0123456789abcdef0123", GrantTypes: []string{issuer.GrantClientCredentials}})
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "issuer.clients[4].secret") || !strings.Contains(err.Error(), "must not have a static secret") {
		t.Fatalf("Validate = %v; want an error at issuer.clients[4].secret", err)
	}
	cfg.Clients[4] = issuer.Client{ID: "spiffe://nowhere.test/a", Kind: issuer.KindAgent, GrantTypes: []string{issuer.GrantClientCredentials}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "issuer.clients[4].id") || !strings.Contains(err.Error(), "nowhere.test") {
		t.Fatalf("Validate = %v; want an error naming the untrusted trust domain", err)
	}
}

func TestAgentDisable(t *testing.T) {
	a := startAgents(t, nil)
	mint := func() oauthResponse {
		return a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), ccForm)
	}
	r := mint()
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	old := r.str("access_token")
	introspect := func(tok string) oauthResponse {
		return a.postAssertion("/introspect", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{"token": {tok}})
	}
	wantActive(t, introspect(old))
	ctx := context.Background()
	if _, err := issuer.SetClientDisabled(ctx, a.store, agentID, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The resource server's introspection (by web, in the token's
	// audience? no: by the agent itself) refuses within the reload.
	eventually(t, "the disabled agent's token is inactive", func() bool {
		return introspect(old).body["active"] == false
	})
	wantError(t, mint(), http.StatusBadRequest, "unauthorized_client")
	a.clock.Advance(2 * time.Second)
	if _, err := issuer.SetClientDisabled(ctx, a.store, agentID, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	var fresh string
	eventually(t, "the enabled agent gets tokens again", func() bool {
		r := mint()
		fresh = r.str("access_token")
		return r.status == 200
	})
	wantActive(t, introspect(fresh))
	// The tokens of before the disable stay revoked.
	wantInactive(t, introspect(old))
}

func TestAuditChain(t *testing.T) {
	a := startAgents(t, nil)
	a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), ccForm)
	a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, "bad.assertion.x", ccForm)
	r := a.post("/token", svcBasic, url.Values{"grant_type": {"client_credentials"}})
	a.revoke(svcBasic, r.str("access_token"), "")
	a.introspect("garbage")
	key, err := issuer.AuditKey(context.Background(), a.store)
	if err != nil {
		t.Fatal(err)
	}
	a.Stop()
	if err := a.srv.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(a.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{svcSecret, r.str("access_token")} {
		if strings.Contains(string(raw), secret) {
			t.Fatal("the audit file holds a secret or token")
		}
	}
	n, err := audit.Verify(key, a.auditPath)
	if err != nil || n < 5 {
		t.Fatalf("Verify = %d, %v; want at least 5 records", n, err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var recs []audit.Record
	for _, l := range lines {
		var r audit.Record
		json.Unmarshal([]byte(l), &r)
		recs = append(recs, r)
	}
	found := map[string]bool{}
	for _, r := range recs {
		found[r.Action+"/"+r.Decision] = true
	}
	for _, want := range []string{"token/allow", "client_auth/deny", "revoke/allow", "introspect/deny"} {
		if !found[want] {
			t.Errorf("no %s record in %v", want, found)
		}
	}
	// Edit the third record: the break is found there.
	edited := strings.Replace(lines[2], `"decision":"`+recs[2].Decision+`"`, `"decision":"x`+recs[2].Decision+`"`, 1)
	lines[2] = edited
	if err := os.WriteFile(a.auditPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = audit.Verify(key, a.auditPath)
	var be *audit.BrokenError
	if !errorsAs(err, &be) || be.Seq != recs[2].Seq || be.Line != 3 {
		t.Fatalf("Verify after an edit = %v; want a break at line 3 (seq %d)", err, recs[2].Seq)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// TestAgentCodeFlowConsent: an agent gets a user's token by the code flow
// with PKCE, after the user consents on a page naming it; the token has
// sub = the user and client_id = the agent. Denying, and prompt=none,
// give no code.
func TestAgentCodeFlowConsent(t *testing.T) {
	a := startAgents(t, nil)
	b := a.browser()
	verifier := "v-" + strings.Repeat("x", 50)
	sum := sha256.Sum256([]byte(verifier))
	authURL := func(state, extra string) string {
		return a.url + "/authorize?" + url.Values{"response_type": {"code"}, "client_id": {agentID}, "redirect_uri": {agentRedirect},
			"scope": {"openid profile"}, "state": {state}, "code_challenge_method": {"S256"},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}}.Encode() + extra
	}
	p := b.authorize(authURL("s1", ""), aliceUser, alicePassword)
	if p.status != 200 || !strings.Contains(p.body, "Allow "+agentID) || !strings.Contains(p.body, "an AI agent") ||
		!strings.Contains(p.body, "openid, profile") || !strings.Contains(p.body, "mail-api") {
		t.Fatalf("consent page: %d\n%s", p.status, clipText(p.body, 3000))
	}
	p = b.submit(p, url.Values{"decision": {"allow"}})
	if p.location == nil || p.location.Query().Get("code") == "" || p.location.Query().Get("state") != "s1" {
		t.Fatalf("after allow: %d %v", p.status, p.location)
	}
	code := p.location.Query().Get("code")
	r := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {agentRedirect}, "code_verifier": {verifier}})
	if r.status != 200 {
		t.Fatalf("code exchange with private_key_jwt: %d %s", r.status, r.raw)
	}
	pl := payload(t, r.str("access_token"))
	if pl["sub"] != "user-alice" || pl["client_id"] != agentID {
		t.Fatalf("access token sub/client_id = %v/%v; want user-alice/%s", pl["sub"], pl["client_id"], agentID)
	}
	// The refresh works with the agent's assertion too.
	rr := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {r.str("refresh_token")}})
	if rr.status != 200 {
		t.Fatalf("refresh: %d %s", rr.status, rr.raw)
	}
	// Consent is asked each time (SSO session or not); deny gives access_denied.
	p = b.get(authURL("s2", ""))
	if !strings.Contains(p.body, "Allow "+agentID) {
		t.Fatalf("second request shows no consent page: %d", p.status)
	}
	p = b.submit(p, url.Values{"decision": {"deny"}})
	if p.location == nil || p.location.Query().Get("error") != "access_denied" || p.location.Query().Get("code") != "" {
		t.Fatalf("after deny: %v", p.location)
	}
	p = b.get(authURL("s3", "&prompt=none"))
	if p.location == nil || p.location.Query().Get("error") != "consent_required" {
		t.Fatalf("prompt=none: %d %v", p.status, p.location)
	}
	// A consent form replayed in another browser (no CSRF cookie) is refused.
	p = b.get(authURL("s4", ""))
	other := a.browser()
	f := parseForm(t, p.body)
	f.fields.Set("decision", "allow")
	if q := other.postForm(a.url+"/consent", f.fields); q.status != http.StatusForbidden || q.location != nil {
		t.Fatalf("consent from another browser: %d %v", q.status, q.location)
	}
	// The user's token of the agent answers at userinfo until the agent is
	// disabled; then userinfo refuses it, and the agent's refresh too.
	if u := a.userinfo(rr.str("access_token")); u.status != 200 || u.str("sub") != "user-alice" {
		t.Fatalf("userinfo: %d %s", u.status, u.raw)
	}
	if _, err := issuer.SetClientDisabled(context.Background(), a.store, agentID, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "userinfo refuses the disabled agent's user token", func() bool {
		return a.userinfo(rr.str("access_token")).status == http.StatusUnauthorized
	})
	wantError(t, a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rr.str("refresh_token")}}), http.StatusBadRequest, "unauthorized_client")
	// And its authorization requests get unauthorized_client at the redirect URI.
	p = b.get(authURL("s5", ""))
	if p.location == nil || p.location.Query().Get("error") != "unauthorized_client" {
		t.Fatalf("authorization request of a disabled agent: %d %v", p.status, p.location)
	}
}

// TestJWTBearerGrant: an assertion of a trusted issuer (its keys at a
// jwks_url) becomes an access token for the mapped subject with the
// authenticated client as client_id; an untrusted issuer, a replayed jti,
// a wrong aud and a scope past the cap are refused.
func TestJWTBearerGrant(t *testing.T) {
	idpKey := newSigner(t, "idp1")
	var idpHits atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idpHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{idpKey.public()}})
	}))
	t.Cleanup(idp.Close)
	const idpIss = "https://workloads.example.test"
	// An issuer whose keys cannot be fetched (its server is gone).
	const downIss = "https://down.example.test"
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	// An issuer whose key set comes gzip-encoded whatever was asked.
	const gzipIss = "https://gzip.example.test"
	var gzipAsked atomic.Value
	gzipAsked.Store("")
	gz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gzipAsked.Store(r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		json.NewEncoder(zw).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{idpKey.public()}})
		zw.Close()
	}))
	t.Cleanup(gz.Close)
	a := startAgents(t, func(c *issuer.Config) {
		c.TrustedIssuers = []trust.Issuer{
			{Issuer: idpIss, JWKSURL: idp.URL, Algorithms: []string{"ES256"}, Scopes: []string{"profile"},
				Audience: []string{c.Issuer}, Subject: trust.Mapping{Mode: trust.MapPrefix, Prefix: idpIss + "#"}},
			{Issuer: "https://users.example.test", JWKSURL: idp.URL, Algorithms: []string{"ES256"}, Audience: []string{"bffgate"},
				Subject: trust.Mapping{Mode: trust.MapLookup, Claim: "email"}},
			{Issuer: downIss, JWKSURL: down.URL, Algorithms: []string{"ES256"}, Audience: []string{c.Issuer}},
			{Issuer: gzipIss, JWKSURL: gz.URL, Algorithms: []string{"ES256"}, Audience: []string{c.Issuer}},
		}
		for i := range c.Clients {
			if c.Clients[i].ID == agentID {
				c.Clients[i].GrantTypes = append(c.Clients[i].GrantTypes, issuer.GrantJWTBearer)
			}
		}
	})
	assertion := func(s signer, iss, sub string, edit func(map[string]any)) string {
		now := a.clock.Now()
		c := map[string]any{"iss": iss, "sub": sub, "aud": a.url, "exp": now.Add(10 * time.Minute).Unix(), "iat": now.Unix(), "jti": randomSuffix()}
		if edit != nil {
			edit(c)
		}
		return s.sign(t, c, nil)
	}
	grant := func(asr, scope string) oauthResponse {
		form := url.Values{"grant_type": {issuer.GrantJWTBearer}, "assertion": {asr}}
		if scope != "" {
			form.Set("scope", scope)
		}
		return a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), form)
	}
	ok := assertion(idpKey, idpIss, "spiffe://partner.test/ns/batch", nil)
	r := grant(ok, "profile")
	if r.status != 200 {
		t.Fatalf("jwt-bearer: %d %s", r.status, r.raw)
	}
	p := payload(t, r.str("access_token"))
	if p["sub"] != idpIss+"#spiffe://partner.test/ns/batch" || p["client_id"] != agentID || r.str("refresh_token") != "" {
		t.Fatalf("token = %v (refresh %q)", p, r.str("refresh_token"))
	}
	// A user of this issuer, found by a verified email.
	r = grant(assertion(idpKey, "https://users.example.test", "ext-77", func(c map[string]any) {
		c["aud"] = "bffgate"
		c["email"] = aliceEmail
		c["email_verified"] = true
	}), "")
	if r.status != 200 || payload(t, r.str("access_token"))["sub"] != "user-alice" {
		t.Fatalf("lookup mapping: %d %s", r.status, r.raw)
	}
	tests := []struct{ name, assertion, scope, want string }{
		{"untrusted issuer", assertion(idpKey, "https://evil.example.test", "x", nil), "", "not a trusted issuer"},
		{"replayed", ok, "", "already used"},
		{"wrong aud", assertion(idpKey, idpIss, "x", func(c map[string]any) { c["aud"] = "https://elsewhere" }), "", "aud holds none"},
		{"expired", assertion(idpKey, idpIss, "x", func(c map[string]any) { c["exp"] = a.clock.Now().Add(-time.Hour).Unix() }), "", "expired"},
		{"key of another issuer", assertion(newSigner(t, "idp1"), idpIss, "x", nil), "", "does not verify"},
		{"scope past the cap", assertion(idpKey, idpIss, "x", nil), "email", "email"},
		{"no user with that email", assertion(idpKey, "https://users.example.test", "x", func(c map[string]any) {
			c["aud"] = "bffgate"
			c["email"] = "nobody@example.test"
		}), "", "no user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := grant(tc.assertion, tc.scope)
			if r.status != 400 || (r.str("error") != "invalid_grant" && r.str("error") != "invalid_scope") {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if !strings.Contains(r.str("error_description"), tc.want) {
				t.Fatalf("error_description = %q; want %q", r.str("error_description"), tc.want)
			}
		})
	}
	// The assertions of another key (and so of kids go-oidc does not
	// hold) made no new fetch within the minute after the first.
	if n := idpHits.Load(); n != 1 {
		t.Errorf("the trusted issuer's jwks_url was fetched %d times; want 1 (at most once a minute)", n)
	}
	// Keys that cannot be fetched: not the assertion's fault, 503.
	r = grant(assertion(idpKey, downIss, "x", nil), "")
	if r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" || !strings.Contains(r.str("error_description"), downIss) {
		t.Fatalf("jwt-bearer with the issuer's keys unreachable: %d %s", r.status, r.raw)
	}
	// A compressed key set is not inflated: refused like keys that
	// cannot be fetched.
	r = grant(assertion(idpKey, gzipIss, "x", nil), "")
	if r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" {
		t.Fatalf("jwt-bearer with a gzip-encoded key set: %d %s", r.status, r.raw)
	}
	if gzipAsked.Load() != "identity" {
		t.Fatalf("the key set fetch sent Accept-Encoding %q; want identity", gzipAsked.Load())
	}
	// The fetches are counted, as the clients' jwks_uri fetches are.
	if v, ok := a.metric("bffgate_issuer_key_set_fetches_total", "kind", "trusted_issuer", "result", "ok"); !ok || v < 1 {
		t.Errorf("bffgate_issuer_key_set_fetches_total{kind=trusted_issuer,result=ok} = %v, %v; want at least 1", v, ok)
	}
	if v, ok := a.metric("bffgate_issuer_key_set_fetches_total", "kind", "trusted_issuer", "result", "error"); !ok || v < 2 {
		t.Errorf("bffgate_issuer_key_set_fetches_total{kind=trusted_issuer,result=error} = %v, %v; want at least 2 (down, gzip)", v, ok)
	}
	// A client not allowed the grant.
	r = a.postAssertion("/token", agentURIID, issuer.AssertionTypeJWT, a.uriKey.sign(t, a.claims(agentURIID), nil),
		url.Values{"grant_type": {issuer.GrantJWTBearer}, "assertion": {assertion(idpKey, idpIss, "y", nil)}})
	wantError(t, r, http.StatusBadRequest, "unauthorized_client")
}

// TestAgentDisableReachesAnotherInstance: two instances share one store
// (a bbolt file here; Redis in e2e/agents). A disable written to the store
// by anyone reaches the other instance's introspection by its reload of
// the client states, without a poll of the denylist (60s here).
func TestAgentDisableReachesAnotherInstance(t *testing.T) {
	a := startAgents(t, nil)
	b := start(t, envOptions{db: a.db, path: a.path, issuerURL: a.url, clock: a.clock, cfg: func(c *issuer.Config) {
		*c = a.cfg
		c.Audit.File = filepath.Join(t.TempDir(), "audit-b.log")
		c.Registerer, c.Gatherer = nil, nil
		c.DenylistPollInterval = time.Minute
	}})
	r := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), ccForm)
	tok := r.str("access_token")
	// Introspection at B by the agent itself (its token's only audience).
	agentB := &agentEnv{env: b, key: a.key}
	wantActive(t, agentB.postAssertion("/introspect", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{"token": {tok}}))
	if _, err := issuer.SetClientDisabled(context.Background(), a.store, agentID, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, "instance B refuses the disabled agent's token", func() bool {
		return agentB.postAssertion("/introspect", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), url.Values{"token": {tok}}).body["active"] == false
	})
	t.Logf("instance B refused the token %s after the disable", time.Since(start).Round(time.Millisecond))
}

func TestKeySetFetchMetric(t *testing.T) {
	a := startAgents(t, nil)
	a.postAssertion("/token", agentURIID, issuer.AssertionTypeJWT, a.uriKey.sign(t, a.claims(agentURIID), nil), ccForm)
	if v, ok := a.metric("bffgate_issuer_key_set_fetches_total", "kind", "client", "result", "ok"); !ok || v != 1 {
		t.Fatalf("bffgate_issuer_key_set_fetches_total{kind=client,result=ok} = %v, %v; want 1", v, ok)
	}
}

// TestExchangeRefusesDisabledAgent: token exchange composes with agents.
// An agent's own token (its aud names web) serves web as the actor token
// of a delegation and as a subject token; once the agent is disabled,
// both are refused (invalid_grant naming the disable), and so is the
// token at web's introspection, while exchanges without the agent go on.
func TestExchangeRefusesDisabledAgent(t *testing.T) {
	a := startAgents(t, func(c *issuer.Config) {
		withExchange(c)
		for i := range c.Clients {
			if c.Clients[i].ID == agentID {
				c.Clients[i].Audience = []string{"mail-api", webID}
			}
		}
	})
	_, _, tk := a.loginTokens(webID)
	r := a.postAssertion("/token", agentID, issuer.AssertionTypeJWT, a.key.sign(t, a.claims(agentID), nil), ccForm)
	if r.status != http.StatusOK {
		t.Fatalf("client_credentials of the agent: %d %s", r.status, r.raw)
	}
	agentTok := r.str("access_token")
	delegation := exchangeForm(tk.access, "audience", ordersID, "actor_token", agentTok, "actor_token_type", issuer.TokenTypeAccess)
	asSubject := exchangeForm(agentTok, "audience", ordersID)
	del := wantExchanged(t, a.post("/token", webBasic, delegation))
	if act, _ := del["act"].(map[string]any); act["client_id"] != agentID || del["sub"] != "user-alice" {
		t.Fatalf("delegation to the agent: %v; want act.client_id %s, sub user-alice", del, agentID)
	}
	if sub := wantExchanged(t, a.post("/token", webBasic, asSubject)); sub["sub"] != issuer.ClientSubject(agentID) {
		t.Fatalf("the agent's token as subject: sub %v, want %s", sub["sub"], issuer.ClientSubject(agentID))
	}

	if _, err := issuer.SetClientDisabled(context.Background(), a.store, agentID, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the exchange refuses the disabled agent's actor token", func() bool {
		return a.post("/token", webBasic, delegation).status == http.StatusBadRequest
	})
	wantGrantError(t, a.post("/token", webBasic, delegation), "actor token", "disabled")
	wantGrantError(t, a.post("/token", webBasic, asSubject), "subject token", "disabled")
	wantInactive(t, a.post("/introspect", webBasic, url.Values{"token": {agentTok}}))
	// The user's own token still exchanges (impersonation, no agent).
	wantExchanged(t, a.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID)))

	// Every exchange is an audit record: the delegation names the agent
	// as actor, the refusal its reason; no token is in the file.
	raw, err := os.ReadFile(a.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	var allowed, refused int
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var rec audit.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if rec.Action != "token_exchange" {
			continue
		}
		switch {
		case rec.Decision == audit.Allow && rec.Actor == issuer.ClientSubject(agentID) && rec.Subject == "user-alice" && rec.TokenID != "":
			allowed++
		case rec.Decision == audit.Deny && strings.Contains(rec.Reason, "disabled"):
			refused++
		}
	}
	if allowed == 0 || refused < 2 {
		t.Fatalf("audit: %d delegations to the agent allowed, %d refusals naming the disable; want at least 1 and 2", allowed, refused)
	}
	for _, tok := range []string{agentTok, tk.access} {
		if strings.Contains(string(raw), tok) {
			t.Fatal("the audit file holds a token")
		}
	}
}
