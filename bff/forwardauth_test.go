package bff

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
)

// faIdentity is the identity headers of the fixture's rules.
var faIdentity = IdentityHeaders{User: "X-Auth-Request-User", Email: "X-Auth-Request-Email", Groups: "X-Auth-Request-Groups",
	Assertion: "X-Bffgate-Jwt-Assertion"}

// faEnv is the authorization fixture (alice: groups admin and dev, role
// editor; bob: group staff) with forward-auth rules, whose original
// request headers are believed from trusted (the test client is
// 127.0.0.1).
func faEnv(t *testing.T, trusted []string, edit func(*Config)) (*env, *logBuffer) {
	return faEnvKind(t, kindBolt, trusted, edit)
}

// faEnvKind is faEnv on a session store of kind.
func faEnvKind(t *testing.T, kind storeKind, trusted []string, edit func(*Config)) (*env, *logBuffer) {
	logs := &logBuffer{}
	e := newEnv(t, kind, envOptions{
		issuer: func(c *issuer.Config) {
			c.Users[0].Claims = map[string]any{"name": "Alice Example", "email": "alice@example.test", "email_verified": true}
			c.Users[0].Groups = []string{"admin", "dev"}
			c.Users[0].Roles = []string{"editor"}
			c.Users[1].Claims = map[string]any{"name": "Bob Example", "email": "bob@other.test", "email_verified": true}
			c.Users[1].Groups = []string{"staff"}
		},
		gateway: func(c *Config) {
			c.Provider.Scopes = []string{"openid", "profile", "email", "offline_access", "groups", "roles"}
			c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			c.Proxy.TrustedProxies = trusted
			c.ForwardAuth.Rules = []ForwardAuthRule{
				{Prefix: "/app/", Rules: authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}}, Identity: faIdentity},
				{Prefix: "/app/staff/", Rules: authz.Policy{Allow: []authz.Rule{{Groups: []string{"staff", "admin"}}}}, Identity: faIdentity},
				{Prefix: "/everyone/"},
				{Prefix: "/token/", PassAccessToken: true},
				{Prefix: "/reads/", Rules: authz.Policy{Allow: []authz.Rule{{CEL: `request.method in ["GET", "HEAD"] && request.host.startsWith("shop.")`}}}},
				{Prefix: "/celerr/", Rules: authz.Policy{Allow: []authz.Rule{{CEL: `claims.department == "ops"`}}}},
				{Host: "admin.example.test", Prefix: "/", Rules: authz.Policy{Allow: []authz.Rule{{Roles: []string{"editor"}}}}},
			}
			if edit != nil {
				edit(c)
			}
		},
	})
	return e, logs
}

// auth asks the forward-auth endpoint about a request, as a proxy does
// for b (its cookies) with the headers hdr.
func (b *browser) auth(query string, hdr map[string]string) result {
	b.e.t.Helper()
	return b.do(b.noRedirect(), http.MethodGet, b.e.gwURL+"/bff/auth"+query, nil, hdr)
}

