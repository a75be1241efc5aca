package issuer_test

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// authParams is a valid authorization request of web.
func authParams(verifier string) url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {webID},
		"redirect_uri":          {webRedirect},
		"scope":                 {"openid profile"},
		"state":                 {"st-123"},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"},
	}
}

// TestAuthorizeErrors: RFC 6749 §4.1.2.1. Errors redirect with error,
// error_description, state and iss, but only to a registered redirect_uri;
// an unknown client or redirect_uri gets an HTML page and no redirect.
func TestAuthorizeErrors(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	verifier := oauth2.GenerateVerifier()

	type want struct {
		page     int      // an HTML error page with this status (no redirect)
		redirect string   // or this error code at the registered redirect_uri
		body     []string // phrases the page must show
	}
	for _, tc := range []struct {
		name string
		edit func(url.Values)
		raw  string // a raw query instead of the edited one
		want want
	}{
		{name: "unknown client", edit: func(v url.Values) { v.Set("client_id", "nope") }, want: want{page: 400}},
		{name: "missing client_id", edit: func(v url.Values) { v.Del("client_id") }, want: want{page: 400}},
		{name: "unregistered redirect_uri port", edit: func(v url.Values) { v.Set("redirect_uri", "https://app.example.test:8443/callback") },
			want: want{page: 400, body: []string{"https://app.example.test:8443/callback", webRedirect, "port differs"}}},
		{name: "redirect_uri trailing slash", edit: func(v url.Values) { v.Set("redirect_uri", webRedirect+"/") },
			want: want{page: 400, body: []string{webRedirect, "path differs"}}},
		{name: "redirect_uri of another client", edit: func(v url.Values) { v.Set("redirect_uri", otherRedirect) }, want: want{page: 400}},
		{name: "redirect_uri scheme", edit: func(v url.Values) { v.Set("redirect_uri", "http://app.example.test/callback") },
			want: want{page: 400, body: []string{"scheme differs"}}},
		{name: "missing redirect_uri", edit: func(v url.Values) { v.Del("redirect_uri") }, want: want{page: 400}},
		{name: "response_type token", edit: func(v url.Values) { v.Set("response_type", "token") }, want: want{redirect: "unsupported_response_type"}},
		{name: "missing response_type", edit: func(v url.Values) { v.Del("response_type") }, want: want{redirect: "invalid_request"}},
		{name: "missing code_challenge", edit: func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, want: want{redirect: "invalid_request"}},
		{name: "plain code_challenge", edit: func(v url.Values) { v.Set("code_challenge", verifier); v.Set("code_challenge_method", "plain") }, want: want{redirect: "invalid_request"}},
		{name: "code_challenge without method", edit: func(v url.Values) { v.Del("code_challenge_method") }, want: want{redirect: "invalid_request"}},
		{name: "short code_challenge", edit: func(v url.Values) { v.Set("code_challenge", "abc") }, want: want{redirect: "invalid_request"}},
		{name: "unknown scope", edit: func(v url.Values) { v.Set("scope", "openid admin") }, want: want{redirect: "invalid_scope"}},
		{name: "prompt none without session", edit: func(v url.Values) { v.Set("prompt", "none") }, want: want{redirect: "login_required"}},
		{name: "repeated parameter", raw: "dup", want: want{redirect: "invalid_request"}},
		{name: "bad percent-encoding", raw: "client_id=web&redirect_uri=" + url.QueryEscape(webRedirect) + "&state=%zz", want: want{page: 400}},
		{name: "public client without PKCE", edit: func(v url.Values) {
			v.Set("client_id", spaID)
			v.Set("redirect_uri", spaRedirect)
			v.Del("code_challenge")
			v.Del("code_challenge_method")
		}, want: want{redirect: "invalid_request"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := authParams(verifier)
			if tc.edit != nil {
				tc.edit(v)
			}
			q := v.Encode()
			switch tc.raw {
			case "":
			case "dup":
				q += "&scope=openid"
			default:
				q = tc.raw
			}
			p := e.browser().get(e.url + "/authorize?" + q)
			if tc.want.page != 0 {
				if p.location != nil {
					t.Fatalf("redirected to %s; an unknown client or redirect_uri must get an HTML page (RFC 6749 §4.1.2.1)", p.location)
				}
				if p.status != tc.want.page || !strings.HasPrefix(p.header.Get("Content-Type"), "text/html") {
					t.Fatalf("status %d Content-Type %q, want %d text/html", p.status, p.header.Get("Content-Type"), tc.want.page)
				}
				for _, s := range tc.want.body {
					if !strings.Contains(p.body, s) {
						t.Errorf("error page lacks %q:\n%s", s, clipText(p.body, 3000))
					}
				}
				return
			}
			if p.location == nil {
				t.Fatalf("status %d, want a redirect with error=%s\n%s", p.status, tc.want.redirect, clipText(p.body, 1500))
			}
			redirect := v.Get("redirect_uri")
			if got := p.location.Scheme + "://" + p.location.Host + p.location.Path; got != redirect {
				t.Fatalf("error redirect to %s, want the registered %s", p.location, redirect)
			}
			got := p.location.Query()
			if got.Get("error") != tc.want.redirect {
				t.Errorf("error=%q (%s), want %q", got.Get("error"), got.Get("error_description"), tc.want.redirect)
			}
			if got.Get("error_description") == "" {
				t.Error("no error_description")
			}
			wantDescriptionCharset(t, "redirect", got.Get("error_description"))
			if got.Get("state") != "st-123" {
				t.Errorf("state %q, want st-123 echoed", got.Get("state"))
			}
			if got.Get("iss") != e.url {
				t.Errorf("iss %q, want %q (RFC 9207)", got.Get("iss"), e.url)
			}
			if got.Get("code") != "" {
				t.Error("an error redirect carries a code")
			}
		})
	}

	t.Run("oversized request", func(t *testing.T) {
		v := authParams(verifier)
		v.Set("state", strings.Repeat("s", 64<<10))
		// The server answers 431 and closes the connection, possibly
		// while the client is still writing the 64 KiB request line: then
		// the client sees the reset, not the answer. Either is a refusal;
		// what must not happen is a redirect or a 5xx.
		c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(e.url + "/authorize?" + v.Encode())
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
				return
			}
			t.Fatalf("64 KiB state: %v, want a 4xx answer or the connection closed", err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || resp.Header.Get("Location") != "" {
			t.Fatalf("64 KiB state: status %d location %q, want a 4xx and no redirect", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("long parameter", func(t *testing.T) {
		v := authParams(verifier)
		v.Set("state", strings.Repeat("s", 5000))
		p := e.browser().get(e.url + "/authorize?" + v.Encode())
		if p.status >= 500 {
			t.Fatalf("5000-byte state: status %d", p.status)
		}
		if p.location != nil && p.location.Query().Get("code") != "" {
			t.Fatalf("5000-byte state accepted with a code")
		}
	})
}

// TestLoginForm: the login form refuses a wrong password (no redirect), a
// post without the CSRF cookie (another browser), a cross-origin post, and
// a tampered sealed request.
func TestLoginForm(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	fl := newFlow(e.oauth2Config(e.provider(), webID))

	form := func(b *browser) page {
		t.Helper()
		p := b.get(fl.authURL())
		if p.status != http.StatusOK || !strings.Contains(p.body, `name="password"`) {
			t.Fatalf("GET /authorize: status %d, want the login form", p.status)
		}
		if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("login page CSP %q", csp)
		}
		return p
	}
	creds := url.Values{"username": {aliceUser}, "password": {alicePassword}}

	t.Run("wrong password", func(t *testing.T) {
		b := e.browser()
		p := b.submit(form(b), url.Values{"username": {aliceUser}, "password": {"wrong"}})
		if p.location != nil || !strings.Contains(p.body, `name="password"`) {
			t.Fatalf("wrong password: status %d location %v, want the form again", p.status, p.location)
		}
		if b.cookie(ssoCookie) != nil {
			t.Fatal("SSO cookie set after a wrong password")
		}
		p = b.submit(p, creds)
		if p.location == nil || p.location.Query().Get("code") == "" {
			t.Fatalf("retry with the right password: status %d", p.status)
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		b := e.browser()
		p := b.submit(form(b), url.Values{"username": {"mallory"}, "password": {alicePassword}})
		if p.location != nil {
			t.Fatalf("unknown user redirected to %s", p.location)
		}
	})
	t.Run("form from another browser", func(t *testing.T) {
		victim, attacker := e.browser(), e.browser()
		p := form(attacker)
		p = victim.submit(p, creds)
		if p.location != nil || p.status < 400 || p.status >= 500 {
			t.Fatalf("form posted without its CSRF cookie: status %d location %v, want a 4xx page", p.status, p.location)
		}
	})
	t.Run("cross-origin post", func(t *testing.T) {
		b := e.browser()
		p := form(b)
		f := parseForm(t, p.body)
		for k, v := range creds {
			f.fields[k] = v
		}
		action, _ := p.url.Parse(f.action)
		req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(f.fields.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		r := b.do(req)
		if r.location != nil || r.status < 400 || r.status >= 500 {
			t.Fatalf("cross-site login post: status %d location %v, want a 4xx", r.status, r.location)
		}
	})
	t.Run("tampered hidden fields", func(t *testing.T) {
		b := e.browser()
		p := form(b)
		f := parseForm(t, p.body)
		set := url.Values{"username": {aliceUser}, "password": {alicePassword}}
		for k, v := range f.fields {
			if k != "username" && k != "password" && len(v) == 1 && len(v[0]) > 8 {
				set.Set(k, v[0][:len(v[0])-4]+"AAAA")
			}
		}
		r := b.submit(p, set)
		if r.location != nil || r.status < 400 || r.status >= 500 {
			t.Fatalf("tampered form: status %d location %v, want a 4xx", r.status, r.location)
		}
	})
	t.Run("no hidden fields", func(t *testing.T) {
		b := e.browser()
		p := form(b)
		f := parseForm(t, p.body)
		action, _ := p.url.Parse(f.action)
		r := b.postForm(action.String(), creds)
		if r.location != nil || r.status < 400 || r.status >= 500 {
			t.Fatalf("bare credentials post: status %d location %v, want a 4xx", r.status, r.location)
		}
	})
}

// TestTokenErrors: every RFC 6749 §5.2 error of the token endpoint, with
// invalid_grant's description naming the exact cause.
func TestTokenErrors(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	p := e.provider()
	b := e.browser() // keeps the SSO session: new codes need no password
	spaB := e.browser()

	newCode := func(clientID string, br *browser) (*flow, string) {
		t.Helper()
		fl := newFlow(e.oauth2Config(p, clientID))
		return fl, br.code(fl.authURL())
	}
	codeForm := func(fl *flow, code string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fl.conf.RedirectURL}, "code_verifier": {fl.verifier}}
	}

	t.Run("client authentication", func(t *testing.T) {
		fl, code := newCode(webID, b)
		form := codeForm(fl, code)
		for _, tc := range []struct {
			name   string
			a      auth
			header string
			status int
			code   string
		}{
			{"none", noAuth, "", 401, "invalid_client"},
			{"wrong secret basic", auth{id: webID, secret: "wrong-secret-0123456789", basic: true}, "", 401, "invalid_client"},
			{"wrong secret post", auth{id: webID, secret: "wrong-secret-0123456789"}, "", 401, "invalid_client"},
			{"unknown client", auth{id: "nope", secret: "whatever-0123456789", basic: true}, "", 401, "invalid_client"},
			{"confidential without secret", auth{id: webID}, "", 401, "invalid_client"},
			{"public client with secret", auth{id: spaID, secret: "x-0123456789abcdef"}, "", 401, "invalid_client"},
			{"malformed basic", noAuth, "Basic !!!not-base64", 401, "invalid_client"},
			{"basic and post", webPost, basicAuth(webID, webSecret), 400, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
				f := cloneValues(form)
				if tc.header != "" {
					h.Set("Authorization", tc.header)
				}
				switch {
				case tc.a.basic:
					h.Set("Authorization", basicAuth(tc.a.id, tc.a.secret))
				case tc.a.id != "":
					f.Set("client_id", tc.a.id)
					if tc.a.secret != "" {
						f.Set("client_secret", tc.a.secret)
					}
				}
				wantError(t, e.request(http.MethodPost, "/token", strings.NewReader(f.Encode()), h), tc.status, tc.code)
			})
		}
		// The failed attempts did not consume the code.
		if r := e.post("/token", webBasic, form); r.status != http.StatusOK {
			t.Fatalf("the code after failed client authentications: %d %s", r.status, r.raw)
		}
	})

	t.Run("request errors", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			a      auth
			form   url.Values
			status int
			code   string
		}{
			{"missing grant_type", webBasic, url.Values{"code": {"x"}}, 400, "invalid_request"},
			{"unsupported grant_type", webBasic, url.Values{"grant_type": {"password"}, "username": {aliceUser}, "password": {alicePassword}}, 400, "unsupported_grant_type"},
			{"client_credentials not allowed", webBasic, url.Values{"grant_type": {"client_credentials"}}, 400, "unauthorized_client"},
			{"authorization_code not allowed", svcBasic, url.Values{"grant_type": {"authorization_code"}, "code": {"x"}, "code_verifier": {oauth2.GenerateVerifier()}, "redirect_uri": {webRedirect}}, 400, "unauthorized_client"},
			{"client_credentials unknown scope", svcBasic, url.Values{"grant_type": {"client_credentials"}, "scope": {"admin"}}, 400, "invalid_scope"},
			{"missing code", webBasic, url.Values{"grant_type": {"authorization_code"}, "redirect_uri": {webRedirect}, "code_verifier": {oauth2.GenerateVerifier()}}, 400, "invalid_request"},
			{"unknown code", webBasic, url.Values{"grant_type": {"authorization_code"}, "code": {"bm90LWEtY29kZQ"}, "redirect_uri": {webRedirect}, "code_verifier": {oauth2.GenerateVerifier()}}, 400, "invalid_grant"},
			{"missing refresh_token", webBasic, url.Values{"grant_type": {"refresh_token"}}, 400, "invalid_request"},
			{"garbage refresh_token", webBasic, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"garbage"}}, 400, "invalid_grant"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantError(t, e.post("/token", tc.a, tc.form), tc.status, tc.code)
			})
		}
	})

	t.Run("malformed requests", func(t *testing.T) {
		h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Authorization": {basicAuth(webID, webSecret)}}
		for _, tc := range []struct {
			name, body, ctype string
			status            int
		}{
			{"json body", `{"grant_type":"client_credentials"}`, "application/json", 400},
			{"bad percent-encoding", "grant_type=authorization_code&code=%zz", "", 400},
			{"repeated parameter", "grant_type=refresh_token&grant_type=authorization_code", "", 400},
			{"huge parameter", "grant_type=refresh_token&refresh_token=" + strings.Repeat("a", 10000), "", 400},
			{"oversized body", "grant_type=refresh_token&pad=" + strings.Repeat("a", 1<<20), "", 413},
			{"invalid utf-8", "grant_type=refresh_token&refresh_token=%ff%fe", "", 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hh := h.Clone()
				if tc.ctype != "" {
					hh.Set("Content-Type", tc.ctype)
				}
				r, err := e.tryRequest(http.MethodPost, "/token", strings.NewReader(tc.body), hh)
				if err != nil {
					// A server refusing an oversized body may answer 413
					// and close before the client has written it all;
					// the client then sees a reset instead of the answer.
					if tc.status == 413 && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
						if r := e.post("/token", webBasic, url.Values{"grant_type": {"password"}}); r.status != 400 {
							t.Fatalf("the issuer after an oversized body: %d %s", r.status, r.raw)
						}
						return
					}
					t.Fatalf("POST /token: %v", err)
				}
				if r.status == 400 || tc.status == 400 {
					wantError(t, r, tc.status, "invalid_request")
				} else if r.status != tc.status {
					t.Fatalf("status %d (%s), want %d", r.status, r.raw, tc.status)
				}
			})
		}
		if r := e.request(http.MethodGet, "/token", nil, nil); r.status < 400 || r.status >= 500 {
			t.Errorf("GET /token: %d", r.status)
		}
	})

	t.Run("code causes", func(t *testing.T) {
		t.Run("PKCE verifier does not match", func(t *testing.T) {
			fl, code := newCode(webID, b)
			f := codeForm(fl, code)
			f.Set("code_verifier", oauth2.GenerateVerifier())
			wantGrantError(t, e.post("/token", webBasic, f), "verifier")
		})
		t.Run("missing verifier", func(t *testing.T) {
			fl, code := newCode(webID, b)
			f := codeForm(fl, code)
			f.Del("code_verifier")
			r := e.post("/token", webBasic, f)
			if r.str("error") != "invalid_request" && r.str("error") != "invalid_grant" || r.status != 400 {
				t.Fatalf("no code_verifier: %d %s, want 400 invalid_request or invalid_grant", r.status, r.raw)
			}
			if !strings.Contains(r.str("error_description"), "code_verifier") {
				t.Errorf("description %q does not name code_verifier", r.str("error_description"))
			}
		})
		t.Run("redirect_uri differs", func(t *testing.T) {
			fl, code := newCode(webID, b)
			f := codeForm(fl, code)
			f.Set("redirect_uri", webRedirect+"/other")
			wantGrantError(t, e.post("/token", webBasic, f), "redirect_uri")
		})
		t.Run("issued to another client", func(t *testing.T) {
			fl, code := newCode(spaID, spaB)
			wantGrantError(t, e.post("/token", webBasic, codeForm(fl, code)), "another client")
		})
		t.Run("already used", func(t *testing.T) {
			fl, code := newCode(webID, b)
			if r := e.post("/token", webBasic, codeForm(fl, code)); r.status != 200 {
				t.Fatalf("first use: %d %s", r.status, r.raw)
			}
			wantGrantError(t, e.post("/token", webBasic, codeForm(fl, code)), "already")
		})
		t.Run("expired", func(t *testing.T) {
			fl, code := newCode(webID, b)
			e.clock.Advance(61 * time.Second)
			wantGrantError(t, e.post("/token", webBasic, codeForm(fl, code)), "expired")
		})
	})

	t.Run("refresh causes", func(t *testing.T) {
		fresh := func() tokens {
			t.Helper()
			fl, code := newCode(webID, b)
			r := e.post("/token", webBasic, codeForm(fl, code))
			if r.status != 200 || r.str("refresh_token") == "" {
				t.Fatalf("exchange: %d %s", r.status, r.raw)
			}
			return tokens{access: r.str("access_token"), refresh: r.str("refresh_token"), id: r.str("id_token")}
		}
		t.Run("issued to another client", func(t *testing.T) {
			tk := fresh()
			wantGrantError(t, e.refresh(otherBasic, tk.refresh), "another client")
			if r := e.refresh(webBasic, tk.refresh); r.status != 200 {
				t.Fatalf("the owner's refresh after a foreign attempt: %d %s", r.status, r.raw)
			}
		})
		t.Run("access token as refresh token", func(t *testing.T) {
			tk := fresh()
			wantError(t, e.refresh(webBasic, tk.access), 400, "invalid_grant")
		})
		t.Run("ID token as refresh token", func(t *testing.T) {
			tk := fresh()
			wantError(t, e.refresh(webBasic, tk.id), 400, "invalid_grant")
		})
		t.Run("revoked", func(t *testing.T) {
			tk := fresh()
			if r := e.revoke(webBasic, tk.refresh, "refresh_token"); r.status != 200 {
				t.Fatalf("revoke: %d %s", r.status, r.raw)
			}
			wantGrantError(t, e.refresh(webBasic, tk.refresh), "revoked")
		})
		t.Run("rotated away", func(t *testing.T) {
			tk := fresh()
			if r := e.refresh(webBasic, tk.refresh); r.status != 200 {
				t.Fatalf("refresh: %d %s", r.status, r.raw)
			}
			wantGrantError(t, e.refresh(webBasic, tk.refresh), "rotated")
		})
		t.Run("scope broader than granted", func(t *testing.T) {
			fl := newFlow(e.oauth2Config(p, webID, "openid", "offline_access"))
			r := e.post("/token", webBasic, codeForm(fl, b.code(fl.authURL())))
			if r.status != 200 {
				t.Fatalf("exchange: %d %s", r.status, r.raw)
			}
			wantError(t, e.post("/token", webBasic, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.str("refresh_token")}, "scope": {"openid email"}}), 400, "invalid_scope")
			nr := e.post("/token", webBasic, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.str("refresh_token")}, "scope": {"openid"}})
			if nr.status != 200 || nr.str("scope") != "openid" {
				t.Fatalf("narrowed refresh: %d %s, want scope openid", nr.status, nr.raw)
			}
		})
		t.Run("expired", func(t *testing.T) {
			tk := fresh()
			e.clock.Advance(25 * time.Hour)
			wantGrantError(t, e.refresh(webBasic, tk.refresh), "expired")
		})
	})
}

