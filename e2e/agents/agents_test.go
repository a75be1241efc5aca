package agents

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/peers"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

const (
	agentID       = "report-agent"
	agentRedirect = "http://127.0.0.1/agent/callback"
	mailerID      = "spiffe://example.org/agents/mailer"
	syncID        = "spiffe://endpoint.test/agents/sync"
	trustedIss    = "https://workloads.partner.test"
	demoUser      = "demo"
	demoPassword  = "demo"
	demoSubject   = "demo-user-1"

	assertionJWT    = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	assertionSPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
	grantJWTBearer  = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// key is a test key pair with its JWKs.
type key struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newKey(t testing.TB, kid string) key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key{kid: kid, priv: k}
}

func (k key) publicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: "ES256", Use: "sig"}
}

// privateJWK is the JWK openid-client and jose import.
func (k key) privateJWK(t testing.TB) map[string]any {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// sign makes a JWT with go-jose (the JWT-SVIDs of the test's trust domains).
func (k key) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func serveJSON(t testing.TB, body func() []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body())
	}))
	t.Cleanup(srv.Close)
	return srv
}

func jwksJSON(keys ...jose.JSONWebKey) []byte {
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	return b
}

// bearerAudience is the aud the trusted test issuer's assertions carry
// (issuer.trusted_issuers[].audience).
const bearerAudience = "bffgate-agents"

// world is one running issuer with the test's agent, workloads, trust
// domains and trusted issuer.
type world struct {
	st                          *stack.Stack
	env                         []string
	agentKey, tdKey, epKey, idp key
	agentJWKS                   string
	auditFile                   string
	// cliDataDir, when set, is the data directory of the sub-commands (an
	// operator's machine, with the state in Redis) instead of the stack's.
	cliDataDir string
}

// newWorld prepares a world and starts its issuer.
func newWorld(t *testing.T, extra ...string) *world {
	t.Helper()
	w := prepareWorld(t, extra...)
	w.st = stack.Start(t, stack.Options{NoGateway: true, Env: w.env})
	return w
}

// prepareWorld makes the keys, bundles and key servers of a world and its
// configuration (as BFFGATE_* variables), starting no issuer.
func prepareWorld(t *testing.T, extra ...string) *world {
	t.Helper()
	w := &world{agentKey: newKey(t, "agent-k1"), tdKey: newKey(t, "td-k1"), epKey: newKey(t, "ep-k1"), idp: newKey(t, "idp-k1")}
	w.agentJWKS = serveJSON(t, func() []byte { return jwksJSON(w.agentKey.publicJWK()) }).URL + "/jwks.json"
	dir := t.TempDir()
	bundle := spiffebundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString("example.org"),
		map[string]crypto.PublicKey{w.tdKey.kid: w.tdKey.priv.Public()})
	raw, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(dir, "example.org.bundle.json")
	if err := os.WriteFile(bundleFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	epBundle, _ := spiffebundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString("endpoint.test"),
		map[string]crypto.PublicKey{w.epKey.kid: w.epKey.priv.Public()}).Marshal()
	bundleEndpoint := serveJSON(t, func() []byte { return epBundle }).URL
	idpJWKS := serveJSON(t, func() []byte { return jwksJSON(w.idp.publicJWK()) }).URL
	w.auditFile = filepath.Join(dir, "audit.log")
	clients, _ := json.Marshal([]map[string]any{
		{"id": agentID, "kind": "agent", "jwks_uri": w.agentJWKS, "redirect_uris": []string{agentRedirect},
			"grant_types": []string{"client_credentials", "authorization_code", "refresh_token", grantJWTBearer}},
		{"id": mailerID, "kind": "workload", "grant_types": []string{"client_credentials"}},
		{"id": syncID, "kind": "workload", "grant_types": []string{"client_credentials"}},
	})
	tds, _ := json.Marshal([]map[string]string{
		{"name": "example.org", "bundle_file": bundleFile},
		{"name": "endpoint.test", "bundle_endpoint": bundleEndpoint},
	})
	trusted, _ := json.Marshal([]map[string]any{{"issuer": trustedIss, "jwks_url": idpJWKS, "algorithms": []string{"ES256"}, "scopes": []string{"profile"},
		"audience": []string{bearerAudience}, "subject": map[string]any{"mode": "prefix", "prefix": trustedIss + "#"}}})
	w.env = append([]string{
		"BFFGATE_DEMO_API_ENABLED=false",
		"BFFGATE_ISSUER_CLIENTS=" + string(clients),
		"BFFGATE_ISSUER_SPIFFE_TRUST_DOMAINS=" + string(tds),
		"BFFGATE_ISSUER_TRUSTED_ISSUERS=" + string(trusted),
		"BFFGATE_ISSUER_AUDIT_FILE=" + w.auditFile,
	}, extra...)
	return w
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// claims are good assertion claims of client id for the issuer.
func (w *world) claims(id string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": id, "sub": id, "aud": w.st.IssuerURL, "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": randomID()}
}

