package issuer_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/token"
)

// format is one token format the issuer can be configured with.
type format struct {
	name   string
	alg    string // TokenAlg (signed)
	enc    string // Encryption (encrypted)
	idAlg  string
	signed bool
}

func (f format) apply(c *issuer.Config) {
	if f.signed {
		c.TokenFormat = token.FormatSigned
		c.TokenAlg = f.alg
	} else {
		c.TokenFormat = token.FormatEncrypted
		c.Encryption = f.enc
	}
	c.IDTokenAlg = f.idAlg
}

// formats: every signing alg (ID tokens with the same alg when it is
// asymmetric, RS256 otherwise) and both JWE encryptions.
func formats() []format {
	var out []format
	for _, alg := range keys.SigningAlgorithms() {
		id := alg
		if !keys.IsAsymmetric(alg) {
			id = "RS256"
		}
		out = append(out, format{name: alg, alg: alg, idAlg: id, signed: true})
	}
	for _, enc := range []string{"A128CBC-HS256", "A256GCM"} {
		out = append(out, format{name: "JWE-" + enc, enc: enc, idAlg: "ES256"})
	}
	return out
}

// verifyAccess verifies (or decrypts) an access token with go-jose against
// the published JWK set (asymmetric algs) or the instance's own key set
// (HS secrets and dir keys are never published), checks typ at+jwt, and
// returns the claims.
func verifyAccess(t testing.TB, e *env, raw string) map[string]any {
	t.Helper()
	var plain []byte
	var typ any
	if e.cfg.TokenFormat == token.FormatEncrypted {
		jwe, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.ContentEncryption(e.cfg.Encryption)})
		if err != nil {
			t.Fatalf("access token is not a dir/%s JWE: %v", e.cfg.Encryption, err)
		}
		key, ok := e.srv.Keys().DecryptionKey(jwe.Header.KeyID)
		if !ok {
			t.Fatalf("JWE kid %q names no dir key", jwe.Header.KeyID)
		}
		if plain, err = jwe.Decrypt(key); err != nil {
			t.Fatalf("decrypt access token: %v", err)
		}
		typ = jwe.Header.ExtraHeaders[jose.HeaderType]
	} else {
		alg := e.cfg.TokenAlg
		jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
		if err != nil {
			t.Fatalf("access token is not an %s JWS: %v", alg, err)
		}
		h := jws.Signatures[0].Header
		var key any
		if keys.IsAsymmetric(alg) {
			set := e.jwks()
			found := set.Key(h.KeyID)
			if len(found) != 1 {
				t.Fatalf("kid %q: %d keys in the published JWK set", h.KeyID, len(found))
			}
			if found[0].Algorithm != alg || found[0].Use != "sig" {
				t.Errorf("JWK %s: alg %q use %q, want %s sig", h.KeyID, found[0].Algorithm, found[0].Use, alg)
			}
			key = found[0].Key
		} else {
			k, kalg, ok := e.srv.Keys().VerificationKey(h.KeyID)
			if !ok || kalg != alg {
				t.Fatalf("kid %q: no %s key in the key set (got %q)", h.KeyID, alg, kalg)
			}
			key = k
		}
		if plain, err = jws.Verify(key); err != nil {
			t.Fatalf("verify access token: %v", err)
		}
		typ = h.ExtraHeaders[jose.HeaderType]
	}
	if typ != "at+jwt" {
		t.Errorf("access token typ %v, want at+jwt (RFC 9068 §2.1)", typ)
	}
	var cl map[string]any
	if err := json.Unmarshal(plain, &cl); err != nil {
		t.Fatalf("access token claims: %v", err)
	}
	return cl
}

