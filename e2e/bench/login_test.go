package bench

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/web"
)

func TestParseLoginForm(t *testing.T) {
	t.Parallel()
	pages, err := web.New(web.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err = pages.Login(&buf, web.Login{
		Action:     "/authorize/login?x=1&y=2",
		Fields:     []web.Field{{Name: "request", Value: "sealed+/=&<>"}, {Name: "csrf_token", Value: "abc"}},
		ClientName: "bffgate", Scopes: []string{"openid"},
	})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse("http://127.0.0.1:9090/authorize?client_id=bffgate")
	action, fields, err := ParseLoginForm(buf.Bytes(), base)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := action.String(), "http://127.0.0.1:9090/authorize/login?x=1&y=2"; got != want {
		t.Errorf("action = %s, want %s", got, want)
	}
	if got := fields.Get("request"); got != "sealed+/=&<>" {
		t.Errorf("request = %q", got)
	}
	if got := fields.Get("csrf_token"); got != "abc" {
		t.Errorf("csrf_token = %q", got)
	}
	if _, _, err := ParseLoginForm([]byte("<html>hello</html>"), base); err == nil {
		t.Error("a page without a form: nil error")
	}
}

// TestBrowserLogin runs Browser.Login against a small provider and app on
// loopback that behave like the issuer and a gateway: Secure __Host-
// cookies over plain http, a CSRF cookie, redirects in both directions.
func TestBrowserLogin(t *testing.T) {
	t.Parallel()
	pages, err := web.New(web.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var app *httptest.Server
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/authorize":
			http.SetCookie(w, &http.Cookie{Name: "__Host-csrf", Value: "tok", Path: "/", Secure: true, HttpOnly: true})
			_ = pages.Login(w, web.Login{Action: "/authorize/login", Fields: []web.Field{{Name: "csrf_token", Value: "tok"}, {Name: "request", Value: r.URL.Query().Get("state")}}})
		case "/authorize/login":
			_ = r.ParseForm()
			c, err := r.Cookie("__Host-csrf")
			if err != nil || c.Value != r.PostForm.Get("csrf_token") || r.PostForm.Get("password") != "pw" {
				_ = pages.Login(w, web.Login{Action: "/authorize/login", Fields: []web.Field{{Name: "csrf_token", Value: "tok"}}, Error: "Wrong username or password."})
				return
			}
			http.Redirect(w, r, app.URL+"/cb?code=c1&state="+r.PostForm.Get("request"), http.StatusFound)
		}
	}))
	t.Cleanup(idp.Close)
	app = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/login":
			http.SetCookie(w, &http.Cookie{Name: "__Host-state", Value: "s1", Path: "/", Secure: true})
			http.Redirect(w, r, idp.URL+"/authorize?state=s1", http.StatusFound)
		case "/cb":
			st, err := r.Cookie("__Host-state")
			if err != nil || st.Value != r.URL.Query().Get("state") || r.URL.Query().Get("code") != "c1" {
				http.Error(w, "bad callback", http.StatusBadRequest)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: "__Host-state", Path: "/", MaxAge: -1})
			http.SetCookie(w, &http.Cookie{Name: "__Host-bff", Value: "session", Path: "/", Secure: true, HttpOnly: true})
			http.Redirect(w, r, "/", http.StatusFound)
		case "/":
			_, _ = io.WriteString(w, "home")
		}
	}))
	t.Cleanup(app.Close)

	b := NewBrowser(nil)
	last, err := b.Login(app.URL+"/login", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if last.Status != http.StatusOK || string(last.Body) != "home" {
		t.Fatalf("last page = %d %q, want 200 home", last.Status, last.Body)
	}
	host := strings.TrimPrefix(app.URL, "http://")
	if got := b.CookieHeader(host); got != "__Host-bff=session" {
		t.Fatalf("cookies for the app = %q, want only the session (the state cookie was cleared)", got)
	}

	_, err = NewBrowser(nil).Login(app.URL+"/login", "alice", "wrong")
	if err == nil || !strings.Contains(err.Error(), "Wrong username or password.") {
		t.Fatalf("wrong password: err = %v", err)
	}
}
