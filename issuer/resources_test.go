package issuer_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/issuer"
)

const (
	mcpResource   = "https://mcp.example.test/mcp"
	otherResource = "https://api.example.test/orders"
	limitedID     = "limited"
	// rs is the resource server's client: it introspects the tokens
	// clients got for mcpResource.
	rsID     = "rs"
	rsSecret = "rs-secret-0123456789abcdef"
)

// withResources registers two resources and a public client limited to
// the second.
func withResources(c *issuer.Config) {
	c.Resources = []issuer.Resource{
		{URL: mcpResource, Name: "Tools", Scopes: []string{"mcp:tools", "mcp:admin"}},
		{URL: otherResource, Scopes: []string{"orders:read"}},
	}
	c.Clients = append(c.Clients,
		issuer.Client{ID: limitedID, RedirectURIs: []string{"http://127.0.0.1/cb"}, Resources: []string{otherResource}},
		issuer.Client{ID: rsID, Secret: rsSecret, GrantTypes: []string{issuer.GrantClientCredentials}, Resources: []string{mcpResource}})
}

// audOf returns an access token's aud as a list.
func audOf(t *testing.T, at string) []string {
	t.Helper()
	switch a := payload(t, at)["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			out = append(out, v.(string))
		}
		return out
	}
	return nil
}

// TestResourceIndicators: RFC 8707 resource indicators in the
// authorization, code and refresh requests become the access token's aud;
// resource scopes come only with their resource; an unknown resource, one
// the client may not name, or one that widens the authorization is
// invalid_target.
func TestResourceIndicators(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: withResources})
	p := e.provider()
	res := func(r string) oauth2.AuthCodeOption { return oauth2.SetAuthURLParam("resource", r) }

	t.Run("code and refresh", func(t *testing.T) {
		conf := e.oauth2Config(p, spaID, "openid", "offline_access", "mcp:tools")
		f := newFlow(conf)
		code := e.browser().code(f.authURL(res(mcpResource)))
		tok, err := conf.Exchange(e.ctx(), code, oauth2.VerifierOption(f.verifier), res(mcpResource))
		if err != nil {
			t.Fatal(err)
		}
		if aud := audOf(t, tok.AccessToken); !slices.Equal(aud, []string{mcpResource}) {
			t.Errorf("aud = %v, want the resource", aud)
		}
		if sc, _ := payload(t, tok.AccessToken)["scope"].(string); sc != "openid offline_access mcp:tools" {
			t.Errorf("scope = %q", sc)
		}
		// The resource's server introspects it; another client may not.
		wantActive(t, e.post("/introspect", auth{id: rsID, secret: rsSecret, basic: true}, url.Values{"token": {tok.AccessToken}}))
		wantInactive(t, e.introspect(tok.AccessToken))
		if r := e.userinfo(tok.AccessToken); r.status != http.StatusOK {
			t.Errorf("userinfo with the resource's token: %d %s", r.status, r.raw)
		}

		// A refresh naming another resource, registered or not, is refused
		// and loses nothing: the refresh token still works.
		for _, other := range []string{otherResource, "https://evil.example.test/", "not a uri"} {
			r := e.post("/token", spaNone, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "resource": {other}})
			wantError(t, r, http.StatusBadRequest, "invalid_target")
		}
		// Without resource, the refresh keeps the grant's resource.
		r := e.post("/token", spaNone, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}})
		if r.status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.status, r.raw)
		}
		if aud := audOf(t, r.str("access_token")); !slices.Equal(aud, []string{mcpResource}) {
			t.Errorf("refreshed aud = %v", aud)
		}
		// Naming it again keeps it too, and may narrow the scope.
		r = e.post("/token", spaNone, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.str("refresh_token")}, "resource": {mcpResource}, "scope": {"mcp:tools"}})
		if r.status != http.StatusOK || r.str("scope") != "mcp:tools" || !slices.Equal(audOf(t, r.str("access_token")), []string{mcpResource}) {
			t.Fatalf("refresh naming the resource: %d %s", r.status, r.raw)
		}
	})

	t.Run("token request may not add or change the resource", func(t *testing.T) {
		for _, tc := range []struct{ authz, token string }{{"", mcpResource}, {mcpResource, otherResource}} {
			conf := e.oauth2Config(p, spaID, "openid")
			f := newFlow(conf)
			var opts []oauth2.AuthCodeOption
			if tc.authz != "" {
				opts = append(opts, res(tc.authz))
			}
			code := e.browser().code(f.authURL(opts...))
			r := e.post("/token", spaNone, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {spaRedirect},
				"code_verifier": {f.verifier}, "resource": {tc.token}})
			wantError(t, r, http.StatusBadRequest, "invalid_target")
		}
	})

	t.Run("no resource keeps the client's audience", func(t *testing.T) {
		_, _, tk := e.loginTokens(spaID, "openid")
		if aud := audOf(t, tk.access); !slices.Equal(aud, []string{spaID}) {
			t.Errorf("aud = %v", aud)
		}
	})

	t.Run("authorization request errors", func(t *testing.T) {
		for _, tc := range []struct {
			name, client, resource, scope, want string
		}{
			{"unknown resource", spaID, "https://unknown.example.test/mcp", "openid", "invalid_target"},
			{"fragment", spaID, mcpResource + "#x", "openid", "invalid_target"},
			{"relative", spaID, "/mcp", "openid", "invalid_target"},
			{"empty", spaID, "", "openid", "invalid_target"},
			{"client limited to another", limitedID, mcpResource, "openid", "invalid_target"},
			{"resource scope without resource", spaID, "-", "openid mcp:tools", "invalid_scope"},
			{"scope of another resource", spaID, mcpResource, "orders:read", "invalid_scope"},
			{"unknown scope", spaID, mcpResource, "mcp:everything", "invalid_scope"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				redirect := spaRedirect
				if tc.client == limitedID {
					redirect = "http://127.0.0.1:5555/cb"
				}
				q := url.Values{"response_type": {"code"}, "client_id": {tc.client}, "redirect_uri": {redirect}, "scope": {tc.scope},
					"state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}}
				if tc.resource != "-" {
					q.Set("resource", tc.resource)
				}
				pg := e.browser().get(e.url + "/authorize?" + q.Encode())
				if pg.location == nil {
					t.Fatalf("no redirect: %d %s", pg.status, clipText(pg.body, 300))
				}
				if got := pg.location.Query().Get("error"); got != tc.want {
					t.Errorf("error = %q (%s), want %s", got, pg.location.Query().Get("error_description"), tc.want)
				}
				if !strings.HasPrefix(pg.location.String(), redirect) || pg.location.Query().Get("state") != "st" {
					t.Errorf("redirect %s", pg.location)
				}
			})
		}
	})

	t.Run("limited client gets its resource", func(t *testing.T) {
		conf := &oauth2.Config{ClientID: limitedID, Endpoint: p.Endpoint(), Scopes: []string{"orders:read"}, RedirectURL: "http://127.0.0.1:40000/cb"}
		conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
		f := newFlow(conf)
		code := e.browser().code(f.authURL(res(otherResource)))
		tok, err := conf.Exchange(e.ctx(), code, oauth2.VerifierOption(f.verifier))
		if err != nil {
			t.Fatal(err)
		}
		if aud := audOf(t, tok.AccessToken); !slices.Equal(aud, []string{otherResource}) {
			t.Errorf("aud = %v", aud)
		}
	})
}