// checkAccessClaims checks the RFC 9068 §2.2 claims of a web access token.
func checkAccessClaims(t testing.TB, e *env, cl map[string]any, clientID string) {
	t.Helper()
	if cl["iss"] != e.url {
		t.Errorf("iss %v, want %s", cl["iss"], e.url)
	}
	if cl["sub"] != "user-alice" {
		t.Errorf("sub %v, want user-alice", cl["sub"])
	}
	if cl["client_id"] != clientID {
		t.Errorf("client_id %v, want %s", cl["client_id"], clientID)
	}
	switch aud := cl["aud"].(type) {
	case string:
		if aud != clientID {
			t.Errorf("aud %q, want %s", aud, clientID)
		}
	case []any:
		if !slices.Contains(aud, any(clientID)) {
			t.Errorf("aud %v lacks %s", aud, clientID)
		}
	default:
		t.Errorf("aud %v missing", cl["aud"])
	}
	for _, k := range []string{"jti", "scope", "sid"} {
		if s, _ := cl[k].(string); s == "" {
			t.Errorf("claim %s missing: %v", k, cl)
		}
	}
	if !slices.Contains(strings.Fields(cl["scope"].(string)), "openid") {
		t.Errorf("scope %v lacks openid", cl["scope"])
	}
	now := float64(e.clock.Now().Unix())
	for _, k := range []string{"iat", "nbf", "exp", "auth_time"} {
		if _, ok := cl[k].(float64); !ok {
			t.Errorf("claim %s missing or not a number: %v", k, cl[k])
		}
	}
	if exp, _ := cl["exp"].(float64); exp <= now || exp > now+float64(issuer.DefaultAccessTokenTTL/time.Second)+1 {
		t.Errorf("exp %v: want within the access token lifetime after %v", exp, now)
	}
	if iat, _ := cl["iat"].(float64); iat > now {
		t.Errorf("iat %v is after now %v", iat, now)
	}
}

func TestCodeFlow(t *testing.T) {
	for _, f := range formats() {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, envOptions{cfg: f.apply})
			p := e.provider()

			var disc struct {
				Methods []string `json:"code_challenge_methods_supported"`
				IDAlgs  []string `json:"id_token_signing_alg_values_supported"`
			}
			if err := p.Claims(&disc); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(disc.Methods, []string{"S256"}) {
				t.Errorf("code_challenge_methods_supported %v, want [S256]", disc.Methods)
			}
			if !slices.Contains(disc.IDAlgs, f.idAlg) {
				t.Errorf("id_token_signing_alg_values_supported %v lacks %s", disc.IDAlgs, f.idAlg)
			}
			for _, k := range e.jwks().Keys {
				if !k.IsPublic() || k.KeyID == "" || k.Use != "sig" || k.Algorithm == "" {
					t.Errorf("published JWK %q (alg %q use %q public %v): want public, with kid, use sig and alg", k.KeyID, k.Algorithm, k.Use, k.IsPublic())
				}
			}

			fl := newFlow(e.oauth2Config(p, webID))
			b := e.browser()
			q := b.login(fl.authURL())
			if q.Get("state") != fl.state {
				t.Errorf("state %q, want %q echoed", q.Get("state"), fl.state)
			}
			if q.Get("iss") != "" && q.Get("iss") != e.url {
				t.Errorf("iss %q in the redirect, want %q (RFC 9207)", q.Get("iss"), e.url)
			}
			if c := b.cookie(ssoCookie); c == nil {
				t.Errorf("no %s cookie after login", ssoCookie)
			}
			tk := e.exchange(fl, q.Get("code"))
			if tk.id == "" || tk.refresh == "" {
				t.Fatalf("exchange: id_token %v refresh_token %v, want both", tk.id != "", tk.refresh != "")
			}
			if !strings.EqualFold(tk.tok.TokenType, "bearer") {
				t.Errorf("token_type %q, want Bearer", tk.tok.TokenType)
			}

			verifier := p.Verifier(&oidc.Config{ClientID: webID, Now: e.clock.Now})
			idt, err := verifier.Verify(e.ctx(), tk.id)
			if err != nil {
				t.Fatalf("ID token does not verify through discovery and JWKS: %v", err)
			}
			if idt.Nonce != fl.nonce {
				t.Errorf("nonce %q, want %q", idt.Nonce, fl.nonce)
			}
			if idt.Subject != "user-alice" {
				t.Errorf("ID token sub %q", idt.Subject)
			}
			if idt.AccessTokenHash != "" {
				if err := idt.VerifyAccessToken(tk.access); err != nil {
					t.Errorf("at_hash: %v", err)
				}
			}
			var idc struct {
				SID   string `json:"sid"`
				Email string `json:"email"`
			}
			if err := idt.Claims(&idc); err != nil {
				t.Fatal(err)
			}
			if idc.SID == "" {
				t.Error("ID token has no sid")
			}
			jws, err := jose.ParseSignedCompact(tk.id, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(f.idAlg)})
			if err != nil {
				t.Errorf("ID token is not signed with %s: %v", f.idAlg, err)
			} else if jws.Signatures[0].Header.KeyID == "" {
				t.Error("ID token header has no kid")
			}

			cl := verifyAccess(t, e, tk.access)
			checkAccessClaims(t, e, cl, webID)
			if cl["sid"] != idc.SID {
				t.Errorf("access token sid %v, ID token sid %q", cl["sid"], idc.SID)
			}

			ui, err := p.UserInfo(e.ctx(), oauth2.StaticTokenSource(tk.tok))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			if ui.Subject != "user-alice" || ui.Email != aliceEmail {
				t.Errorf("userinfo sub %q email %q", ui.Subject, ui.Email)
			}

			e.clock.Advance(time.Minute)
			tok2, err := fl.conf.TokenSource(e.ctx(), &oauth2.Token{RefreshToken: tk.refresh}).Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if tok2.AccessToken == tk.access || tok2.RefreshToken == tk.refresh || tok2.RefreshToken == "" {
				t.Errorf("refresh did not return a new access and refresh token")
			}
			cl2 := verifyAccess(t, e, tok2.AccessToken)
			checkAccessClaims(t, e, cl2, webID)
			if cl2["jti"] == cl["jti"] || cl2["sid"] != cl["sid"] {
				t.Errorf("refreshed access token: jti %v (was %v), sid %v (was %v)", cl2["jti"], cl["jti"], cl2["sid"], cl["sid"])
			}
			if id2, _ := tok2.Extra("id_token").(string); id2 != "" {
				if _, err := verifier.Verify(e.ctx(), id2); err != nil {
					t.Errorf("refreshed ID token: %v", err)
				}
			}
		})
	}
}

