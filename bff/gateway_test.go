package bff

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/web"
)

// userBody is /bff/user's answer.
type userBody []struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

func (u userBody) values(typ string) []any {
	var out []any
	for _, c := range u {
		if c.Type == typ {
			out = append(out, c.Value)
		}
	}
	return out
}

func (u userBody) value(typ string) any {
	if v := u.values(typ); len(v) == 1 {
		return v[0]
	}
	return nil
}

func (b *browser) user(t *testing.T) userBody {
	t.Helper()
	r := b.api(http.MethodGet, "/bff/user")
	if r.status != 200 {
		t.Fatalf("/bff/user: %d %s", r.status, clip(r.body))
	}
	var u userBody
	r.json(t, &u)
	return u
}

func forKinds(t *testing.T, fn func(t *testing.T, kind storeKind)) {
	for _, k := range storeKinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			fn(t, k)
		})
	}
}

func TestLoginAndUser(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		b := e.browser()

		r := b.api(http.MethodGet, "/bff/user")
		if r.status != 401 || !strings.Contains(r.body, `"error":"login_required"`) || !strings.Contains(r.body, `"login_url":"/bff/login"`) {
			t.Fatalf("anonymous /bff/user: %d %s", r.status, r.body)
		}

		b.mustLogin("alice", alicePassword)
		u, _ := url.Parse(e.gwURL)
		var names []string
		for _, c := range b.jar.Cookies(u) {
			names = append(names, c.Name)
		}
		if b.handle() == "" {
			t.Fatalf("no session cookie after login; cookies %v", names)
		}

		if r := b.do(b.noRedirect(), http.MethodGet, e.gwURL+"/bff/user", nil, nil); r.status != 403 || !strings.Contains(r.body, "csrf_header_missing") {
			t.Fatalf("/bff/user without X-CSRF: %d %s", r.status, r.body)
		}
		user := b.user(t)
		if user.value("sub") != "user-alice" || user.value("name") != "Alice Example" || user.value("email") != "alice@example.test" {
			t.Fatalf("claims: %+v", user)
		}
		for _, c := range user {
			switch c.Type {
			case "nonce", "aud", "iss", "exp", "iat", "at_hash":
				t.Fatalf("protocol claim %s in /bff/user", c.Type)
			}
			if s, ok := c.Value.(string); ok && strings.Count(s, ".") == 2 && len(s) > 100 {
				t.Fatalf("a token-shaped value in /bff/user: %s", c.Type)
			}
		}
		sid, _ := user.value("sid").(string)
		lo, _ := user.value("bff:logout_url").(string)
		if sid == "" || lo != "/bff/logout?sid="+url.QueryEscape(sid) {
			t.Fatalf("sid %q, logout url %q", sid, lo)
		}
		if exp, _ := user.value("bff:session_expires_in").(float64); exp < 1790 || exp > 1800 {
			t.Fatalf("bff:session_expires_in = %v, want 1800 (idle timeout)", user.value("bff:session_expires_in"))
		}
		s := b.session()
		if s == nil || s.Subject != "user-alice" || s.RefreshToken == "" || s.AccessToken == "" || s.IDToken == "" {
			t.Fatalf("stored session %+v", s)
		}
		if s.AbsoluteExpiry.After(e.clock.Now().Add(12 * time.Hour)) {
			t.Fatalf("absolute expiry %v beyond 12h", s.AbsoluteExpiry)
		}
		if got := counterValue(e.gw.met.loginsCompleted); got != 1 {
			t.Fatalf("logins completed = %v", got)
		}
		if got := counterValue(e.gw.met.sessionsCreated); got != 1 {
			t.Fatalf("sessions created = %v", got)
		}
	})
}

