package interop

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"

	"github.com/bffgate/bffgate/e2e/browser"
	"github.com/bffgate/bffgate/e2e/peers"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/session"
	sessioncookie "github.com/bffgate/bffgate/session/cookie"
)

// The gateway's client at oidc-provider.
const (
	gwClientID     = "bffgate-gw"
	gwClientSecret = "bffgate-gw-secret-0123456789abcdef"
	cookieName     = "__Host-bff"
)

// csrf is the gateway's default anti-CSRF header.
var csrf = http.Header{"X-Csrf": {"1"}}

// upstream is the API behind the gateway's /api/ route: it records every
// bearer token it receives and, when introspect is on, accepts only those
// the provider's introspection says are active (as a resource server of
// oidc-provider would). The demo API cannot serve here: it verifies
// bffgate-issuer tokens only.
type upstream struct {
	srv        *httptest.Server
	introspect atomic.Bool
	provider   atomic.Pointer[peers.Provider]

	mu     sync.Mutex
	tokens map[string]int // bearer token -> requests that carried it
	exp    int64          // the latest exp introspection reported
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{tokens: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_token","error_description":"no bearer token"}`)
		return
	}
	u.mu.Lock()
	u.tokens[tok]++
	u.mu.Unlock()
	out := map[string]any{"path": r.URL.Path}
	if p := u.provider.Load(); p != nil && u.introspect.Load() {
		in, err := p.Introspect(r.Context(), gwClientID, gwClientSecret, tok)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, `{"error":"introspection_failed","error_description":%q}`, err.Error())
			return
		}
		if !in.Active {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_token","error_description":"the provider says the token is not active"}`)
			return
		}
		u.mu.Lock()
		u.exp = max(u.exp, in.Exp)
		u.mu.Unlock()
		out["sub"], out["exp"] = in.Sub, in.Exp
	}
	_ = json.NewEncoder(w).Encode(out)
}

// seen returns the tokens received so far and the latest exp.
func (u *upstream) seen() (map[string]int, int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[string]int, len(u.tokens))
	for k, v := range u.tokens {
		m[k] = v
	}
	return m, u.exp
}

// gatewayEnv is oidc-provider, the real bffgate binary with the provider
// as its gateway provider, and the upstream API.
type gatewayEnv struct {
	p    *peers.Provider
	st   *stack.Stack
	up   *upstream
	keys []sessioncookie.KeyPair // the session cookie keys given to the gateway
}

type gatewayOptions struct {
	Store      string        // gateway.session.store; default bbolt
	AccessTTL  time.Duration // the provider's access token lifetime; default 60s
	Introspect bool          // the upstream introspects every token
	// Routes are more gateway.routes after /api/; AccountClaims the
	// provider's extra claims by sub; Env more BFFGATE_* variables.
	Routes        []map[string]any
	AccountClaims map[string]map[string]any
	Env           []string
}