// TestEndSession: RP-initiated logout with id_token_hint; the
// post_logout_redirect_uri is honoured only when registered for the client
// the hint names; state is echoed; the SSO session ends.
func TestEndSession(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})

	logout := func(b *browser, q url.Values) page {
		t.Helper()
		p := b.get(e.url + "/logout?" + q.Encode())
		if p.status == http.StatusOK && strings.Contains(p.body, "<form") {
			p = b.submit(p, nil)
		}
		return p
	}

	t.Run("registered uri", func(t *testing.T) {
		b, fl, tk := e.loginTokens(webID)
		p := logout(b, url.Values{"id_token_hint": {tk.id}, "post_logout_redirect_uri": {webLogout}, "state": {"bye"}})
		if p.location == nil || !strings.HasPrefix(p.location.String(), webLogout) || p.location.Query().Get("state") != "bye" {
			t.Fatalf("logout: status %d location %v, want %s?state=bye", p.status, p.location, webLogout)
		}
		q := b.get(fl.authURL(oauth2.SetAuthURLParam("prompt", "none")))
		if q.location == nil || q.location.Query().Get("error") != "login_required" {
			t.Fatalf("prompt=none after logout: status %d location %v, want login_required", q.status, q.location)
		}
	})
	t.Run("logout_hint with the sid", func(t *testing.T) {
		b, fl, tk := e.loginTokens(webID)
		claims := payload(t, tk.id)
		sid, _ := claims["sid"].(string)
		if sid == "" {
			t.Fatal("ID token without sid")
		}
		// A wrong hint is not proof: the user is asked.
		p := b.get(e.url + "/logout?" + url.Values{"client_id": {webID}, "logout_hint": {sid + "x"}, "post_logout_redirect_uri": {webLogout}}.Encode())
		if p.location != nil || !strings.Contains(p.body, "<form") {
			t.Fatalf("wrong logout_hint: status %d location %v, want the confirmation form", p.status, p.location)
		}
		p = b.get(e.url + "/logout?" + url.Values{"client_id": {webID}, "logout_hint": {sid}, "post_logout_redirect_uri": {webLogout}, "state": {"s1"}}.Encode())
		if p.location == nil || !strings.HasPrefix(p.location.String(), webLogout) || p.location.Query().Get("state") != "s1" {
			t.Fatalf("logout_hint: status %d location %v, want %s?state=s1 without confirmation", p.status, p.location, webLogout)
		}
		q := b.get(fl.authURL(oauth2.SetAuthURLParam("prompt", "none")))
		if q.location == nil || q.location.Query().Get("error") != "login_required" {
			t.Fatalf("prompt=none after logout: status %d location %v, want login_required", q.status, q.location)
		}
	})
	t.Run("expired hint", func(t *testing.T) {
		b, _, tk := e.loginTokens(webID)
		e.clock.Advance(time.Hour)
		p := logout(b, url.Values{"id_token_hint": {tk.id}, "post_logout_redirect_uri": {webLogout}})
		if p.location == nil || !strings.HasPrefix(p.location.String(), webLogout) {
			t.Fatalf("logout with an expired id_token_hint: status %d location %v, want the redirect (RP-Initiated Logout §2)", p.status, p.location)
		}
	})
	for _, tc := range []struct {
		name string
		q    func(tk tokens) url.Values
	}{
		{"unregistered uri", func(tk tokens) url.Values {
			return url.Values{"id_token_hint": {tk.id}, "post_logout_redirect_uri": {"https://evil.example/"}}
		}},
		{"uri of another client", func(tk tokens) url.Values {
			return url.Values{"id_token_hint": {tk.id}, "post_logout_redirect_uri": {otherRedirect}}
		}},
		{"uri without hint or client_id", func(tokens) url.Values {
			return url.Values{"post_logout_redirect_uri": {webLogout}}
		}},
		{"forged hint", func(tk tokens) url.Values {
			return url.Values{"id_token_hint": {tk.id[:len(tk.id)-6] + "AAAAAA"}, "post_logout_redirect_uri": {webLogout}}
		}},
		{"client_id differs from hint", func(tk tokens) url.Values {
			return url.Values{"id_token_hint": {tk.id}, "client_id": {otherID}, "post_logout_redirect_uri": {webLogout}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _, tk := e.loginTokens(webID)
			p := logout(b, tc.q(tk))
			if p.location != nil {
				t.Fatalf("redirected to %s; want no redirect to an unchecked post_logout_redirect_uri", p.location)
			}
			if p.status >= 500 {
				t.Fatalf("status %d", p.status)
			}
		})
	}
}