// TestForwardAuth: the decision endpoint over real HTTP with sessions
// from the embedded issuer, the original request described by a trusted
// proxy's headers (nginx's, Traefik's and Caddy's names, and Envoy's
// path form): 200 with identity headers and a verifiable assertion for an
// allowed user, 403 {"error":"forbidden"} for a denied one or a path no
// rule covers, 401 with a login URL returning to the original URL for no
// session; the rule, subject and result in a log line and the metrics.
func TestForwardAuth(t *testing.T) {
	t.Parallel()
	e, logs := faEnv(t, []string{"127.0.0.1"}, nil)
	alice, bob, anon := e.browser(), e.browser(), e.browser()
	alice.mustLogin("alice", alicePassword)
	bob.mustLogin("bob", bobPassword)

	nginx := func(uri string) map[string]string {
		return map[string]string{"X-Original-URI": uri, "X-Original-Method": "GET", "X-Forwarded-Host": "app.example.test", "X-Forwarded-Proto": "https"}
	}
	traefik := func(method, uri, host string) map[string]string {
		return map[string]string{"X-Forwarded-Uri": uri, "X-Forwarded-Method": method, "X-Forwarded-Host": host, "X-Forwarded-Proto": "https"}
	}
	for _, tc := range []struct {
		name           string
		query          string
		hdr            map[string]string
		alice, bob, an int
	}{
		{"groups rule (nginx headers)", "", nginx("/app/page?x=1"), 200, 403, 401},
		{"longer prefix wins", "", nginx("/app/staff/list"), 200, 200, 401},
		{"prefix without its slash", "", nginx("/app"), 200, 403, 401},
		{"encoded path decided as decoded", "", nginx("/app/%73taff/list"), 200, 200, 401},
		{"no rules: every user", "", nginx("/everyone/x"), 200, 200, 401},
		{"no rule covers the path", "", nginx("/elsewhere"), 403, 403, 403},
		{"the gateway's own endpoints", "", nginx("/bff/user"), 403, 403, 403},
		{"CEL over method and host (Traefik headers)", "", traefik("GET", "/reads/a", "shop.example.test"), 200, 200, 401},
		{"CEL: another method", "", traefik("POST", "/reads/a", "shop.example.test"), 403, 403, 401},
		{"CEL: another host", "", traefik("GET", "/reads/a", "blog.example.test"), 403, 403, 401},
		{"CEL runtime error denies", "", nginx("/celerr/a"), 403, 403, 401},
		{"host rule before host-less ones", "", traefik("GET", "/app/x", "admin.example.test:8443"), 200, 403, 401},
		{"Envoy path form", "/app/page", map[string]string{"X-Forwarded-Proto": "https"}, 200, 403, 401},
		{"conflicting URIs denied", "", map[string]string{"X-Original-URI": "/everyone/x", "X-Forwarded-Uri": "/app/x"}, 403, 403, 403},
		{"traversal refused", "", nginx("/everyone/../app/x"), 403, 403, 403},
		{"absolute URI", "", nginx("https://app.example.test/app/page"), 200, 403, 401},
	} {
		for _, u := range []struct {
			name string
			b    *browser
			want int
		}{{"alice", alice, tc.alice}, {"bob", bob, tc.bob}, {"anonymous", anon, tc.an}} {
			q := ""
			if strings.HasPrefix(tc.query, "/") {
				q = tc.query
			}
			r := u.b.auth(q, tc.hdr)
			if r.status != u.want {
				t.Errorf("%s: %s = %d %s, want %d", tc.name, u.name, r.status, clip(r.body), u.want)
				continue
			}
			switch r.status {
			case 403:
				if strings.TrimSpace(r.body) != `{"error":"forbidden"}` {
					t.Errorf("%s: %s: 403 body %s, want {\"error\":\"forbidden\"} only", tc.name, u.name, r.body)
				}
			case 200:
				if r.header.Get("Authorization") != "" {
					t.Errorf("%s: %s: a rule without pass_access_token answered an Authorization header", tc.name, u.name)
				}
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("%s: %s: Cache-Control %q, want no-store", tc.name, u.name, cc)
			}
		}
	}

	t.Run("Envoy: the original method and Host", func(t *testing.T) {
		// Envoy's check keeps the original request's method and Host and
		// appends its path to path_prefix.
		for _, tc := range []struct {
			method, host string
			want         int
		}{{"GET", "shop.example.test", 200}, {"HEAD", "shop.example.test", 200}, {"POST", "shop.example.test", 403}, {"GET", "blog.example.test", 403}} {
			req, _ := http.NewRequest(tc.method, e.gwURL+"/bff/auth/reads/a?x=1", nil)
			req.Host = tc.host
			req.Header.Set("Cookie", alice.cookieHeader())
			resp, err := (&http.Client{Transport: testhttp.Transport()}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.host, resp.StatusCode, tc.want)
			}
		}
	})

	t.Run("Envoy: a visitor's headers do not choose the decision", func(t *testing.T) {
		// ext_authz passes on the headers allowed_headers lets through,
		// a visitor's copies included: in the path form the request's own
		// path, method and Host are the original's, and a header saying
		// otherwise denies.
		for _, tc := range []struct {
			name, method, path, host string
			hdr                      map[string]string
			who                      *browser
			want                     int
		}{
			{"another URI", "GET", "/app/page", "app.example.test", map[string]string{"X-Original-URI": "/everyone/x"}, bob, 403},
			{"the same URI", "GET", "/app/page?x=1", "app.example.test", map[string]string{"X-Forwarded-Uri": "/app/page?x=1"}, alice, 200},
			{"another method", "POST", "/reads/a", "shop.example.test", map[string]string{"X-Original-Method": "GET"}, alice, 403},
			{"the same method", "GET", "/reads/a", "shop.example.test", map[string]string{"X-Forwarded-Method": "get"}, alice, 200},
			{"another host", "GET", "/reads/a", "blog.example.test", map[string]string{"X-Forwarded-Host": "shop.example.test"}, alice, 403},
			{"the same host", "GET", "/reads/a", "shop.example.test", map[string]string{"X-Forwarded-Host": "shop.example.test"}, alice, 200},
		} {
			req, _ := http.NewRequest(tc.method, e.gwURL+"/bff/auth"+tc.path, nil)
			req.Host = tc.host
			req.Header.Set("Cookie", tc.who.cookieHeader())
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := (&http.Client{Transport: testhttp.Transport()}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
			}
		}
	})

	t.Run("identity headers and assertion", func(t *testing.T) {
		r := alice.auth("", nginx("/app/page"))
		if r.status != 200 {
			t.Fatalf("alice: %d %s", r.status, r.body)
		}
		if got := r.header.Get("X-Auth-Request-User"); got != "user-alice" {
			t.Errorf("user header %q", got)
		}
		if got := r.header.Get("X-Auth-Request-Email"); got != "alice@example.test" {
			t.Errorf("email header %q", got)
		}
		if got := r.header.Get("X-Auth-Request-Groups"); got != "admin,dev" {
			t.Errorf("groups header %q", got)
		}
		u := &assertionUpstream{gwURL: e.gwURL}
		var seen seenIdentity
		if err := u.verify(r.header.Get("X-Bffgate-Jwt-Assertion"), e.gwURL+"/app/", &seen); err != nil {
			t.Fatalf("assertion does not verify against %s/bff/jwks with aud %s/app/: %v", e.gwURL, e.gwURL, err)
		}
		if seen.Claims["sub"] != "user-alice" {
			t.Errorf("assertion sub %v", seen.Claims["sub"])
		}
	})

	t.Run("access token for the upstream", func(t *testing.T) {
		r := alice.auth("", nginx("/token/x"))
		tok, ok := strings.CutPrefix(r.header.Get("Authorization"), "Bearer ")
		if r.status != 200 || !ok || tok == "" {
			t.Fatalf("pass_access_token: %d, Authorization %q", r.status, r.header.Get("Authorization"))
		}
		if !e.introspect(tok) {
			t.Error("the passed access token is not active at the issuer")
		}
		if strings.Contains(r.body, tok) {
			t.Error("the token is in the body")
		}
		for _, l := range logs.lines("forward auth decision") {
			for _, v := range l {
				if s, ok := v.(string); ok && strings.Contains(s, tok) {
					t.Fatalf("the access token is in a log line: %v", l)
				}
			}
		}
	})

	t.Run("no session: 401 with the login URL", func(t *testing.T) {
		r := anon.auth("", nginx("/app/page?x=1&y=%2F2"))
		var body struct {
			Error    string `json:"error"`
			LoginURL string `json:"login_url"`
		}
		r.json(t, &body)
		want := e.gwURL + "/bff/login?returnUrl=" + url.QueryEscape("/app/page?x=1&y=%2F2")
		if body.Error != "login_required" || body.LoginURL != want {
			t.Errorf("401 body %s, want login_url %s", r.body, want)
		}
		if got := r.header.Get(LoginURLHeader); got != want {
			t.Errorf("%s %q, want %q", LoginURLHeader, got, want)
		}
		abs := anon.auth("", nginx("https://app.example.test/app/page?x=1&y=%2F2"))
		if got := abs.header.Get(LoginURLHeader); got != want {
			t.Errorf("absolute original URI: %s %q, want %q", LoginURLHeader, got, want)
		}
		// The login lands on the original URL (served here by the SPA).
		b := e.browser()
		p := b.do(b.client, http.MethodGet, want, nil, nil)
		action, fields := parseForm(t, p.body)
		au, _ := p.url.Parse(action)
		fields.Set("username", "alice")
		fields.Set("password", alicePassword)
		p = b.do(b.client, http.MethodPost, au.String(), strings.NewReader(fields.Encode()),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		if p.status != 200 || p.url.RequestURI() != "/app/page?x=1&y=%2F2" {
			t.Errorf("login returned to %s (%d), want /app/page?x=1&y=%%2F2", p.url, p.status)
		}
		if r := b.auth("", nginx("/app/page?x=1&y=%2F2")); r.status != 200 {
			t.Errorf("after the login: %d", r.status)
		}
	})

	t.Run("login=redirect: 302 for a navigation, 401 for a fetch", func(t *testing.T) {
		hdr := traefik("GET", "/app/page", "app.example.test")
		hdr["Accept"] = "text/html,application/xhtml+xml"
		r := anon.auth("?login=redirect", hdr)
		want := e.gwURL + "/bff/login?returnUrl=" + url.QueryEscape("/app/page")
		if r.status != 302 || r.header.Get("Location") != want {
			t.Errorf("navigation: %d Location %q, want 302 %s", r.status, r.header.Get("Location"), want)
		}
		hdr["Sec-Fetch-Mode"] = "cors"
		if r := anon.auth("?login=redirect", hdr); r.status != 401 {
			t.Errorf("fetch: %d, want 401", r.status)
		}
		delete(hdr, "Sec-Fetch-Mode")
		hdr["Accept"] = "application/json"
		if r := anon.auth("?login=redirect", hdr); r.status != 401 {
			t.Errorf("JSON: %d, want 401", r.status)
		}
		// A denied user is not sent to log in again.
		hdr["Accept"] = "text/html"
		if r := bob.auth("?login=redirect", hdr); r.status != 403 {
			t.Errorf("bob: %d, want 403", r.status)
		}
	})

	t.Run("log lines and metrics", func(t *testing.T) {
		var allowed, denied bool
		for _, l := range logs.lines("forward auth decision") {
			if l["rule"] == "/app/" && l["sub"] == "user-alice" && l["result"] == "allowed" {
				allowed = true
			}
			if l["rule"] == "/app/" && l["sub"] == "user-bob" && l["result"] == "denied" && l["authz_rule"] == "allow" {
				denied = true
			}
		}
		if !allowed || !denied {
			t.Errorf("log lines: allowed %v, denied %v", allowed, denied)
		}
		for _, res := range []string{"allowed", "denied", "unauthenticated", "error"} {
			if e.gwCount("bffgate_gateway_forward_auth_decisions_total", map[string]string{"result": res}) == 0 {
				t.Errorf("no %s decision counted", res)
			}
		}
		if n := e.gwCount("bffgate_gateway_forward_auth_decisions_total", map[string]string{"rule": "none", "result": "denied"}); n == 0 {
			t.Error("no decision without a rule counted under rule=none")
		}
	})
}

