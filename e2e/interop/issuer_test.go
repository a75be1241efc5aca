package interop

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/e2e/peers"
	"github.com/bffgate/bffgate/e2e/stack"
)

// The relying party registered at the issuer for openid-client. Its
// redirect and post-logout URIs are never fetched: the tests stop at the
// redirect that leaves the issuer.
const (
	rpClientID      = "interop-rp"
	rpClientSecret  = "interop-rp-secret-0123456789abcdef"
	rpRedirectURI   = "http://127.0.0.1/interop/callback"
	rpPostLogoutURI = "http://127.0.0.1/interop/signed-out"
	// The zero-config demo user and its subject.
	demoUser     = "demo"
	demoPassword = "demo"
	demoSubject  = "demo-user-1"
	rpScope      = "openid profile email offline_access"
)

// tokenConfig is one token format of the issuer.
type tokenConfig struct {
	Name   string
	Format string // signed or encrypted
	Alg    string // signed: the access/refresh token alg
	Enc    string // encrypted: the JWE enc
	// Refresh is the refresh-token format with Format signed: "" (signed)
	// or "sealed" (JWE dir A256GCM, issuer.tokens.refresh_format).
	Refresh string
}

func (tc tokenConfig) hmac() bool      { return strings.HasPrefix(tc.Alg, "HS") }
func (tc tokenConfig) encrypted() bool { return tc.Format == "encrypted" }
func (tc tokenConfig) sealed() bool    { return tc.Refresh == "sealed" }

// idTokenAlg is the ID token alg the issuer runs with: the token alg when
// it is asymmetric (so openid-client validates ID tokens of every RS, PS
// and ES alg), RS256 otherwise (ID tokens are never HMAC or encrypted).
func (tc tokenConfig) idTokenAlg() string {
	if tc.encrypted() || tc.hmac() {
		return "RS256"
	}
	return tc.Alg
}

// tokenConfigs lists every signing alg and both encryptions, and RS256
// access tokens beside sealed refresh tokens.
func tokenConfigs() []tokenConfig {
	var out []tokenConfig
	for _, alg := range []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"} {
		out = append(out, tokenConfig{Name: "signed-" + alg, Format: "signed", Alg: alg})
	}
	for _, enc := range []string{"A128CBC-HS256", "A256GCM"} {
		out = append(out, tokenConfig{Name: "encrypted-" + enc, Format: "encrypted", Enc: enc})
	}
	out = append(out, tokenConfig{Name: "signed-RS256-sealed-refresh", Format: "signed", Alg: "RS256", Refresh: "sealed"})
	return out
}

// issuerEnv is bffgate's issuer (the real binary, gateway off) with
// openid-client configured as the confidential client rpClientID.
type issuerEnv struct {
	tc      tokenConfig
	st      *stack.Stack
	rp      *peers.RP
	jwksURI string
	// key is the HMAC secret (HS algs) or the dir key (encrypted), which
	// the test generated and gave the issuer as a key file, so that jose
	// can check the tokens with it. nil for asymmetric algs, whose keys the
	// issuer generates and publishes.
	key []byte
	// sealKey is the dir key of sealed refresh tokens, given to the
	// issuer as a key file so that jose can open what it sealed.
	sealKey []byte
}

