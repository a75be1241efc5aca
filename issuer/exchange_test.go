package issuer_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage/redis"
	"github.com/bffgate/bffgate/issuer/trust"
)

// The exchange fixture: web may exchange for orders-api (audience) and
// https://orders.example.test/ (resource), impersonate, at most 2m, and
// get client_credentials tokens of its own (its actor token); orders-api
// may exchange what it receives for inventory-api, by delegation only.
const (
	ordersID       = "orders-api"
	ordersSecret   = "orders-secret-0123456789abcdef"
	ordersResource = "https://orders.example.test/"
	inventoryID    = "inventory-api"
	extIssuer      = "https://idp.example.test"
)

var ordersBasic = auth{id: ordersID, secret: ordersSecret, basic: true}

func withExchange(c *issuer.Config) {
	for i := range c.Clients {
		if c.Clients[i].ID == webID {
			c.Clients[i].GrantTypes = []string{issuer.GrantAuthorizationCode, issuer.GrantRefreshToken, issuer.GrantClientCredentials}
			c.Clients[i].TokenExchange = issuer.TokenExchange{
				Allowed: true, Audiences: []string{ordersID}, Resources: []string{ordersResource},
				Impersonation: true, MaxLifetime: 2 * time.Minute,
			}
		}
	}
	c.Clients = append(c.Clients, issuer.Client{
		ID: ordersID, Secret: ordersSecret, GrantTypes: []string{issuer.GrantClientCredentials},
		TokenExchange: issuer.TokenExchange{Allowed: true, Audiences: []string{inventoryID}},
	})
}

// exchangeForm is a token exchange request for subject token tok.
func exchangeForm(tok string, kv ...string) url.Values {
	f := url.Values{
		"grant_type":         {issuer.GrantTokenExchange},
		"subject_token":      {tok},
		"subject_token_type": {issuer.TokenTypeAccess},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			f.Del(kv[i])
			continue
		}
		f.Add(kv[i], kv[i+1])
	}
	return f
}

// set replaces a parameter of exchangeForm's output.
func set(f url.Values, k, v string) url.Values {
	f = cloneValues(f)
	f.Set(k, v)
	return f
}

// clientToken is a client_credentials token of a.
func (e *env) clientToken(a auth) string {
	e.t.Helper()
	r := e.post("/token", a, url.Values{"grant_type": {"client_credentials"}})
	if r.status != http.StatusOK {
		e.t.Fatalf("client_credentials for %s: %d %s", a.id, r.status, r.raw)
	}
	return r.str("access_token")
}

func wantExchanged(t *testing.T, r oauthResponse) map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("token exchange: %d %s, want 200", r.status, r.raw)
	}
	if r.str("token_type") != "Bearer" || r.str("issued_token_type") == "" || r.body["expires_in"] == nil || r.body["refresh_token"] != nil {
		t.Fatalf("token exchange response %s: want token_type Bearer, issued_token_type, expires_in, no refresh_token", r.raw)
	}
	return payload(t, r.str("access_token"))
}

func wantExchangeError(t *testing.T, r oauthResponse, code string, phrases ...string) {
	t.Helper()
	wantError(t, r, http.StatusBadRequest, code)
	d := strings.ToLower(r.str("error_description"))
	for _, p := range phrases {
		if !strings.Contains(d, strings.ToLower(p)) {
			t.Errorf("%s description %q does not name the cause (want %q in it)", code, r.str("error_description"), p)
		}
	}
}

