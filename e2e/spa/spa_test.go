package spa

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/bffgate/bffgate/e2e/browser"
	"github.com/bffgate/bffgate/e2e/stack"
)

// The zero-config demo user (cmd/bffgate).
const (
	demoUser     = "demo"
	demoPassword = "demo"
	demoSubject  = "demo-user-1"
	demoName     = "Demo User"
)

// returnPath is where the test starts and expects to land after login: a
// path with a query, so the returnUrl round trip is visible.
const returnPath = "/?view=e2e"

// jwtShape matches a compact JWS (three base64url segments) or JWE (five,
// the second empty with alg dir) whose header starts with `{"` ("eyJ").
// Nothing the browser receives may look like this: refresh and ID tokens
// never leave the gateway, so this is how the test finds them.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{8,}`)

// matrix is every session store with every token format, and sealed
// refresh tokens beside signed access tokens (issuer.tokens.refresh_format).
var matrix = []struct {
	store, format, refresh string
}{
	{"cookie", "signed", "signed"},
	{"cookie", "encrypted", "signed"},
	{"bbolt", "signed", "signed"},
	{"bbolt", "encrypted", "signed"},
	{"bbolt", "signed", "sealed"},
}

// TestSPA walks one session's whole life in a real browser, for each
// session store and token format: login through the issuer's form, API
// calls and item mutations, no token anywhere in the browser, a refresh
// the page never sees, a cross-site page that cannot call the API, logout
// (back button, reload, replayed cookie).
func TestSPA(t *testing.T) {
	for _, tc := range matrix {
		name := tc.store + "-" + tc.format
		if tc.refresh != "signed" {
			name += "-" + tc.refresh + "-refresh"
		}
		t.Run(name, func(t *testing.T) {
			runSession(t, tc.store, tc.format, tc.refresh)
		})
	}
}