func startIssuer(t *testing.T, tc tokenConfig) *issuerEnv {
	t.Helper()
	e := &issuerEnv{tc: tc}
	clients, err := json.Marshal([]map[string]any{{
		"id":                        rpClientID,
		"secret":                    rpClientSecret,
		"redirect_uris":             []string{rpRedirectURI},
		"post_logout_redirect_uris": []string{rpPostLogoutURI},
	}})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"BFFGATE_DEMO_API_ENABLED=false",
		"BFFGATE_ISSUER_CLIENTS=" + string(clients),
		"BFFGATE_ISSUER_TOKENS_FORMAT=" + tc.Format,
		"BFFGATE_ISSUER_TOKENS_ID_TOKEN_ALG=" + tc.idTokenAlg(),
	}
	keyAlg := ""
	switch {
	case tc.encrypted():
		env = append(env, "BFFGATE_ISSUER_TOKENS_ENCRYPTION="+tc.Enc)
		keyAlg, e.key = "dir", randomKey(32) // both encs here take a 256-bit key
	case tc.hmac():
		env = append(env, "BFFGATE_ISSUER_TOKENS_ALG="+tc.Alg)
		keyAlg, e.key = tc.Alg, randomKey(64) // at least the hash size (RFC 7518 §3.2)
	default:
		env = append(env, "BFFGATE_ISSUER_TOKENS_ALG="+tc.Alg)
	}
	var files []map[string]string
	// The issuer's key file format for symmetric keys: the raw secret in
	// base64, alone in the file (issuer/keys.readKeyFile).
	keyFile := func(name, alg string, key []byte) {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, []byte(base64.RawURLEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, map[string]string{"path": path, "alg": alg})
	}
	if e.key != nil {
		keyFile("token-key.b64", keyAlg, e.key)
	}
	if tc.sealed() {
		env = append(env, "BFFGATE_ISSUER_TOKENS_REFRESH_FORMAT=sealed")
		e.sealKey = randomKey(32)
		keyFile("seal-key.b64", "dir", e.sealKey)
	}
	if files != nil {
		keys, _ := json.Marshal(files)
		env = append(env, "BFFGATE_ISSUER_KEYS="+string(keys))
	}
	e.st = stack.Start(t, stack.Options{NoGateway: true, Env: env})
	e.rp = peers.StartRP(t, peers.RPOptions{
		Issuer: e.st.IssuerURL, ClientID: rpClientID, ClientSecret: rpClientSecret, RedirectURI: rpRedirectURI,
	})
	e.jwksURI = claimString(e.rp.Metadata, "jwks_uri")
	if e.jwksURI == "" {
		t.Fatalf("openid-client's discovery result has no jwks_uri: %v", e.rp.Metadata)
	}
	return e
}

func randomKey(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// login runs one authorization code flow with openid-client: it builds the
// request (PKCE S256, state, nonce), signs in at the issuer's form with the
// agent, and has openid-client exchange the code and validate the ID token.
func (e *issuerEnv) login(ctx context.Context, t *testing.T, a *agent, params map[string]string) (peers.AuthRequest, peers.Tokens) {
	t.Helper()
	ar, err := e.rp.Authorize(ctx, rpScope, params)
	if err != nil {
		t.Fatalf("openid-client authorize: %v", err)
	}
	cb, err := a.issuerSignIn(ctx, ar.URL, demoUser, demoPassword)
	if err != nil {
		t.Fatal(err)
	}
	q := cb.Query()
	if q.Get("code") == "" || q.Get("state") != ar.State || q.Get("iss") != e.st.IssuerURL {
		t.Fatalf("the issuer redirected to %s?%s; want code, the request's state and iss=%s (RFC 9207)", cb.Path, redactQuery(q), e.st.IssuerURL)
	}
	tok, err := e.rp.Callback(ctx, cb.String(), ar.State)
	if err != nil {
		t.Fatalf("openid-client code exchange and ID token validation: %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || tok.IDToken == "" {
		t.Fatalf("token response lacks a token: access %t, refresh %t, id %t", tok.AccessToken != "", tok.RefreshToken != "", tok.IDToken != "")
	}
	return ar, tok
}

// redactQuery shows a query's names and short values only.
func redactQuery(q url.Values) string {
	var parts []string
	for k := range q {
		parts = append(parts, k+"="+clip(q.Get(k), 12))
	}
	slices.Sort(parts)
	return strings.Join(parts, "&")
}

// wantActive asserts an introspection answer for a live token.
func wantActive(t *testing.T, what string, m map[string]any, tokenType string) {
	t.Helper()
	if m["active"] != true {
		t.Fatalf("%s: introspection says %v, want active", what, m)
	}
	if claimString(m, "sub") != demoSubject || claimString(m, "client_id") != rpClientID {
		t.Errorf("%s: introspection sub %v client_id %v, want %s and %s", what, m["sub"], m["client_id"], demoSubject, rpClientID)
	}
	if tokenType != "" && claimString(m, "token_type") != tokenType {
		t.Errorf("%s: introspection token_type %v, want %s", what, m["token_type"], tokenType)
	}
	for _, k := range []string{"exp", "iat", "jti", "iss", "scope"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: introspection lacks %s (RFC 7662 §2.2): %v", what, k, m)
		}
	}
}

// wantInactive asserts {"active": false} and nothing else (RFC 7662 §2.2:
// an inactive token reveals nothing).
func wantInactive(t *testing.T, what string, m map[string]any, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: introspection failed: %v", what, err)
	}
	if m["active"] != false || len(m) != 1 {
		t.Errorf("%s: introspection says %v, want only {\"active\": false}", what, m)
	}
}

