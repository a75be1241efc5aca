package exchange

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/peers"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

const (
	grantExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	typeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	typeRefresh   = "urn:ietf:params:oauth:token-type:refresh_token"
	typeJWT       = "urn:ietf:params:oauth:token-type:jwt"

	stsID        = "sts-client"
	stsSecret    = "sts-client-secret-0123456789abcdef"
	stsRedirect  = "http://127.0.0.1/sts/callback"
	ordersID     = "orders-api"
	ordersSecret = "orders-api-secret-0123456789abcdef"
	ordersURI    = "https://orders.example.test/"
	inventoryID  = "inventory-api"
	// inventorySecret: inventory-api is a client without a token
	// exchange policy.
	inventorySecret = "inventory-api-secret-0123456789abcdef"
	extIssuer       = "https://idp.example.test"
	extAudience     = "bffgate-sts"
	demoSubject     = "demo-user-1"
	// demoHash is the argon2id hash of the demo password "demo" (the one
	// cmd/bffgate uses for its zero-config demo user).
	demoHash = "$argon2id$v=19$m=65536,t=3,p=4$+ls2TPbBTnDx8LLW5C1tkQ$+uJtJyaHr8paY7LZ+BJPwnUvyOiKa3P/ygn9o7GwhL0"
)

// extIdP is the trusted external issuer: an ES256 key whose JWKS the test
// serves on loopback.
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
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "ext-1", Algorithm: "ES256", Use: "sig"}}})
	}))
	t.Cleanup(x.srv.Close)
	return x
}

// token signs claims over a default external access token with key.
func sign(t *testing.T, key *ecdsa.PrivateKey, edit map[string]any) string {
	t.Helper()
	now := time.Now()
	c := map[string]any{"iss": extIssuer, "sub": "ext-user-7", "aud": extAudience, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"scope": "orders:read orders:write"}
	for k, v := range edit {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "ext-1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(c)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// ordersUpstream is the API behind the gateway's /orders/ route: it
// accepts only RS256 tokens of the issuer whose aud is orders-api and
// whose act names the gateway, and counts the distinct tokens it saw.
type ordersUpstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	tokens map[string]bool
	bad    []string
}

func newOrdersUpstream(t *testing.T) (*ordersUpstream, func(issuerURL string)) {
	u := &ordersUpstream{tokens: map[string]bool{}}
	var verifier *oidc.IDTokenVerifier
	var vmu sync.Mutex
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vmu.Lock()
		v := verifier
		vmu.Unlock()
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		fail := func(why string) {
			u.mu.Lock()
			u.bad = append(u.bad, why)
			u.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
		}
		idt, err := v.Verify(r.Context(), tok)
		if err != nil {
			fail(err.Error())
			return
		}
		var cl struct {
			Act      map[string]any `json:"act"`
			ClientID string         `json:"client_id"`
			JTI      string         `json:"jti"`
		}
		_ = idt.Claims(&cl)
		if cl.Act["sub"] != "client:bffgate" || cl.Act["client_id"] != "bffgate" {
			fail(fmt.Sprintf("act %v does not name the gateway", cl.Act))
			return
		}
		u.mu.Lock()
		u.tokens[tok] = true
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"sub": idt.Subject, "aud": idt.Audience, "act": cl.Act, "client_id": cl.ClientID, "jti": cl.JTI})
	}))
	t.Cleanup(u.srv.Close)
	return u, func(issuerURL string) {
		ks := oidc.NewRemoteKeySet(context.Background(), issuerURL+"/jwks")
		vmu.Lock()
		verifier = oidc.NewVerifier(issuerURL, ks, &oidc.Config{ClientID: ordersID, SupportedSigningAlgs: []string{"RS256"}})
		vmu.Unlock()
	}
}

func (u *ordersUpstream) seen() (distinct int, bad []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.tokens), append([]string(nil), u.bad...)
}

// env is the running stack and its peers.
type env struct {
	st      *stack.Stack
	sts     *peers.RP // openid-client as sts-client
	orders  *peers.RP // openid-client as orders-api
	jose    *peers.Jose
	jwksURI string
	idp     *extIdP
	up      *ordersUpstream
	user    issuerclient.Tokens
}