// TestForwardAuthUntrustedPeer: from a peer outside trusted_proxies the
// headers describing an original request are ignored, the decision is
// about the auth endpoint's own URI, and so it denies, even a user every
// rule would let through; the attempt is logged.
func TestForwardAuthUntrustedPeer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		trusted []string
	}{{"none trusted", nil}, {"another network trusted", []string{"10.0.0.0/8", "::1"}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, logs := faEnv(t, tc.trusted, nil)
			alice := e.browser()
			alice.mustLogin("alice", alicePassword)
			for _, hdr := range []map[string]string{
				{"X-Original-URI": "/everyone/x"},
				{"X-Forwarded-Uri": "/app/x", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "admin.example.test"},
				{},
			} {
				if r := alice.auth("", hdr); r.status != 403 || strings.TrimSpace(r.body) != `{"error":"forbidden"}` {
					t.Errorf("%v: %d %s, want 403", hdr, r.status, r.body)
				}
			}
			if r := alice.auth("/everyone/x", nil); r.status != 403 {
				t.Errorf("Envoy path form from an untrusted peer: %d, want 403", r.status)
			}
			if len(logs.lines("forward auth: headers describing an original request came from a peer not in trusted_proxies; ignored")) == 0 {
				t.Error("the ignored headers were not logged")
			}
			ok := false
			for _, l := range logs.lines("forward auth decision") {
				if l["reason"] == "untrusted_peer" && l["result"] == "denied" {
					ok = true
				}
			}
			if !ok {
				t.Error("no decision logged with reason untrusted_peer")
			}
		})
	}
}