// TestPublicClientFlow: a public client authenticates with none and PKCE.
func TestPublicClientFlow(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	_, fl, tk := e.loginTokens(spaID)
	checkAccessClaims(t, e, verifyAccess(t, e, tk.access), spaID)
	if _, err := e.provider().Verifier(&oidc.Config{ClientID: spaID, Now: e.clock.Now}).Verify(e.ctx(), tk.id); err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if tk.refresh == "" {
		t.Fatal("no refresh token for the public client")
	}
	if _, err := fl.conf.TokenSource(e.ctx(), &oauth2.Token{RefreshToken: tk.refresh}).Token(); err != nil {
		t.Fatalf("refresh: %v", err)
	}
}

func TestClientCredentials(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	r := e.post("/token", svcBasic, map[string][]string{"grant_type": {"client_credentials"}})
	if r.status != http.StatusOK || r.str("access_token") == "" {
		t.Fatalf("client_credentials: %d %s", r.status, r.raw)
	}
	if r.str("refresh_token") != "" || r.str("id_token") != "" {
		t.Errorf("client_credentials returned a refresh or ID token: %s", r.raw)
	}
	cl := verifyAccess(t, e, r.str("access_token"))
	// RFC 9068 §2.2: sub identifies the client, in a namespace of its own
	// (client:<id>), and gty says no user is involved.
	if cl["client_id"] != svcID || cl["sub"] != issuer.ClientSubject(svcID) || cl["gty"] != "client_credentials" {
		t.Errorf("client_credentials token: client_id %v sub %v gty %v, want %s, %s, client_credentials", cl["client_id"], cl["sub"], cl["gty"], svcID, issuer.ClientSubject(svcID))
	}
	// Its own token is active to it; to another client it is foreign.
	in := e.post("/introspect", svcBasic, map[string][]string{"token": {r.str("access_token")}})
	wantActive(t, in)
	if _, ok := in.body["username"]; ok || in.str("sub") != issuer.ClientSubject(svcID) || in.str("gty") != "client_credentials" || in.str("client_id") != svcID {
		t.Errorf("introspection of a client_credentials token: %s, want sub %s, gty client_credentials and no username", in.raw, issuer.ClientSubject(svcID))
	}
	wantInactive(t, e.introspect(r.str("access_token")))
	// It names no user: the UserInfo endpoint refuses it.
	wantError(t, e.userinfo(r.str("access_token")), http.StatusUnauthorized, "invalid_token")
	// A user's token carries no gty.
	_, _, tk := e.loginTokens(webID)
	if ucl := verifyAccess(t, e, tk.access); ucl["gty"] != nil || ucl["sub"] != "user-alice" {
		t.Errorf("user token: sub %v gty %v, want user-alice and no gty", ucl["sub"], ucl["gty"])
	}
	if u := e.introspect(tk.access); u.str("username") != aliceUser || u.str("gty") != "" {
		t.Errorf("introspection of a user token: %s, want username alice and no gty", u.raw)
	}
}

