package frontends

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/browser"
	"github.com/bffgate/bffgate/e2e/stack"
)

// TestFrontends runs the four frontends on one port, over each session
// store: two users signed in at once in two browsers, isolation of
// sessions and routes, logout of one, back-channel logout scoped to one
// client, and the RFC 9207 mix-up refused.
func TestFrontends(t *testing.T) {
	for _, store := range []string{"bbolt", "cookie", "redis"} {
		t.Run(store, func(t *testing.T) { runFrontends(t, store) })
	}
}

func runFrontends(t *testing.T, store string) {
	fs := fourFrontends(stack.FreePort(t))
	a, b, one, two := fs[0], fs[1], fs[2], fs[3]
	e := startEnv(t, store, fs, fs)
	ctx := testContext(t)
	ag := newAgent(t)

	t.Log("a request no frontend serves: 404 JSON")
	for _, u := range []string{
		fmt.Sprintf("http://127.0.0.1:%d/", e.gwPort),
		fmt.Sprintf("http://127.0.0.1:%d/three/bff/login", e.gwPort),
		fmt.Sprintf("http://127.0.0.1:%d/oneself/bff/user", e.gwPort), // /one ends at a segment boundary
		fmt.Sprintf("http://x.localhost:%d/bff/user", e.gwPort),
	} {
		r := ag.get(ctx, u, nil)
		if r.Status != http.StatusNotFound || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || r.errorCode() != "no_frontend" {
			t.Errorf("GET %s answered %s, want 404 JSON with error no_frontend", u, r)
		}
	}

	t.Log("sign in to a and b (by host) in one browser, to one and two (by prefix) in another")
	b1, b2 := browser.New(t), browser.New(t)
	e.signIn(t, b1, a, "alice")
	e.signIn(t, b1, b, "bob")
	e.signIn(t, b2, one, "carol")
	// bob again, at the same provider as on b but through two's client.
	e.signIn(t, b2, two, "bob")

	t.Log("all four at once: each SPA shows its own user and reaches its own API")
	signedIn := []struct {
		b    *browser.Browser
		f    frontend
		user string
	}{{b1, a, "alice"}, {b1, b, "bob"}, {b2, one, "carol"}, {b2, two, "bob"}}
	for _, s := range signedIn {
		e.wantSignedIn(t, s.b, s.f, s.user)
		e.wantAPI(t, s.b, s.f, s.user)
	}
	// The BFF promise holds for every frontend: nothing shaped like a JWT
	// (the embedded issuer's tokens; oidc-provider's ID tokens) in any
	// answer of the gateway the browsers received, nor in what the pages'
	// scripts can read.
	for _, br := range []*browser.Browser{b1, b2} {
		seen := 0
		for _, r := range br.Responses() {
			if !slices.ContainsFunc(fs, func(f frontend) bool { return strings.HasPrefix(r.URL, f.origin()+"/") }) {
				continue
			}
			seen++
			if jwtShape.MatchString(r.URL) || jwtShape.Match(r.Body) || slices.ContainsFunc(slices.Collect(maps.Values(r.Headers)), jwtShape.MatchString) {
				t.Errorf("a gateway answer carries a JWT: %s %s (%d)", r.Method, r.URL, r.Status)
			}
		}
		if seen < 10 {
			t.Fatalf("the browser recorded %d answers of the gateway: the check for tokens would prove nothing", seen)
		}
	}
	for _, s := range signedIn {
		open(t, s.b, s.f)
		if st := s.b.Storage(); st.Cookie != "" || jwtShape.MatchString(fmt.Sprint(st)) {
			t.Errorf("%s's page can read something: document.cookie %q, storage %v", s.f.Name, st.Cookie, st)
		}
	}

	// A route of one frontend is not reachable from another's host.
	open(t, b1, b)
	before := e.up.count()
	var status int
	b1.Eval(`fetch('/one/api/whoami', {headers: {'X-CSRF': '1'}}).then((r) => r.status)`, &status)
	if e.up.count() != before {
		t.Errorf("b.localhost/one/api/whoami reached the API (one's route, answered %d)", status)
	}

	cookies := map[string]map[string]string{
		"a": sessionCookies(t, b1, a), "b": sessionCookies(t, b1, b),
		"one": sessionCookies(t, b2, one), "two": sessionCookies(t, b2, two),
	}
	// live says whether f's session of user still answers, replayed by
	// hand (the check of each replay below, and of the logouts after).
	live := func(f frontend, user string) bool {
		t.Helper()
		r := ag.get(ctx, f.url("/bff/user?slide=false"), withCookies(cookies[f.Name]))
		switch r.Status {
		case http.StatusOK:
			if !strings.Contains(string(r.Body), `"value":"`+user+`"`) {
				t.Errorf("%s's /bff/user for %s's cookie: %s", f.Name, user, r)
			}
			return true
		case http.StatusUnauthorized:
			return false
		}
		t.Fatalf("%s's /bff/user answered %s, want 200 or 401", f.Name, r)
		return false
	}
	for _, s := range signedIn {
		if !live(s.f, s.user) {
			t.Fatalf("%s's session cookie, replayed by hand to %s, is no session: the replays below would prove nothing", s.f.Name, s.f.Name)
		}
	}

	t.Log("a session cookie replayed to another frontend is no session, under either name")
	replays := []struct {
		from, to frontend
		why      string
	}{
		{a, b, "another host, another provider"},
		{b, a, "another host, another provider"},
		{two, b, "the same user at the same provider, another client"},
		{b, two, "the same user at the same provider, another client"},
		{one, two, "another prefix on the same host"},
		{two, one, "another prefix on the same host"},
		{a, one, "the same provider, another client"},
		{one, a, "the same provider, another client"},
	}
	for _, rp := range replays {
		for _, jar := range []map[string]string{cookies[rp.from.Name], renamed(cookies[rp.from.Name], rp.from, rp.to)} {
			before := e.up.count()
			for _, path := range []string{"/bff/user?slide=false", "/api/whoami"} {
				if r := ag.get(ctx, rp.to.url(path), withCookies(jar)); r.Status != http.StatusUnauthorized {
					t.Errorf("%s's cookie sent to %s%s (%s) as %v: %s, want 401", rp.from.Name, rp.to.Name, path, rp.why, names(jar), r)
				}
			}
			if e.up.count() != before {
				t.Errorf("%s's cookie sent to %s's API reached the API", rp.from.Name, rp.to.Name)
			}
		}
	}

	t.Log("the mix-up: an authorization response of the other frontend's provider is refused")
	e.mixUp(ctx, t, one, two, func(authURL string) (*url.URL, error) {
		cb, err := e.p.Login(ctx, authURL, "mallory")
		if err != nil {
			return nil, err
		}
		return url.Parse(cb)
	})
	e.mixUp(ctx, t, two, one, func(authURL string) (*url.URL, error) {
		return newAgent(t).issuerSignIn(ctx, authURL, "carol")
	})

	t.Log("logging out of a leaves b (and the others) signed in")
	open(t, b1, a)
	b1.Click("#logout")
	b1.WaitFor(`location.href === ` + jsString(a.url("/")) + ` && document.body.dataset.state === 'anonymous'`)
	if live(a, "alice") {
		t.Error("a's session still answers after its logout")
	}
	wantNoSessionCookie(t, b1, a)
	e.wantSignedIn(t, b1, b, "bob")
	e.wantAPI(t, b1, b, "bob")
	for _, s := range signedIn[1:] {
		if !live(s.f, s.user) {
			t.Errorf("%s's session of %s ended with a's logout", s.f.Name, s.user)
		}
	}

	t.Log("back-channel logout of bob from two's client ends two's session only")
	res, err := e.p.EndClientSession(ctx, "bob", two.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Backchannel) != 1 || !res.Backchannel[0].OK || res.Backchannel[0].ClientID != two.ClientID {
		t.Fatalf("oidc-provider's logout of bob from %s: %+v, want one delivered logout token to %s", two.ClientID, res, two.ClientID)
	}
	// The provider delivered the token before answering, and the server
	// stores end the session in that call; the poll covers a store that
	// takes a moment to show it everywhere.
	if !eventually(5*time.Second, func() bool { return !live(two, "bob") }) {
		t.Fatal("two's session of bob survived the back-channel logout of two's client")
	}
	if !live(b, "bob") {
		t.Error("b's session of bob (same user, same provider, another client) ended with two's back-channel logout")
	}
	if !live(one, "carol") {
		t.Error("one's session ended with two's back-channel logout")
	}

	t.Log("back-channel logout of bob everywhere at oidc-provider ends b's session, on its host")
	res, err = e.p.EndSession(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	delivered := false
	for _, bc := range res.Backchannel {
		if bc.ClientID == b.ClientID {
			delivered = bc.OK
			if !bc.OK {
				t.Errorf("oidc-provider's logout token to b (%s): %s", b.ClientID, bc.Error)
			}
		}
		if bc.ClientID == two.ClientID {
			t.Errorf("oidc-provider sent a second logout token to two's client, whose grant had ended: %+v", bc)
		}
	}
	if !delivered {
		t.Fatalf("oidc-provider's logout of bob everywhere: %+v, want a delivered logout token to %s", res, b.ClientID)
	}
	if !eventually(5*time.Second, func() bool { return !live(b, "bob") }) {
		t.Fatal("b's session of bob survived oidc-provider's back-channel logout")
	}
	if !live(one, "carol") {
		t.Error("one's session (embedded issuer) ended with oidc-provider's back-channel logout")
	}
	if st, err := e.p.Stats(ctx); err != nil || st.Backchannel.Error != 0 {
		t.Errorf("oidc-provider's back-channel deliveries failed: %+v %v", st.Backchannel, err)
	}

	t.Log("in the browsers: a, b and two signed out, one still signed in")
	wantAnonymous(t, b1, a)
	wantAnonymous(t, b1, b)
	wantAnonymous(t, b2, two)
	e.wantSignedIn(t, b2, one, "carol")
	e.wantAPI(t, b2, one, "carol")

	t.Log("on one host: signing out of one (Path=/one) leaves two (Path=/two) signed in")
	e.signIn(t, b2, two, "bob")
	open(t, b2, one)
	b2.Click("#logout")
	b2.WaitFor(`location.href === ` + jsString(one.url("/")) + ` && document.body.dataset.state === 'anonymous'`)
	wantNoSessionCookie(t, b2, one)
	e.wantSignedIn(t, b2, two, "bob")
	e.wantAPI(t, b2, two, "bob")
	sessionCookies(t, b2, two)
}

// wantNoSessionCookie wants the browser to hold no session cookie of f
// (its logout cleared it, with the cookie's own Path).
func wantNoSessionCookie(t *testing.T, b *browser.Browser, f frontend) {
	t.Helper()
	for _, c := range b.Cookies(f.url("/")) {
		if c.Name == f.cookieName() || strings.HasPrefix(c.Name, f.cookieName()+".") {
			t.Errorf("after %s's logout the browser still holds its session cookie %s (Path %s)", f.Name, c.Name, c.Path)
		}
	}
}

// jwtShape matches a compact JWS or JWE whose header starts with `{"`.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{8,}`)

// names lists a cookie map's names.
func names(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// mixUp delivers to victim's callback authorization responses that are
// not victim's, with a login of victim's in progress in the same user
// agent, and wants each refused without a session:
//
//   - RFC 9207's mix-up: other's provider answers an authorization
//     request of other's client that carries the state of victim's login
//     (signIn signs a user in at other's provider and returns the redirect
//     to other's callback). The response names its issuer: 400
//     issuer_mismatch.
//   - the same without the iss parameter.
//   - other's genuine response with other's flow cookie renamed to
//     victim's cookie names and iss forged to victim's provider: the flow
//     is sealed under other's name, so victim finds none (400, or the
//     redirect that starts the login again).
func (e *env) mixUp(ctx context.Context, t *testing.T, victim, other frontend, signIn func(authURL string) (*url.URL, error)) {
	t.Helper()
	ag := newAgent(t)
	start := func(f frontend) response {
		t.Helper()
		r := ag.do(ctx, http.MethodGet, f.url("/bff/login?returnUrl="+url.QueryEscape(f.Prefix+"/")), nil, nil)
		if loc := r.Location(); r.Status != http.StatusFound || loc == nil || loc.Query().Get("state") == "" {
			t.Fatalf("%s's /bff/login answered %s, want a redirect to its provider with a state", f.Name, r)
		}
		return r
	}
	// mixed is other's provider's answer to other's authorization request
	// carrying the state of a new login at victim.
	mixed := func() url.Values {
		t.Helper()
		victimState := start(victim).Location().Query().Get("state")
		swapped := start(other).Location()
		q := swapped.Query()
		q.Set("state", victimState)
		swapped.RawQuery = q.Encode()
		cb, err := signIn(swapped.String())
		if err != nil {
			t.Fatalf("sign-in at %s's provider: %v", other.Name, err)
		}
		if !strings.HasPrefix(cb.String(), other.url("/bff/callback?")) || cb.Query().Get("code") == "" || cb.Query().Get("state") != victimState {
			t.Fatalf("%s's provider answered with %s, want %s's callback with a code and %s's state", other.Name, cb.Redacted(), other.Name, victim.Name)
		}
		if cb.Query().Get("iss") == "" {
			t.Fatalf("%s's provider sent no iss parameter (RFC 9207): the mix-up case needs it", other.Name)
		}
		return cb.Query()
	}
	deliver := func(query url.Values, cookie string) response {
		t.Helper()
		h := http.Header{"Accept": {"application/json"}}
		if cookie != "" {
			h.Set("Cookie", cookie)
		}
		return ag.do(ctx, http.MethodGet, victim.url("/bff/callback?"+query.Encode()), nil, h)
	}
	refused := func(what string, r response, wantCode string, restartOK bool) {
		t.Helper()
		restart := r.Status == http.StatusFound && strings.HasPrefix(r.Header.Get("Location"), victim.Prefix+"/bff/login?restart=")
		if restartOK {
			// The flow must not be found at all: a flow victim accepted
			// would fail later (the code is not its provider's), which
			// would hide a flow cookie that is not bound to its frontend.
			if !restart && r.errorCode() != "state_mismatch" {
				t.Errorf("%s: %s's callback answered %s (Location %q), want the login restarted or 400 state_mismatch: the flow was not refused as %s's", what, victim.Name, r, r.Header.Get("Location"), victim.Name)
			}
		} else if r.Status != http.StatusBadRequest || (wantCode != "" && r.errorCode() != wantCode) {
			t.Errorf("%s: %s's callback answered %s (Location %q), want 400 %s", what, victim.Name, r, r.Header.Get("Location"), wantCode)
		}
		for _, c := range r.Header.Values("Set-Cookie") {
			if strings.HasPrefix(c, victim.cookieName()+"=") && !strings.HasPrefix(c, victim.cookieName()+"=;") && !strings.Contains(c, "Max-Age=0") {
				t.Errorf("%s: %s's callback set a session cookie", what, victim.Name)
			}
		}
		if r := ag.get(ctx, victim.url("/bff/user?slide=false"), nil); r.Status != http.StatusUnauthorized {
			t.Errorf("%s: %s's /bff/user answered %s afterwards, want 401", what, victim.Name, r)
		}
		t.Logf("%s: refused with %d %q", what, r.Status, r.errorCode())
	}

	q := mixed()
	refused(fmt.Sprintf("%s's provider's response (iss %s) at %s's callback", other.Name, q.Get("iss"), victim.Name),
		deliver(q, ""), "issuer_mismatch", false)

	// Without iss the response cannot say where it comes from: refused
	// (issuer_missing when victim's provider promises iss; otherwise the
	// code is not one victim's provider issued).
	q = mixed()
	q.Del("iss")
	refused("the same response without iss", deliver(q, ""), "", false)

	// other's own flow cookie, renamed to victim's names, with a genuine
	// response to other's login, in a user agent with no flow of victim's.
	ag2 := newAgent(t)
	r := ag2.do(ctx, http.MethodGet, other.url("/bff/login?returnUrl="+url.QueryEscape(other.Prefix+"/")), nil, nil)
	if r.Status != http.StatusFound || r.Location() == nil {
		t.Fatalf("%s's /bff/login answered %s", other.Name, r)
	}
	cb, err := signIn(r.Location().String())
	if err != nil {
		t.Fatalf("sign-in at %s's provider: %v", other.Name, err)
	}
	flow := map[string]string{}
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if strings.HasPrefix(c.Name, other.cookieName()) {
			flow[victim.cookieName()+strings.TrimPrefix(c.Name, other.cookieName())] = c.Value
		}
	}
	if len(flow) == 0 {
		t.Fatalf("%s's /bff/login set no flow cookie named after %s (Set-Cookie %v)", other.Name, other.cookieName(), r.Header.Values("Set-Cookie"))
	}
	q = cb.Query()
	if victim.Embedded { // iss forged to victim's provider's
		q.Set("iss", e.issuer)
	} else {
		q.Set("iss", e.oidc)
	}
	r = ag2.do(ctx, http.MethodGet, victim.url("/bff/callback?"+q.Encode()), nil,
		http.Header{"Accept": {"application/json"}, "Cookie": withCookies(flow)["Cookie"]})
	ag = ag2 // refused checks ag2's session at victim
	refused(fmt.Sprintf("%s's flow cookie renamed for %s, with %s's response (iss forged)", other.Name, victim.Name, other.Name), r, "", true)
}