// TestTokenExchangeDelegation: impersonation, delegation and a nested
// act, the aud exactly the target, introspection showing act and the
// acting client, and the subject's grant revocation killing every token
// exchanged from it.
func TestTokenExchangeDelegation(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: withExchange})
	_, _, tk := e.loginTokens(webID)

	// Discovery advertises the grant.
	d := e.request(http.MethodGet, "/.well-known/openid-configuration", nil, nil)
	if gts, _ := d.body["grant_types_supported"].([]any); !slices.Contains(gts, any(issuer.GrantTokenExchange)) {
		t.Fatalf("grant_types_supported %v lacks token exchange", d.body["grant_types_supported"])
	}

	// Impersonation: no act; aud exactly the target.
	imp := wantExchanged(t, e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID, "scope", "openid profile")))
	if imp["aud"] != ordersID || imp["act"] != nil || imp["sub"] != "user-alice" || imp["client_id"] != webID || imp["scope"] != "openid profile" {
		t.Fatalf("impersonation token claims %v: want aud %s, sub user-alice, client_id web, scope narrowed, no act", imp, ordersID)
	}

	// Delegation: web's own token as actor.
	actor := e.clientToken(webBasic)
	r := e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID, "actor_token", actor, "actor_token_type", issuer.TokenTypeAccess, "requested_token_type", issuer.TokenTypeJWT))
	del := wantExchanged(t, r)
	if r.str("issued_token_type") != issuer.TokenTypeJWT {
		t.Fatalf("issued_token_type %q, want jwt", r.str("issued_token_type"))
	}
	act, _ := del["act"].(map[string]any)
	if act["sub"] != issuer.ClientSubject(webID) || act["client_id"] != webID || act["act"] != nil {
		t.Fatalf("delegation act %v: want sub client:web, client_id web", del["act"])
	}
	t1 := r.str("access_token")

	// Nested: orders-api acts for web acting for alice.
	ordersActor := e.clientToken(ordersBasic)
	r = e.post("/token", ordersBasic, exchangeForm(t1, "audience", inventoryID, "actor_token", ordersActor, "actor_token_type", issuer.TokenTypeAccess))
	nested := wantExchanged(t, r)
	t2 := r.str("access_token")
	act, _ = nested["act"].(map[string]any)
	inner, _ := act["act"].(map[string]any)
	if act["sub"] != issuer.ClientSubject(ordersID) || inner["sub"] != issuer.ClientSubject(webID) || nested["aud"] != inventoryID || nested["sub"] != "user-alice" {
		t.Fatalf("nested token %v: want act orders-api over act web, aud %s", nested, inventoryID)
	}
	// orders-api may only delegate.
	wantExchangeError(t, e.post("/token", ordersBasic, exchangeForm(t1, "audience", inventoryID)), "unauthorized_client", "actor_token")

	// Introspection: act, aud, the acting client.
	in := e.post("/introspect", ordersBasic, url.Values{"token": {t2}})
	wantActive(t, in)
	iact, _ := in.body["act"].(map[string]any)
	if in.str("client_id") != ordersID || iact["sub"] != issuer.ClientSubject(ordersID) || in.body["gty"] != issuer.GrantTokenExchange {
		t.Fatalf("introspection of the nested token: %s", in.raw)
	}
	if aud, _ := in.body["aud"].([]any); len(aud) != 1 || aud[0] != inventoryID {
		t.Fatalf("introspection aud %v, want [%s]", in.body["aud"], inventoryID)
	}

	// Revoking the subject's grant (its refresh token) kills every
	// exchanged token, at introspection and userinfo.
	impTok := e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID)).str("access_token")
	wantActive(t, e.introspect(impTok))
	if r := e.revoke(webBasic, tk.refresh, "refresh_token"); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	wantInactive(t, e.introspect(impTok))
	wantInactive(t, e.introspect(t1))
	wantInactive(t, e.post("/introspect", ordersBasic, url.Values{"token": {t2}}))
	wantError(t, e.userinfo(impTok), http.StatusUnauthorized, "invalid_token")
	// And exchanging it again is refused.
	wantGrantError(t, e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID)), "revoked")

	if n, _ := e.metric("bffgate_issuer_token_exchanges_total", "client_id", webID, "decision", "granted"); n < 3 {
		t.Errorf("granted exchanges of web counted %v, want at least 3", n)
	}
	if n, _ := e.metric("bffgate_issuer_token_exchanges_total", "decision", "refused"); n < 2 {
		t.Errorf("refused exchanges counted %v, want at least 2", n)
	}
}