// whoami is the demo API's answer to /api/whoami, as the SPA shows it.
type whoami struct {
	Subject   string    `json:"subject"`
	ClientID  string    `json:"client_id"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
	JTIHash   string    `json:"jti_sha256"`
	Token     struct {
		Format     string `json:"format"`
		VerifiedBy string `json:"verified_by"`
	} `json:"token"`
}

// session is one browser session against one stack.
type session struct {
	t     *testing.T
	st    *stack.Stack
	b     *browser.Browser
	rec   *recorder
	gw    string
	store string
}

func runSession(t *testing.T, store, format, refresh string) {
	rec := newRecorder(t)
	routes := fmt.Sprintf(`[{"prefix": "/api/", "upstream": %q, "policy": "user"}]`, rec.URL)
	st := stack.Start(t, stack.Options{Env: []string{
		"BFFGATE_GATEWAY_SESSION_STORE=" + store,
		"BFFGATE_ISSUER_TOKENS_FORMAT=" + format,
		"BFFGATE_ISSUER_TOKENS_REFRESH_FORMAT=" + refresh,
		// Short-lived access tokens so that the test can wait past one.
		"BFFGATE_ISSUER_TOKENS_ACCESS_TTL=4s",
		"BFFGATE_GATEWAY_REFRESH_SKEW=1s",
		// The demo API behind the recording proxy.
		"BFFGATE_GATEWAY_ROUTES=" + routes,
	}})
	rec.forwardTo(t, st.APIURL)
	b := browser.New(t)
	// Generous per-step bounds: the machine running CI may be shared.
	b.Timeout = 30 * time.Second
	s := &session{t: t, st: st, b: b, rec: rec, gw: st.GatewayURL, store: store}

	s.login()
	w := s.callAPI(format)
	s.items()
	s.noTokens("after login, API calls and item changes")
	s.b.ResetResponses()

	s.refresh(w, format)
	s.noTokens("after the access token was refreshed")
	s.b.ResetResponses()

	s.crossSite()
	s.noTokens("after the cross-site page")
	s.b.ResetResponses()

	s.logout()
}

// login starts at the SPA's #login, signs in at the issuer's HTML form and
// lands back on returnPath, where the SPA shows the user.
func (s *session) login() {
	t, b := s.t, s.b
	t.Log("step 1: log in through the issuer's form")
	b.Navigate(s.gw + returnPath)
	b.WaitVisible("#login")
	var href string
	b.Eval(`document.getElementById('login').getAttribute('href')`, &href)
	if want := "/bff/login?returnUrl=%2F%3Fview%3De2e"; href != want {
		t.Fatalf("the SPA's login link is %q, want %q (the current page as returnUrl)", href, want)
	}
	b.Click("#login")
	b.WaitURL(s.st.IssuerURL + "/")
	b.WaitVisible("#username")
	b.SendKeys("#username", demoUser)
	b.SendKeys("#password", demoPassword)
	b.Click(`button[type="submit"]`)
	if got := b.WaitURL(s.gw + returnPath); got != s.gw+returnPath {
		t.Fatalf("after login the browser is at %s, want the returnUrl %s", got, s.gw+returnPath)
	}
	b.WaitFor(`document.getElementById('user-sub').textContent === ` + jsString(demoSubject))
	b.WaitVisible("#user-name")
	if got := b.Text("#user-name"); got != demoName {
		t.Errorf("#user-name shows %q, want %q", got, demoName)
	}
	if got := b.Text("#session-expires"); got == "" || strings.Contains(got, "unknown") {
		t.Errorf("#session-expires shows %q, want the session's expiry", got)
	}
	b.WaitVisible("#logout")
	b.Screenshot("logged-in")
	for _, c := range b.Cookies(s.gw) {
		if strings.HasPrefix(c.Name, "__Host-bff-flow.") {
			t.Errorf("the login flow's cookie %s outlived the callback", c.Name)
		}
	}
}

// callAPI clicks #call-api and returns what the API saw.
func (s *session) callAPI(format string) whoami {
	t, b := s.t, s.b
	t.Log("step 2: call the API")
	w := s.clickCallAPI()
	if w.Subject != demoSubject {
		t.Errorf("the API saw subject %q, want %q", w.Subject, demoSubject)
	}
	if w.Token.Format != format {
		t.Errorf("the API saw a %q token, want %q", w.Token.Format, format)
	}
	if w.ExpiresAt.IsZero() {
		t.Fatalf("the API reported no expiry: %+v", w)
	}
	if got := b.Text("#status"); got != "The API answered." {
		t.Errorf("#status shows %q after the API call, want %q", got, "The API answered.")
	}
	up, ok := s.rec.last(http.MethodGet, "/api/whoami")
	if !ok || up.Bearer == "" {
		t.Fatalf("the upstream received no bearer token for /api/whoami (requests: %+v)", s.rec.requests())
	}
	for _, c := range up.Cookies {
		if isSessionCookie(c) {
			t.Errorf("the gateway forwarded its own session cookie %s upstream", c)
		}
	}
	return w
}

// clickCallAPI clears the result, clicks #call-api and reads the answer.
func (s *session) clickCallAPI() whoami {
	t, b := s.t, s.b
	b.Eval(`document.getElementById('api-result').replaceChildren(); document.getElementById('status').textContent = ''; 0`, nil)
	b.Click("#call-api")
	b.WaitFor(`document.querySelector('#api-result pre') || document.getElementById('status').className.includes('error')`)
	var raw string
	b.Eval(`(document.querySelector('#api-result pre') || {}).textContent || ''`, &raw)
	if raw == "" {
		t.Fatalf("the API call failed; #status: %q", b.Text("#status"))
	}
	var w whoami
	if err := json.Unmarshal([]byte(raw), &w); err != nil {
		t.Fatalf("the SPA's raw API answer is not the whoami JSON: %v\n%s", err, raw)
	}
	return w
}

// items creates an item through the SPA's form and deletes it again.
func (s *session) items() {
	t, b := s.t, s.b
	t.Log("step 2b: create and delete an item")
	title := "e2e item " + s.store + " " + time.Now().Format("15:04:05.000")
	b.SendKeys("#new-item-title", title)
	b.Click("#add-item")
	liWithTitle := `[...document.querySelectorAll('#items li')].find((li) => li.querySelector('span').textContent === ` + jsString(title) + `)`
	b.WaitFor(liWithTitle)
	var id string
	b.Eval(`(`+liWithTitle+`).dataset.id`, &id)
	if id == "" {
		t.Fatalf("the new item has no id in the list")
	}
	if up, ok := s.rec.last(http.MethodPost, "/api/items"); !ok || up.Bearer == "" {
		t.Fatalf("the upstream did not receive the POST /api/items with a bearer token")
	}
	if !s.apiHasItem(title) {
		t.Fatalf("the API's list does not hold the item %q the SPA added", title)
	}

	b.Click(`#items li[data-id=` + jsString(id) + `] .delete-item`)
	b.WaitFor(`!(` + liWithTitle + `)`)
	if _, ok := s.rec.last(http.MethodDelete, "/api/items/"+id); !ok {
		t.Fatalf("the upstream did not receive DELETE /api/items/%s", id)
	}
	if s.apiHasItem(title) {
		t.Fatalf("the API still lists the item %q the SPA deleted", title)
	}
	if got := b.Text("#status"); !strings.HasPrefix(got, "Deleted") {
		t.Errorf("#status shows %q after the delete, want Deleted …", got)
	}
}