// TestClientNamedLikeUser: the client_credentials token of a client
// named like a user (here alice's username; a client id equal to a user's
// subject is refused at start, see TestConfigValidation) never reads as
// that user: its sub is prefixed, introspection names no username, and
// UserInfo refuses it.
func TestClientNamedLikeUser(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Clients = append(c.Clients, issuer.Client{ID: aliceUser, Secret: "alice-client-0123456789abcdef", GrantTypes: []string{issuer.GrantClientCredentials}})
	}})
	r := e.post("/token", auth{id: aliceUser, secret: "alice-client-0123456789abcdef", basic: true}, url.Values{"grant_type": {"client_credentials"}})
	if r.status != http.StatusOK {
		t.Fatalf("client_credentials: %d %s", r.status, r.raw)
	}
	if sub := payload(t, r.str("access_token"))["sub"]; sub == aliceUser {
		t.Fatalf("the client %q got a token with sub %q: a resource server would take it for the user", aliceUser, sub)
	}
	in := e.post("/introspect", auth{id: aliceUser, secret: "alice-client-0123456789abcdef", basic: true}, url.Values{"token": {r.str("access_token")}})
	wantActive(t, in)
	if in.str("username") != "" || in.str("sub") == aliceUser {
		t.Fatalf("introspection of client %q's own token: %s, want no username and a client: sub", aliceUser, in.raw)
	}
	wantError(t, e.userinfo(r.str("access_token")), http.StatusUnauthorized, "invalid_token")
}

// TestArgon2idLogin logs in a user whose hash comes from HashPassword.
func TestArgon2idLogin(t *testing.T) {
	t.Parallel()
	h, err := issuer.HashPassword("argon password")
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Users = append(c.Users, issuer.User{Username: "bob", PasswordHash: h})
	}})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	b := e.browser()
	wrong := b.authorize(fl.authURL(), "bob", "wrong password")
	if wrong.location != nil {
		t.Fatalf("wrong password redirected to %s", wrong.location)
	}
	p := b.authorize(fl.authURL(), "bob", "argon password")
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("argon2id login: status %d location %v", p.status, p.location)
	}
	tk := e.exchange(fl, p.location.Query().Get("code"))
	if cl := verifyAccess(t, e, tk.access); cl["sub"] != "bob" {
		t.Errorf("sub %v, want bob", cl["sub"])
	}
}