// TestTokenExchangeRevokeExchangedAlone: revoking an exchanged token at
// /revoke revokes that token only, not the session it came from.
func TestTokenExchangeRevokeExchangedAlone(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: withExchange})
	_, _, tk := e.loginTokens(webID)
	x := e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID)).str("access_token")
	if r := e.revoke(webBasic, x, ""); r.status != http.StatusOK {
		t.Fatalf("revoke: %d", r.status)
	}
	wantInactive(t, e.introspect(x))
	wantActive(t, e.introspect(tk.access))
	if r := e.refresh(webBasic, tk.refresh); r.status != http.StatusOK {
		t.Fatalf("refresh after revoking an exchanged token: %d %s", r.status, r.raw)
	}
}

// TestTokenExchangeLifetime: capped at the policy's max_lifetime and the
// subject's remaining life; a subject refresh token gives its own.
func TestTokenExchangeLifetime(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: withExchange})
	_, _, tk := e.loginTokens(webID)
	r := e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID))
	wantExchanged(t, r)
	if got := r.body["expires_in"].(float64); got != 120 {
		t.Fatalf("expires_in %v, want 120 (max_lifetime 2m)", got)
	}
	e.clock.Advance(4 * time.Minute) // the 5m access token has 60s left
	r = e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID))
	c := wantExchanged(t, r)
	if got := r.body["expires_in"].(float64); got != 60 {
		t.Fatalf("expires_in %v, want 60 (the subject's remaining life)", got)
	}
	if exp := int64(c["exp"].(float64)); exp != int64(payload(t, tk.access)["exp"].(float64)) {
		t.Fatalf("exp %d outlives the subject token", exp)
	}
	// A refresh token as subject, audience and resource together.
	r = e.post("/token", webBasic, exchangeForm(tk.refresh, "subject_token_type", "", "audience", ordersID, "resource", ordersResource))
	r2 := e.post("/token", webBasic, set(exchangeForm(tk.refresh, "audience", ordersID, "resource", ordersResource), "subject_token_type", issuer.TokenTypeRefresh))
	wantExchangeError(t, r, "invalid_request", "subject_token_type")
	c = wantExchanged(t, r2)
	if aud, _ := c["aud"].([]any); len(aud) != 2 || aud[0] != ordersID || aud[1] != ordersResource {
		t.Fatalf("aud %v, want [%s %s]", c["aud"], ordersID, ordersResource)
	}
	if got := r2.body["expires_in"].(float64); got != 120 {
		t.Fatalf("expires_in %v from a refresh token, want 120", got)
	}
	e.clock.Advance(2 * time.Minute) // the access token has expired
	wantGrantError(t, e.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID)), "subject token", "expired")
}

