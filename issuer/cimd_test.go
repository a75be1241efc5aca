package issuer_test

import (
	"crypto/sha256"
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

	"github.com/bffgate/bffgate/issuer"
)

// cimdEnv is an issuer accepting client ID metadata documents served by a
// TLS server on loopback (hence InsecureAllowPrivateAddresses).
type cimdEnv struct {
	*env
	docs *httptest.Server
	hits atomic.Int64
	// slow is closed at the end of the test to release slow handlers.
	slow chan struct{}
}

const cimdRedirect = "http://127.0.0.1/callback"

func startCIMD(t testing.TB, edit func(*issuer.ClientMetadata)) *cimdEnv {
	t.Helper()
	ce := &cimdEnv{slow: make(chan struct{})}
	ce.docs = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ce.hits.Add(1)
		self := "https://" + r.Host + r.URL.Path
		doc := map[string]any{"client_id": self, "client_name": "Desk <b>Agent</b>", "redirect_uris": []string{cimdRedirect},
			"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"}, "token_endpoint_auth_method": "none"}
		switch r.URL.Path {
		case "/client.json":
			w.Header().Set("Cache-Control", "max-age=600")
		case "/short.json":
			w.Header().Set("Cache-Control", "max-age=60")
		case "/mismatch.json":
			doc["client_id"] = "https://" + r.Host + "/other.json"
		case "/secret.json":
			doc["client_secret"] = "s"
		case "/basic.json":
			doc["token_endpoint_auth_method"] = "client_secret_basic"
		case "/js.json":
			doc["redirect_uris"] = []string{"javascript:alert(1)"}
		case "/large.json":
			doc["client_uri"] = "https://example.test/" + strings.Repeat("a", 6000)
		case "/slow.json":
			select {
			case <-ce.slow:
			case <-time.After(10 * time.Second):
			}
		case "/redirect.json":
			http.Redirect(w, r, "/client.json", http.StatusFound)
			return
		case "/html.json":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html></html>"))
			return
		case "/gzip.json":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.Write([]byte{0x1f, 0x8b})
			return
		case "/notjson.json":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{"))
			return
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(func() { close(ce.slow); ce.docs.Close() })
	ce.env = start(t, envOptions{cfg: func(c *issuer.Config) {
		withResources(c)
		c.ClientMetadata = issuer.ClientMetadata{Enabled: true, InsecureAllowPrivateAddresses: true, Timeout: 500 * time.Millisecond}
		if edit != nil {
			edit(&c.ClientMetadata)
		}
		c.HTTPClient = ce.docs.Client()
	}})
	return ce
}

func (ce *cimdEnv) id(path string) string { return ce.docs.URL + path }

// authURL is an authorization request of client id with PKCE.
func (e *env) rawAuthURL(clientID, redirect, scope, resource, state, verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "scope": {scope}, "state": {state},
		"code_challenge_method": {"S256"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}}
	if resource != "" {
		q.Set("resource", resource)
	}
	return e.url + "/authorize?" + q.Encode()
}

const testVerifier = "verifier-0123456789-0123456789-0123456789-0123456789"