// apiHasItem asks the API, from the SPA's page as the SPA does, whether an
// item with title exists.
func (s *session) apiHasItem(title string) bool {
	var titles []string
	s.b.Eval(`fetch('/api/items', {headers: {'X-CSRF': '1', Accept: 'application/json'}, cache: 'no-store'})
		.then((r) => { if (!r.ok) throw new Error('GET /api/items: ' + r.status); return r.json(); })
		.then((j) => j.items.map((i) => i.title))`, &titles)
	for _, x := range titles {
		if x == title {
			return true
		}
	}
	return false
}

// noTokens asserts the BFF promise from the browser's side: no token in
// script-visible storage, cookies the gateway sets are HttpOnly, Secure,
// SameSite and __Host-, and no response the browser received (header,
// redirect, body) carries a token.
func (s *session) noTokens(when string) {
	t, b := s.t, s.b
	t.Logf("step 3: no token in the browser (%s)", when)
	tokens := s.rec.tokens()
	if len(tokens) == 0 {
		t.Fatalf("%s: the recording upstream saw no access token; the check would prove nothing", when)
	}

	st := b.Storage()
	if len(st.Errors) > 0 {
		t.Errorf("%s: could not read all browser storage: %v", when, st.Errors)
	}
	if len(st.LocalStorage) > 0 || len(st.SessionStorage) > 0 || len(st.IndexedDB) > 0 {
		t.Errorf("%s: the SPA stored data in the browser (it should store nothing): localStorage %v, sessionStorage %v, IndexedDB %+v",
			when, st.LocalStorage, st.SessionStorage, st.IndexedDB)
	}
	if st.Cookie != "" {
		t.Errorf("%s: document.cookie is %q; every cookie of the origin should be HttpOnly", when, st.Cookie)
	}
	for _, tok := range tokens {
		if st.Contains(tok) {
			t.Errorf("%s: an access token is readable from the page's storage", when)
		}
	}
	if m := jwtShape.FindString(mustJSON(t, st)); m != "" {
		t.Errorf("%s: a JWT-shaped value is readable from the page's storage: %.40s…", when, m)
	}

	sessionCookies := 0
	for _, c := range b.Cookies(s.gw) {
		if jwtShape.MatchString(c.Value) {
			t.Errorf("%s: cookie %s holds a JWT-shaped value", when, c.Name)
		}
		// Every cookie on the origin (the gateway's and the issuer's, which
		// share the host 127.0.0.1) is a __Host- cookie out of script's reach.
		if !strings.HasPrefix(c.Name, "__Host-") || !c.HTTPOnly || !c.Secure || c.Path != "/" ||
			(c.SameSite != network.CookieSameSiteLax && c.SameSite != network.CookieSameSiteStrict) {
			t.Errorf("%s: cookie %s: HttpOnly %v, Secure %v, SameSite %q, Path %q; want a __Host- name, HttpOnly, Secure, SameSite Lax or Strict, Path /",
				when, c.Name, c.HTTPOnly, c.Secure, c.SameSite, c.Path)
		}
		if !isSessionCookie(c.Name) {
			continue
		}
		sessionCookies++
		if c.SameSite != network.CookieSameSiteLax {
			t.Errorf("%s: session cookie %s has SameSite %q, want the default Lax", when, c.Name, c.SameSite)
		}
	}
	if sessionCookies == 0 {
		t.Errorf("%s: the browser holds no __Host-bff session cookie for %s", when, s.gw)
	}

	rs := b.Responses()
	if len(rs) == 0 {
		t.Fatalf("%s: the browser recorded no response; the check would prove nothing", when)
	}
	for _, r := range rs {
		for i, tok := range tokens {
			if r.Contains(tok) {
				t.Errorf("%s: the browser received access token #%d in a %s of %s %s (status %d)", when, i+1, r.Source, r.Method, r.URL, r.Status)
			}
		}
		if where, m := findJWT(r); m != "" {
			t.Errorf("%s: the browser received a JWT-shaped value in the %s of %s %s %s (status %d): %.40s…",
				when, where, r.Source, r.Method, r.URL, r.Status, m)
		}
	}
}