func start(t *testing.T) *env {
	t.Helper()
	e, setIssuer := newEnv(t)
	e.st = stack.Start(t, stack.Options{ConfigYAML: e.yaml()})
	setIssuer(e.st.IssuerURL)
	e.peers(t)
	return e
}

// newEnv makes the external issuer and the upstream; the caller starts
// the stack and then tells the upstream the issuer's URL.
func newEnv(t *testing.T) (*env, func(string)) {
	t.Helper()
	peers.NodeModules(t)
	e := &env{idp: newExtIdP(t)}
	var setIssuer func(string)
	e.up, setIssuer = newOrdersUpstream(t)
	return e, setIssuer
}

// yaml is the stack's configuration: the STS clients, the trusted
// external issuer, a user, and the gateway's exchange route.
func (e *env) yaml() string {
	return fmt.Sprintf(`issuer:
  tokens:
    access_ttl: 20s
  trusted_issuers:
    - issuer: %[1]s
      jwks_url: %[2]s
      algorithms: [ES256]
      audience: [%[3]s]
      subject: {mode: prefix, prefix: "ext:"}
  clients:
    - id: %[4]s
      secret: %[5]s
      redirect_uris: [%[6]s]
      grant_types: [authorization_code, refresh_token, client_credentials]
      token_exchange:
        allowed: true
        audiences: [%[7]s]
        resources: ["%[8]s"]
        impersonation: true
        max_lifetime: 15s
    - id: %[7]s
      secret: %[9]s
      grant_types: [client_credentials]
      token_exchange: {allowed: true, audiences: [%[10]s]}
    - id: %[10]s
      secret: %[14]s
      grant_types: [client_credentials]
  users:
    - username: demo
      password_hash: "%[11]s"
      subject: %[12]s
gateway:
  refresh: {skew: 15s}
  routes:
    - prefix: /orders/
      upstream: %[13]s
      token: {exchange: {audience: %[7]s, scope: "openid profile", actor: gateway}}
`, extIssuer, e.idp.srv.URL, extAudience, stsID, stsSecret, stsRedirect, ordersID, ordersURI, ordersSecret, inventoryID, demoHash, demoSubject, e.up.srv.URL, inventorySecret)
}