// TestCIMDFlow: an MCP client identified by its metadata document URL
// signs a user in on a loopback port of its choice, is shown on the
// consent page with its name, redirect host, resource and an "unverified"
// warning, and gets a token for the resource and rotating refresh tokens.
func TestCIMDFlow(t *testing.T) {
	t.Parallel()
	ce := startCIMD(t, nil)
	id := ce.id("/client.json")
	redirect := "http://127.0.0.1:43210/callback"

	r := ce.request(http.MethodGet, "/.well-known/oauth-authorization-server", nil, nil)
	if r.body["client_id_metadata_document_supported"] != true {
		t.Fatalf("metadata: client_id_metadata_document_supported = %v", r.body["client_id_metadata_document_supported"])
	}

	b := ce.browser()
	p := b.authorize(ce.rawAuthURL(id, redirect, "openid offline_access mcp:tools", mcpResource, "s1", testVerifier), aliceUser, alicePassword)
	for _, want := range []string{"Desk &lt;b&gt;Agent&lt;/b&gt;", `id="redirect-host">127.0.0.1:43210<`, `id="unverified"`, "Tools (" + mcpResource + ")", "mcp:tools", id} {
		if !strings.Contains(p.body, want) {
			t.Fatalf("consent page lacks %q: %d\n%s", want, p.status, clipText(p.body, 3000))
		}
	}
	p = b.submit(p, url.Values{"decision": {"allow"}})
	if p.location == nil || p.location.Query().Get("code") == "" || !strings.HasPrefix(p.location.String(), redirect) {
		t.Fatalf("after allow: %d %v", p.status, p.location)
	}
	tok := ce.post("/token", auth{id: id}, url.Values{"grant_type": {"authorization_code"}, "code": {p.location.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {testVerifier}, "resource": {mcpResource}})
	if tok.status != http.StatusOK {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	if aud := audOf(t, tok.str("access_token")); !slices.Equal(aud, []string{mcpResource}) {
		t.Errorf("aud = %v", aud)
	}
	if pl := payload(t, tok.str("access_token")); pl["client_id"] != id {
		t.Errorf("client_id = %v", pl["client_id"])
	}
	if tok.str("refresh_token") == "" {
		t.Fatal("no refresh token for the public client")
	}
	if r := ce.userinfo(tok.str("access_token")); r.status != http.StatusOK {
		t.Errorf("userinfo: %d %s", r.status, r.raw)
	}
	// Refresh rotates; the old refresh token presented again revokes the
	// grant (RFC 9700 §4.14.2, MCP's rule for public clients).
	rr := ce.refresh(auth{id: id}, tok.str("refresh_token"))
	if rr.status != http.StatusOK || rr.str("refresh_token") == "" || rr.str("refresh_token") == tok.str("refresh_token") {
		t.Fatalf("refresh: %d %s", rr.status, rr.raw)
	}
	wantError(t, ce.refresh(auth{id: id}, tok.str("refresh_token")), http.StatusBadRequest, "invalid_grant")
	wantError(t, ce.refresh(auth{id: id}, rr.str("refresh_token")), http.StatusBadRequest, "invalid_grant")

	// The document was fetched once: the rest came from the cache
	// (max-age=600).
	if n := ce.hits.Load(); n != 1 {
		t.Errorf("document fetched %d times, want 1", n)
	}
	// After its max-age it is fetched again.
	ce.clock.Advance(11 * time.Minute)
	ce.browser().get(ce.rawAuthURL(id, redirect, "openid", "", "s2", testVerifier))
	if n := ce.hits.Load(); n != 2 {
		t.Errorf("document fetched %d times after its max-age, want 2", n)
	}
}

// TestCIMDRefused: documents that cannot be used give an error page (no
// redirect: the redirect URIs are not known good), naming why, and
// nothing is issued.
func TestCIMDRefused(t *testing.T) {
	t.Parallel()
	ce := startCIMD(t, nil)
	for _, tc := range []struct {
		name, id, redirect, want string
	}{
		{"client_id mismatch", ce.id("/mismatch.json"), cimdRedirect, "is not the URL it was fetched from"},
		{"redirect URI not in the document", ce.id("/client.json"), "http://127.0.0.1:5000/other", "Redirect URI not registered"},
		{"https redirect not in the document", ce.id("/client.json"), "https://evil.example.test/callback", "Redirect URI not registered"},
		{"oversized", ce.id("/large.json"), cimdRedirect, "larger than 5120 bytes"},
		{"slow", ce.id("/slow.json"), cimdRedirect, "no answer within 500ms"},
		{"redirect", ce.id("/redirect.json"), cimdRedirect, "redirects are not followed"},
		{"not found", ce.id("/missing.json"), cimdRedirect, "answered 404"},
		{"html", ce.id("/html.json"), cimdRedirect, "not served as application/json"},
		{"compressed", ce.id("/gzip.json"), cimdRedirect, "compressed documents are not read"},
		{"not JSON", ce.id("/notjson.json"), cimdRedirect, "not a JSON object"},
		{"secret", ce.id("/secret.json"), cimdRedirect, "client_secret"},
		{"confidential method", ce.id("/basic.json"), cimdRedirect, "client_secret_basic"},
		{"javascript redirect", ce.id("/js.json"), cimdRedirect, "javascript"},
		{"no path", ce.docs.URL, cimdRedirect, "must have a path"},
		{"dot segment", ce.docs.URL + "/a/../client.json", cimdRedirect, ". or .. path segments"},
		{"user info", strings.Replace(ce.docs.URL, "https://", "https://u:p@", 1) + "/client.json", cimdRedirect, "user information"},
		{"http", strings.Replace(ce.docs.URL, "https://", "http://", 1) + "/client.json", cimdRedirect, "No application with client_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ce.browser().get(ce.rawAuthURL(tc.id, tc.redirect, "openid", "", "st", testVerifier))
			if p.status != http.StatusBadRequest || p.location != nil || !strings.Contains(p.body, tc.want) {
				t.Fatalf("got %d %v, want 400 naming %q\n%s", p.status, p.location, tc.want, clipText(p.body, 2000))
			}
			// The token endpoint does not know the client either.
			r := ce.post("/token", auth{id: tc.id}, url.Values{"grant_type": {"authorization_code"}, "code": {"x"}, "redirect_uri": {tc.redirect}, "code_verifier": {testVerifier}})
			if tc.name != "redirect URI not in the document" && tc.name != "https redirect not in the document" {
				wantError(t, r, http.StatusUnauthorized, "invalid_client")
			}
		})
	}
	if v, _ := ce.metric("bffgate_issuer_client_metadata_total", "result", "refused"); v < 10 {
		t.Errorf("refused look-ups counted %v", v)
	}
}

// TestCIMDPrivateAddress: without the Insecure switch, a client_id URL
// whose host is loopback (or resolves to it) is refused before any byte
// is sent to it.
func TestCIMDPrivateAddress(t *testing.T) {
	t.Parallel()
	ce := startCIMD(t, func(m *issuer.ClientMetadata) { m.InsecureAllowPrivateAddresses = false })
	for _, id := range []string{ce.id("/client.json"), strings.Replace(ce.id("/client.json"), "127.0.0.1", "localhost", 1)} {
		p := ce.browser().get(ce.rawAuthURL(id, cimdRedirect, "openid", "", "st", testVerifier))
		if p.status != http.StatusBadRequest || !strings.Contains(p.body, "not a public address") {
			t.Fatalf("%s: %d\n%s", id, p.status, clipText(p.body, 2000))
		}
	}
	if n := ce.hits.Load(); n != 0 {
		t.Errorf("the document server got %d requests", n)
	}
}

// TestCIMDAllowedDomains: with allowed_domains, other hosts are refused,
// and listed ones are shown without the unverified warning.
func TestCIMDAllowedDomains(t *testing.T) {
	t.Parallel()
	refused := startCIMD(t, func(m *issuer.ClientMetadata) { m.AllowedDomains = []string{"*.example.test"} })
	p := refused.browser().get(refused.rawAuthURL(refused.id("/client.json"), cimdRedirect, "openid", "", "st", testVerifier))
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, "allowed_domains") || refused.hits.Load() != 0 {
		t.Fatalf("%d %d\n%s", p.status, refused.hits.Load(), clipText(p.body, 2000))
	}
	ok := startCIMD(t, func(m *issuer.ClientMetadata) { m.AllowedDomains = []string{"127.0.0.1"} })
	p = ok.browser().authorize(ok.rawAuthURL(ok.id("/client.json"), cimdRedirect, "openid", "", "st", testVerifier), aliceUser, alicePassword)
	if p.status != http.StatusOK || !strings.Contains(p.body, `id="redirect-host"`) || strings.Contains(p.body, `id="unverified"`) {
		t.Fatalf("%d\n%s", p.status, clipText(p.body, 2000))
	}
}