func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// reply is a JSON answer of the issuer.
type reply struct {
	status int
	body   map[string]any
	raw    string
}

func (r reply) str(k string) string { s, _ := r.body[k].(string); return s }

// postAssertion posts form to the issuer's path with a client assertion.
func (w *world) postAssertion(t *testing.T, path, clientID, typ, assertion string, form url.Values) reply {
	t.Helper()
	return postAssertionTo(t, w.st.IssuerURL, path, clientID, typ, assertion, form)
}

// postAssertionTo is postAssertion to the instance at base.
func postAssertionTo(t *testing.T, base, path, clientID, typ, assertion string, form url.Values) reply {
	t.Helper()
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	if clientID != "" {
		f.Set("client_id", clientID)
	}
	f.Set("client_assertion_type", typ)
	f.Set("client_assertion", assertion)
	resp, err := testhttp.Client.PostForm(base+path, f)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	r := reply{status: resp.StatusCode, raw: string(b)}
	json.Unmarshal(b, &r.body)
	return r
}

var ccForm = url.Values{"grant_type": {"client_credentials"}, "scope": {"profile"}}

// rp is openid-client for the agent with PrivateKeyJwt.
func (w *world) rp(t *testing.T) *peers.RP {
	return peers.StartRP(t, peers.RPOptions{Issuer: w.st.IssuerURL, ClientID: agentID, RedirectURI: agentRedirect,
		AuthMethod: "private_key_jwt", PrivateJWK: w.agentKey.privateJWK(t)})
}

// signInAndConsent walks the issuer's login form and the consent page
// naming the agent, and returns the redirect to the agent.
func signInAndConsent(t *testing.T, authURL string) *url.URL {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	start, _ := url.Parse(authURL)
	method, target := http.MethodGet, authURL
	var form url.Values
	sawConsent := false
	for range 10 {
		var resp *http.Response
		var err error
		if method == http.MethodGet {
			resp, err = c.Get(target)
		} else {
			resp, err = c.PostForm(target, form)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 3:
			loc, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if loc.Host != start.Host {
				if !sawConsent {
					t.Fatal("the issuer sent the code without showing the consent page for the agent")
				}
				return loc
			}
			method, target = http.MethodGet, loc.String()
		case resp.StatusCode == 200:
			f, err := issuerclient.ParseForm(string(body))
			if err != nil {
				t.Fatalf("no form on %s: %v", resp.Request.URL.Path, err)
			}
			form = f.Fields
			if strings.Contains(string(body), `name="password"`) {
				form.Set("username", demoUser)
				form.Set("password", demoPassword)
			} else {
				if !strings.Contains(string(body), agentID) || !strings.Contains(string(body), "an AI agent") {
					t.Fatalf("the consent page does not name the agent:\n%.2000s", body)
				}
				sawConsent = true
				form.Set("decision", "allow")
			}
			action, _ := resp.Request.URL.Parse(f.Action)
			method, target = http.MethodPost, action.String()
		default:
			t.Fatalf("%s %s: %d\n%.1500s", method, target, resp.StatusCode, body)
		}
	}
	t.Fatal("more than 10 steps without leaving the issuer")
	return nil
}

