package forwardauth

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/e2e/browser"
	"github.com/bffgate/bffgate/e2e/nginx"
)

// TestChromiumThroughNginx: one full login in a real browser through the
// README's nginx recipe: the protected URL sends chromium to the
// issuer's login form, and after it chromium is back on that URL with the
// app answering as the user. No response the browser received carries
// the user's access token or a token in a header, and the session cookie
// is HttpOnly.
func TestChromiumThroughNginx(t *testing.T) {
	t.Parallel()
	nginx.Need(t)
	b := browser.New(t)
	s := startNginxStack(t)
	target := s.url + "/reports/q?x=1&y=a%2Fb"

	b.Navigate(target)
	b.WaitURL(s.st.IssuerURL + "/")
	b.WaitVisible("#username")
	b.SendKeys("#username", alice)
	b.SendKeys("#password", alicePassword)
	b.Click(`button[type="submit"]`)
	if got := b.WaitURL(target); got != target {
		t.Fatalf("after login chromium is at %s, want %s", got, target)
	}
	b.WaitFor(`document.body && document.body.innerText.includes("user-alice")`)
	var text string
	b.Eval(`document.body.innerText`, &text)
	var got seen
	if err := json.Unmarshal([]byte(text), &got); err != nil {
		t.Fatalf("the page is not the app's answer: %q", text)
	}
	if got.User != "user-alice" || got.Groups != "staff,admins" || got.URI != "/reports/q?x=1&y=a%2Fb" {
		t.Errorf("the app saw %+v", got)
	}
	verifyAssertion(t, got.Assertion, s.url, s.url+"/")

	for _, r := range b.Responses() {
		for k, v := range r.Headers {
			if strings.EqualFold(k, "Authorization") || strings.Contains(v, "Bearer ") || strings.Contains(v, "eyJ") {
				t.Errorf("%s %s: header %s carries a token: %.80s", r.Method, r.URL, k, v)
			}
		}
	}
	for _, ck := range b.Cookies(s.url) {
		if strings.HasPrefix(ck.Name, "__Host-bff") && (!ck.HTTPOnly || !ck.Secure) {
			t.Errorf("session cookie %s: HttpOnly %v Secure %v", ck.Name, ck.HTTPOnly, ck.Secure)
		}
	}
	if st := b.Storage(); strings.Contains(st.Cookie, "__Host-bff") {
		t.Errorf("the session cookie is visible to script: %q", st.Cookie)
	}
}