// TestCIMDDisabled: without client_metadata.enabled a URL is an unknown
// client id and nothing is fetched.
func TestCIMDDisabled(t *testing.T) {
	t.Parallel()
	ce := startCIMD(t, func(m *issuer.ClientMetadata) { m.Enabled = false })
	p := ce.browser().get(ce.rawAuthURL(ce.id("/client.json"), cimdRedirect, "openid", "", "st", testVerifier))
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, "No application with client_id") || ce.hits.Load() != 0 {
		t.Fatalf("%d %d", p.status, ce.hits.Load())
	}
	r := ce.request(http.MethodGet, "/.well-known/oauth-authorization-server", nil, nil)
	if _, ok := r.body["client_id_metadata_document_supported"]; ok {
		t.Error("metadata announces client_id_metadata_document_supported")
	}
}

// TestThirdPartyConsentRemembered: a third-party client's consent is
// remembered per user, client, resource and scopes: the same request
// skips the page (prompt=none too), a new scope or resource asks again,
// prompt=consent asks again, and revoking the client's refresh token
// forgets it. A configured client marked third_party gets the page; the
// first-party ones never do.
func TestThirdPartyConsentRemembered(t *testing.T) {
	t.Parallel()
	ce := startCIMD(t, nil)
	id := ce.id("/client.json")
	redirect := "http://127.0.0.1:43211/callback"
	b := ce.browser()
	authz := func(scope, resource, extra string) page {
		t.Helper()
		return b.authorize(ce.rawAuthURL(id, redirect, scope, resource, "s", testVerifier)+extra, aliceUser, alicePassword)
	}
	consentShown := func(p page) bool { return p.status == http.StatusOK && strings.Contains(p.body, `value="allow"`) }

	p := authz("openid offline_access mcp:tools", mcpResource, "")
	if !consentShown(p) {
		t.Fatalf("first request: no consent page: %d", p.status)
	}
	p = b.submit(p, url.Values{"decision": {"allow"}})
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("allow: %v", p.location)
	}
	// The same request, and a narrower one, skip the page.
	for _, tc := range []struct{ scope, extra string }{{"openid offline_access mcp:tools", ""}, {"mcp:tools", ""}, {"mcp:tools", "&prompt=none"}} {
		if p := authz(tc.scope, mcpResource, tc.extra); p.location == nil || p.location.Query().Get("code") == "" {
			t.Fatalf("%q%s: consent not remembered: %d %v", tc.scope, tc.extra, p.status, p.location)
		}
	}
	// More scope, another resource, prompt=consent: asked again.
	if p := authz("openid mcp:tools mcp:admin", mcpResource, ""); !consentShown(p) {
		t.Fatalf("wider scope: %d %v", p.status, p.location)
	}
	if p := authz("orders:read", otherResource, ""); !consentShown(p) {
		t.Fatalf("another resource: %d %v", p.status, p.location)
	}
	if p := authz("mcp:tools", mcpResource, "&prompt=consent"); !consentShown(p) {
		t.Fatalf("prompt=consent: %d %v", p.status, p.location)
	}
	if p := authz("openid mcp:tools mcp:admin", mcpResource, "&prompt=none"); p.location == nil || p.location.Query().Get("error") != "consent_required" {
		t.Fatalf("prompt=none with a wider scope: %d %v", p.status, p.location)
	}

	// Revoking the client's refresh token forgets the consent.
	p = authz("openid offline_access mcp:tools", mcpResource, "")
	tok := ce.post("/token", auth{id: id}, url.Values{"grant_type": {"authorization_code"}, "code": {p.location.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {testVerifier}})
	if tok.status != http.StatusOK {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	if r := ce.revoke(auth{id: id}, tok.str("refresh_token"), "refresh_token"); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	if p := authz("mcp:tools", mcpResource, ""); !consentShown(p) {
		t.Fatalf("after revoke: consent still remembered: %d %v", p.status, p.location)
	}

	// Consent expires after consent_ttl.
	p = b.submit(authz("mcp:tools", mcpResource, ""), url.Values{"decision": {"allow"}})
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("allow: %v", p.location)
	}
	ce.clock.Advance(issuer.DefaultConsentTTL + time.Minute)
	if p := authz("mcp:tools", mcpResource, ""); !consentShown(p) {
		t.Fatalf("after consent_ttl: %d %v", p.status, p.location)
	}
}