// TestOpenIDClientPrivateKeyJWT drives the agent with openid-client's
// PrivateKeyJwt: client_credentials, the code flow (login, consent, ID
// token validated by openid-client), refresh, introspection, revocation.
func TestOpenIDClientPrivateKeyJWT(t *testing.T) {
	peers.NodeModules(t)
	w := newWorld(t)
	ctx := testContext(t)
	rp := w.rp(t)
	md := rp.Metadata
	if !strings.Contains(fmt.Sprint(md["token_endpoint_auth_methods_supported"]), "private_key_jwt") {
		t.Fatalf("discovery: token_endpoint_auth_methods_supported = %v", md["token_endpoint_auth_methods_supported"])
	}
	cc, err := rp.ClientCredentials(ctx, "profile")
	if err != nil {
		t.Fatalf("client_credentials with PrivateKeyJwt: %v", err)
	}
	in, err := rp.Introspect(ctx, cc.AccessToken, "")
	if err != nil || in["active"] != true || in["sub"] != "client:"+agentID || in["client_id"] != agentID {
		t.Fatalf("introspection of the agent's own token = %v, %v; want active, sub client:%s", in, err, agentID)
	}

	ar, err := rp.Authorize(ctx, "openid profile offline_access", nil)
	if err != nil {
		t.Fatal(err)
	}
	cb := signInAndConsent(t, ar.URL)
	tok, err := rp.Callback(ctx, cb.String(), ar.State)
	if err != nil {
		t.Fatalf("code exchange with PrivateKeyJwt (ID token validated by openid-client): %v", err)
	}
	if tok.IDTokenClaims["sub"] != demoSubject {
		t.Fatalf("ID token sub = %v", tok.IDTokenClaims["sub"])
	}
	in, err = rp.Introspect(ctx, tok.AccessToken, "")
	if err != nil || in["active"] != true || in["sub"] != demoSubject || in["client_id"] != agentID {
		t.Fatalf("introspection of the user's token = %v, %v; want sub %s, client_id %s", in, err, demoSubject, agentID)
	}
	ref, err := rp.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh with PrivateKeyJwt: %v", err)
	}
	if err := rp.Revoke(ctx, ref.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("revocation with PrivateKeyJwt: %v", err)
	}
	in, err = rp.Introspect(ctx, ref.AccessToken, "")
	if err != nil || in["active"] != false {
		t.Fatalf("introspection after revoking the grant = %v, %v; want inactive", in, err)
	}
}

// TestBadAssertions presents assertions made by jose for every bad case.
func TestBadAssertions(t *testing.T) {
	peers.NodeModules(t)
	w := newWorld(t)
	ctx := testContext(t)
	j := peers.StartJose(t)
	sign := func(c map[string]any) string {
		tok, err := j.Sign(ctx, c, w.agentKey.privateJWK(t))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	with := func(k string, v any) map[string]any {
		c := w.claims(agentID)
		c[k] = v
		return c
	}
	good := sign(w.claims(agentID))
	if r := w.postAssertion(t, "/token", agentID, assertionJWT, good, ccForm); r.status != 200 {
		t.Fatalf("a good jose-made assertion: %d %s", r.status, r.raw)
	}
	forge := func(kind peers.ForgeKind) string {
		tok, err := j.Forge(ctx, kind, sign(w.claims(agentID)), w.agentJWKS)
		if err != nil {
			t.Fatalf("forge %s: %v", kind, err)
		}
		return tok
	}
	now := time.Now()
	for _, tc := range []struct{ name, assertion, want string }{
		{"expired", sign(with("exp", now.Add(-2*time.Minute).Unix())), "expired"},
		{"not yet valid", sign(with("nbf", now.Add(10*time.Minute).Unix())), "not valid yet"},
		{"iat in the future", sign(with("iat", now.Add(10*time.Minute).Unix())), "iat is in the future"},
		{"replayed", good, "already used"},
		{"wrong aud", sign(with("aud", "https://another-as.example")), "aud"},
		{"wrong iss", sign(with("iss", "someone-else")), "iss"},
		{"wrong sub", sign(with("sub", "someone-else")), "sub"},
		{"unknown key", forge(peers.ForgeUnknownKID), "not in the registered key set"},
		{"alg none", forge(peers.ForgeAlgNone), "unsigned"},
		{"HS256 keyed with the public key", forge(peers.ForgeHS256PublicKey), "symmetric"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.postAssertion(t, "/token", agentID, assertionJWT, tc.assertion, ccForm)
			if r.status != http.StatusUnauthorized || r.str("error") != "invalid_client" || !strings.Contains(r.str("error_description"), tc.want) {
				t.Fatalf("%d %s; want 401 invalid_client naming %q", r.status, r.raw, tc.want)
			}
		})
	}
}