func TestSessionCookieAttributes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	p := b.get("/bff/login?returnUrl=/x", nil)
	action, fields := parseForm(t, p.body)
	au, _ := p.url.Parse(action)
	fields.Set("username", "alice")
	fields.Set("password", alicePassword)
	c := b.noRedirect()
	r := b.do(c, http.MethodPost, au.String(), strings.NewReader(fields.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if r.status != http.StatusFound && r.status != http.StatusSeeOther {
		t.Fatalf("login form: %d", r.status)
	}
	loc, _ := r.url.Parse(r.header.Get("Location"))
	req, _ := http.NewRequest(http.MethodGet, loc.String(), nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/x" {
		t.Fatalf("callback: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session, flowCleared bool
	for _, line := range resp.Header.Values("Set-Cookie") {
		low := strings.ToLower(line)
		if !strings.Contains(low, "secure") || !strings.Contains(low, "httponly") || !strings.Contains(low, "path=/") || !strings.Contains(low, "samesite=lax") || strings.Contains(low, "domain=") {
			t.Fatalf("cookie attributes: %s", line)
		}
		if strings.HasPrefix(line, "__Host-bff=") {
			session = true
		}
		if strings.HasPrefix(line, "__Host-bff-flow.") && strings.Contains(low, "expires=") {
			flowCleared = true
		}
	}
	if !session || !flowCleared {
		t.Fatalf("Set-Cookie: %q", resp.Header.Values("Set-Cookie"))
	}
}

func TestParallelLogins(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		b := e.browser()
		c := b.noRedirect()
		start := func(ret string) string {
			r := b.do(c, http.MethodGet, e.gwURL+"/bff/login?returnUrl="+url.QueryEscape(ret), nil, nil)
			if r.status != http.StatusFound {
				t.Fatalf("login: %d %s", r.status, r.body)
			}
			return r.header.Get("Location")
		}
		tab1, tab2 := start("/one"), start("/two")
		// Tab 2 finishes first, through the login form.
		p := b.do(b.client, http.MethodGet, tab2, nil, nil)
		action, fields := parseForm(t, p.body)
		au, _ := p.url.Parse(action)
		fields.Set("username", "alice")
		fields.Set("password", alicePassword)
		p = b.do(b.client, http.MethodPost, au.String(), strings.NewReader(fields.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		if p.status != 200 || p.body != "spa /two" {
			t.Fatalf("tab 2: %d %s", p.status, clip(p.body))
		}
		// Tab 1 then finishes on the issuer's single sign-on session.
		p = b.do(b.client, http.MethodGet, tab1, nil, nil)
		if p.status != 200 || p.body != "spa /one" {
			t.Fatalf("tab 1: %d %s", p.status, clip(p.body))
		}
		if b.user(t).value("sub") != "user-alice" {
			t.Fatal("no session after both logins")
		}
	})
}

func TestMaxFlows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{gateway: func(c *Config) { c.Cookie.MaxFlows = 3 }})
	b := e.browser()
	c := b.noRedirect()
	for range 6 {
		if r := b.do(c, http.MethodGet, e.gwURL+"/bff/login", nil, nil); r.status != http.StatusFound {
			t.Fatalf("login: %d", r.status)
		}
	}
	u, _ := url.Parse(e.gwURL)
	n := 0
	for _, ck := range b.jar.Cookies(u) {
		if strings.HasPrefix(ck.Name, "__Host-bff-flow.") {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d flow cookies, want 3", n)
	}
}

func TestReturnURLAttacksRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	c := b.noRedirect()
	for _, attack := range returnURLAttacks {
		r := b.do(c, http.MethodGet, e.gwURL+"/bff/login?returnUrl="+url.QueryEscape(attack), nil, map[string]string{"Accept": "application/json"})
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, `"error":"invalid_return_url"`) {
			t.Errorf("returnUrl %q: %d %s", attack, r.status, r.body)
		}
	}
	// The HTML form of the refusal.
	r := b.do(c, http.MethodGet, e.gwURL+"/bff/login?returnUrl=//evil.example", nil, map[string]string{"Accept": "text/html"})
	if r.status != 400 || !strings.Contains(r.header.Get("Content-Type"), "text/html") || !strings.Contains(r.body, `href="/bff/login"`) {
		t.Fatalf("HTML refusal: %d %s", r.status, clip(r.body))
	}
	if got := counterValue(e.gw.met.loginsFailed.WithLabelValues("invalid_return_url")); got != float64(len(returnURLAttacks)+1) {
		t.Fatalf("failed logins counted: %v", got)
	}
}