// TestIssuerInterop runs the embedded issuer against openid-client and
// jose for every token format (issue 7, items 6 to 8).
func TestIssuerInterop(t *testing.T) {
	peers.NodeModules(t)
	jo := peers.StartJose(t)
	for _, tc := range tokenConfigs() {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			e := startIssuer(t, tc)
			t.Run("discovery", func(t *testing.T) { e.testDiscovery(t) })
			t.Run("openid-client", func(t *testing.T) { e.testOpenIDClient(t) })
			t.Run("jose", func(t *testing.T) { e.testJose(t, jo) })
			t.Run("forged", func(t *testing.T) { e.testForged(t, jo) })
		})
	}
}

// testDiscovery checks what openid-client's discovery found (item 6) and
// that the JWK set publishes public keys only.
func (e *issuerEnv) testDiscovery(t *testing.T) {
	ctx := testContext(t)
	m, err := e.rp.Discover(ctx)
	if err != nil {
		t.Fatalf("openid-client discovery: %v", err)
	}
	if m["issuer"] != e.st.IssuerURL {
		t.Errorf("issuer %v, want %s", m["issuer"], e.st.IssuerURL)
	}
	for _, k := range []string{"authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
		"revocation_endpoint", "introspection_endpoint", "end_session_endpoint"} {
		if u := claimString(m, k); !strings.HasPrefix(u, e.st.IssuerURL+"/") {
			t.Errorf("%s = %q, want a URL under the issuer", k, u)
		}
	}
	has := func(k, v string) bool {
		list, _ := m[k].([]any)
		return slices.Contains(list, any(v))
	}
	if !has("code_challenge_methods_supported", "S256") || has("code_challenge_methods_supported", "plain") {
		t.Errorf("code_challenge_methods_supported = %v, want [S256]", m["code_challenge_methods_supported"])
	}
	if !has("id_token_signing_alg_values_supported", e.tc.idTokenAlg()) {
		t.Errorf("id_token_signing_alg_values_supported = %v, want %s", m["id_token_signing_alg_values_supported"], e.tc.idTokenAlg())
	}
	if e.tc.encrypted() {
		if !has("access_token_encryption_enc_values_supported", e.tc.Enc) {
			t.Errorf("access_token_encryption_enc_values_supported = %v, want %s", m["access_token_encryption_enc_values_supported"], e.tc.Enc)
		}
	} else if !has("access_token_signing_alg_values_supported", e.tc.Alg) {
		t.Errorf("access_token_signing_alg_values_supported = %v, want %s", m["access_token_signing_alg_values_supported"], e.tc.Alg)
	}

	a := newAgent(t)
	r := a.get(ctx, e.jwksURI, nil)
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := r.JSON(&set); err != nil || r.Status != http.StatusOK {
		t.Fatalf("jwks_uri: %d %v", r.Status, err)
	}
	if len(set.Keys) == 0 {
		t.Fatal("the JWK set is empty")
	}
	algs := map[string]bool{}
	for _, k := range set.Keys {
		for _, need := range []string{"kid", "use", "alg", "kty"} {
			if claimString(k, need) == "" {
				t.Errorf("JWK %v has no %s", k["kid"], need)
			}
		}
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
			if _, ok := k[private]; ok {
				t.Errorf("JWK %v publishes the private member %q", k["kid"], private)
			}
		}
		if claimString(k, "kty") == "oct" {
			t.Errorf("JWK %v is a symmetric key: HMAC and dir keys must never be published", k["kid"])
		}
		algs[claimString(k, "alg")] = true
	}
	if !algs[e.tc.idTokenAlg()] {
		t.Errorf("no %s key in the JWK set (algs: %v)", e.tc.idTokenAlg(), algs)
	}
	if !e.tc.encrypted() && !e.tc.hmac() && !algs[e.tc.Alg] {
		t.Errorf("no %s key in the JWK set (algs: %v)", e.tc.Alg, algs)
	}
}