func TestPrompt(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	p := e.provider()
	fl := newFlow(e.oauth2Config(p, webID))
	verifier := p.Verifier(&oidc.Config{ClientID: webID, Now: e.clock.Now})
	b := e.browser()

	authTime := func(tk tokens) time.Time {
		t.Helper()
		idt, err := verifier.Verify(e.ctx(), tk.id)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			AuthTime int64 `json:"auth_time"`
		}
		if err := idt.Claims(&c); err != nil || c.AuthTime == 0 {
			t.Fatalf("ID token auth_time missing (%v)", err)
		}
		return time.Unix(c.AuthTime, 0)
	}

	t.Run("none without session", func(t *testing.T) {
		q := e.browser().get(fl.authURL(oauth2.SetAuthURLParam("prompt", "none")))
		if q.location == nil {
			t.Fatalf("prompt=none without a session: status %d, want a redirect", q.status)
		}
		v := q.location.Query()
		if v.Get("error") != "login_required" || v.Get("state") != fl.state {
			t.Fatalf("prompt=none without a session: %v, want error=login_required and the state", v)
		}
		if !strings.HasPrefix(q.location.String(), webRedirect+"?") {
			t.Errorf("error redirect to %s, want the registered %s", q.location, webRedirect)
		}
	})

	first := e.exchange(fl, b.code(fl.authURL()))
	t0 := authTime(first)

	t.Run("none with session", func(t *testing.T) {
		e.clock.Advance(10 * time.Second)
		q := b.get(fl.authURL(oauth2.SetAuthURLParam("prompt", "none")))
		if q.location == nil || q.location.Query().Get("code") == "" {
			t.Fatalf("prompt=none with a session: status %d location %v, want a code", q.status, q.location)
		}
		tk := e.exchange(fl, q.location.Query().Get("code"))
		if got := authTime(tk); !got.Equal(t0) {
			t.Errorf("SSO auth_time %v, want the first login's %v", got, t0)
		}
	})

	t.Run("sso without prompt", func(t *testing.T) {
		q := b.get(fl.authURL())
		if q.location == nil || q.location.Query().Get("code") == "" {
			t.Fatalf("second authorization in the SSO session showed status %d, want a redirect with a code", q.status)
		}
	})

	t.Run("login", func(t *testing.T) {
		e.clock.Advance(10 * time.Second)
		q := b.get(fl.authURL(oauth2.SetAuthURLParam("prompt", "login")))
		if q.location != nil || !strings.Contains(q.body, `name="password"`) {
			t.Fatalf("prompt=login with a session: status %d location %v, want the login form", q.status, q.location)
		}
		q = b.submit(q, map[string][]string{"username": {aliceUser}, "password": {alicePassword}})
		if q.location == nil {
			t.Fatalf("login after prompt=login: status %d", q.status)
		}
		tk := e.exchange(fl, q.location.Query().Get("code"))
		if got := authTime(tk); !got.After(t0) {
			t.Errorf("auth_time %v after prompt=login, want after %v", got, t0)
		}
	})

	t.Run("max_age", func(t *testing.T) {
		e.clock.Advance(2 * time.Minute)
		q := b.get(fl.authURL(oauth2.SetAuthURLParam("max_age", "3600")))
		if q.location == nil || q.location.Query().Get("code") == "" {
			t.Fatalf("max_age=3600 within the session: status %d, want a code", q.status)
		}
		e.exchange(fl, q.location.Query().Get("code"))
		q = b.get(fl.authURL(oauth2.SetAuthURLParam("max_age", "60")))
		if q.location != nil || !strings.Contains(q.body, `name="password"`) {
			t.Fatalf("max_age=60 two minutes after login: status %d location %v, want the login form", q.status, q.location)
		}
		q = b.get(fl.authURL(oauth2.SetAuthURLParam("max_age", "60"), oauth2.SetAuthURLParam("prompt", "none")))
		if q.location == nil || q.location.Query().Get("error") != "login_required" {
			t.Fatalf("max_age=60 prompt=none: status %d location %v, want error=login_required", q.status, q.location)
		}
		q = b.authorize(fl.authURL(oauth2.SetAuthURLParam("max_age", "60")), aliceUser, alicePassword)
		if q.location == nil {
			t.Fatalf("login for max_age: status %d", q.status)
		}
		tk := e.exchange(fl, q.location.Query().Get("code"))
		if got := authTime(tk); e.clock.Now().Sub(got) > time.Minute {
			t.Errorf("auth_time %v is older than max_age at %v", got, e.clock.Now())
		}
	})

	t.Run("session expiry", func(t *testing.T) {
		e.clock.Advance(issuer.DefaultLoginSessionTTL + time.Minute)
		q := b.get(fl.authURL(oauth2.SetAuthURLParam("prompt", "none")))
		if q.location == nil || q.location.Query().Get("error") != "login_required" {
			t.Fatalf("prompt=none after the login session expired: status %d location %v, want login_required", q.status, q.location)
		}
	})
}

// TestRestartKeepsKeys closes the bbolt file, opens it again under a new
// Server, and checks that tokens minted before still verify.
func TestRestartKeepsKeys(t *testing.T) {
	for _, f := range []format{
		{name: "RS256", alg: "RS256", idAlg: "RS256", signed: true},
		{name: "HS256", alg: "HS256", idAlg: "ES256", signed: true},
		{name: "JWE", enc: "A128CBC-HS256", idAlg: "PS256"},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "data", "bffgate.db")
			clk := newClock()
			e1 := start(t, envOptions{path: path, clock: clk, cfg: f.apply})
			_, fl, tk := e1.loginTokens(webID)
			before := e1.jwks()
			e1.Stop()

			e2 := start(t, envOptions{path: path, clock: clk, issuerURL: e1.url, cfg: f.apply})
			after := e2.jwks()
			for _, k := range before.Keys {
				if len(after.Key(k.KeyID)) != 1 {
					t.Errorf("key %s published before the restart is gone after it", k.KeyID)
				}
			}
			checkAccessClaims(t, e2, verifyAccess(t, e2, tk.access), webID)
			if _, err := e2.provider().Verifier(&oidc.Config{ClientID: webID, Now: clk.Now}).Verify(e2.ctx(), tk.id); err != nil {
				t.Errorf("ID token from before the restart: %v", err)
			}
			wantActive(t, e2.introspect(tk.access))
			if r := e2.userinfo(tk.access); r.status != http.StatusOK {
				t.Errorf("userinfo after restart: %d %s", r.status, r.raw)
			}
			fl.conf.Endpoint = e2.provider().Endpoint()
			fl.conf.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
			if _, err := fl.conf.TokenSource(e2.ctx(), &oauth2.Token{RefreshToken: tk.refresh}).Token(); err != nil {
				t.Errorf("refresh with a token from before the restart: %v", err)
			}
		})
	}
}