func startGateway(t *testing.T, o gatewayOptions) *gatewayEnv {
	t.Helper()
	if o.Store == "" {
		o.Store = "bbolt"
	}
	if o.AccessTTL == 0 {
		o.AccessTTL = time.Minute
	}
	e := &gatewayEnv{up: newUpstream(t)}
	e.up.introspect.Store(o.Introspect)
	// The gateway's redirect URI is known once it listens; the provider
	// starts with a placeholder and gets the real one with SetClient.
	e.p = peers.StartProvider(t, peers.ProviderOptions{
		Clients:        []peers.Client{{ID: gwClientID, Secret: gwClientSecret, RedirectURIs: []string{"http://127.0.0.1/placeholder"}}},
		AccessTokenTTL: o.AccessTTL,
		AccountClaims:  o.AccountClaims,
	})
	e.up.provider.Store(e.p)

	hash, block := randomKey(64), randomKey(32)
	e.keys = []sessioncookie.KeyPair{{Hash: hash, Block: block}}
	keys, _ := json.Marshal([]map[string]string{{
		"hash": base64.StdEncoding.EncodeToString(hash), "block": base64.StdEncoding.EncodeToString(block),
	}})
	for _, r := range o.Routes {
		if r["upstream"] == nil {
			r["upstream"] = e.up.srv.URL
		}
	}
	routes, _ := json.Marshal(append([]map[string]any{{"prefix": "/api/", "upstream": e.up.srv.URL, "policy": "user"}}, o.Routes...))
	e.st = stack.Start(t, stack.Options{Env: append([]string{
		// The harness waits for the issuer too, so it stays on, unused,
		// with the one client it needs to start.
		"BFFGATE_ISSUER_ENABLED=true",
		`BFFGATE_ISSUER_CLIENTS=[{"id": "unused", "redirect_uris": ["http://127.0.0.1/unused"]}]`,
		"BFFGATE_DEMO_API_ENABLED=false",
		"BFFGATE_GATEWAY_PROVIDER_ISSUER_URL=" + e.p.Issuer,
		"BFFGATE_GATEWAY_PROVIDER_CLIENT_ID=" + gwClientID,
		"BFFGATE_GATEWAY_PROVIDER_CLIENT_SECRET=" + gwClientSecret,
		"BFFGATE_GATEWAY_PROVIDER_USE_USERINFO=true",
		"BFFGATE_GATEWAY_ROUTES=" + string(routes),
		"BFFGATE_GATEWAY_SESSION_STORE=" + o.Store,
		"BFFGATE_GATEWAY_SESSION_COOKIE_KEYS=" + string(keys),
		// Refresh 1 s before expiry (the default 30 s exceeds the short
		// lifetimes the rotation test uses).
		"BFFGATE_GATEWAY_REFRESH_SKEW=1s",
	}, o.Env...)})
	if err := e.p.SetClient(testContext(t), e.client(gwClientSecret)); err != nil {
		t.Fatal(err)
	}
	return e
}

// client is the gateway's registration at the provider.
func (e *gatewayEnv) client(secret string) peers.Client {
	return peers.Client{
		ID: gwClientID, Secret: secret,
		RedirectURIs:           []string{e.st.GatewayURL + "/bff/callback"},
		PostLogoutRedirectURIs: []string{e.st.GatewayURL + "/"},
		BackchannelLogoutURI:   e.st.GatewayURL + "/bff/backchannel-logout",
	}
}

// gwUser is one user agent signed in at the gateway over plain HTTP.
type gwUser struct {
	*agent
	sub  string
	base string
}

// startLogin asks the gateway for a login and returns the provider's
// authorization URL it redirects to.
func (e *gatewayEnv) startLogin(ctx context.Context, t *testing.T, a *agent) string {
	t.Helper()
	r := a.get(ctx, e.st.GatewayURL+"/bff/login?returnUrl=/", nil)
	loc := r.Location()
	if r.Status != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), e.p.Issuer+"/") {
		t.Fatalf("/bff/login answered %d to %v, want a redirect to the provider %s", r.Status, loc, e.p.Issuer)
	}
	return loc.String()
}

// signIn logs sub in through the gateway and the provider's login and
// consent pages, over plain HTTP.
func (e *gatewayEnv) signIn(ctx context.Context, t *testing.T, sub string) *gwUser {
	t.Helper()
	a := newAgent(t)
	cb, err := e.p.Login(ctx, e.startLogin(ctx, t, a), sub)
	if err != nil {
		t.Fatalf("provider login of %s: %v", sub, err)
	}
	if !strings.HasPrefix(cb, e.st.GatewayURL+"/bff/callback?") {
		t.Fatalf("the provider sent %s to %s, want the gateway's callback", sub, clip(cb, 120))
	}
	r := a.get(ctx, cb, nil)
	if r.Status != http.StatusFound || r.Header.Get("Location") != "/" {
		t.Fatalf("callback for %s answered %d to %q, want 302 to /\n%.1000s", sub, r.Status, r.Header.Get("Location"), r.Body)
	}
	u := &gwUser{agent: a, sub: sub, base: e.st.GatewayURL}
	if st, _ := u.user(ctx); st != http.StatusOK {
		t.Fatalf("/bff/user for %s right after login: %d", sub, st)
	}
	return u
}