// findJWT returns where in r a JWT-shaped value is, and the value.
func findJWT(r browser.Response) (where, match string) {
	if m := jwtShape.FindString(r.URL); m != "" {
		return "URL", m
	}
	for k, v := range r.Headers {
		if m := jwtShape.FindString(v); m != "" {
			return "header " + k, m
		}
	}
	if m := jwtShape.FindString(string(r.Body)); m != "" {
		return "body", m
	}
	return "", ""
}

// refresh waits past the access token's lifetime and calls the API again:
// the call succeeds with a new access token for the same subject, and the
// page never notices (no navigation, no error, no provider round trip).
func (s *session) refresh(before whoami, format string) {
	t, b := s.t, s.b
	t.Log("step 4: wait past the access token's lifetime and call the API again")
	old, _ := s.rec.last(http.MethodGet, "/api/whoami")
	b.Eval(`window.__e2eSamePage = 'still here'; 0`, nil)

	// The one wait expiry needs: until the token the gateway holds has
	// expired by the issuer's clock (the same machine's), plus a margin
	// for the second-granular exp claim.
	deadline := before.ExpiresAt.Add(1100 * time.Millisecond)
	for time.Now().Before(deadline) {
		time.Sleep(min(time.Until(deadline), 250*time.Millisecond))
	}

	w := s.clickCallAPI()
	if w.Subject != before.Subject {
		t.Errorf("after the refresh the API saw subject %q, want %q", w.Subject, before.Subject)
	}
	if w.Token.Format != format {
		t.Errorf("after the refresh the API saw a %q token, want %q", w.Token.Format, format)
	}
	if !w.ExpiresAt.After(before.ExpiresAt) {
		t.Errorf("after the refresh the token expires at %s, not after the old one's %s", w.ExpiresAt, before.ExpiresAt)
	}
	if w.JTIHash != "" && w.JTIHash == before.JTIHash {
		t.Errorf("after the refresh the API saw the same token id %s", w.JTIHash)
	}
	now, _ := s.rec.last(http.MethodGet, "/api/whoami")
	if now.Bearer == "" || now.Bearer == old.Bearer {
		t.Errorf("the upstream received the same access token after its expiry (refresh did not happen)")
	}
	var same string
	b.Eval(`window.__e2eSamePage || ''`, &same)
	if same != "still here" {
		t.Errorf("the page was reloaded or navigated during the refresh")
	}
	if loc := b.Location(); loc != s.gw+returnPath {
		t.Errorf("the page is at %s after the refresh, want %s", loc, s.gw+returnPath)
	}
	for _, r := range b.Responses() {
		if strings.HasPrefix(r.URL, s.st.IssuerURL) {
			t.Errorf("the browser talked to the issuer during the refresh: %s %s", r.Method, r.URL)
		}
		if r.Status >= 300 && r.Source != "raw" {
			t.Errorf("the browser saw %d for %s %s during the refresh", r.Status, r.Method, r.URL)
		}
	}
}

