package frontends

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/e2e/browser"
)

// signIn signs user in to f in the browser: f's SPA, its login link, the
// provider's form (the embedded issuer's, or oidc-provider's login and, for
// a client new to this browser, consent), and back to the SPA, which must
// then show user.
func (e *env) signIn(t *testing.T, b *browser.Browser, f frontend, user string) {
	t.Helper()
	b.Navigate(f.url("/"))
	b.WaitFor(`document.body.dataset.state === 'anonymous'`)
	b.Click("#login")
	if f.Embedded {
		b.WaitURL(e.issuer + "/")
		b.WaitVisible("#username")
		b.SetValue("#username", user)
		b.SetValue("#password", issuerUsers[user])
		b.Click(`button[type="submit"]`)
	} else {
		b.WaitVisible(`input[name=login]`)
		if loc := b.Location(); !strings.HasPrefix(loc, e.oidc+"/") {
			t.Fatalf("%s's login page is at %s, want oidc-provider %s", f.Name, loc, e.oidc)
		}
		b.SetValue(`input[name=login]`, user)
		b.SetValue(`input[name=password]`, "any-password")
		b.Click(`button[type=submit]`)
		back := `location.href.startsWith(` + jsString(f.url("/")) + `)`
		b.WaitFor(back + ` || (document.querySelector('input[name=prompt]') || {}).value === 'consent'`)
		var there bool
		b.Eval(back, &there)
		if !there {
			b.Click(`button[type=submit]`)
		}
	}
	b.WaitURL(f.url("/"))
	e.wantSignedIn(t, b, f, user)
}

// open loads f's SPA and waits until it knows whether someone is signed
// in; it returns the state ("signed-in" or "anonymous").
func open(t *testing.T, b *browser.Browser, f frontend) string {
	t.Helper()
	b.Navigate(f.url("/"))
	b.WaitFor(`document.body.dataset.state !== 'loading'`)
	var state string
	b.Eval(`document.body.dataset.state`, &state)
	return state
}

// wantSignedIn wants f's SPA (loaded now if the browser is elsewhere)
// to show user, with a logout link of f's own.
func (e *env) wantSignedIn(t *testing.T, b *browser.Browser, f frontend, user string) {
	t.Helper()
	if !strings.HasPrefix(b.Location(), f.url("/")) || !isState(b, "signed-in") {
		if state := open(t, b, f); state != "signed-in" {
			t.Fatalf("%s's SPA shows %q, want %s signed in", f.Name, state, user)
		}
	}
	b.WaitFor(`document.body.dataset.state !== 'loading'`)
	if got := b.Text("#user"); got != user {
		t.Errorf("%s's SPA shows the user %q, want %q", f.Name, got, user)
	}
	var logout string
	b.Eval(`document.getElementById('logout').getAttribute('href')`, &logout)
	if want := f.Prefix + "/bff/logout?sid="; !strings.HasPrefix(logout, want) {
		t.Errorf("%s's bff:logout_url is %q, want it under %s", f.Name, logout, want)
	}
}

func isState(b *browser.Browser, state string) bool {
	var s string
	b.Eval(`document.body.dataset.state`, &s)
	return s == state
}

// wantAnonymous wants f's SPA to show nobody signed in.
func wantAnonymous(t *testing.T, b *browser.Browser, f frontend) {
	t.Helper()
	if state := open(t, b, f); state != "anonymous" {
		t.Errorf("%s's SPA shows %q (user %q), want anonymous", f.Name, state, b.Text("#user"))
	}
}

// callAPI clicks f's API button (the SPA must be loaded) and returns the
// status and the echo API's answer.
func callAPI(t *testing.T, b *browser.Browser, f frontend) (int, echoed) {
	t.Helper()
	b.Click("#call-api")
	b.WaitFor(`document.getElementById('api').dataset.status !== ''`)
	var status, body string
	b.Eval(`document.getElementById('api').dataset.status`, &status)
	b.Eval(`document.getElementById('api').textContent`, &body)
	code, _ := strconv.Atoi(status)
	var got echoed
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%s's API answered 200 with %q: %v", f.Name, body, err)
		}
	}
	return code, got
}

// wantAPI wants f's API call from its SPA to reach the echo API as f, with
// a token of user for f's client.
func (e *env) wantAPI(t *testing.T, b *browser.Browser, f frontend, user string) {
	t.Helper()
	code, got := callAPI(t, b, f)
	if code != http.StatusOK {
		t.Errorf("%s's API call from its SPA answered %d, want 200", f.Name, code)
		return
	}
	e.checkEcho(t, f, user, got)
}

// checkEcho wants got to be an API call of f with a token of user for f's
// client at f's provider.
func (e *env) checkEcho(t *testing.T, f frontend, user string, got echoed) {
	t.Helper()
	if got.Frontend != f.Name {
		t.Errorf("%s's API call reached the API as frontend %q", f.Name, got.Frontend)
	}
	if want := f.Prefix + "/api/whoami"; got.Path != want {
		t.Errorf("%s's API call reached the API at %s, want %s", f.Name, got.Path, want)
	}
	if got.Sub != user {
		t.Errorf("%s's API call carried a token of %q, want %q", f.Name, got.Sub, user)
	}
	wantIss := e.oidc
	if f.Embedded {
		wantIss = e.issuer
	}
	if got.Issuer != wantIss {
		t.Errorf("%s's API call carried a token of issuer %q, want %q", f.Name, got.Issuer, wantIss)
	}
	client := f.clientID()
	if got.ClientID != client && !slices.Contains(got.Aud, client) {
		t.Errorf("%s's API call carried a token of client %q (aud %v), want client %q", f.Name, got.ClientID, got.Aud, client)
	}
	for _, c := range got.Cookies {
		if strings.Contains(c, "bff-") {
			t.Errorf("%s's route sent the gateway's cookie %s upstream", f.Name, c)
		}
	}
}

// sessionCookies returns the browser's session cookies of f (the cookie
// and its chunks, if any) by name.
func sessionCookies(t *testing.T, b *browser.Browser, f frontend) map[string]string {
	t.Helper()
	out := map[string]string{}
	name := f.cookieName()
	for _, c := range b.Cookies(f.url("/")) {
		if c.Name == name || strings.HasPrefix(c.Name, name+".") {
			if !c.HTTPOnly || !c.Secure {
				t.Errorf("%s's session cookie %s: HttpOnly %t, Secure %t", f.Name, c.Name, c.HTTPOnly, c.Secure)
			}
			wantPath := "/"
			if f.Prefix != "" {
				wantPath = f.Prefix
			}
			if c.Path != wantPath {
				t.Errorf("%s's session cookie %s has Path %s, want %s", f.Name, c.Name, c.Path, wantPath)
			}
			out[c.Name] = c.Value
		}
	}
	if len(out) == 0 {
		var names []string
		for _, c := range b.Cookies(f.url("/")) {
			names = append(names, c.Name)
		}
		t.Fatalf("the browser holds no %s cookie for %s (it holds %v)", name, f.Name, names)
	}
	return out
}

// renamed returns cookies under the cookie name of to (chunks keep their
// suffix).
func renamed(cookies map[string]string, from, to frontend) map[string]string {
	out := map[string]string{}
	for n, v := range cookies {
		out[to.cookieName()+strings.TrimPrefix(n, from.cookieName())] = v
	}
	return out
}