// claim is one entry of /bff/user.
type claim struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

func claimValue(cs []claim, typ string) any {
	for _, c := range cs {
		if c.Type == typ {
			return c.Value
		}
	}
	return nil
}

// user calls /bff/user?slide=false and returns the status and claims.
func (u *gwUser) user(ctx context.Context) (int, []claim) {
	u.t.Helper()
	r := u.get(ctx, u.base+"/bff/user?slide=false", csrf)
	var cs []claim
	if r.Status == http.StatusOK {
		if err := r.JSON(&cs); err != nil {
			u.t.Fatal(err)
		}
	}
	return r.Status, cs
}

// api calls an /api/ path through the gateway.
func (u *gwUser) api(ctx context.Context, path string) (response, error) {
	return u.do(ctx, http.MethodGet, u.base+"/api/"+path, nil, csrf)
}

// browserSignIn logs sub in with chromium: the demo SPA's login button,
// the provider's login and consent pages, back to the SPA.
func (e *gatewayEnv) browserSignIn(t *testing.T, b *browser.Browser, sub string) {
	t.Helper()
	b.Navigate(e.st.GatewayURL + "/")
	b.WaitVisible("#login")
	b.Click("#login")
	b.WaitVisible(`input[name=login]`)
	if loc := b.Location(); !strings.HasPrefix(loc, e.p.Issuer+"/") {
		t.Fatalf("the login page is at %s, want the provider %s", loc, e.p.Issuer)
	}
	b.SetValue(`input[name=login]`, sub)
	b.SetValue(`input[name=password]`, "any-password")
	b.Click(`button[type=submit]`)
	b.WaitFor(`document.querySelector('input[name=prompt]') && document.querySelector('input[name=prompt]').value === 'consent'`)
	b.Screenshot("consent")
	b.Click(`button[type=submit]`)
	b.WaitURL(e.st.GatewayURL + "/")
	b.WaitVisible("#user-name")
	b.WaitFor(`document.querySelector('#user-name').textContent !== ''`)
}

// TestGatewayBrowserLogin is item 1: a login in chromium through
// oidc-provider's login and consent pages; /bff/user shows the provider's
// claims (ID token and userinfo), and no token reaches the browser.
func TestGatewayBrowserLogin(t *testing.T) {
	e := startGateway(t, gatewayOptions{})
	b := browser.New(t)
	e.browserSignIn(t, b, "alice")

	if got := b.Text("#user-name"); got != "Test User alice" {
		t.Errorf("#user-name = %q, want the provider's name claim %q", got, "Test User alice")
	}
	if got := b.Text("#user-sub"); got != "alice" {
		t.Errorf("#user-sub = %q, want alice", got)
	}
	var cs []claim
	b.Eval(`fetch('/bff/user', {headers: {'X-CSRF': '1'}}).then((r) => r.json())`, &cs)
	want := map[string]any{
		"sub": "alice", "name": "Test User alice", "preferred_username": "alice",
		"email": "alice@example.test", "email_verified": true,
	}
	for k, v := range want {
		if got := claimValue(cs, k); got != v {
			t.Errorf("/bff/user %s = %v, want %v (from the provider's userinfo)", k, got, v)
		}
	}
	if lu, _ := claimValue(cs, "bff:logout_url").(string); !strings.HasPrefix(lu, "/bff/logout?sid=") {
		t.Errorf("bff:logout_url = %v", claimValue(cs, "bff:logout_url"))
	}
	if exp, _ := claimValue(cs, "bff:session_expires_in").(float64); exp <= 0 {
		t.Errorf("bff:session_expires_in = %v, want positive", claimValue(cs, "bff:session_expires_in"))
	}
	for _, c := range cs {
		if s, ok := c.Value.(string); ok && strings.HasPrefix(s, "eyJ") {
			t.Errorf("/bff/user claim %s holds a JWT", c.Type)
		}
	}
	// The BFF promise: the provider's tokens (JWTs: its ID token; its
	// opaque access and refresh tokens never leave the server either)
	// appear in no response from the gateway and in no browser storage.
	for _, r := range b.Responses() {
		if strings.HasPrefix(r.URL, e.st.GatewayURL) && r.Contains("eyJ") {
			t.Errorf("a gateway response carries a JWT: %s %s (%d)", r.Method, r.URL, r.Status)
		}
	}
	if s := b.Storage(); s.Contains("eyJ") || s.Cookie != "" {
		t.Errorf("script-visible storage holds something: cookie %q, %d localStorage, %d sessionStorage entries", s.Cookie, len(s.LocalStorage), len(s.SessionStorage))
	}
	for _, c := range b.Cookies(e.st.GatewayURL) {
		if strings.HasPrefix(c.Name, cookieName) && (!c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteLax || c.Path != "/") {
			t.Errorf("session cookie %s: HttpOnly %t Secure %t SameSite %s Path %s", c.Name, c.HTTPOnly, c.Secure, c.SameSite, c.Path)
		}
	}
}