// crossSite opens a page of another site (localhost, the gateway is at
// 127.0.0.1) that calls the gateway's API with the user's cookies: every
// attempt fails in the page, and none reaches the API.
func (s *session) crossSite() {
	t, b := s.t, s.b
	t.Log("step 6: a cross-site page cannot call the API")
	before := s.rec.count()
	page := crossSiteServer(t, s.gw)
	b.Navigate(page)
	b.WaitFor(`document.body.dataset.done === '1'`)
	var results []attemptResult
	b.Eval(`window.__results`, &results)
	if len(results) != 5 {
		t.Fatalf("the cross-site page reported %d attempts, want 5: %+v", len(results), results)
	}
	for _, r := range results {
		switch {
		case r.Name == "post-no-cors":
			// A no-cors request goes out and the page gets an opaque answer:
			// the protection is that the gateway refuses it (below).
			if r.Error == "" && r.Type != "opaque" {
				t.Errorf("cross-site %s: the page read the answer (type %q, status %d): %s", r.Name, r.Type, r.Status, r.Body)
			}
		case r.Error == "":
			t.Errorf("cross-site %s: the fetch succeeded in the page (status %d, type %q): %.200s", r.Name, r.Status, r.Type, r.Body)
		}
		t.Logf("cross-site %s: %+v", r.Name, r)
	}
	if got := s.rec.count(); got != before {
		t.Errorf("the API received %d request(s) from the cross-site page, want none: %+v", got-before, s.rec.requests()[before:])
	}
	// The browser's network record shows the gateway's own answer to the
	// requests that went out (the simple GET, the no-cors POST): a refusal.
	refused := 0
	for _, r := range b.Responses() {
		if !strings.HasPrefix(r.URL, s.gw+"/") {
			continue
		}
		t.Logf("cross-site network record: %s %s %s status %d failed %q", r.Source, r.Method, r.URL, r.Status, r.Failed)
		if r.Method == http.MethodOptions || r.Status == 0 {
			continue
		}
		if r.Status != http.StatusForbidden && r.Status != http.StatusUnauthorized {
			t.Errorf("the gateway answered %d to the cross-site %s %s, want 403 (or 401)", r.Status, r.Method, r.URL)
			continue
		}
		refused++
	}
	if refused == 0 {
		t.Errorf("the browser recorded no answer of the gateway to the cross-site requests")
	}

	// Back on the SPA: still logged in, and the attack created nothing.
	b.Navigate(s.gw + returnPath)
	b.WaitFor(`document.getElementById('user-sub').textContent === ` + jsString(demoSubject))
	if s.apiHasItem(attackTitle) {
		t.Errorf("the cross-site page created an item through the gateway")
	}
}

// logout clicks #logout; back and reload then show a logged-out SPA, and
// the old cookies replayed by hand get 401.
func (s *session) logout() {
	t, b := s.t, s.b
	t.Log("step 5: log out")
	var jar []*http.Cookie
	for _, c := range b.Cookies(s.gw) {
		jar = append(jar, &http.Cookie{Name: c.Name, Value: c.Value})
	}
	// The replay works while the session lives (so the 401 below means
	// something).
	if code, body := s.replay(http.MethodGet, "/bff/user?slide=false", jar); code != http.StatusOK {
		t.Fatalf("replaying the live session's cookies: /bff/user answered %d, want 200: %s", code, body)
	}

	b.WaitVisible("#logout")
	b.Click("#logout")
	// The issuer's end_session endpoint sends the browser back to the
	// gateway's post-logout page, the SPA at /.
	b.WaitFor(`location.href === ` + jsString(s.gw+"/"))
	s.waitStatus("You have been signed out.")
	s.waitLoggedOut("after logout")
	for _, c := range b.Cookies(s.gw) {
		if isSessionCookie(c.Name) {
			t.Errorf("after logout the browser still holds the session cookie %s", c.Name)
		}
	}

	t.Log("step 5b: back button and reload show a logged-out SPA")
	// history.back() rather than chromedp.NavigateBack, which waits for a
	// load event that a back/forward-cache restore never fires.
	b.Eval(`history.back(); 0`, nil)
	b.WaitFor(`location.href === ` + jsString(s.gw+returnPath))
	s.waitLoggedOut("after the back button")
	s.nav(chromedp.Reload(), "reload")
	s.waitLoggedOut("after a reload")

	t.Log("step 5c: the old cookies replayed by hand get 401")
	for _, path := range []string{"/bff/user", "/bff/user?slide=false", "/api/whoami", "/api/items"} {
		if code, body := s.replay(http.MethodGet, path, jar); code != http.StatusUnauthorized {
			t.Errorf("replaying the logged-out session's cookies: GET %s answered %d, want 401: %s", path, code, body)
		}
	}
	s.noTokensAfterLogout()
}

// allowIDTokenHint, when true, accepts the ID token as the id_token_hint
// of the logout redirect (OpenID Connect RP-Initiated Logout 1.0 section
// 2, which Duende BFF and oauth2-proxy also send through the browser).
// Issue 6 asks for no ID token in any response the browser receives, so
// it is false: a gateway that sends the hint through the browser fails
// here, once, with the place named.
const allowIDTokenHint = false