// TestConfiguredThirdPartyClient: issuer.clients[].third_party shows the
// consent page (without the unverified warning); first-party clients
// never see it.
func TestConfiguredThirdPartyClient(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Clients = append(c.Clients, issuer.Client{ID: "partner", RedirectURIs: []string{"https://partner.example.test/cb"}, ThirdParty: true})
	}})
	b := e.browser()
	p := b.authorize(e.rawAuthURL("partner", "https://partner.example.test/cb", "openid", "", "s", testVerifier), aliceUser, alicePassword)
	if p.status != http.StatusOK || !strings.Contains(p.body, "Allow partner to access your account") || strings.Contains(p.body, `id="unverified"`) ||
		!strings.Contains(p.body, "partner.example.test") {
		t.Fatalf("%d\n%s", p.status, clipText(p.body, 2000))
	}
	if q := b.login(e.rawAuthURL(spaID, spaRedirect, "openid", "", "s", testVerifier)); q.Get("code") == "" {
		t.Fatalf("first-party client: %v", q)
	}
}

// TestCIMDRefusalCached: a refused document is not fetched again for a
// minute, so a client_id at a failing or slow server cannot make the
// issuer fetch on every request.
func TestCIMDRefusalCached(t *testing.T) {
	t.Parallel()
	ce := startCIMD(t, nil)
	get := func() page {
		return ce.browser().get(ce.rawAuthURL(ce.id("/mismatch.json"), cimdRedirect, "openid", "", "st", testVerifier))
	}
	for range 3 {
		if p := get(); p.status != http.StatusBadRequest || !strings.Contains(p.body, "not the URL it was fetched from") {
			t.Fatalf("%d\n%s", p.status, clipText(p.body, 1000))
		}
	}
	if n := ce.hits.Load(); n != 1 {
		t.Fatalf("fetched %d times, want 1", n)
	}
	ce.clock.Advance(time.Minute + time.Second)
	get()
	if n := ce.hits.Load(); n != 2 {
		t.Fatalf("fetched %d times after a minute, want 2", n)
	}
}