// peers starts openid-client (as sts-client and as orders-api) and jose
// against the stack, and gets the user's tokens for sts-client.
func (e *env) peers(t *testing.T) {
	t.Helper()
	e.sts = peers.StartRP(t, peers.RPOptions{Issuer: e.st.IssuerURL, ClientID: stsID, ClientSecret: stsSecret, RedirectURI: stsRedirect})
	e.orders = peers.StartRP(t, peers.RPOptions{Issuer: e.st.IssuerURL, ClientID: ordersID, ClientSecret: ordersSecret, RedirectURI: "http://127.0.0.1/unused"})
	e.jose = peers.StartJose(t)
	e.jwksURI = e.st.IssuerURL + "/jwks"
	ic := issuerclient.New(t, e.st.IssuerURL, issuerclient.Config{ClientID: stsID, ClientSecret: stsSecret, RedirectURI: stsRedirect})
	e.user = ic.MustGrant()
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// exchange sends a token exchange as rp with openid-client.
func exchange(ctx context.Context, rp *peers.RP, params map[string]any) (map[string]any, error) {
	return rp.Grant(ctx, grantExchange, params)
}

// verify checks an issued token with jose: RFC 9068 access token of the
// issuer, for audience.
func (e *env) verify(ctx context.Context, t *testing.T, tok, audience string) map[string]any {
	t.Helper()
	v, err := e.jose.Verify(ctx, tok, peers.VerifyOptions{JWKSURI: e.jwksURI, Issuer: e.st.IssuerURL, Audience: audience, AccessToken: true})
	if err != nil {
		t.Fatalf("jose rejects the exchanged token: %v", err)
	}
	return v.Payload
}

func wantRefused(t *testing.T, what string, err error, code string, phrase string) {
	t.Helper()
	var pe *peers.PeerError
	if !errors.As(err, &pe) || pe.OAuthError != code || !strings.Contains(strings.ToLower(pe.ErrorDescription), strings.ToLower(phrase)) {
		t.Fatalf("%s: %v, want %s naming %q", what, err, code, phrase)
	}
}

func TestTokenExchange(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := ctxT(t)

	if gts, _ := e.sts.Metadata["grant_types_supported"].([]any); !containsAny(gts, grantExchange) {
		t.Fatalf("discovery grant_types_supported %v lacks token exchange", e.sts.Metadata["grant_types_supported"])
	}

	// Impersonation: aud exactly the target, no act, scope narrowed.
	r, err := exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "subject_token_type": typeAccess, "audience": ordersID, "scope": "openid"})
	if err != nil {
		t.Fatalf("impersonation: %v", err)
	}
	if r["issued_token_type"] != typeAccess || r["token_type"] != "bearer" && r["token_type"] != "Bearer" || r["refresh_token"] != nil {
		t.Fatalf("response %v: want issued_token_type access_token, Bearer, no refresh token", r)
	}
	imp := e.verify(ctx, t, r["access_token"].(string), ordersID)
	if imp["sub"] != demoSubject || imp["act"] != nil || imp["scope"] != "openid" || imp["client_id"] != stsID || audString(imp["aud"]) != ordersID {
		t.Fatalf("impersonation claims %v", imp)
	}
	if exp, subjExp := num(imp["exp"]), e.subjectExp(ctx, t); exp > subjExp || exp-num(imp["iat"]) > 15 {
		t.Fatalf("exp %v: want at most the subject's (%v) and 15s after iat (max_lifetime)", exp, subjExp)
	}

	// Delegation, resource and audience together, requested jwt.
	actor := clientToken(ctx, t, e.sts)
	r, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "subject_token_type": typeAccess,
		"audience": ordersID, "resource": ordersURI, "actor_token": actor, "actor_token_type": typeAccess, "requested_token_type": typeJWT})
	if err != nil {
		t.Fatalf("delegation: %v", err)
	}
	if r["issued_token_type"] != typeJWT {
		t.Fatalf("issued_token_type %v, want jwt", r["issued_token_type"])
	}
	t1 := r["access_token"].(string)
	del := e.verify(ctx, t, t1, ordersURI)
	act, _ := del["act"].(map[string]any)
	if act["sub"] != "client:"+stsID || act["client_id"] != stsID {
		t.Fatalf("delegation act %v", del["act"])
	}

	// Nested: orders-api acts for sts-client acting for the user.
	ordersActor := clientToken(ctx, t, e.orders)
	r, err = exchange(ctx, e.orders, map[string]any{"subject_token": t1, "subject_token_type": typeAccess, "audience": inventoryID,
		"actor_token": ordersActor, "actor_token_type": typeAccess})
	if err != nil {
		t.Fatalf("nested delegation: %v", err)
	}
	t2 := r["access_token"].(string)
	nested := e.verify(ctx, t, t2, inventoryID)
	act, _ = nested["act"].(map[string]any)
	inner, _ := act["act"].(map[string]any)
	if act["sub"] != "client:"+ordersID || inner["sub"] != "client:"+stsID || nested["sub"] != demoSubject {
		t.Fatalf("nested act %v", nested["act"])
	}
	in, err := e.orders.Introspect(ctx, t2, "")
	if err != nil || in["active"] != true || in["client_id"] != ordersID || in["act"] == nil {
		t.Fatalf("introspection of the nested token: %v %v", in, err)
	}

	// Refusals, as openid-client reports them.
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "subject_token_type": typeAccess, "audience": "payments-api"})
	wantRefused(t, "audience not allowed", err, "invalid_target", "payments-api")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "subject_token_type": typeAccess, "resource": "https://payments.example.test/"})
	wantRefused(t, "resource not allowed", err, "invalid_target", "token_exchange.resources")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "subject_token_type": typeAccess, "audience": ordersID, "scope": "openid email"})
	wantRefused(t, "scope widened", err, "invalid_scope", "email")
	_, err = exchange(ctx, e.orders, map[string]any{"subject_token": t1, "subject_token_type": typeAccess, "audience": inventoryID})
	wantRefused(t, "impersonation by a delegation-only client", err, "unauthorized_client", "actor_token")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "audience": ordersID})
	wantRefused(t, "no subject_token_type", err, "invalid_request", "subject_token_type")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "subject_token_type": typeAccess, "audience": ordersID,
		"actor_token": "not.a.token", "actor_token_type": typeAccess})
	wantRefused(t, "bad actor token", err, "invalid_grant", "actor token")

	// Bad subject tokens and requests, as the issue lists them.
	algNone, err := e.jose.Forge(ctx, peers.ForgeAlgNone, e.user.AccessToken, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": algNone, "subject_token_type": typeAccess, "audience": ordersID})
	wantRefused(t, "alg none", err, "invalid_grant", "algorithm")
	foreign, err := e.jose.Forge(ctx, peers.ForgeUnknownKID, e.user.AccessToken, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": foreign, "subject_token_type": typeAccess, "audience": ordersID})
	wantRefused(t, "a foreign key", err, "invalid_grant", "key")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": []string{e.user.AccessToken, e.user.AccessToken}, "subject_token_type": typeAccess, "audience": ordersID})
	wantRefused(t, "duplicated subject_token", err, "invalid_request", "repeated")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, e.idp.key, map[string]any{"exp": time.Now().Add(-time.Minute).Unix()}), "subject_token_type": typeJWT, "audience": ordersID})
	wantRefused(t, "expired subject", err, "invalid_grant", "expired")
	inventory := peers.StartRP(t, peers.RPOptions{Issuer: e.st.IssuerURL, ClientID: inventoryID, ClientSecret: inventorySecret, RedirectURI: "http://127.0.0.1/unused"})
	_, err = exchange(ctx, inventory, map[string]any{"subject_token": t2, "subject_token_type": typeAccess, "audience": ordersID})
	wantRefused(t, "a client without the grant", err, "unauthorized_client", "token-exchange")

	// A refresh token as subject: the policy's 15s.
	r, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.RefreshToken, "subject_token_type": typeRefresh, "audience": ordersID})
	if err != nil || num(r["expires_in"]) != 15 {
		t.Fatalf("refresh token subject: %v %v, want expires_in 15", r, err)
	}
	fromRefresh := r["access_token"].(string)

	// Revoking the subject's grant (its refresh token) kills every token
	// exchanged from it.
	in, err = e.orders.Introspect(ctx, fromRefresh, "")
	if err != nil || in["active"] != true {
		t.Fatalf("before revocation: %v %v", in, err)
	}
	if err := e.sts.Revoke(ctx, e.user.RefreshToken, "refresh_token"); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"from the refresh token": fromRefresh, "delegated": t1, "nested": t2} {
		in, err := e.orders.Introspect(ctx, tok, "")
		if err != nil || in["active"] != false {
			t.Fatalf("%s token after the subject's grant was revoked: %v %v, want inactive", name, in, err)
		}
	}
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": e.user.AccessToken, "subject_token_type": typeAccess, "audience": ordersID})
	wantRefused(t, "revoked subject", err, "invalid_grant", "revoked")
}