// TestTokenExchangeBadInput: every bad request gets its RFC 8693 / 6749
// error naming the cause, never a 500.
func TestTokenExchangeBadInput(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: withExchange})
	_, _, tk := e.loginTokens(webID)
	_, _, otk := e.loginTokens(otherID)
	_, _, revoked := e.loginTokens(webID)
	e.revoke(webBasic, revoked.access, "access_token")

	claims := payload(t, tk.access)
	b64 := func(v any) string { return base64.RawURLEncoding.EncodeToString(mustJSON(v)) }
	algNone := b64(map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + b64(claims) + "."
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	foreignKey := signJWT(t, jose.RS256, otherKey, "k1", "at+jwt", claims)
	untrusted := map[string]any{}
	for k, v := range claims {
		untrusted[k] = v
	}
	untrusted["iss"] = "https://evil.example.test"
	untrustedTok := signJWT(t, jose.RS256, otherKey, "k1", "at+jwt", untrusted)

	ok := exchangeForm(tk.access, "audience", ordersID)
	dup := cloneValues(ok)
	dup.Add("subject_token", tk.access)
	for _, c := range []struct {
		name    string
		a       auth
		form    url.Values
		code    string
		phrases []string
	}{
		{"client without the grant", otherBasic, exchangeForm(otk.access, "audience", ordersID), "unauthorized_client", []string{"token-exchange"}},
		{"missing subject_token", webBasic, exchangeForm("", "audience", ordersID), "invalid_request", []string{"subject_token is missing"}},
		{"missing subject_token_type", webBasic, exchangeForm(tk.access, "subject_token_type", "", "audience", ordersID), "invalid_request", []string{"subject_token_type is missing"}},
		{"unknown subject_token_type", webBasic, set(ok, "subject_token_type", "urn:x:saml"), "invalid_request", []string{"not supported"}},
		{"duplicated subject_token", webBasic, dup, "invalid_request", []string{"repeated"}},
		{"actor_token without its type", webBasic, set(ok, "actor_token", tk.access), "invalid_request", []string{"actor_token_type is missing"}},
		{"actor_token_type without a token", webBasic, set(ok, "actor_token_type", issuer.TokenTypeAccess), "invalid_request", []string{"without actor_token"}},
		{"refresh token as actor", webBasic, set(set(ok, "actor_token", tk.refresh), "actor_token_type", issuer.TokenTypeRefresh), "invalid_request", []string{"actor_token_type"}},
		{"requested_token_type refresh", webBasic, set(ok, "requested_token_type", issuer.TokenTypeRefresh), "invalid_request", []string{"requested_token_type"}},
		{"audience not allowed", webBasic, set(ok, "audience", "payments-api"), "invalid_target", []string{"payments-api", "token_exchange.audiences"}},
		{"resource not allowed", webBasic, exchangeForm(tk.access, "resource", "https://payments.example.test/"), "invalid_target", []string{"token_exchange.resources"}},
		{"resource not absolute", webBasic, exchangeForm(tk.access, "resource", "/orders"), "invalid_target", []string{"absolute"}},
		{"resource with a fragment", webBasic, exchangeForm(tk.access, "resource", ordersResource+"#x"), "invalid_target", []string{"fragment"}},
		{"no target, several allowed", webBasic, exchangeForm(tk.access), "invalid_target", []string{"name the target"}},
		{"scope widened", webBasic, set(ok, "scope", "openid groups"), "invalid_scope", []string{"groups", "narrow"}},
		{"scope malformed", webBasic, set(ok, "scope", "open\"id"), "invalid_scope", []string{"characters"}},
		{"subject of another client", webBasic, exchangeForm(otk.access, "audience", ordersID), "invalid_grant", []string{"another client"}},
		{"subject revoked", webBasic, exchangeForm(revoked.access, "audience", ordersID), "invalid_grant", []string{"revoked"}},
		{"subject alg none", webBasic, exchangeForm(algNone, "audience", ordersID), "invalid_grant", []string{"subject token", "algorithm"}},
		{"subject signed by a foreign key", webBasic, exchangeForm(foreignKey, "audience", ordersID), "invalid_grant", []string{"subject token", "key"}},
		{"subject of an untrusted issuer", webBasic, exchangeForm(untrustedTok, "audience", ordersID), "invalid_grant", []string{"evil.example.test", "does not trust"}},
		{"subject garbage", webBasic, exchangeForm("not-a-token", "audience", ordersID), "invalid_grant", []string{"subject token", "malformed"}},
		{"subject an ID token said to be an access token", webBasic, exchangeForm(tk.id, "audience", ordersID), "invalid_grant", []string{"not an access token"}},
		{"actor token invalid", webBasic, set(set(ok, "actor_token", foreignKey), "actor_token_type", issuer.TokenTypeJWT), "invalid_grant", []string{"actor token"}},
		{"actor token revoked", webBasic, set(set(ok, "actor_token", revoked.access), "actor_token_type", issuer.TokenTypeAccess), "invalid_grant", []string{"actor token", "revoked"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantExchangeError(t, e.post("/token", c.a, c.form), c.code, c.phrases...)
		})
	}
	// The ID token is a subject of its own type (aud web, login alive).
	c := wantExchanged(t, e.post("/token", webBasic, set(exchangeForm(tk.id, "audience", ordersID), "subject_token_type", issuer.TokenTypeID)))
	if c["sub"] != "user-alice" || c["scope"] != nil {
		t.Fatalf("token exchanged from an ID token: %v, want sub user-alice and no scope", c)
	}
	// Audience and resource may repeat; other parameters may not.
	f := exchangeForm(tk.access, "audience", ordersID, "audience", ordersID)
	wantExchanged(t, e.post("/token", webBasic, f))
	f = cloneValues(ok)
	f.Add("scope", "openid")
	f.Add("scope", "profile")
	wantExchangeError(t, e.post("/token", webBasic, f), "invalid_request", "repeated")
}