// TestErrorDescriptionCharset sends client input that the issuer quotes
// back (grant types, scopes, response types, Content-Type) holding '"',
// '\\', '§', control characters and non-ASCII, to every endpoint that
// answers with an RFC 6749 error, and checks every error_description it
// gets (JSON body, Bearer challenge, error redirect) is within RFC 6749
// §5.2's %x20-21 / %x23-5B / %x5D-7E. wantError checks the charset of
// every other error test too.
func TestErrorDescriptionCharset(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	const evil = "x\"y\\z §1 é\u2014\t日本\u0001"
	const evilHeader = "x\"y\\z §1 é\u2014\t日本" // what net/http lets into a header
	_, _, tk := e.loginTokens(webID)
	form := "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name   string
		a      auth
		form   url.Values
		status int
		code   string
	}{
		{"grant_type echoed", webBasic, url.Values{"grant_type": {evil}}, 400, "unsupported_grant_type"},
		{"client_credentials scope echoed", svcBasic, url.Values{"grant_type": {"client_credentials"}, "scope": {"admin" + evil}}, 400, "invalid_scope"},
		{"client_credentials openid", svcBasic, url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}, 400, "invalid_scope"},
		{"refresh scope", webBasic, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.refresh}, "scope": {"openid" + evil}}, 400, "invalid_scope"},
		{"public client at introspection", spaNone, url.Values{"token": {"x"}}, 401, "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/token"
			if tc.name == "public client at introspection" {
				path = "/introspect"
			}
			wantError(t, e.post(path, tc.a, tc.form), tc.status, tc.code)
		})
	}
	t.Run("Content-Type echoed", func(t *testing.T) {
		h := http.Header{"Content-Type": {"text/plain; x=\"" + evilHeader + "\""}, "Authorization": {basicAuth(webID, webSecret)}}
		r := e.request(http.MethodPost, "/token", strings.NewReader("grant_type=refresh_token"), h)
		wantError(t, r, 400, "invalid_request")
	})
	t.Run("token in the query", func(t *testing.T) {
		h := http.Header{"Content-Type": {form}, "Authorization": {basicAuth(webID, webSecret)}}
		wantError(t, e.request(http.MethodPost, "/token?"+url.Values{"x": {evil}}.Encode(), strings.NewReader("grant_type=refresh_token"), h), 400, "invalid_request")
	})
	t.Run("userinfo challenge", func(t *testing.T) {
		wantError(t, e.request(http.MethodGet, "/userinfo", nil, http.Header{"Authorization": {"Basic " + evilHeader}}), 401, "invalid_token")
		wantError(t, e.userinfo("a.b.c"), 401, "invalid_token")
	})
	t.Run("authorize redirect", func(t *testing.T) {
		v := authParams(oauth2.GenerateVerifier())
		v.Set("response_type", "token"+evil)
		p := e.browser().get(e.url + "/authorize?" + v.Encode())
		if p.location == nil {
			t.Fatalf("status %d, want an error redirect", p.status)
		}
		q := p.location.Query()
		if q.Get("error") != "unsupported_response_type" {
			t.Fatalf("error %q, want unsupported_response_type", q.Get("error"))
		}
		wantDescriptionCharset(t, "redirect", q.Get("error_description"))
		v = authParams(oauth2.GenerateVerifier())
		v.Set("scope", "openid admin"+evil)
		q = e.browser().get(e.url + "/authorize?" + v.Encode()).location.Query()
		if q.Get("error") != "invalid_scope" {
			t.Fatalf("error %q, want invalid_scope", q.Get("error"))
		}
		wantDescriptionCharset(t, "redirect", q.Get("error_description"))
	})
}