// TestSPARules: gateway.spa's rules decide who loads the SPA. Anonymous
// page loads go to the login and come back; a denied user gets a 403
// page (JSON for a fetch) but still reaches /bff/user and the logout; an
// allowed one gets the SPA.
func TestSPARules(t *testing.T) {
	t.Parallel()
	e, logs := faEnv(t, nil, func(c *Config) {
		c.SPARules = authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}}
	})
	anon := e.browser()
	r := anon.do(anon.noRedirect(), http.MethodGet, e.gwURL+"/deep/page?tab=2", nil, map[string]string{"Accept": "text/html"})
	want := "/bff/login?returnUrl=" + url.QueryEscape("/deep/page?tab=2")
	if r.status != 302 || r.header.Get("Location") != want {
		t.Errorf("anonymous page load: %d Location %q, want 302 %s", r.status, r.header.Get("Location"), want)
	}
	if r := anon.do(anon.noRedirect(), http.MethodGet, e.gwURL+"/deep/page", nil, map[string]string{"Accept": "application/json"}); r.status != 401 {
		t.Errorf("anonymous fetch: %d, want 401", r.status)
	}
	if p := anon.login("alice", alicePassword, "/deep/page?tab=2"); p.status != 200 || p.body != "spa /deep/page" {
		t.Errorf("alice after login: %d %s at %s", p.status, p.body, p.url)
	}

	bob := e.browser()
	p := bob.login("bob", bobPassword, "/home")
	if p.status != 403 || !strings.Contains(p.body, "Access denied") || !strings.Contains(p.body, "prompt=login") {
		t.Errorf("bob's page: %d %s", p.status, clip(p.body))
	}
	if r := bob.do(bob.noRedirect(), http.MethodGet, e.gwURL+"/home", nil, map[string]string{"Accept": "application/json"}); r.status != 403 || strings.TrimSpace(r.body) != `{"error":"forbidden"}` {
		t.Errorf("bob's fetch: %d %s", r.status, r.body)
	}
	if r := bob.api(http.MethodGet, "/bff/user"); r.status != 200 || !strings.Contains(r.body, "user-bob") {
		t.Errorf("bob's /bff/user: %d %s", r.status, clip(r.body))
	}
	if r := bob.api(http.MethodGet, "/api/x"); r.status != 200 {
		t.Errorf("bob's API route (no rules): %d", r.status)
	}
	if e.gwCount("bffgate_gateway_authz_decisions_total", map[string]string{"route": "spa", "result": "denied"}) == 0 {
		t.Error("no SPA denial counted")
	}
	if len(logs.lines("request forbidden by the SPA's rules")) == 0 {
		t.Error("no SPA denial logged")
	}
}