// TestResourceConfig: issuer.resources and clients[].resources are
// checked at start, errors naming the key.
func TestResourceConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		rs   []issuer.Resource
		cr   []string
		want string
	}{
		{"ok", []issuer.Resource{{URL: mcpResource, Scopes: []string{"mcp:tools"}}, {URL: "http://127.0.0.1:8080/mcp"}}, []string{mcpResource}, ""},
		{"relative", []issuer.Resource{{URL: "/mcp"}}, nil, "issuer.resources[0].url"},
		{"fragment", []issuer.Resource{{URL: mcpResource + "#a"}}, nil, "issuer.resources[0].url"},
		{"plain http", []issuer.Resource{{URL: "http://mcp.example.test/mcp"}}, nil, "issuer.resources[0].url"},
		{"twice", []issuer.Resource{{URL: mcpResource}, {URL: mcpResource}}, nil, "issuer.resources[1].url"},
		{"issuer scope", []issuer.Resource{{URL: mcpResource, Scopes: []string{"openid"}}}, nil, "issuer.resources[0].scopes[0]"},
		{"bad scope", []issuer.Resource{{URL: mcpResource, Scopes: []string{"a\"b"}}}, nil, "issuer.resources[0].scopes[0]"},
		{"client names an unknown one", []issuer.Resource{{URL: mcpResource}}, []string{otherResource}, "issuer.clients[0].resources[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Issuer = "https://idp.example.test"
			cfg.Resources = tc.rs
			cfg.Clients[0].Resources = tc.cr
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want+":")):
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
		})
	}
}

// TestResourceScopesInMetadata: the resources' scopes are listed in
// scopes_supported after the issuer's own.
func TestResourceScopesInMetadata(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: withResources})
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		r := e.request(http.MethodGet, path, nil, nil)
		got, _ := r.body["scopes_supported"].([]any)
		var s []string
		for _, v := range got {
			s = append(s, v.(string))
		}
		if !slices.Equal(s, []string{"openid", "profile", "email", "offline_access", "groups", "roles", "mcp:tools", "mcp:admin", "orders:read"}) {
			t.Errorf("%s scopes_supported = %v", path, s)
		}
	}
}

// TestResourceClientCredentials: a client's own token (client_credentials)
// is bound to a resource with the resource parameter, with the resource's
// scopes; an unknown one is invalid_target.
func TestResourceClientCredentials(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: withResources})
	r := e.post("/token", svcBasic, url.Values{"grant_type": {"client_credentials"}, "resource": {mcpResource}, "scope": {"mcp:tools"}})
	if r.status != http.StatusOK || r.str("scope") != "mcp:tools" || !slices.Equal(audOf(t, r.str("access_token")), []string{mcpResource}) {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	wantActive(t, e.post("/introspect", auth{id: rsID, secret: rsSecret, basic: true}, url.Values{"token": {r.str("access_token")}}))
	wantError(t, e.post("/token", svcBasic, url.Values{"grant_type": {"client_credentials"}, "resource": {"https://unknown.example.test/"}}), http.StatusBadRequest, "invalid_target")
	wantError(t, e.post("/token", svcBasic, url.Values{"grant_type": {"client_credentials"}, "scope": {"mcp:tools"}}), http.StatusBadRequest, "invalid_scope")
}