func TestCallbackState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	json := map[string]string{"Accept": "application/json"}

	t.Run("missing state", func(t *testing.T) {
		b := e.browser()
		r := b.do(b.noRedirect(), http.MethodGet, e.gwURL+"/bff/callback?code=abc", nil, json)
		if r.status != 400 || !strings.Contains(r.body, "state_missing") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("mismatch", func(t *testing.T) {
		b := e.browser()
		c := b.noRedirect()
		b.do(c, http.MethodGet, e.gwURL+"/bff/login", nil, nil)
		r := b.do(c, http.MethodGet, e.gwURL+"/bff/callback?code=abc&state=forged", nil, json)
		if r.status != 400 || !strings.Contains(r.body, "state_mismatch") {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if b.handle() != "" {
			t.Fatal("session created on a forged state")
		}
	})
	t.Run("flow gone restarts", func(t *testing.T) {
		b := e.browser()
		c := b.noRedirect()
		r := b.do(c, http.MethodGet, e.gwURL+"/bff/callback?code=abc&state=old-tab", nil, nil)
		if r.status != http.StatusFound || r.header.Get("Location") != "/bff/login?restart=1" {
			t.Fatalf("%d %q", r.status, r.header.Get("Location"))
		}
		r = b.do(c, http.MethodGet, e.gwURL+"/bff/callback?code=abc&state="+restartMarker+"again", nil, json)
		if r.status != 400 || !strings.Contains(r.body, "cookies_blocked") {
			t.Fatalf("restarted flow without cookie: %d %s", r.status, r.body)
		}
	})
	t.Run("provider error", func(t *testing.T) {
		b := e.browser()
		c := b.noRedirect()
		r := b.do(c, http.MethodGet, e.gwURL+"/bff/login?returnUrl=/back", nil, nil)
		loc, _ := url.Parse(r.header.Get("Location"))
		state := loc.Query().Get("state")
		r = b.do(c, http.MethodGet, e.gwURL+"/bff/callback?error=access_denied&error_description=%3Cscript%3E&state="+url.QueryEscape(state), nil, nil)
		if r.status != 400 || !strings.Contains(r.body, "cancelled or refused") || strings.Contains(r.body, "<script>") ||
			!strings.Contains(r.body, `href="/bff/login?returnUrl=%2Fback"`) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("exchange failure", func(t *testing.T) {
		b := e.browser()
		c := b.noRedirect()
		r := b.do(c, http.MethodGet, e.gwURL+"/bff/login", nil, nil)
		loc, _ := url.Parse(r.header.Get("Location"))
		state := loc.Query().Get("state")
		r = b.do(c, http.MethodGet, e.gwURL+"/bff/callback?code=not-a-code&iss="+url.QueryEscape(e.issuer)+"&state="+url.QueryEscape(state), nil, json)
		if r.status != 400 || !strings.Contains(r.body, "exchange_failed") || !strings.Contains(r.body, "login_url") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("wrong issuer", func(t *testing.T) {
		b := e.browser()
		c := b.noRedirect()
		r := b.do(c, http.MethodGet, e.gwURL+"/bff/login", nil, nil)
		loc, _ := url.Parse(r.header.Get("Location"))
		state := loc.Query().Get("state")
		r = b.do(c, http.MethodGet, e.gwURL+"/bff/callback?code=x&iss=https%3A%2F%2Fevil.example&state="+url.QueryEscape(state), nil, json)
		if r.status != 400 || !strings.Contains(r.body, "issuer_mismatch") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("missing issuer", func(t *testing.T) {
		// The embedded issuer promises iss (RFC 9207): a response without
		// it is refused, and the page does not claim another issuer sent it.
		b := e.browser()
		c := b.noRedirect()
		r := b.do(c, http.MethodGet, e.gwURL+"/bff/login", nil, nil)
		loc, _ := url.Parse(r.header.Get("Location"))
		state := loc.Query().Get("state")
		r = b.do(c, http.MethodGet, e.gwURL+"/bff/callback?code=x&state="+url.QueryEscape(state), nil, nil)
		if r.status != 400 || !strings.Contains(r.body, "issuer_missing") || strings.Contains(r.body, "another issuer") ||
			!strings.Contains(r.body, "does not say which issuer sent it") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

// TestErrorPageLooksLikeTheIssuers checks that the gateway's error page is
// the issuer's page (package web): same stylesheet and policy, sentences
// with a capital letter and a full stop, the way on as a button.
func TestErrorPageLooksLikeTheIssuers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	r := b.do(b.noRedirect(), http.MethodGet, e.gwURL+"/bff/login?returnUrl=//evil.example", nil, nil)
	if r.status != 400 {
		t.Fatalf("status %d", r.status)
	}
	pages, err := web.New(web.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.header.Get("Content-Security-Policy"); got != pages.ContentSecurityPolicy() {
		t.Errorf("CSP %q, want the issuer pages' %q", got, pages.ContentSecurityPolicy())
	}
	for _, want := range []string{
		"<h1>This sign-in link is not valid</h1>",
		"<p>The returnUrl was refused because it starts with // (another host); it must be a local path on this site, such as /orders.</p>",
		`<code id="error-code">invalid_return_url</code>`,
		`<a class="button" id="next" href="/bff/login">Sign in</a>`,
		"--accent", // the issuer's stylesheet
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Count(r.body, "local path") != 1 {
		t.Errorf("the page repeats itself:\n%s", r.body)
	}
}

// TestCallbackWhenIssuerUnavailable: the provider's token endpoint cannot
// serve (its store is gone) when the browser comes back with a good code.
// The page says the sign-in service is unavailable and to retry, not that
// the code may have expired.
func TestCallbackWhenIssuerUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindCookie, envOptions{})
	b := e.browser()
	p := b.get("/bff/login?returnUrl=/back", nil)
	if p.status != 200 || !strings.Contains(p.body, `name="password"`) {
		t.Fatalf("no login form: %d %s", p.status, clip(p.body))
	}
	action, fields := parseForm(t, p.body)
	au, err := p.url.Parse(action)
	if err != nil {
		t.Fatal(err)
	}
	fields.Set("username", "alice")
	fields.Set("password", alicePassword)
	c := b.noRedirect()
	r := b.do(c, http.MethodPost, au.String(), strings.NewReader(fields.Encode()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	callback := r.header.Get("Location")
	if r.status/100 != 3 || !strings.Contains(callback, "/bff/callback?") {
		t.Fatalf("login form answered %d to %q", r.status, callback)
	}
	if err := e.db.Close(); err != nil { // the issuer's store fails
		t.Fatal(err)
	}
	r = b.do(c, http.MethodGet, callback, nil, nil)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "The sign-in service is unavailable right now") ||
		!strings.Contains(r.body, "try again") || strings.Contains(r.body, "expired") || !strings.Contains(r.body, `href="/bff/login?returnUrl=%2Fback"`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		b := e.browser()
		b.mustLogin("alice", alicePassword)
		s := b.session()
		if !e.introspect(s.RefreshToken) {
			t.Fatal("refresh token inactive before logout")
		}
		c := b.noRedirect()
		// A plain link without the sid cannot log the user out.
		if r := b.do(c, http.MethodGet, e.gwURL+"/bff/logout", nil, nil); r.status != 400 {
			t.Fatalf("logout without sid: %d", r.status)
		}
		if r := b.do(c, http.MethodGet, e.gwURL+"/bff/logout?sid=guess", nil, nil); r.status != 400 {
			t.Fatalf("logout with a wrong sid: %d", r.status)
		}
		// Nor a POST without the anti-CSRF header.
		if r := b.do(c, http.MethodPost, e.gwURL+"/bff/logout", nil, nil); r.status != 403 {
			t.Fatalf("POST logout without X-CSRF: %d", r.status)
		}
		if b.session() == nil {
			t.Fatal("session ended by a refused logout")
		}
		lo, _ := b.user(t).value("bff:logout_url").(string)
		h := b.handle()
		r := b.do(c, http.MethodGet, e.gwURL+lo, nil, nil)
		if r.status != http.StatusFound {
			t.Fatalf("logout: %d %s", r.status, r.body)
		}
		loc, _ := url.Parse(r.header.Get("Location"))
		q := loc.Query()
		if loc.Scheme+"://"+loc.Host+loc.Path != e.issuer+"/logout" || q.Get("logout_hint") != s.SID || s.SID == "" ||
			q.Get("client_id") == "" || q.Get("post_logout_redirect_uri") != e.gwURL+"/" {
			t.Fatalf("logout redirect %s", loc)
		}
		if q.Has("id_token_hint") || strings.Contains(loc.String(), "eyJ") {
			t.Fatalf("logout redirect carries a token in the URL: %s", loc)
		}
		if b.handle() != "" {
			t.Fatal("session cookie not cleared")
		}
		if _, err := e.store.Get(context.Background(), h); !errors.Is(err, session.ErrNotFound) {
			t.Fatal("session still in the store")
		}
		if e.introspect(s.RefreshToken) {
			t.Fatal("refresh token still active at the issuer after logout")
		}
		if r := b.api(http.MethodGet, "/bff/user"); r.status != 401 {
			t.Fatalf("/bff/user after logout: %d", r.status)
		}
		if got := counterValue(e.gw.met.logouts); got != 1 {
			t.Fatalf("logouts = %v", got)
		}
	})
}

func TestLogoutPOSTJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	r := b.do(b.noRedirect(), http.MethodPost, e.gwURL+"/bff/logout", nil, map[string]string{"X-CSRF": "1", "Accept": "application/json"})
	var out struct {
		Redirect string `json:"redirect"`
	}
	r.json(t, &out)
	if r.status != 200 || !strings.HasPrefix(out.Redirect, e.issuer+"/logout?") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if b.session() != nil {
		t.Fatal("session survived logout")
	}
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		t.Run("idle", func(t *testing.T) {
			e := newEnv(t, kind, envOptions{})
			b := e.browser()
			b.mustLogin("alice", alicePassword)
			e.clock.Advance(31 * time.Minute)
			r := b.api(http.MethodGet, "/bff/user")
			if r.status != 401 {
				t.Fatalf("after 31 idle minutes: %d %s", r.status, r.body)
			}
			if b.handle() != "" {
				t.Fatal("expired session's cookie not cleared")
			}
		})
		t.Run("sliding", func(t *testing.T) {
			e := newEnv(t, kind, envOptions{})
			b := e.browser()
			b.mustLogin("alice", alicePassword)
			for range 4 {
				e.clock.Advance(20 * time.Minute)
				b.user(t)
			}
			e.clock.Advance(20 * time.Minute)
			if r := b.api(http.MethodGet, "/bff/user?slide=false"); r.status != 200 {
				t.Fatalf("slide=false: %d", r.status)
			}
			e.clock.Advance(15 * time.Minute) // 35 minutes since the last slide
			if r := b.api(http.MethodGet, "/bff/user"); r.status != 401 {
				t.Fatalf("slide=false extended the session: %d", r.status)
			}
		})
		t.Run("absolute", func(t *testing.T) {
			e := newEnv(t, kind, envOptions{gateway: func(c *Config) { c.AbsoluteLifetime = time.Hour }})
			b := e.browser()
			b.mustLogin("alice", alicePassword)
			e.clock.Advance(20 * time.Minute)
			b.user(t)
			e.clock.Advance(20 * time.Minute)
			u := b.user(t)
			if exp, _ := u.value("bff:session_expires_in").(float64); exp != 1200 {
				t.Fatalf("bff:session_expires_in = %v, want 1200 (absolute end)", exp)
			}
			e.clock.Advance(20 * time.Minute)
			if r := b.api(http.MethodGet, "/bff/user"); r.status != 401 {
				t.Fatalf("past the absolute lifetime: %d", r.status)
			}
		})
		t.Run("refresh token bounds the session", func(t *testing.T) {
			e := newEnv(t, kind, envOptions{issuer: func(c *issuer.Config) { c.RefreshTokenTTL = 2 * time.Hour }})
			b := e.browser()
			b.mustLogin("alice", alicePassword)
			s := b.session()
			if want := e.clock.Now().Add(2 * time.Hour); !s.AbsoluteExpiry.Equal(want) {
				t.Fatalf("absolute expiry %v, want the refresh token's %v", s.AbsoluteExpiry, want)
			}
		})
	})
}

func TestTamperedCookies(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		good := e.browser()
		good.mustLogin("alice", alicePassword)
		h := good.handle()
		cases := map[string]string{
			"flipped":   h[:len(h)/2] + string(h[len(h)/2]^1) + h[len(h)/2+1:],
			"truncated": h[:len(h)-5],
			"appended":  h + "AAAA",
			"empty-ish": "x",
			"garbage":   strings.Repeat("%", 40),
		}
		if len(h) > chunkSize {
			cases["first chunk only"] = h[:chunkSize]
		}
		for name, v := range cases {
			t.Run(name, func(t *testing.T) {
				b := e.browser()
				u, _ := url.Parse(e.gwURL)
				b.jar.SetCookies(u, []*http.Cookie{{Name: "__Host-bff", Value: v, Path: "/", Secure: true}})
				r := b.api(http.MethodGet, "/bff/user")
				if r.status != 401 {
					t.Fatalf("%d %s", r.status, r.body)
				}
				cleared := false
				for _, line := range r.header.Values("Set-Cookie") {
					if strings.HasPrefix(line, "__Host-bff=;") {
						cleared = true
					}
				}
				if !cleared {
					t.Fatalf("bad cookie not cleared: %q", r.header.Values("Set-Cookie"))
				}
				if r := b.api(http.MethodGet, "/api/x"); r.status != 401 || !strings.Contains(r.body, "login_required") {
					t.Fatalf("/api with a bad cookie: %d %s", r.status, r.body)
				}
			})
		}
		if good.user(t).value("sub") != "user-alice" {
			t.Fatal("the good session suffered")
		}
	})
}

func TestBackchannelLogout(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		a1, a2, bob := e.browser(), e.browser(), e.browser()
		a1.mustLogin("alice", alicePassword)
		a2.mustLogin("alice", alicePassword)
		bob.mustLogin("bob", bobPassword)
		sid1, _ := a1.user(t).value("sid").(string)
		sid2, _ := a2.user(t).value("sid").(string)
		if sid1 == "" || sid1 == sid2 {
			t.Fatalf("sids %q %q", sid1, sid2)
		}
		// Alice ends her first issuer session at the issuer itself.
		p := a1.do(a1.client, http.MethodGet, e.issuer+"/logout", nil, nil)
		if p.status == 200 && strings.Contains(p.body, "<form") {
			action, fields := parseForm(t, p.body)
			au, _ := p.url.Parse(action)
			p = a1.do(a1.client, http.MethodPost, au.String(), strings.NewReader(fields.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		}
		tok := e.bclRec.last()
		if tok == "" {
			t.Fatalf("the issuer sent no back-channel logout (page %d %s)", p.status, clip(p.body))
		}
		if r := a1.api(http.MethodGet, "/bff/user"); r.status != 401 {
			t.Fatalf("alice's first session survived: %d", r.status)
		}
		if a2.user(t).value("sub") != "user-alice" || bob.user(t).value("sub") != "user-bob" {
			t.Fatal("other sessions ended")
		}
		post := func(form url.Values) result {
			return a2.do(testhttp.Client, http.MethodPost, e.gwURL+"/bff/backchannel-logout", strings.NewReader(form.Encode()),
				map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		}
		if r := post(url.Values{"logout_token": {tok}}); r.status != 400 || !strings.Contains(r.body, "replayed") {
			t.Fatalf("replayed logout token: %d %s", r.status, r.body)
		}
		if r := post(url.Values{"logout_token": {"not.a.token"}}); r.status != 400 || !strings.Contains(r.body, `"error":"invalid_request"`) {
			t.Fatalf("garbage logout token: %d %s", r.status, r.body)
		}
		if r := post(url.Values{}); r.status != 400 {
			t.Fatalf("no logout token: %d %s", r.status, r.body)
		}
		// An ID token is no logout token (it has a nonce, no event).
		if r := post(url.Values{"logout_token": {a2.session().IDToken}}); r.status != 400 {
			t.Fatalf("ID token as logout token: %d %s", r.status, r.body)
		}
		if a2.user(t).value("sub") != "user-alice" {
			t.Fatal("a refused logout token ended a session")
		}
		if got := counterValue(e.gw.met.backchannelLogouts.WithLabelValues("ok")); got < 1 {
			t.Fatalf("back-channel logouts ok = %v", got)
		}
	})
}

func TestParallelUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := e.browser()
			user, pw := "alice", alicePassword
			if i%2 == 1 {
				user, pw = "bob", bobPassword
			}
			p := b.login(user, pw, "/home")
			if p.status != 200 {
				t.Errorf("login %s: %d", user, p.status)
			}
		}()
	}
	wg.Wait()
}

// counterValue reads a counter (prometheus/testutil would need a module
// go.mod does not list).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func TestExpiredFlowRestarts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	c := b.noRedirect()
	r := b.do(c, http.MethodGet, e.gwURL+"/bff/login?returnUrl=/late", nil, nil)
	loc, _ := url.Parse(r.header.Get("Location"))
	state := loc.Query().Get("state")
	e.clock.Advance(11 * time.Minute)
	r = b.do(c, http.MethodGet, e.gwURL+"/bff/callback?code=x&state="+url.QueryEscape(state), nil, nil)
	if r.status != http.StatusFound || r.header.Get("Location") != "/bff/login?restart=1" {
		t.Fatalf("expired flow: %d %q %s", r.status, r.header.Get("Location"), r.body)
	}
}