// testOpenIDClient is item 6: the whole client lifecycle through
// openid-client, with four grants (a user signs in once; the issuer's SSO
// cookie serves the others).
func (e *issuerEnv) testOpenIDClient(t *testing.T) {
	ctx := testContext(t)
	a := newAgent(t)

	// Grant 1: code + PKCE, ID token, userinfo, introspection, refresh
	// with rotation, then reuse of the rotated-away refresh token.
	ar, tok1 := e.login(ctx, t, a, nil)
	idc := tok1.IDTokenClaims
	if idc["sub"] != demoSubject || idc["nonce"] != ar.Nonce || !slices.Contains(audienceOf(idc), rpClientID) || idc["iss"] != e.st.IssuerURL {
		t.Errorf("ID token claims %v: want sub %s, the request's nonce, aud %s, iss %s", idc, demoSubject, rpClientID, e.st.IssuerURL)
	}
	if claimString(idc, "sid") == "" {
		t.Errorf("ID token has no sid claim: %v", idc)
	}
	if !strings.EqualFold(tok1.TokenType, "bearer") || tok1.ExpiresIn <= 0 {
		t.Errorf("token_type %q expires_in %d, want Bearer and a positive lifetime", tok1.TokenType, tok1.ExpiresIn)
	}
	ui, err := e.rp.UserInfo(ctx, tok1.AccessToken, demoSubject)
	if err != nil {
		t.Fatalf("openid-client userinfo: %v", err)
	}
	if ui["sub"] != demoSubject || ui["name"] != "Demo User" || ui["email"] != "demo@example.com" {
		t.Errorf("userinfo %v: want the demo user's profile and email claims", ui)
	}
	m, err := e.rp.Introspect(ctx, tok1.AccessToken, "access_token")
	if err != nil {
		t.Fatalf("openid-client introspection: %v", err)
	}
	wantActive(t, "access token", m, "")
	if !slices.Contains(audienceOf(m), rpClientID) || m["iss"] != e.st.IssuerURL || claimString(m, "sid") != claimString(idc, "sid") {
		t.Errorf("access token introspection aud %v iss %v sid %v; want aud %s, the issuer, the ID token's sid", m["aud"], m["iss"], m["sid"], rpClientID)
	}
	m, err = e.rp.Introspect(ctx, tok1.RefreshToken, "refresh_token")
	if err != nil {
		t.Fatalf("openid-client introspection: %v", err)
	}
	wantActive(t, "refresh token", m, "")
	// The hint is advice only (RFC 7009 §2.1, RFC 7662 §2.1): a wrong one
	// still finds the token.
	if m, err = e.rp.Introspect(ctx, tok1.AccessToken, "refresh_token"); err != nil || m["active"] != true {
		t.Errorf("introspecting an access token with token_type_hint=refresh_token: %v %v, want active", m, err)
	}

	tok2, err := e.rp.Refresh(ctx, tok1.RefreshToken)
	if err != nil {
		t.Fatalf("openid-client refresh: %v", err)
	}
	if tok2.AccessToken == "" || tok2.AccessToken == tok1.AccessToken {
		t.Error("the refresh gave no new access token")
	}
	if tok2.RefreshToken == "" || tok2.RefreshToken == tok1.RefreshToken {
		t.Error("the refresh did not rotate the refresh token")
	}
	if tok2.IDToken != "" && tok2.IDTokenClaims["sub"] != demoSubject {
		t.Errorf("refreshed ID token sub %v", tok2.IDTokenClaims["sub"])
	}
	if _, err := e.rp.UserInfo(ctx, tok2.AccessToken, demoSubject); err != nil {
		t.Errorf("userinfo with the refreshed access token: %v", err)
	}
	m, err = e.rp.Introspect(ctx, tok1.RefreshToken, "refresh_token")
	wantInactive(t, "rotated-away refresh token", m, err)
	m, err = e.rp.Introspect(ctx, tok2.RefreshToken, "refresh_token")
	if err != nil || m["active"] != true {
		t.Fatalf("rotated-in refresh token: %v %v, want active", m, err)
	}
	// Reuse of the rotated-away token (RFC 9700 §4.14.2): invalid_grant,
	// and the whole grant is revoked.
	_, err = e.rp.Refresh(ctx, tok1.RefreshToken)
	var pe *peers.PeerError
	if !errors.As(err, &pe) || pe.OAuthError != "invalid_grant" {
		t.Errorf("refresh with a rotated-away refresh token: %v, want invalid_grant", err)
	}
	m, err = e.rp.Introspect(ctx, tok2.RefreshToken, "refresh_token")
	wantInactive(t, "refresh token of a grant revoked by reuse", m, err)
	m, err = e.rp.Introspect(ctx, tok2.AccessToken, "access_token")
	wantInactive(t, "access token of a grant revoked by reuse", m, err)

	// Grant 2 (SSO, no password): revoking the access token makes it
	// inactive and userinfo refuses it.
	_, tok3 := e.login(ctx, t, a, nil)
	if err := e.rp.Revoke(ctx, tok3.AccessToken, "access_token"); err != nil {
		t.Fatalf("openid-client revocation of an access token: %v", err)
	}
	m, err = e.rp.Introspect(ctx, tok3.AccessToken, "")
	wantInactive(t, "revoked access token", m, err)
	if _, err := e.rp.UserInfo(ctx, tok3.AccessToken, demoSubject); err == nil {
		t.Error("userinfo accepted a revoked access token")
	}

	// Grant 3: revoking the refresh token ends the grant's access tokens
	// too; refreshing with it is invalid_grant.
	_, tok4 := e.login(ctx, t, a, map[string]string{"prompt": "none"})
	if err := e.rp.Revoke(ctx, tok4.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("openid-client revocation of a refresh token: %v", err)
	}
	m, err = e.rp.Introspect(ctx, tok4.RefreshToken, "")
	wantInactive(t, "revoked refresh token", m, err)
	m, err = e.rp.Introspect(ctx, tok4.AccessToken, "")
	wantInactive(t, "access token of a revoked refresh token's grant", m, err)
	if _, err := e.rp.Refresh(ctx, tok4.RefreshToken); !errors.As(err, &pe) || pe.OAuthError != "invalid_grant" {
		t.Errorf("refresh with a revoked refresh token: %v, want invalid_grant", err)
	}
	// Revoking an unknown token is 200 (RFC 7009 §2.2).
	if err := e.rp.Revoke(ctx, "not-a-token-at-all", ""); err != nil {
		t.Errorf("revoking an unknown token: %v, want success", err)
	}

	// Grant 4: RP-initiated logout through the URL openid-client builds.
	_, tok5 := e.login(ctx, t, a, nil)
	endURL, err := e.rp.EndSessionURL(ctx, tok5.IDToken, rpPostLogoutURI, "bye-state")
	if err != nil {
		t.Fatalf("openid-client end-session URL: %v", err)
	}
	if !strings.HasPrefix(endURL, claimString(e.rp.Metadata, "end_session_endpoint")+"?") {
		t.Errorf("end-session URL %s is not at the advertised end_session_endpoint", clip(endURL, 80))
	}
	r := a.get(ctx, endURL, nil)
	loc := r.Location()
	if r.Status != http.StatusFound && r.Status != http.StatusSeeOther || loc == nil ||
		loc.Scheme+"://"+loc.Host+loc.Path != rpPostLogoutURI || loc.Query().Get("state") != "bye-state" {
		t.Fatalf("end session with id_token_hint: %d to %v, want a redirect to %s with state=bye-state\n%.800s", r.Status, loc, rpPostLogoutURI, r.Body)
	}
	m, err = e.rp.Introspect(ctx, tok5.RefreshToken, "")
	wantInactive(t, "refresh token of an ended session", m, err)
	// The SSO session is gone: prompt=none now answers login_required.
	ar2, err := e.rp.Authorize(ctx, rpScope, map[string]string{"prompt": "none"})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := a.issuerSignIn(ctx, ar2.URL, demoUser, demoPassword)
	if err != nil {
		t.Fatal(err)
	}
	if cb.Query().Get("error") != "login_required" {
		t.Errorf("prompt=none after logout redirected with %s, want error=login_required", redactQuery(cb.Query()))
	}
}