// TestTokenExchangeConfig: policy errors name the YAML key path.
func TestTokenExchangeConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		edit func(*issuer.Config)
		path string
	}{
		{"policy without allowed", func(c *issuer.Config) { c.Clients[0].TokenExchange = issuer.TokenExchange{Audiences: []string{"a"}} }, "clients[0].token_exchange.allowed"},
		{"no target", func(c *issuer.Config) { c.Clients[0].TokenExchange = issuer.TokenExchange{Allowed: true} }, "clients[0].token_exchange"},
		{"public client", func(c *issuer.Config) {
			c.Clients[1].TokenExchange = issuer.TokenExchange{Allowed: true, Audiences: []string{"a"}}
		}, "clients[1].token_exchange.allowed"},
		{"resource relative", func(c *issuer.Config) {
			c.Clients[0].TokenExchange = issuer.TokenExchange{Allowed: true, Resources: []string{"/x"}}
		}, "clients[0].token_exchange.resources[0]"},
		{"audience twice", func(c *issuer.Config) {
			c.Clients[0].TokenExchange = issuer.TokenExchange{Allowed: true, Audiences: []string{"a", "a"}}
		}, "clients[0].token_exchange.audiences[1]"},
		{"max_lifetime negative", func(c *issuer.Config) {
			c.Clients[0].TokenExchange = issuer.TokenExchange{Allowed: true, Audiences: []string{"a"}, MaxLifetime: -time.Second}
		}, "clients[0].token_exchange.max_lifetime"},
		{"trusted issuer with HS256", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: "https://idp.example.test/jwks", Audience: []string{"x"}, Algorithms: []string{"HS256"}}}
		}, "trusted_issuers[0].algorithms[0]"},
		{"trusted issuer with none", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: "https://idp.example.test/jwks", Audience: []string{"x"}, Algorithms: []string{"none"}}}
		}, "trusted_issuers[0].algorithms[0]"},
		{"trusted issuer without keys", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, Audience: []string{"x"}}}
		}, "trusted_issuers[0].jwks_url"},
		{"trusted issuer over plain http", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: "http://idp.example.test/jwks", Audience: []string{"x"}}}
		}, "trusted_issuers[0].jwks_url"},
		{"trusted issuer without audience", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: "https://idp.example.test/jwks"}}
		}, "trusted_issuers[0].audience"},
		{"prefix mode without prefix", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: "https://idp.example.test/jwks", Audience: []string{"x"}, Subject: trust.Mapping{Mode: "prefix"}}}
		}, "trusted_issuers[0].subject.prefix"},
		{"prefix of clients", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: "https://idp.example.test/jwks", Audience: []string{"x"}, Subject: trust.Mapping{Mode: "prefix", Prefix: "client:x"}}}
		}, "trusted_issuers[0].subject.prefix"},
		{"unknown mode", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: "https://idp.example.test/jwks", Audience: []string{"x"}, Subject: trust.Mapping{Mode: "rename"}}}
		}, "trusted_issuers[0].subject.mode"},
		{"missing JWKS file", func(c *issuer.Config) {
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSFile: "/nonexistent/jwks.json", Audience: []string{"x"}}}
		}, "trusted_issuers[0].jwks_file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Issuer = "https://issuer.example.test"
			c.edit(&cfg)
			err := cfg.Validate()
			fe, ok := err.(*issuer.FieldError)
			if !ok || fe.Path != c.path {
				t.Fatalf("Validate: %v, want a FieldError at %s", err, c.path)
			}
		})
	}
}