// TestJWTSVIDs authenticates workloads with JWT-SVIDs of the test's trust
// domains: one bundle in a file, one at a bundle endpoint.
func TestJWTSVIDs(t *testing.T) {
	w := newWorld(t)
	svid := func(k key, id string, edit func(map[string]any)) string {
		now := time.Now()
		c := map[string]any{"sub": id, "aud": []string{w.st.IssuerURL}, "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}
		if edit != nil {
			edit(c)
		}
		return k.sign(t, c)
	}
	for _, tc := range []struct {
		name, id string
		k        key
	}{{"bundle file", mailerID, w.tdKey}, {"bundle endpoint", syncID, w.epKey}} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.postAssertion(t, "/token", tc.id, assertionSPIFFE, svid(tc.k, tc.id, nil), ccForm)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
	}
	other := newKey(t, "td-k1")
	for _, tc := range []struct{ name, id, assertion, want string }{
		{"SVID of another trust domain", mailerID, svid(w.tdKey, "spiffe://elsewhere.test/agents/mailer", nil), "does not trust"},
		{"unknown SPIFFE ID", "spiffe://example.org/agents/nobody", svid(w.tdKey, "spiffe://example.org/agents/nobody", nil), "unknown"},
		{"another workload's SVID", mailerID, svid(w.tdKey, "spiffe://example.org/agents/other", nil), "not the client_id"},
		{"signed by a key not in the bundle", mailerID, svid(other, mailerID, nil), "does not verify"},
		{"expired", mailerID, svid(w.tdKey, mailerID, func(c map[string]any) { c["exp"] = time.Now().Add(-5 * time.Minute).Unix() }), "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.postAssertion(t, "/token", tc.id, assertionSPIFFE, tc.assertion, ccForm)
			if r.status != http.StatusUnauthorized || !strings.Contains(r.str("error_description"), tc.want) {
				t.Fatalf("%d %s; want 401 naming %q", r.status, r.raw, tc.want)
			}
		})
	}
}

// TestJWTBearerGrant: openid-client posts the JWT bearer grant with an
// assertion of the trusted test issuer (made by jose) and of an untrusted
// one.
func TestJWTBearerGrant(t *testing.T) {
	peers.NodeModules(t)
	w := newWorld(t)
	ctx := testContext(t)
	j := peers.StartJose(t)
	rp := w.rp(t)
	assertion := func(k key, iss string) string {
		now := time.Now()
		tok, err := j.Sign(ctx, map[string]any{"iss": iss, "sub": "batch-7", "aud": bearerAudience, "iat": now.Unix(),
			"exp": now.Add(5 * time.Minute).Unix(), "jti": randomID()}, k.privateJWK(t))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok, err := rp.Grant(ctx, grantJWTBearer, map[string]any{"assertion": assertion(w.idp, trustedIss), "scope": "profile"})
	if err != nil {
		t.Fatalf("jwt-bearer from the trusted issuer: %v", err)
	}
	at, _ := tok["access_token"].(string)
	in, err := rp.Introspect(ctx, at, "")
	if err != nil || in["sub"] != trustedIss+"#batch-7" || in["client_id"] != agentID {
		t.Fatalf("introspection = %v, %v", in, err)
	}
	_, err = rp.Grant(ctx, grantJWTBearer, map[string]any{"assertion": assertion(newKey(t, "x"), "https://untrusted.test")})
	var pe *peers.PeerError
	if !asPeerError(err, &pe) || pe.OAuthError != "invalid_grant" || !strings.Contains(pe.ErrorDescription, "not a trusted issuer") {
		t.Fatalf("jwt-bearer from an untrusted issuer: %v; want invalid_grant", err)
	}
}

// bffgate runs a sub-command of the binary with the world's configuration.
func (w *world) bffgate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(stack.Binary(t), args...)
	dataDir := w.cliDataDir
	if dataDir == "" {
		dataDir = w.st.DataDir
	}
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "BFFGATE_DATA_DIR=" + dataDir,
		"BFFGATE_LOG_LEVEL=warn"}, w.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestAgentsDisableEnable: `bffgate agents disable` on the data file