// testJose is item 7: jose verifies every token through the jwks_uri
// (createRemoteJWKSet), checks typ at+jwt and the RFC 9068 claims of
// access tokens, and decrypts the encrypted format with the dir key.
//
// HMAC tokens: the secret is never published, so no outside party can
// verify them through jwks_uri. Here the test generated the secret and
// gave it to the issuer as a key file, so jose verifies them with it (a
// resource server would use introspection instead, as the openid-client
// test does).
func (e *issuerEnv) testJose(t *testing.T, jo *peers.Jose) {
	ctx := testContext(t)
	a := newAgent(t)
	ar, tok := e.login(ctx, t, a, nil)

	// The ID token, always signed with an asymmetric alg. Fresh: the jose
	// process outlives this case and caches key sets by URI, and a later
	// case's issuer may get an earlier one's port (its keys then miss the
	// kid, and jose refetches only after a cooldown: seen once in CI).
	v, err := jo.Verify(ctx, tok.IDToken, peers.VerifyOptions{
		Fresh:   true,
		JWKSURI: e.jwksURI, Issuer: e.st.IssuerURL, Audience: rpClientID, Algorithms: []string{e.tc.idTokenAlg()},
		RequiredClaims: []string{"sub", "iat", "exp", "auth_time", "sid", "nonce"},
	})
	if err != nil {
		t.Fatalf("jose rejects the ID token: %v", err)
	}
	if v.Payload["nonce"] != ar.Nonce || v.Payload["sub"] != demoSubject {
		t.Errorf("ID token nonce/sub %v/%v", v.Payload["nonce"], v.Payload["sub"])
	}
	if claimString(v.ProtectedHeader, "kid") == "" {
		t.Errorf("ID token header has no kid: %v", v.ProtectedHeader)
	}

	var at, rt peers.Verified
	switch {
	case e.tc.encrypted():
		at, err = jo.Decrypt(ctx, tok.AccessToken, peers.DecryptOptions{Key: e.key, Enc: e.tc.Enc, Issuer: e.st.IssuerURL, Audience: rpClientID, Typ: "at+jwt"})
		if err != nil {
			t.Fatalf("jose cannot decrypt the access token: %v", err)
		}
		rt, err = jo.Decrypt(ctx, tok.RefreshToken, peers.DecryptOptions{Key: e.key, Enc: e.tc.Enc, Issuer: e.st.IssuerURL, Typ: "rt+jwt"})
		if err != nil {
			t.Fatalf("jose cannot decrypt the refresh token: %v", err)
		}
		for _, tv := range []peers.Verified{at, rt} {
			if tv.ProtectedHeader["alg"] != "dir" || tv.ProtectedHeader["enc"] != e.tc.Enc {
				t.Errorf("JWE header %v, want alg dir and enc %s", tv.ProtectedHeader, e.tc.Enc)
			}
		}
		// jwtDecrypt has no RFC 9068 mode; check the claims here.
		checkRFC9068(t, at.Payload)
		// An encrypted token is not also signed: jose must not take it as
		// a JWS.
		if _, err := jo.Verify(ctx, tok.AccessToken, peers.VerifyOptions{JWKSURI: e.jwksURI}); err == nil {
			t.Error("jose verified an encrypted access token as a JWS")
		}
	default:
		opts := peers.VerifyOptions{Issuer: e.st.IssuerURL, Algorithms: []string{e.tc.Alg}}
		if e.tc.hmac() {
			opts.Secret = e.key
		} else {
			opts.JWKSURI = e.jwksURI
		}
		atOpts := opts
		atOpts.Audience, atOpts.AccessToken = rpClientID, true
		at, err = jo.Verify(ctx, tok.AccessToken, atOpts)
		if err != nil {
			t.Fatalf("jose rejects the access token (typ at+jwt, RFC 9068 claims): %v", err)
		}
		rtOpts := opts
		rtOpts.Typ = "rt+jwt"
		signed := []peers.Verified{at}
		if e.tc.sealed() {
			// Opaque to the client: no key of the JWK set verifies it;
			// only the holder of the dir key (the issuer, and here the
			// test that gave it the key) opens it.
			if _, err := jo.Verify(ctx, tok.RefreshToken, rtOpts); err == nil {
				t.Error("jose verified a sealed refresh token as a JWS")
			}
			rt, err = jo.Decrypt(ctx, tok.RefreshToken, peers.DecryptOptions{Key: e.sealKey, Enc: "A256GCM", Issuer: e.st.IssuerURL, Typ: "rt+jwt"})
			if err != nil {
				t.Fatalf("jose cannot decrypt the sealed refresh token: %v", err)
			}
			if rt.ProtectedHeader["alg"] != "dir" || rt.ProtectedHeader["enc"] != "A256GCM" {
				t.Errorf("sealed refresh token header %v, want alg dir and enc A256GCM", rt.ProtectedHeader)
			}
		} else {
			rt, err = jo.Verify(ctx, tok.RefreshToken, rtOpts)
			if err != nil {
				t.Fatalf("jose rejects the refresh token: %v", err)
			}
			signed = append(signed, rt)
		}
		for _, tv := range signed {
			if tv.ProtectedHeader["alg"] != e.tc.Alg || claimString(tv.ProtectedHeader, "kid") == "" {
				t.Errorf("JWS header %v, want alg %s and a kid", tv.ProtectedHeader, e.tc.Alg)
			}
		}
		checkRFC9068(t, at.Payload)
		// Explicit typing (RFC 8725 §3.11): a refresh token does not pass
		// as an access token.
		if _, err := jo.Verify(ctx, tok.RefreshToken, atOpts); err == nil {
			t.Error("jose accepted the refresh token as an access token: its typ is not distinct")
		}
	}
	if at.ProtectedHeader["typ"] != "at+jwt" {
		t.Errorf("access token typ %v, want at+jwt (RFC 9068 §2.1)", at.ProtectedHeader["typ"])
	}
	if at.Payload["sid"] != v.Payload["sid"] || rt.Payload["sid"] != v.Payload["sid"] {
		t.Errorf("sid differs between ID (%v), access (%v) and refresh (%v) tokens", v.Payload["sid"], at.Payload["sid"], rt.Payload["sid"])
	}
	if rt.Payload["client_id"] != rpClientID || rt.Payload["sub"] != demoSubject {
		t.Errorf("refresh token client_id/sub %v/%v", rt.Payload["client_id"], rt.Payload["sub"])
	}

	// A rotated token set verifies too (same keys, new jti).
	tok2, err := e.rp.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	var at2 peers.Verified
	if e.tc.encrypted() {
		at2, err = jo.Decrypt(ctx, tok2.AccessToken, peers.DecryptOptions{Key: e.key, Enc: e.tc.Enc, Issuer: e.st.IssuerURL, Audience: rpClientID, Typ: "at+jwt"})
	} else if e.tc.hmac() {
		at2, err = jo.Verify(ctx, tok2.AccessToken, peers.VerifyOptions{Secret: e.key, Issuer: e.st.IssuerURL, Audience: rpClientID, AccessToken: true})
	} else {
		at2, err = jo.Verify(ctx, tok2.AccessToken, peers.VerifyOptions{JWKSURI: e.jwksURI, Issuer: e.st.IssuerURL, Audience: rpClientID, AccessToken: true})
	}
	if err != nil {
		t.Fatalf("jose rejects the refreshed access token: %v", err)
	}
	if at2.Payload["jti"] == at.Payload["jti"] {
		t.Error("the refreshed access token has the same jti")
	}
	if tok2.IDToken != "" {
		if _, err := jo.Verify(ctx, tok2.IDToken, peers.VerifyOptions{JWKSURI: e.jwksURI, Issuer: e.st.IssuerURL, Audience: rpClientID}); err != nil {
			t.Errorf("jose rejects the refreshed ID token: %v", err)
		}
	}
}