// noTokensAfterLogout checks the logout's responses like noTokens does.
func (s *session) noTokensAfterLogout() {
	t := s.t
	t.Log("step 3 again: no token in what the logout sent to the browser")
	tokens := s.rec.tokens()
	var hints []string
	for _, r := range s.b.Responses() {
		for i, tok := range tokens {
			if r.Contains(tok) {
				t.Errorf("logout: the browser received access token #%d in a %s of %s %s", i+1, r.Source, r.Method, r.URL)
			}
		}
		where, m := findJWT(r)
		switch {
		case m == "":
		case isIDTokenHint(r, m):
			hints = append(hints, fmt.Sprintf("%s of %s %s %s", where, r.Source, r.Method, clip(r.URL, 80)))
		default:
			t.Errorf("logout: the browser received a JWT-shaped value in the %s of %s %s %s (status %d): %.40s…",
				where, r.Source, r.Method, r.URL, r.Status, m)
		}
	}
	if len(hints) > 0 && !allowIDTokenHint {
		t.Errorf("logout: the gateway sent the ID token through the browser as the id_token_hint of the redirect to the issuer's end_session_endpoint; it is in the browser's URL bar, history and the issuer's request line (%d places: %s)",
			len(hints), strings.Join(hints, "; "))
	}
}

// isIDTokenHint reports whether the JWT-shaped m in r is the id_token_hint
// query parameter of a logout URL (the gateway's Location or the issuer's
// request URL).
func isIDTokenHint(r browser.Response, m string) bool {
	if strings.Contains(r.URL, "id_token_hint="+m) {
		return true
	}
	for k, v := range r.Headers {
		if strings.EqualFold(k, "Location") && strings.Contains(v, "id_token_hint="+m) {
			return true
		}
	}
	return false
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// waitStatus waits until the SPA's status line reads text.
func (s *session) waitStatus(text string) {
	s.t.Helper()
	s.b.WaitFor(`document.getElementById('status').textContent === ` + jsString(text))
}

// waitLoggedOut waits until the SPA shows its logged-out view and nothing
// of the previous session.
func (s *session) waitLoggedOut(when string) {
	s.t.Helper()
	s.b.WaitFor(`!document.getElementById('login').hidden && document.getElementById('signed-in').hidden && !document.getElementById('signed-out').hidden && ['You are not logged in.', 'You have been signed out.'].includes(document.getElementById('status').textContent)`)
	var leftover string
	s.b.Eval(`document.getElementById('user-name').textContent + document.getElementById('user-sub').textContent + document.getElementById('items').textContent`, &leftover)
	if leftover != "" {
		s.t.Errorf("%s: the SPA still shows data of the old session: %q", when, leftover)
	}
}

// nav runs a navigation action (back, reload) on the tab.
func (s *session) nav(a chromedp.Action[chromedp.Void], what string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.b.Context(), 15*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, a); err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
}

// replay sends a request to the gateway by hand with the given cookies and
// the anti-CSRF header, as a thief holding the cookies would.
func (s *session) replay(method, path string, jar []*http.Cookie) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.gw+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("X-CSRF", "1")
	req.Header.Set("Accept", "application/json")
	for _, c := range jar {
		req.AddCookie(c)
	}
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatalf("replay %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body)
}

// TestZeroConfigBanner checks what `go run ./cmd/bffgate` prints with no
// configuration file: the URL to open, the demo user and password, and
// the data directory.
func TestZeroConfigBanner(t *testing.T) {
	st := stack.Start(t, stack.Options{})
	abs, err := filepath.Abs(st.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"is running",
		"open           " + st.GatewayURL + "/",
		`demo login     user "demo", password "demo"`,
		"data directory " + abs,
	}
	// The banner follows readiness by a moment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs := st.Logs()
		missing := ""
		for _, w := range want {
			if !strings.Contains(logs, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			if n := strings.Count(logs, "is running"); n != 1 {
				t.Errorf("the banner was printed %d times, want once", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the zero-config banner lacks %q; the process printed:\n%s", missing, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isSessionCookie reports whether name is the gateway's session cookie or
// one of its chunks (not a login-flow cookie, not the issuer's).
func isSessionCookie(name string) bool {
	const base = "__Host-bff"
	return name == base || strings.HasPrefix(name, base+".")
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