// TestForwardAuthConfig: errors name the keys under forward_auth and spa.
func TestForwardAuthConfig(t *testing.T) {
	t.Parallel()
	base := func(edit func(*Config)) Config {
		cfg := DefaultConfig()
		cfg.PublicURL = "http://127.0.0.1:8080"
		cfg.Provider.IssuerURL = "http://127.0.0.1:9090"
		cfg.Provider.ClientID = "bff"
		edit(&cfg)
		return cfg
	}
	rule := func(r ForwardAuthRule) func(*Config) {
		return func(c *Config) { c.ForwardAuth.Rules = []ForwardAuthRule{{Prefix: "/ok/"}, r} }
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"CEL", base(rule(ForwardAuthRule{Prefix: "/", Rules: authz.Policy{Allow: []authz.Rule{{CEL: `claims.x ==`}}}})), []string{"forward_auth.rules[1].allow[0].cel", "does not compile"}},
		{"prefix not a path", base(rule(ForwardAuthRule{Prefix: "app"})), []string{"forward_auth.rules[1].prefix"}},
		{"prefix under base_path", base(rule(ForwardAuthRule{Prefix: "/bff/x"})), []string{"forward_auth.rules[1].prefix", "base_path"}},
		{"duplicate", base(rule(ForwardAuthRule{Prefix: "/ok"})), []string{"forward_auth.rules[1].prefix", "also forward_auth.rules[0]"}},
		{"host with a scheme", base(rule(ForwardAuthRule{Host: "https://a.example", Prefix: "/"})), []string{"forward_auth.rules[1].host"}},
		{"identity header name", base(rule(ForwardAuthRule{Prefix: "/", Identity: IdentityHeaders{User: "Set-Cookie"}})), []string{"forward_auth.rules[1].identity_headers.user"}},
		{"authorization as identity header", base(rule(ForwardAuthRule{Prefix: "/", Identity: IdentityHeaders{Email: "Authorization"}})), []string{"forward_auth.rules[1].identity_headers.email"}},
		{"userinfo", base(rule(ForwardAuthRule{Prefix: "/", Rules: authz.Policy{ClaimsFrom: authz.SourceUserinfo, Allow: []authz.Rule{{Groups: []string{"a"}}}}})), []string{"forward_auth.rules[1].claims_from", "use_userinfo"}},
		{"spa rule", base(func(c *Config) { c.SPARules = authz.Policy{Deny: []authz.Rule{{}}} }), []string{"spa.deny[0]", "no condition"}},
	} {
		err := tc.cfg.Validate()
		if err == nil {
			t.Errorf("%s: Validate accepted it", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, err, w)
			}
		}
	}
	ok := base(func(c *Config) {
		c.ForwardAuth.Rules = []ForwardAuthRule{{Prefix: "/"}, {Host: "app.example.com:8443", Prefix: "/"}, {Host: "App.Example.com", Prefix: "/x/"}}
	})
	if err := ok.Validate(); err != nil {
		t.Errorf("valid rules refused: %v", err)
	}
}