// checkRFC9068 checks the claims RFC 9068 §2.2 requires of a JWT access
// token, with their JSON types.
func checkRFC9068(t *testing.T, p map[string]any) {
	t.Helper()
	for _, k := range []string{"iss", "sub", "client_id", "jti", "scope"} {
		if _, ok := p[k].(string); !ok {
			t.Errorf("access token claim %s is %T, want a string (RFC 9068 §2.2)", k, p[k])
		}
	}
	for _, k := range []string{"exp", "iat", "auth_time"} {
		if _, ok := p[k].(float64); !ok {
			t.Errorf("access token claim %s is %T, want a NumericDate (RFC 9068 §2.2)", k, p[k])
		}
	}
	if !slices.Contains(audienceOf(p), rpClientID) {
		t.Errorf("access token aud %v, want %s", p["aud"], rpClientID)
	}
	if p["sub"] != demoSubject || p["client_id"] != rpClientID {
		t.Errorf("access token sub/client_id %v/%v", p["sub"], p["client_id"])
	}
	for _, sc := range []string{"openid", "profile", "email"} {
		if !slices.Contains(strings.Fields(claimString(p, "scope")), sc) {
			t.Errorf("access token scope %q lacks %s", p["scope"], sc)
		}
	}
}

// forgery is one bad token made from a good one.
type forgery struct {
	name  string
	token string
}