// signJWT signs claims with key as a compact JWS.
func signJWT(t testing.TB, alg jose.SignatureAlgorithm, key any, kid, typ string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// extIdP is a trusted external issuer: an ES256 key whose JWKS a test
// server publishes.
type extIdP struct {
	key *ecdsa.PrivateKey
	srv *httptest.Server
}

func newExtIdP(t *testing.T) *extIdP {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x := &extIdP{key: k}
	x.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "ext-1", Algorithm: "ES256", Use: "sig"}}})
	}))
	t.Cleanup(x.srv.Close)
	return x
}

func (x *extIdP) token(t *testing.T, now time.Time, edit map[string]any) string {
	c := map[string]any{"iss": extIssuer, "sub": "u-123", "aud": "bffgate", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		"scope": "orders:read orders:write", "email": aliceEmail, "email_verified": true}
	for k, v := range edit {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return signJWT(t, jose.ES256, x.key, "ext-1", "JWT", c)
}

// TestTokenExchangeTrustedIssuer: the STS case: an external provider's
// JWT (JWKS served by the test) in, a token of this issuer out; a token of
// another key, another aud, alg HS256, expired, or whose may_act names
// someone else is refused.
func TestTokenExchangeTrustedIssuer(t *testing.T) {
	t.Parallel()
	idp := newExtIdP(t)
	mode := func(m trust.Mapping) func(*issuer.Config) {
		return func(c *issuer.Config) {
			withExchange(c)
			c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: idp.srv.URL, Algorithms: []string{"ES256"}, Audience: []string{"bffgate"}, Subject: m}}
		}
	}
	e := start(t, envOptions{cfg: mode(trust.Mapping{Mode: trust.MapPrefix, Prefix: "ext:"})})
	now := e.clock.Now()

	r := e.post("/token", webBasic, set(exchangeForm(idp.token(t, now, nil), "audience", ordersID, "scope", "orders:read"), "subject_token_type", issuer.TokenTypeJWT))
	c := wantExchanged(t, r)
	if c["sub"] != "ext:u-123" || c["scope"] != "orders:read" || c["iss"] != e.url || c["aud"] != ordersID {
		t.Fatalf("exchanged external token: %v", c)
	}
	if got := r.body["expires_in"].(float64); got != 120 {
		t.Fatalf("expires_in %v, want 120", got)
	}
	wantActive(t, e.introspect(r.str("access_token")))

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	claims := map[string]any{"iss": extIssuer, "sub": "u-123", "aud": "bffgate", "exp": now.Add(time.Minute).Unix()}
	for _, tc := range []struct {
		name, tok string
		code      string
		phrases   []string
	}{
		{"another key", signJWT(t, jose.ES256, otherKey, "ext-1", "JWT", claims), "invalid_grant", []string{"signature"}},
		{"HS256 with the public key", signJWT(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), "ext-1", "JWT", claims), "invalid_grant", []string{"algorithm"}},
		{"another audience", idp.token(t, now, map[string]any{"aud": "someone-else"}), "invalid_grant", []string{"aud"}},
		{"expired", idp.token(t, now, map[string]any{"exp": now.Add(-time.Minute).Unix()}), "invalid_grant", []string{"expired"}},
		{"scope widened", idp.token(t, now, map[string]any{"scope": "orders:write"}), "invalid_scope", []string{"orders:read"}},
		{"may_act names another", idp.token(t, now, map[string]any{"may_act": map[string]any{"sub": "client:someone"}}), "invalid_grant", []string{"may_act"}},
		{"no sub", idp.token(t, now, map[string]any{"sub": nil}), "invalid_grant", []string{"sub"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantExchangeError(t, e.post("/token", webBasic, exchangeForm(tc.tok, "audience", ordersID, "scope", "orders:read")), tc.code, tc.phrases...)
		})
	}
	// may_act naming the client itself (impersonation) or the actor
	// (delegation) is honoured.
	tok := idp.token(t, now, map[string]any{"may_act": map[string]any{"client_id": webID}})
	wantExchanged(t, e.post("/token", webBasic, exchangeForm(tok, "audience", ordersID)))
	tok = idp.token(t, now, map[string]any{"may_act": map[string]any{"sub": issuer.ClientSubject(ordersID)}})
	wantExchangeError(t, e.post("/token", webBasic, exchangeForm(tok, "audience", ordersID, "actor_token", e.clientToken(webBasic), "actor_token_type", issuer.TokenTypeAccess)), "invalid_grant", "may_act")

	// Lookup maps onto the configured user by a verified email.
	l := start(t, envOptions{cfg: mode(trust.Mapping{Mode: trust.MapLookup})})
	c = wantExchanged(t, l.post("/token", webBasic, exchangeForm(idp.token(t, l.clock.Now(), nil), "audience", ordersID, "scope", "orders:read")))
	if c["sub"] != "user-alice" {
		t.Fatalf("lookup mapped sub %v, want user-alice", c["sub"])
	}
	wantExchangeError(t, l.post("/token", webBasic, exchangeForm(idp.token(t, l.clock.Now(), map[string]any{"email": "nobody@example.test"}), "audience", ordersID)), "invalid_grant", "no user")
}