// TestTrustedIssuer: an external provider's token in, an internal one out
// (the STS case); a token of another key, may_act naming someone else, or
// a widened scope is refused.
func TestTrustedIssuer(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := ctxT(t)
	r, err := exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, e.idp.key, nil), "subject_token_type": typeJWT, "audience": ordersID, "scope": "orders:read"})
	if err != nil {
		t.Fatalf("external token: %v", err)
	}
	c := e.verify(ctx, t, r["access_token"].(string), ordersID)
	if c["sub"] != "ext:ext-user-7" || c["scope"] != "orders:read" {
		t.Fatalf("exchanged external token %v", c)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, other, nil), "subject_token_type": typeJWT, "audience": ordersID})
	wantRefused(t, "another key", err, "invalid_grant", "signature")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, e.idp.key, map[string]any{"may_act": map[string]any{"sub": "client:someone-else"}}), "subject_token_type": typeJWT, "audience": ordersID})
	wantRefused(t, "may_act", err, "invalid_grant", "may_act")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, e.idp.key, map[string]any{"aud": "another-service"}), "subject_token_type": typeJWT, "audience": ordersID})
	wantRefused(t, "another audience", err, "invalid_grant", "aud")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, e.idp.key, nil), "subject_token_type": typeJWT, "audience": ordersID, "scope": "orders:admin"})
	wantRefused(t, "scope widened", err, "invalid_scope", "orders:admin")
	_, err = exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, e.idp.key, map[string]any{"iss": "https://untrusted.example.test"}), "subject_token_type": typeJWT, "audience": ordersID})
	wantRefused(t, "untrusted issuer", err, "invalid_grant", "does not trust")
	// may_act naming the exchanging client lets it act.
	if _, err := exchange(ctx, e.sts, map[string]any{"subject_token": sign(t, e.idp.key, map[string]any{"may_act": map[string]any{"client_id": stsID}}), "subject_token_type": typeJWT, "audience": ordersID}); err != nil {
		t.Fatalf("may_act naming the client: %v", err)
	}
}