// TestForwardAuthRefresh, on every session store: a rule with
// pass_access_token answers a token the upstream still takes (refreshed
// once for parallel decisions of one session, the rotated refresh token
// never presented again), the cookie store's renewed session rides on the
// answer; a refresh the provider refuses ends the session: 401 with the
// login URL back to the original request.
func TestForwardAuthRefresh(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e, _ := faEnvKind(t, kind, []string{"127.0.0.1"}, nil)
		b := e.browser()
		b.mustLogin("alice", alicePassword)
		hdr := map[string]string{"X-Original-URI": "/token/x"}
		first := b.auth("", hdr).header.Get("Authorization")
		e.clock.Advance(6 * time.Minute) // the 5-minute access token expired

		before := e.issuerCount("bffgate_issuer_tokens_minted_total", map[string]string{"grant_type": "refresh_token", "kind": "access"})
		cookie := b.cookieHeader()
		const n = 20
		var wg sync.WaitGroup
		errs := make(chan string, n)
		tokens := make(chan string, n)
		client := &http.Client{Timeout: 20 * time.Second, Transport: testhttp.Transport()}
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, e.gwURL+"/bff/auth", nil)
				req.Header.Set("Cookie", cookie)
				req.Header.Set("X-Original-URI", "/token/x")
				resp, err := client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Sprintf("status %d", resp.StatusCode)
					return
				}
				if kind == kindCookie && len(resp.Cookies()) == 0 {
					errs <- "a renewed cookie session answered no cookie"
				}
				tokens <- resp.Header.Get("Authorization")
			}()
		}
		wg.Wait()
		close(errs)
		close(tokens)
		for err := range errs {
			t.Error(err)
		}
		for tok := range tokens {
			if tok == first || !e.introspect(strings.TrimPrefix(tok, "Bearer ")) {
				t.Fatal("an answer after expiry carried the old token or an inactive one")
			}
		}
		if got := e.issuerCount("bffgate_issuer_tokens_minted_total", map[string]string{"grant_type": "refresh_token", "kind": "access"}) - before; got != 1 {
			t.Errorf("%v refreshes at the provider, want 1", got)
		}
		if got := e.issuerCount("bffgate_issuer_refresh_reuse_total", nil); got != 0 {
			t.Errorf("%v refresh token reuses", got)
		}

		// The browser, still with the cookie from before the refresh (a
		// cookie session's renewed cookie went to the parallel callers),
		// is answered from the refresh that happened (the grace record)
		// and gets the current cookie.
		if r := b.auth("", hdr); r.status != 200 || r.header.Get("Authorization") == first {
			t.Fatalf("the browser's next decision: %d", r.status)
		}
		e.revoke(b.session().RefreshToken)
		e.clock.Advance(6 * time.Minute)
		r := b.auth("", map[string]string{"X-Original-URI": "/token/x?a=1"})
		want := e.gwURL + "/bff/login?returnUrl=" + url.QueryEscape("/token/x?a=1")
		if r.status != 401 || !strings.Contains(r.body, `"error":"session_expired"`) || r.header.Get(LoginURLHeader) != want {
			t.Errorf("refused refresh: %d %s %s, want 401 session_expired to %s", r.status, r.body, r.header.Get(LoginURLHeader), want)
		}
		if b.handle() != "" {
			t.Error("the session cookies were not cleared")
		}
	})
}