// TestTokenExchangeRevocationAcrossInstances: two instances on one Redis;
// a token exchanged on A dies on B when the subject's grant is revoked on
// A (logout, refresh reuse or /revoke all denylist the grant).
func TestTokenExchangeRevocationAcrossInstances(t *testing.T) {
	t.Parallel()
	client := redistest.Client(t)
	prefix := redistest.Prefix(t, client, "")
	newStore := func() *redis.Store {
		s, err := redis.New(client, redis.Config{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	clk := newClock()
	a := start(t, envOptions{cfg: withExchange, clock: clk, store: newStore()})
	b := start(t, envOptions{cfg: withExchange, clock: clk, store: newStore(), issuerURL: a.url})
	_, _, tk := a.loginTokens(webID)
	x := wantExchangedTok(t, a.post("/token", webBasic, exchangeForm(tk.access, "audience", ordersID)))
	wantActive(t, b.introspect(x))
	// Refresh-token reuse on B revokes the grant.
	if r := b.refresh(webBasic, tk.refresh); r.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.status, r.raw)
	}
	wantGrantError(t, b.refresh(webBasic, tk.refresh), "already used")
	wantInactive(t, a.introspect(x))
	wantInactive(t, b.introspect(x))
}

func wantExchangedTok(t *testing.T, r oauthResponse) string {
	t.Helper()
	wantExchanged(t, r)
	return r.str("access_token")
}

// TestTokenExchangeTrustedIssuerDown: a trusted issuer whose JWKS cannot
// be fetched is the issuer's trouble, not the client's: 503
// temporarily_unavailable, and the exchange works once the keys answer.
func TestTokenExchangeTrustedIssuerDown(t *testing.T) {
	t.Parallel()
	idp := newExtIdP(t)
	var up atomic.Bool
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		idp.srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(gate.Close)
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		withExchange(c)
		c.TrustedIssuers = []trust.Issuer{{Issuer: extIssuer, JWKSURL: gate.URL, Algorithms: []string{"ES256"}, Audience: []string{"bffgate"}}}
	}})
	tok := idp.token(t, e.clock.Now(), nil)
	r := e.post("/token", webBasic, exchangeForm(tok, "audience", ordersID, "scope", "orders:read"))
	wantError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
	up.Store(true)
	wantExchanged(t, e.post("/token", webBasic, exchangeForm(tok, "audience", ordersID, "scope", "orders:read")))
}
