package peers

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const testSecret = "peers-test-secret-0123456789-abcdefghij"

// backchannel records the logout tokens a provider posts.
type backchannel struct {
	mu     sync.Mutex
	tokens []string
	got    chan struct{}
}

func newBackchannel(t *testing.T) (*backchannel, *httptest.Server) {
	b := &backchannel{got: make(chan struct{}, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.tokens = append(b.tokens, r.PostForm.Get("logout_token"))
		b.mu.Unlock()
		b.got <- struct{}{}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return b, srv
}

func startTestProvider(t *testing.T, redirect string, extra ...Client) *Provider {
	t.Helper()
	return StartProvider(t, ProviderOptions{
		Clients: append([]Client{{
			ID:                     "rp",
			Secret:                 testSecret,
			RedirectURIs:           []string{redirect},
			PostLogoutRedirectURIs: []string{redirect + "/logged-out"},
		}}, extra...),
		AccessTokenTTL: 10 * time.Second,
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestProviderDiscoveryLoginAndEndSession(t *testing.T) {
	t.Parallel()
	bc, bcSrv := newBackchannel(t)
	const redirect = "http://127.0.0.1:1/callback" // never dialled: Login stops at the client
	p := StartProvider(t, ProviderOptions{Clients: []Client{{
		ID:                   "gw",
		Secret:               testSecret,
		RedirectURIs:         []string{redirect},
		BackchannelLogoutURI: bcSrv.URL + "/bff/backchannel-logout",
	}}})
	ctx := ctxT(t)

	d, err := p.Discovery(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d["issuer"] != p.Issuer {
		t.Errorf("discovery issuer = %v, want %s", d["issuer"], p.Issuer)
	}
	for _, k := range []string{"introspection_endpoint", "revocation_endpoint", "end_session_endpoint", "jwks_uri"} {
		if _, ok := d[k].(string); !ok {
			t.Errorf("discovery lacks %s", k)
		}
	}
	if d["backchannel_logout_supported"] != true {
		t.Errorf("backchannel_logout_supported = %v", d["backchannel_logout_supported"])
	}

	// PKCE is required: a request without code_challenge is refused at the
	// client (error redirect), not logged in.
	noPKCE := p.Issuer + "/auth?" + url.Values{
		"client_id": {"gw"}, "redirect_uri": {redirect}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"s1"},
	}.Encode()
	loc, err := p.Login(ctx, noPKCE, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := url.Parse(loc); u.Query().Get("error") != "invalid_request" {
		t.Errorf("without PKCE: redirected to %s, want error=invalid_request", loc)
	}

	auth := p.Issuer + "/auth?" + url.Values{
		"client_id": {"gw"}, "redirect_uri": {redirect}, "response_type": {"code"},
		"scope": {"openid profile"}, "state": {"s2"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
	}.Encode()
	loc, err = p.Login(ctx, auth, "alice")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(loc)
	if !strings.HasPrefix(loc, redirect) || u.Query().Get("code") == "" || u.Query().Get("state") != "s2" {
		t.Fatalf("login ended at %s, want %s?code=...&state=s2", loc, redirect)
	}

	denied, err := p.DenyConsent(ctx, strings.Replace(auth, "state=s2", "state=s3", 1), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := url.Parse(denied); u.Query().Get("error") != "access_denied" {
		t.Errorf("denied consent ended at %s, want error=access_denied", denied)
	}

	s, err := p.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.LiveSessions < 1 {
		t.Errorf("live sessions = %d after a login", s.LiveSessions)
	}

	res, err := p.EndSession(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if res.Sessions != 1 || len(res.Backchannel) != 1 || !res.Backchannel[0].OK {
		t.Fatalf("EndSession(alice) = %+v, want one session and one delivered back-channel logout", res)
	}
	select {
	case <-bc.got:
	case <-ctx.Done():
		t.Fatal("no back-channel logout received")
	}
	bc.mu.Lock()
	logoutToken := bc.tokens[0]
	bc.mu.Unlock()
	claims := decodeJWT(t, logoutToken)
	if claims["sub"] != "alice" || claims["sid"] == nil || claims["iss"] != p.Issuer {
		t.Errorf("logout token claims = %v", claims)
	}
	if _, ok := claims["events"].(map[string]any)["http://schemas.openid.net/event/backchannel-logout"]; !ok {
		t.Errorf("logout token lacks the back-channel logout event: %v", claims)
	}
	if res, err := p.EndSession(ctx, "alice"); err != nil || res.Sessions != 0 {
		t.Errorf("second EndSession(alice) = %+v, %v; want no session left", res, err)
	}
}

// TestProviderEndClientSession: EndClientSession logs a user out of one
// client (its back-channel logout only, delivered to a name under
// .localhost on loopback with that Host), and leaves the user signed in
// for the other client, which EndSession then reaches.
func TestProviderEndClientSession(t *testing.T) {
	t.Parallel()
	type delivery struct{ host, path string }
	got := make(chan delivery, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.PostForm.Get("logout_token") == "" {
			http.Error(w, "no logout_token", http.StatusBadRequest)
			return
		}
		got <- delivery{r.Host, r.URL.Path}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	const redirect = "http://127.0.0.1:1/callback" // never dialled: Login stops at the client
	p := StartProvider(t, ProviderOptions{Clients: []Client{
		{ID: "gw1", Secret: testSecret, RedirectURIs: []string{redirect},
			BackchannelLogoutURI: fmt.Sprintf("http://gw1.localhost:%d/one/bc", port)},
		{ID: "gw2", Secret: testSecret, RedirectURIs: []string{redirect},
			BackchannelLogoutURI: srv.URL + "/two/bc"},
	}})
	ctx := ctxT(t)
	for _, client := range []string{"gw1", "gw2"} {
		auth := p.Issuer + "/auth?" + url.Values{
			"client_id": {client}, "redirect_uri": {redirect}, "response_type": {"code"},
			"scope": {"openid"}, "state": {"s-" + client},
			"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
		}.Encode()
		if loc, err := p.Login(ctx, auth, "alice"); err != nil || !strings.Contains(loc, "code=") {
			t.Fatalf("login of alice at %s: %s %v", client, loc, err)
		}
	}

	res, err := p.EndClientSession(ctx, "alice", "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Sessions != 1 || len(res.Backchannel) != 1 || res.Backchannel[0].ClientID != "gw1" || !res.Backchannel[0].OK {
		t.Fatalf("EndClientSession(alice, gw1) = %+v, want one session and one delivered logout token to gw1", res)
	}
	if d := <-got; d.host != fmt.Sprintf("gw1.localhost:%d", port) || d.path != "/one/bc" {
		t.Errorf("gw1's logout token arrived with Host %s at %s, want gw1.localhost:%d at /one/bc", d.host, d.path, port)
	}

	res, err = p.EndSession(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Backchannel) != 1 || res.Backchannel[0].ClientID != "gw2" || !res.Backchannel[0].OK {
		t.Fatalf("EndSession(alice) after gw1's logout = %+v, want one delivered logout token, to gw2 only", res)
	}
	if d := <-got; d.path != "/two/bc" {
		t.Errorf("gw2's logout token arrived at %s, want /two/bc", d.path)
	}
	if _, err := p.EndClientSession(ctx, "alice", ""); err == nil {
		t.Error("EndClientSession with an empty client id was accepted")
	}
}

func TestProviderSetClientAndStop(t *testing.T) {
	t.Parallel()
	p := startTestProvider(t, "http://127.0.0.1:1/cb")
	ctx := ctxT(t)
	if err := p.SetClient(ctx, Client{ID: "late", Secret: testSecret, RedirectURIs: []string{"http://127.0.0.1:2/cb"}}); err != nil {
		t.Fatal(err)
	}
	auth := p.Issuer + "/auth?" + url.Values{
		"client_id": {"late"}, "redirect_uri": {"http://127.0.0.1:2/cb"}, "response_type": {"code"},
		"scope": {"openid"}, "code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
		"code_challenge_method": {"S256"},
	}.Encode()
	loc, err := p.Login(ctx, auth, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(loc, "code=") {
		t.Errorf("late client's login ended at %s", loc)
	}
	if err := p.SetClient(ctx, Client{ID: "bad"}); err == nil {
		t.Error("SetClient without redirect_uris succeeded")
	}
	p.Stop()
	if _, err := p.Discovery(ctx); err == nil {
		t.Error("discovery answered after Stop")
	}
}

func TestRPAgainstProvider(t *testing.T) {
	t.Parallel()
	const redirect = "http://127.0.0.1:1/rp/callback"
	p := startTestProvider(t, redirect)
	rp := StartRP(t, RPOptions{Issuer: p.Issuer, ClientID: "rp", ClientSecret: testSecret, RedirectURI: redirect})
	ctx := ctxT(t)
	if rp.Metadata["issuer"] != p.Issuer {
		t.Fatalf("rp metadata issuer = %v", rp.Metadata["issuer"])
	}

	ar, err := rp.Authorize(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	au, _ := url.Parse(ar.URL)
	if au.Query().Get("code_challenge_method") != "S256" || au.Query().Get("state") != ar.State {
		t.Fatalf("authorization URL %s lacks PKCE or state", ar.URL)
	}
	cb, err := p.Login(ctx, ar.URL, "dave")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := rp.Callback(ctx, cb, ar.State)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || tok.IDToken == "" {
		t.Fatalf("tokens = %+v, want access, refresh and ID token", tok)
	}
	if tok.IDTokenClaims["sub"] != "dave" || tok.IDTokenClaims["nonce"] != ar.Nonce {
		t.Errorf("ID token claims = %v", tok.IDTokenClaims)
	}
	// A second exchange of the same callback has no pending state.
	if _, err := rp.Callback(ctx, cb, ar.State); err == nil {
		t.Error("second callback with the same state succeeded")
	}

	ui, err := rp.UserInfo(ctx, tok.AccessToken, "dave")
	if err != nil {
		t.Fatal(err)
	}
	if ui["email"] != "dave@example.test" || ui["name"] != "Test User dave" {
		t.Errorf("userinfo = %v", ui)
	}

	in, err := rp.Introspect(ctx, tok.RefreshToken, "refresh_token")
	if err != nil {
		t.Fatal(err)
	}
	if in["active"] != true {
		t.Errorf("introspection of a live refresh token = %v", in)
	}

	tok2, err := rp.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if tok2.RefreshToken == "" || tok2.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh did not rotate the refresh token: %+v", tok2)
	}
	// Reuse of the rotated-out token: refused, counted, and the grant dies.
	_, err = rp.Refresh(ctx, tok.RefreshToken)
	var pe *PeerError
	if !errors.As(err, &pe) || pe.OAuthError != "invalid_grant" {
		t.Fatalf("reusing a rotated refresh token: err = %v, want invalid_grant", err)
	}
	s, err := p.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.RefreshTokenReuse != 1 || s.Grants["refresh_token"] != 1 || s.Grants["authorization_code"] != 1 {
		t.Errorf("stats = %+v, want 1 code grant, 1 refresh, 1 reuse", s)
	}
	in2, err := p.Introspect(ctx, "rp", testSecret, tok2.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if in2.Active {
		t.Errorf("after reuse the grant's new refresh token is still active: %+v", in2)
	}

	// A fresh login for revocation and logout.
	ar, _ = rp.Authorize(ctx, "openid", nil)
	cb, err = p.Login(ctx, ar.URL, "erin")
	if err != nil {
		t.Fatal(err)
	}
	tok, err = rp.Callback(ctx, cb, ar.State)
	if err != nil {
		t.Fatal(err)
	}
	if err := rp.Revoke(ctx, tok.RefreshToken, "refresh_token"); err != nil {
		t.Fatal(err)
	}
	if in, err := p.Introspect(ctx, "rp", testSecret, tok.RefreshToken); err != nil || in.Active {
		t.Errorf("revoked refresh token introspects as %+v, %v", in, err)
	}
	es, err := rp.EndSessionURL(ctx, tok.IDToken, redirect+"/logged-out", "bye")
	if err != nil {
		t.Fatal(err)
	}
	eu, _ := url.Parse(es)
	if !strings.HasPrefix(es, p.Issuer+"/session/end") || eu.Query().Get("id_token_hint") != tok.IDToken || eu.Query().Get("state") != "bye" {
		t.Errorf("end-session URL = %s", es)
	}
}

func TestRPDiscoveryFailureIsAnError(t *testing.T) {
	t.Parallel()
	p := startTestProvider(t, "http://127.0.0.1:1/cb")
	rp := StartRP(t, RPOptions{Issuer: p.Issuer, ClientID: "rp", ClientSecret: testSecret, RedirectURI: "http://127.0.0.1:1/cb"})
	p.Stop()
	_, err := rp.Discover(ctxT(t))
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Op != "discover" {
		t.Fatalf("discovery against a stopped provider: err = %v, want a *PeerError", err)
	}
}

func TestJoseAgainstProvider(t *testing.T) {
	t.Parallel()
	const redirect = "http://127.0.0.1:1/cb"
	p := startTestProvider(t, redirect)
	rp := StartRP(t, RPOptions{Issuer: p.Issuer, ClientID: "rp", ClientSecret: testSecret, RedirectURI: redirect})
	j := StartJose(t)
	ctx := ctxT(t)

	ar, err := rp.Authorize(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := p.Login(ctx, ar.URL, "frank")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := rp.Callback(ctx, cb, ar.State)
	if err != nil {
		t.Fatal(err)
	}
	jwks := p.Issuer + "/jwks"
	v, err := j.Verify(ctx, tok.IDToken, VerifyOptions{JWKSURI: jwks, Issuer: p.Issuer, Audience: "rp", Algorithms: []string{"RS256"}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Payload["sub"] != "frank" || v.ProtectedHeader["alg"] != "RS256" {
		t.Errorf("verified = %+v", v)
	}
	if _, err := j.Verify(ctx, tok.IDToken, VerifyOptions{JWKSURI: jwks, Audience: "someone-else"}); err == nil {
		t.Error("verify with the wrong audience succeeded")
	}

	for _, tc := range []struct {
		kind ForgeKind
		code string // jose's error code for the rejection
	}{
		// A JWKS holds no key for "none" or HS256, so jose refuses the alg.
		{ForgeAlgNone, "ERR_JOSE_NOT_SUPPORTED"},
		{ForgeHS256PublicKey, "ERR_JOSE_NOT_SUPPORTED"},
		{ForgeUnknownKID, "ERR_JWKS_NO_MATCHING_KEY"},
		{ForgeTamperedPayload, "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			forged, err := j.Forge(ctx, tc.kind, tok.IDToken, jwks)
			if err != nil {
				t.Fatal(err)
			}
			if forged == tok.IDToken {
				t.Fatal("forged token equals the genuine one")
			}
			_, err = j.Verify(ctx, forged, VerifyOptions{JWKSURI: jwks, Issuer: p.Issuer})
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("verify forged %s: err = %v, want code %s", tc.kind, err, tc.code)
			}
		})
	}
	// tampered_jwe needs a JWE: on a JWS it is an error, not a silent no-op.
	if _, err := j.Forge(ctx, ForgeTamperedJWE, tok.IDToken, ""); err == nil {
		t.Error("tampered_jwe accepted a JWS")
	}
}

// TestJoseAccessTokenAndJWE checks the RFC 9068 and JWE paths with tokens
// minted here by go-jose, since oidc-provider's access tokens are opaque.
func TestJoseAccessTokenAndJWE(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key.Public(), KeyID: "es-1", Algorithm: "ES256", Use: "sig"}
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	}))
	t.Cleanup(jwksSrv.Close)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "es-1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	full := map[string]any{
		"iss": "https://issuer.test", "sub": "u1", "aud": "api", "client_id": "c1",
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "j1", "scope": "openid api",
	}
	at, err := jwt.Signed(signer).Claims(full).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	j := StartJose(t)
	ctx := ctxT(t)
	opts := VerifyOptions{JWKSURI: jwksSrv.URL, Issuer: "https://issuer.test", Audience: "api", AccessToken: true}
	if _, err := j.Verify(ctx, at, opts); err != nil {
		t.Fatalf("a valid RFC 9068 token: %v", err)
	}
	noClientID := map[string]any{}
	for k, v := range full {
		if k != "client_id" {
			noClientID[k] = v
		}
	}
	bad, err := jwt.Signed(signer).Claims(noClientID).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	var pe *PeerError
	if _, err := j.Verify(ctx, bad, opts); !errors.As(err, &pe) || pe.Claim != "client_id" {
		t.Errorf("access token without client_id: err = %v, want a client_id claim failure", err)
	}
	plainSigner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "es-1"))
	untyped, _ := jwt.Signed(plainSigner).Claims(full).Serialize()
	if _, err := j.Verify(ctx, untyped, opts); !errors.As(err, &pe) || pe.Claim != "typ" {
		t.Errorf("access token without typ at+jwt: err = %v, want a typ failure", err)
	}

	// JWE dir + A128CBC-HS256, as the issuer's encrypted format.
	cek := make([]byte, 32)
	_, _ = rand.Read(cek)
	enc, err := jose.NewEncrypter(jose.A128CBC_HS256, jose.Recipient{Algorithm: jose.DIRECT, Key: cek, KeyID: "dir-1"},
		(&jose.EncrypterOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	jwe, err := jwt.Encrypted(enc).Claims(full).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	d, err := j.Decrypt(ctx, jwe, DecryptOptions{Key: cek, Enc: "A128CBC-HS256", Issuer: "https://issuer.test", Typ: "at+jwt"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Payload["sub"] != "u1" || d.ProtectedHeader["kid"] != "dir-1" {
		t.Errorf("decrypted = %+v", d)
	}
	tampered, err := j.Forge(ctx, ForgeTamperedJWE, jwe, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Decrypt(ctx, tampered, DecryptOptions{Key: cek}); !errors.As(err, &pe) || pe.Code != "ERR_JWE_DECRYPTION_FAILED" {
		t.Errorf("tampered JWE: err = %v, want ERR_JWE_DECRYPTION_FAILED", err)
	}
	wrongKey := make([]byte, 32)
	if _, err := j.Decrypt(ctx, jwe, DecryptOptions{Key: wrongKey}); err == nil {
		t.Error("decrypt with the wrong key succeeded")
	}
	// HMAC path.
	hsKey := []byte("0123456789abcdef0123456789abcdef")
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: hsKey}, (&jose.SignerOptions{}).WithType("at+jwt"))
	hsTok, _ := jwt.Signed(hs).Claims(full).Serialize()
	if _, err := j.Verify(ctx, hsTok, VerifyOptions{Secret: hsKey, AccessToken: true}); err != nil {
		t.Errorf("HS256 access token: %v", err)
	}
}

func TestCallAfterExit(t *testing.T) {
	t.Parallel()
	j := StartJose(t)
	j.proc.stop()
	_, err := j.Decode(context.Background(), "a.b.c")
	if !errors.Is(err, ErrExited) {
		t.Fatalf("call after exit: err = %v, want ErrExited", err)
	}
}

func decodeJWT(t *testing.T, token string) map[string]any {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parse logout token: %v", err)
	}
	var m map[string]any
	if err := tok.UnsafeClaimsWithoutVerification(&m); err != nil {
		t.Fatal(err)
	}
	return m
}