// (bffgate stopped: it holds the file) refuses the agent's grants and its
// live tokens after the restart; enable lets it get tokens again, its old
// ones staying revoked.
func TestAgentsDisableEnable(t *testing.T) {
	w := newWorld(t)
	mint := func() reply {
		return w.postAssertion(t, "/token", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), ccForm)
	}
	introspect := func(tok string) reply {
		return w.postAssertion(t, "/introspect", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), url.Values{"token": {tok}})
	}
	r := mint()
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	old := r.str("access_token")
	w.st.Stop()
	if out, err := w.bffgate(t, "agents", "disable", agentID); err != nil || !strings.Contains(out, "disabled") {
		t.Fatalf("bffgate agents disable: %v\n%s", err, out)
	}
	if out, err := w.bffgate(t, "agents", "disable", "no-such-agent"); err == nil || !strings.Contains(out, "no client") {
		t.Fatalf("disable of an unknown client: %v\n%s", err, out)
	}
	w.st.Restart()
	if r := introspect(old); r.status != 200 || r.body["active"] != false {
		t.Fatalf("introspection of the disabled agent's token: %d %s", r.status, r.raw)
	}
	if r := mint(); r.status != 400 || r.str("error") != "unauthorized_client" {
		t.Fatalf("grant of a disabled agent: %d %s", r.status, r.raw)
	}
	w.st.Stop()
	time.Sleep(1100 * time.Millisecond) // iat has whole seconds: the next token must be of a later second than the disable
	if out, err := w.bffgate(t, "agents", "enable", agentID); err != nil {
		t.Fatalf("bffgate agents enable: %v\n%s", err, out)
	}
	w.st.Restart()
	r = mint()
	if r.status != 200 {
		t.Fatalf("grant after enable: %d %s", r.status, r.raw)
	}
	if in := introspect(r.str("access_token")); in.body["active"] != true {
		t.Fatalf("a new token after enable: %s", in.raw)
	}
	if in := introspect(old); in.body["active"] != false {
		t.Fatalf("the token of before the disable after enable: %s; want it still revoked", in.raw)
	}
	// Both changes are in the audit chain (written by the command: no
	// instance ran), which still verifies.
	w.st.Stop()
	b, _ := os.ReadFile(w.auditFile)
	for _, action := range []string{`"action":"agent_disable"`, `"action":"agent_enable"`} {
		if !strings.Contains(string(b), action) {
			t.Errorf("the audit file has no %s record", action)
		}
	}
	if out, err := w.bffgate(t, "audit", "verify"); err != nil {
		t.Fatalf("bffgate audit verify: %v\n%s", err, out)
	}
}

// TestAuditVerify: the audit chain of a run verifies with `bffgate audit
// verify`; a record edited afterwards is named as the break.
func TestAuditVerify(t *testing.T) {
	w := newWorld(t)
	w.postAssertion(t, "/token", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), ccForm)
	w.postAssertion(t, "/token", agentID, assertionJWT, "not.an.assertion", ccForm)
	w.postAssertion(t, "/token", mailerID, assertionSPIFFE, "x.y.z", ccForm)
	w.st.Stop()
	out, err := w.bffgate(t, "audit", "verify")
	if err != nil || !strings.Contains(out, "chain is intact") {
		t.Fatalf("bffgate audit verify: %v\n%s", err, out)
	}
	b, err := os.ReadFile(w.auditFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, forbidden := range []string{"not.an.assertion", "client_assertion"} {
		if strings.Contains(string(b), forbidden) {
			t.Fatalf("the audit file holds %q", forbidden)
		}
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 3 {
		t.Fatalf("%d audit records; want at least 3", len(lines))
	}
	lines[1] = strings.Replace(lines[1], `"action":"`, `"action":"x`, 1) // one field of the second record
	if err := os.WriteFile(w.auditFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = w.bffgate(t, "audit", "verify", w.auditFile)
	if err == nil || !strings.Contains(out, w.auditFile+":2:") || !strings.Contains(out, "edited") {
		t.Fatalf("bffgate audit verify after an edit: %v\n%s; want the break at line 2", err, out)
	}
}