// TestCIMDTokenOutlivesDocument: once issued, a metadata-document
// client's access token stays active at introspection and userinfo while
// its document server is down; the refresh, which needs the client's
// metadata, is refused then.
func TestCIMDTokenOutlivesDocument(t *testing.T) {
	t.Parallel()
	ce := startCIMD(t, nil)
	id := ce.id("/short.json")
	redirect := "http://127.0.0.1:43212/callback"
	b := ce.browser()
	p := b.submit(b.authorize(ce.rawAuthURL(id, redirect, "openid mcp:tools", mcpResource, "s", testVerifier), aliceUser, alicePassword), url.Values{"decision": {"allow"}})
	tok := ce.post("/token", auth{id: id}, url.Values{"grant_type": {"authorization_code"}, "code": {p.location.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {testVerifier}})
	if tok.status != http.StatusOK {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	ce.docs.Close()
	ce.clock.Advance(2 * time.Minute) // past the document's max-age, within the token's life
	if r := ce.post("/introspect", auth{id: rsID, secret: rsSecret, basic: true}, url.Values{"token": {tok.str("access_token")}}); r.body["active"] != true {
		t.Fatalf("introspection with the document server down: %s", r.raw)
	}
	if r := ce.userinfo(tok.str("access_token")); r.status != http.StatusOK {
		t.Fatalf("userinfo with the document server down: %d %s", r.status, r.raw)
	}
	wantError(t, ce.refresh(auth{id: id}, tok.str("refresh_token")), http.StatusUnauthorized, "invalid_client")
}