// testForged is item 8: tokens jose forges from live ones are inactive at
// introspection and refused at userinfo, while the originals stay good.
func (e *issuerEnv) testForged(t *testing.T, jo *peers.Jose) {
	ctx := testContext(t)
	a := newAgent(t)
	_, tok := e.login(ctx, t, a, nil)

	var kinds []peers.ForgeKind
	switch {
	case e.tc.encrypted():
		kinds = []peers.ForgeKind{peers.ForgeTamperedJWE}
	case e.tc.hmac():
		// No public key to confuse with: HS256-keyed-with-the-public-key
		// applies to asymmetric algs only.
		kinds = []peers.ForgeKind{peers.ForgeAlgNone, peers.ForgeUnknownKID, peers.ForgeTamperedPayload}
	default:
		kinds = []peers.ForgeKind{peers.ForgeAlgNone, peers.ForgeHS256PublicKey, peers.ForgeUnknownKID, peers.ForgeTamperedPayload}
	}
	sources := []struct{ name, token string }{{"access", tok.AccessToken}, {"refresh", tok.RefreshToken}}
	if e.tc.sealed() {
		sources = sources[:1] // the JWS forgeries; the sealed refresh token's are below
	}
	var forged []forgery
	for _, k := range kinds {
		for _, src := range sources {
			f, err := jo.Forge(ctx, k, src.token, e.jwksURI)
			if err != nil {
				t.Fatalf("jose forge %s from the %s token: %v", k, src.name, err)
			}
			forged = append(forged, forgery{string(k) + "/" + src.name, f})
		}
	}
	if e.tc.encrypted() {
		// jose has no forge for these; go-jose makes them: a JWE under
		// another dir key with the issuer's kid and typ, and one whose
		// header was changed after encryption (the header is the AAD).
		hdr, err := jo.Decode(ctx, tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		at, err := jo.Decrypt(ctx, tok.AccessToken, peers.DecryptOptions{Key: e.key, Enc: e.tc.Enc})
		if err != nil {
			t.Fatal(err)
		}
		forged = append(forged, forgery{"other_dir_key/access", encryptWithOtherKey(t, e.tc.Enc, claimString(hdr.ProtectedHeader, "kid"), "at+jwt", at.Payload)})
		parts := strings.Split(tok.AccessToken, ".")
		h := map[string]any{}
		for k, v := range hdr.ProtectedHeader {
			h[k] = v
		}
		h["typ"] = "JWT"
		hb, _ := json.Marshal(h)
		parts[0] = base64.RawURLEncoding.EncodeToString(hb)
		forged = append(forged, forgery{"header_swapped/access", strings.Join(parts, ".")})
	}
	if e.tc.sealed() {
		// A sealed refresh token with one ciphertext bit flipped, and
		// its claims sealed again under another dir key with the
		// issuer's kid and typ.
		f, err := jo.Forge(ctx, peers.ForgeTamperedJWE, tok.RefreshToken, "")
		if err != nil {
			t.Fatalf("jose forge tampered_jwe from the sealed refresh token: %v", err)
		}
		forged = append(forged, forgery{"tampered_jwe/refresh", f})
		hdr, err := jo.Decode(ctx, tok.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		rt, err := jo.Decrypt(ctx, tok.RefreshToken, peers.DecryptOptions{Key: e.sealKey, Enc: "A256GCM"})
		if err != nil {
			t.Fatal(err)
		}
		forged = append(forged, forgery{"other_dir_key/refresh", encryptWithOtherKey(t, "A256GCM", claimString(hdr.ProtectedHeader, "kid"), "rt+jwt", rt.Payload)})
	}
	forged = append(forged, forgery{"garbage", "not.a.token"})

	// The control: the genuine tokens are live now.
	if m, err := e.rp.Introspect(ctx, tok.AccessToken, ""); err != nil || m["active"] != true {
		t.Fatalf("the genuine access token is not active (%v %v); the forgeries would prove nothing", m, err)
	}
	userinfoURL := claimString(e.rp.Metadata, "userinfo_endpoint")
	for _, f := range forged {
		t.Run(f.name, func(t *testing.T) {
			m, err := e.rp.Introspect(ctx, f.token, "")
			wantInactive(t, "forged "+f.name, m, err)
			if !strings.HasSuffix(f.name, "/refresh") {
				if ui, err := e.rp.UserInfo(ctx, f.token, ""); err == nil {
					t.Errorf("openid-client userinfo accepted the forgery: %v", ui)
				}
			}
			// Raw userinfo: 401 with an invalid_token challenge (RFC 6750
			// §3.1), for refresh-token forgeries too.
			r := a.get(ctx, userinfoURL, http.Header{"Authorization": {"Bearer " + f.token}})
			if r.Status != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Errorf("userinfo answered %d (WWW-Authenticate %q), want 401 invalid_token", r.Status, r.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if m, err := e.rp.Introspect(ctx, tok.AccessToken, ""); err != nil || m["active"] != true {
		t.Errorf("the genuine access token is no longer active after the forgeries: %v %v", m, err)
	}
}

// encryptWithOtherKey makes a compact JWE (dir, enc) of claims under a
// fresh key, with the issuer's kid and the given typ.
func encryptWithOtherKey(t *testing.T, enc, kid, typ string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.EncrypterOptions{}).WithType(jose.ContentType(typ))
	encr, err := jose.NewEncrypter(jose.ContentEncryption(enc), jose.Recipient{Algorithm: jose.DIRECT, Key: randomKey(32), KeyID: kid}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := encr.Encrypt(b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