// TestGatewayRouteExchange: the gateway's /orders/ route sends the
// upstream a token exchanged for orders-api with the gateway as actor;
// 100 parallel calls of a new session make one exchange; after the
// session refreshes the new token is exchanged; logout kills the
// exchanged token.
func TestGatewayRouteExchange(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := ctxT(t)
	b := issuerclient.NewBrowser(t)
	cookie, err := b.GatewayLogin(ctx, e.st.GatewayURL, "demo", "demo")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	answers := make([]issuerclient.Answer, 100)
	errs := make([]error, 100)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = b.Get(ctx, e.st.GatewayURL+"/orders/list", cookie)
		}()
	}
	wg.Wait()
	for i := range answers {
		if errs[i] != nil || answers[i].Status != http.StatusOK {
			_, bad := e.up.seen()
			t.Fatalf("call %d: %v %v (upstream refusals: %v)", i, answers[i], errs[i], bad)
		}
	}
	if n, bad := e.up.seen(); n != 1 || len(bad) != 0 {
		t.Fatalf("the upstream saw %d distinct tokens for 100 parallel calls (want 1), refusals %v", n, bad)
	}
	var seen map[string]any
	_ = json.Unmarshal([]byte(answers[0].Body), &seen)
	if seen["sub"] != demoSubject || audString(seen["aud"]) != ordersID {
		t.Fatalf("the upstream saw %v", seen)
	}
	first, _ := seen["jti"].(string)
	if n := e.issuerMetric(ctx, t, `bffgate_issuer_token_exchanges_total{client_id="bffgate",decision="granted",error=""}`); n != 1 {
		t.Fatalf("the issuer counted %v exchanges of the gateway, want 1", n)
	}

	// The session's access token (20s) is due for refresh 15s before it
	// expires: after 6s the next call refreshes it and exchanges the new one.
	time.Sleep(6 * time.Second)
	a, err := b.Get(ctx, e.st.GatewayURL+"/orders/list", "")
	if err != nil || a.Status != http.StatusOK {
		t.Fatalf("after the session's refresh: %v %v", a, err)
	}
	_ = json.Unmarshal([]byte(a.Body), &seen)
	if seen["jti"] == first {
		t.Fatal("the same exchanged token was sent after the session refreshed")
	}
	if n, _ := e.up.seen(); n != 2 {
		t.Fatalf("the upstream saw %d distinct tokens, want 2", n)
	}
	var last string
	e.up.mu.Lock()
	for tok := range e.up.tokens {
		if tokJTI(t, tok) == seen["jti"] {
			last = tok
		}
	}
	e.up.mu.Unlock()

	// Logout revokes the session's grant: the exchanged token dies.
	if a, err := b.Call(ctx, http.MethodPost, e.st.GatewayURL+"/bff/logout", ""); err != nil || a.Status >= 400 {
		t.Fatalf("logout: %v %v", a, err)
	}
	in, err := e.orders.Introspect(ctx, last, "")
	if err != nil || in["active"] != false {
		t.Fatalf("the exchanged token after logout: %v %v, want inactive", in, err)
	}
}

func clientToken(ctx context.Context, t *testing.T, rp *peers.RP) string {
	t.Helper()
	r, err := rp.Grant(ctx, "client_credentials", nil)
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	return r["access_token"].(string)
}