// TestForwardAuthHostPortRule: of two rules for one prefix, one naming a
// host and one the same host with a port, a request to that port gets
// the port's rule whichever comes first in the list.
func TestForwardAuthHostPortRule(t *testing.T) {
	t.Parallel()
	e, _ := faEnv(t, []string{"127.0.0.1"}, func(c *Config) {
		c.ForwardAuth.Rules = append(c.ForwardAuth.Rules,
			ForwardAuthRule{Host: "port.example.test", Prefix: "/"},
			ForwardAuthRule{Host: "port.example.test:8443", Prefix: "/", Rules: authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}}},
		)
	})
	alice, bob := e.browser(), e.browser()
	alice.mustLogin("alice", alicePassword)
	bob.mustLogin("bob", bobPassword)
	for _, tc := range []struct {
		host       string
		alice, bob int
	}{{"port.example.test:8443", 200, 403}, {"port.example.test", 200, 200}, {"port.example.test:9000", 200, 200}} {
		hdr := map[string]string{"X-Forwarded-Uri": "/x", "X-Forwarded-Method": "GET", "X-Forwarded-Host": tc.host}
		if r := alice.auth("", hdr); r.status != tc.alice {
			t.Errorf("%s: alice %d, want %d", tc.host, r.status, tc.alice)
		}
		if r := bob.auth("", hdr); r.status != tc.bob {
			t.Errorf("%s: bob %d, want %d", tc.host, r.status, tc.bob)
		}
	}
}