// TestGatewayRotation is item 2: API calls through the gateway across
// several access-token expiries, 50 at once at each expiry. The provider
// rotates the refresh token on every use and revokes the grant on reuse,
// so one duplicate refresh would fail calls and show in its counters.
func TestGatewayRotation(t *testing.T) {
	for _, store := range []string{"bbolt", "cookie"} {
		t.Run(store, func(t *testing.T) {
			const (
				rounds     = 3
				concurrent = 50
				ttl        = 3 * time.Second
			)
			e := startGateway(t, gatewayOptions{Store: store, AccessTTL: ttl, Introspect: true})
			ctx := testContext(t)
			u := e.signIn(ctx, t, "rita")
			if r, err := u.api(ctx, "first"); err != nil || r.Status != http.StatusOK {
				t.Fatalf("first API call: %v %d %s", err, r.Status, r.Body)
			}
			prev, _ := e.up.seen()
			for round := 1; round <= rounds; round++ {
				// Wait out the current access token: the provider's
				// clock is real time, so this test cannot move it.
				_, exp := e.up.seen()
				time.Sleep(time.Until(time.Unix(exp, 0).Add(1100 * time.Millisecond)))

				var wg sync.WaitGroup
				var failed atomic.Int32
				errs := make(chan string, concurrent)
				for i := range concurrent {
					wg.Go(func() {
						r, err := u.api(ctx, fmt.Sprintf("round%d/%d", round, i))
						if err != nil || r.Status != http.StatusOK {
							failed.Add(1)
							select {
							case errs <- fmt.Sprintf("%v %d %.200s", err, r.Status, r.Body):
							default:
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				if n := failed.Load(); n > 0 {
					t.Errorf("round %d: %d of %d calls failed; first: %s", round, n, concurrent, <-errs)
				}
				now, _ := e.up.seen()
				var fresh []string
				for tok := range now {
					if _, old := prev[tok]; !old {
						fresh = append(fresh, tok)
					}
				}
				if len(fresh) == 0 {
					t.Errorf("round %d: no new access token reached the upstream after the old one expired", round)
				}
				t.Logf("round %d: %d new access token(s) served %d calls", round, len(fresh), concurrent)
				prev = now
			}
			st, err := e.p.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.RefreshTokenReuse != 0 || len(st.GrantErrors) != 0 {
				t.Errorf("provider saw refresh-token reuse %d, grant errors %v; want none", st.RefreshTokenReuse, st.GrantErrors)
			}
			if st.Grants["refresh_token"] < rounds {
				t.Errorf("provider answered %d refreshes, want at least %d (one per expiry)", st.Grants["refresh_token"], rounds)
			}
			t.Logf("provider: %d code grants, %d refreshes", st.Grants["authorization_code"], st.Grants["refresh_token"])
			if st, _ := u.user(ctx); st != http.StatusOK {
				t.Errorf("/bff/user after the rounds: %d", st)
			}
		})
	}
}

// noEnded is an EndedStore that knows no ended session: the test only
// reads the browser's cookie session to learn its refresh token.
type noEnded struct{}

func (noEnded) Ended(context.Context, string, string, time.Time) (bool, error) { return false, nil }
func (noEnded) EndSID(context.Context, string, time.Time) error                { return nil }
func (noEnded) EndSubject(context.Context, string, time.Time, time.Time) error { return nil }
func (noEnded) Ping(context.Context) error                                     { return nil }

// readSession decodes the cookie session the browser holds, with the keys
// the test gave the gateway, to learn the tokens a test must ask the
// provider about. The browser itself never sees them in clear.
func (e *gatewayEnv) readSession(t *testing.T, cookies []*network.Cookie) *session.Session {
	t.Helper()
	byName := map[string]string{}
	for _, c := range cookies {
		byName[c.Name] = c.Value
	}
	handle := byName[cookieName]
	for i := 1; byName[fmt.Sprintf("%s.%d", cookieName, i)] != ""; i++ {
		handle += byName[fmt.Sprintf("%s.%d", cookieName, i)]
	}
	if handle == "" {
		t.Fatalf("the browser holds no %s cookie", cookieName)
	}
	st, err := sessioncookie.New(sessioncookie.Config{Keys: e.keys, Ended: noEnded{}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.Get(context.Background(), handle)
	if err != nil {
		t.Fatalf("decode the browser's session cookie: %v", err)
	}
	return s
}

// cookieHeader is the Cookie header of a browser's gateway cookies.
func cookieHeader(cookies []*network.Cookie) http.Header {
	var parts []string
	for _, c := range cookies {
		parts = append(parts, c.Name+"="+c.Value)
	}
	h := csrf.Clone()
	h.Set("Cookie", strings.Join(parts, "; "))
	return h
}

// TestGatewayLogout is item 3: the SPA's logout revokes the refresh token
// at the provider (its introspection says inactive) and takes the browser
// through the provider's end-session page and back to the SPA.
func TestGatewayLogout(t *testing.T) {
	e := startGateway(t, gatewayOptions{Store: "cookie"})
	ctx := testContext(t)
	b := browser.New(t)
	e.browserSignIn(t, b, "bob")
	cookies := b.Cookies(e.st.GatewayURL)
	s := e.readSession(t, cookies)
	if s.RefreshToken == "" {
		t.Fatal("the session holds no refresh token")
	}
	if in, err := e.p.Introspect(ctx, gwClientID, gwClientSecret, s.RefreshToken); err != nil || !in.Active {
		t.Fatalf("the refresh token is not active before logout (%+v, %v): the check after would prove nothing", in, err)
	}

	b.WaitVisible("#logout")
	b.Click("#logout")
	// oidc-provider asks for confirmation on its end-session page.
	b.WaitVisible(`button[name=logout]`)
	if loc := b.Location(); !strings.HasPrefix(loc, e.p.Issuer+"/") {
		t.Fatalf("after logout the browser is at %s, want the provider's end-session page", loc)
	}
	b.Screenshot("end-session")
	// The gateway revoked before it redirected: the provider's end-session
	// (which ends grants too) runs only once the user confirms, so the
	// refresh token being dead now is the gateway's doing. (Stats.
	// Revocations cannot tell: oidc-provider 9 emits no revocation event.)
	in, err := e.p.Introspect(ctx, gwClientID, gwClientSecret, s.RefreshToken)
	if err != nil || in.Active {
		t.Errorf("the refresh token is still active at the provider after the gateway's logout: %+v %v", in, err)
	}
	if lines := e.st.LogLines("revocation failed"); len(lines) > 0 {
		t.Errorf("the gateway logged a failed revocation: %s", lines[0])
	}
	b.Click(`button[name=logout]`)
	b.WaitURL(e.st.GatewayURL + "/")
	b.WaitVisible("#login")
	if st, err := e.p.Stats(ctx); err != nil || st.EndSession < 1 {
		t.Errorf("the provider's end-session did not complete: %+v %v", st, err)
	}

	// The session is gone for good: the cookies from before the logout,
	// replayed, name no session.
	a := newAgent(t)
	r := a.get(ctx, e.st.GatewayURL+"/bff/user", cookieHeader(cookies))
	if r.Status != http.StatusUnauthorized {
		t.Errorf("/bff/user with the pre-logout cookies answered %d, want 401: a cookie session outlived its logout", r.Status)
	}
}

// TestGatewayBackchannelLogout is item 4: ending the user's session at
// the provider sends a logout token to the gateway, which ends the
// gateway session within a second; the next API call is 401. Another
// user's session is untouched.
func TestGatewayBackchannelLogout(t *testing.T) {
	for _, store := range []string{"bbolt", "cookie"} {
		t.Run(store, func(t *testing.T) {
			e := startGateway(t, gatewayOptions{Store: store})
			ctx := testContext(t)
			carol := e.signIn(ctx, t, "carol")
			dave := e.signIn(ctx, t, "dave")
			if r, err := carol.api(ctx, "before"); err != nil || r.Status != http.StatusOK {
				t.Fatalf("API call before the logout: %v %d", err, r.Status)
			}

			res, err := e.p.EndSession(ctx, "carol")
			if err != nil {
				t.Fatal(err)
			}
			if res.Sessions != 1 || len(res.Backchannel) != 1 || !res.Backchannel[0].OK {
				t.Fatalf("provider end-session: %+v, want one session and one delivered logout token", res)
			}
			ended := eventually(time.Second, func() bool {
				st, _ := carol.user(ctx)
				return st == http.StatusUnauthorized
			})
			if !ended {
				t.Fatal("the gateway session survived the back-channel logout for more than a second")
			}
			r, err := carol.api(ctx, "after")
			if err != nil || r.Status != http.StatusUnauthorized {
				t.Errorf("API call after the back-channel logout: %v %d, want 401", err, r.Status)
			}
			if st, _ := dave.user(ctx); st != http.StatusOK {
				t.Errorf("another user's session: /bff/user %d, want 200", st)
			}
			if r, err := dave.api(ctx, "other"); err != nil || r.Status != http.StatusOK {
				t.Errorf("another user's API call: %v %d, want 200", err, r.Status)
			}
			if st, err := e.p.Stats(ctx); err != nil || st.Backchannel.Error != 0 {
				t.Errorf("provider back-channel errors: %+v %v", st.Backchannel, err)
			}
		})
	}
}

// callbackFails completes a login at the provider for sub (denying consent
// when deny), optionally runs between (a change at the provider), then
// sends the callback to the gateway asking for accept, and returns the
// answer.
func (e *gatewayEnv) callbackFails(ctx context.Context, t *testing.T, sub string, deny bool, accept string, between func()) response {
	t.Helper()
	a := newAgent(t)
	authURL := e.startLogin(ctx, t, a)
	var cb string
	var err error
	if deny {
		cb, err = e.p.DenyConsent(ctx, authURL, sub)
	} else {
		cb, err = e.p.Login(ctx, authURL, sub)
	}
	if err != nil {
		t.Fatalf("provider interaction for %s: %v", sub, err)
	}
	if between != nil {
		between()
	}
	r, err := a.do(ctx, http.MethodGet, cb, nil, http.Header{"Accept": {accept}})
	if err != nil {
		t.Fatalf("callback: %v", err)
	}
	if r.Status/100 == 3 || r.Status >= 500 && r.Status != http.StatusBadGateway && r.Status != http.StatusServiceUnavailable {
		t.Errorf("callback for %s answered %d, want a 4xx (or 502/503 for an outage) page or JSON", sub, r.Status)
	}
	return r
}

// wantPage checks an HTML error page: the status, and the words a user
// reads.
func wantPage(t *testing.T, r response, status int, words string) {
	t.Helper()
	if r.Status != status || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.Body), words) {
		t.Errorf("answered %d %s, want %d text/html saying %q:\n%.800s", r.Status, r.Header.Get("Content-Type"), status, words, r.Body)
	}
}

// wantJSONError checks a JSON error body.
func wantJSONError(t *testing.T, r response, status int, code string) {
	t.Helper()
	var body map[string]any
	if err := r.JSON(&body); err != nil {
		t.Error(err)
		return
	}
	if r.Status != status || body["error"] != code || claimString(body, "error_description") == "" {
		t.Errorf("answered %d %v, want %d with error %q and a description", r.Status, body, status, code)
	}
}

// TestGatewayProviderErrors is item 5: consent refused, a wrong client
// secret, and the provider down each give the user a clear page (or JSON
// when asked), while a user already signed in keeps being served.
func TestGatewayProviderErrors(t *testing.T) {
	e := startGateway(t, gatewayOptions{})
	ctx := testContext(t)
	other := e.signIn(ctx, t, "olga")
	stillServed := func(t *testing.T) {
		t.Helper()
		if st, cs := other.user(ctx); st != http.StatusOK || claimValue(cs, "sub") != "olga" {
			t.Errorf("the signed-in user's /bff/user: %d %v, want 200 for olga", st, cs)
		}
		if r, err := other.api(ctx, "still"); err != nil || r.Status != http.StatusOK {
			t.Errorf("the signed-in user's API call: %v %d, want 200", err, r.Status)
		}
	}
	const html, jsonAccept = "text/html,application/xhtml+xml", "application/json"

	t.Run("access_denied", func(t *testing.T) {
		r := e.callbackFails(ctx, t, "erin", true, html, nil)
		wantPage(t, r, http.StatusBadRequest, "cancelled or refused")
		r = e.callbackFails(ctx, t, "erin", true, jsonAccept, nil)
		wantJSONError(t, r, http.StatusBadRequest, "access_denied")
		stillServed(t)
	})

	t.Run("invalid_client_secret", func(t *testing.T) {
		wrong := func() {
			if err := e.p.SetClient(ctx, e.client("another-secret-0123456789abcdef")); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			if err := e.p.SetClient(ctx, e.client(gwClientSecret)); err != nil {
				t.Fatal(err)
			}
		}()
		r := e.callbackFails(ctx, t, "frank", false, html, wrong)
		wantPage(t, r, http.StatusBadRequest, "did not accept")
		r = e.callbackFails(ctx, t, "frank", false, jsonAccept, nil)
		wantJSONError(t, r, http.StatusBadRequest, "exchange_failed")
		if lines := e.st.LogLines("exchange_failed", "invalid_client"); len(lines) == 0 {
			t.Error("no log line names the exchange failure and invalid_client for the operator")
		}
		stillServed(t)
	})

	t.Run("provider_stopped", func(t *testing.T) {
		// Two users finish at the provider; then it goes down before the
		// gateway can exchange their codes.
		type pending struct {
			a  *agent
			cb string
		}
		var ps []pending
		for _, sub := range []string{"gina", "hugo"} {
			a := newAgent(t)
			cb, err := e.p.Login(ctx, e.startLogin(ctx, t, a), sub)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, pending{a, cb})
		}
		e.p.Stop()
		r, err := ps[0].a.do(ctx, http.MethodGet, ps[0].cb, nil, http.Header{"Accept": {html}})
		if err != nil {
			t.Fatal(err)
		}
		wantPage(t, r, http.StatusServiceUnavailable, "could not be reached")
		r, err = ps[1].a.do(ctx, http.MethodGet, ps[1].cb, nil, http.Header{"Accept": {jsonAccept}})
		if err != nil {
			t.Fatal(err)
		}
		wantJSONError(t, r, http.StatusServiceUnavailable, "provider_unavailable")
		stillServed(t)
		a := ps[0].a
		rr := a.get(ctx, e.st.GatewayURL+"/readyz", nil)
		t.Logf("gateway /readyz with the provider down: %d %.200s", rr.Status, rr.Body)
		if rr.Status == http.StatusOK {
			t.Error("the gateway reports ready while its provider is down")
		}
	})
}