// subjectExp is the exp of the user's access token.
func (e *env) subjectExp(ctx context.Context, t *testing.T) float64 {
	v, err := e.jose.Decode(ctx, e.user.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return num(v.Payload["exp"])
}

// issuerMetric reads one series of the issuer's /metrics.
func (e *env) issuerMetric(ctx context.Context, t *testing.T, series string) float64 {
	return metric(ctx, t, e.st.IssuerURL, series)
}

// metric reads one series of the /metrics of the listener at base.
func metric(ctx context.Context, t *testing.T, base, series string) float64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	res, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

func tokJTI(t *testing.T, tok string) any {
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	_ = json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c)
	return c["jti"]
}

func num(v any) float64 { f, _ := v.(float64); return f }

func audString(v any) string {
	switch a := v.(type) {
	case string:
		return a
	case []any:
		if len(a) == 1 {
			s, _ := a[0].(string)
			return s
		}
	}
	return fmt.Sprint(v)
}

func containsAny(list []any, want string) bool {
	for _, v := range list {
		if v == want {
			return true
		}
	}
	return false
}

// TestGatewayExchangeAcrossInstances: two bffgate processes (issuer and
// gateway each) on one Redis; 100 parallel calls of one session, half
// through each gateway, make one exchange: the instances share the
// session's lock and the sealed result. Logout through B kills the token
// A's calls used.
func TestGatewayExchangeAcrossInstances(t *testing.T) {
	t.Parallel()
	redisURL := os.Getenv("BFFGATE_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("BFFGATE_TEST_REDIS_URL is not set: set it to a Redis URL such as redis://127.0.0.1:6379/0 to run the Redis tests")
	}
	prefix := "e2e-exchange:" + rand.Text() + ":"
	t.Cleanup(func() { dropPrefix(t, redisURL, prefix) })
	env := []string{"BFFGATE_REDIS_URL=" + redisURL, "BFFGATE_REDIS_PREFIX=" + prefix, "BFFGATE_ISSUER_STORE=redis", "BFFGATE_GATEWAY_SESSION_STORE=redis"}
	e, setIssuer := newEnv(t)
	a := stack.Start(t, stack.Options{ConfigYAML: e.yaml(), Env: env})
	setIssuer(a.IssuerURL)
	b := stack.Start(t, stack.Options{ConfigYAML: e.yaml(), Env: append(slices.Clone(env), "BFFGATE_ISSUER_URL="+a.IssuerURL)})
	e.st = a
	e.peers(t)
	ctx := ctxT(t)

	br := issuerclient.NewBrowser(t)
	cookie, err := br.GatewayLogin(ctx, a.GatewayURL, "demo", "demo")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	answers := make([]issuerclient.Answer, 100)
	errs := make([]error, 100)
	for i := range answers {
		gw := a.GatewayURL
		if i%2 == 1 {
			gw = b.GatewayURL
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = br.Get(ctx, gw+"/orders/list", cookie)
		}()
	}
	wg.Wait()
	for i := range answers {
		if errs[i] != nil || answers[i].Status != http.StatusOK {
			_, bad := e.up.seen()
			t.Fatalf("call %d: %v %v (upstream refusals: %v)", i, answers[i], errs[i], bad)
		}
	}
	if n, bad := e.up.seen(); n != 1 || len(bad) != 0 {
		t.Fatalf("the upstream saw %d distinct tokens for 100 calls through two gateways (want 1), refusals %v", n, bad)
	}
	series := `bffgate_issuer_token_exchanges_total{client_id="bffgate",decision="granted",error=""}`
	if n := metric(ctx, t, a.IssuerURL, series) + metric(ctx, t, b.IssuerURL, series); n != 1 {
		t.Fatalf("the two issuers counted %v exchanges, want 1", n)
	}
	var tok string
	e.up.mu.Lock()
	for k := range e.up.tokens {
		tok = k
	}
	e.up.mu.Unlock()
	if r, err := br.Call(ctx, http.MethodPost, b.GatewayURL+"/bff/logout", cookie); err != nil || r.Status >= 400 {
		t.Fatalf("logout through B: %v %v", r, err)
	}
	in, err := e.orders.Introspect(ctx, tok, "")
	if err != nil || in["active"] != false {
		t.Fatalf("the exchanged token after logout through the other instance: %v %v, want inactive", in, err)
	}
}

// dropPrefix deletes the test's keys from the shared Redis.
func dropPrefix(t *testing.T, redisURL, prefix string) {
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		t.Errorf("BFFGATE_TEST_REDIS_URL: %v", err)
		return
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
}
