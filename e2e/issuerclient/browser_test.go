package issuerclient

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bffgate/bffgate/e2e/stack"
)

// TestBrowserAgainstGateway signs in through the real bffgate binary's
// gateway with the zero-config demo user: the login form, the session's
// calls with and without the cookie argument, a second login riding the
// issuer's SSO session, logout, and a refused login.
func TestBrowserAgainstGateway(t *testing.T) {
	s := stack.Start(t, stack.Options{Env: []string{"BFFGATE_LOG_ACCESS=false"}})
	ctx := t.Context()
	b := NewBrowser(t)

	cookie, err := b.GatewayLogin(ctx, s.GatewayURL, DemoUser, DemoPassword)
	if err != nil {
		t.Fatalf("gateway login: %v", err)
	}
	if !strings.HasPrefix(cookie, "__Host-bff") {
		t.Fatalf("GatewayLogin returned a Cookie header of %d bytes that does not start with __Host-bff", len(cookie))
	}
	if b.SessionCookie() != cookie {
		t.Fatalf("SessionCookie() differs from the Cookie header GatewayLogin returned")
	}
	sub := wantUser(t, b, s.GatewayURL, cookie)
	// An empty cookie argument sends the whole jar, the session included.
	if got := wantUser(t, b, s.GatewayURL, ""); got != sub {
		t.Fatalf("GET /bff/user with the jar: sub %q, want %q", got, sub)
	}
	a, err := b.Get(ctx, s.GatewayURL+"/api/whoami", cookie)
	if err != nil || a.Status != http.StatusOK {
		t.Fatalf("GET /api/whoami through the gateway: %v %s; want 200", err, a)
	}
	a, err = NewBrowser(t).Get(ctx, s.GatewayURL+"/bff/user", "")
	if err != nil || a.Status != http.StatusUnauthorized || a.JSONError() != "login_required" {
		t.Fatalf("GET /bff/user from a browser without cookies: %v %s; want 401 login_required", err, a)
	}

	// The issuer's SSO cookie is in the jar: the second login passes its
	// authorize endpoint without the form and starts a new session.
	second, err := b.GatewayLogin(ctx, s.GatewayURL, DemoUser, "not-needed-on-sso")
	if err != nil {
		t.Fatalf("second gateway login (SSO session): %v", err)
	}
	if second == cookie {
		t.Fatalf("the second login kept the first session's cookie")
	}
	if got := wantUser(t, b, s.GatewayURL, second); got != sub {
		t.Fatalf("second login's /bff/user: sub %q, want %q", got, sub)
	}

	a, err = b.Call(ctx, http.MethodPost, s.GatewayURL+"/bff/logout", second)
	if err != nil || a.Status/100 != 3 {
		t.Fatalf("POST /bff/logout: %v %s; want a redirect", err, a)
	}
	a, err = b.Get(ctx, s.GatewayURL+"/bff/user", second)
	if err != nil || a.Status != http.StatusUnauthorized || a.JSONError() == "" {
		t.Fatalf("GET /bff/user after logout: %v %s; want 401 with a JSON error", err, a)
	}

	t.Run("wrong password", func(t *testing.T) {
		const wrong = "not-the-password"
		b := NewBrowser(t)
		c, err := b.GatewayLogin(t.Context(), s.GatewayURL, DemoUser, wrong)
		if err == nil || c != "" {
			t.Fatalf("gateway login with a wrong password: cookie of %d bytes, error %v; want an error and no cookie", len(c), err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "HTTP 401") || !strings.Contains(msg, "Wrong username or password") {
			t.Errorf("error = %q, want the issuer's 401 and its page text", msg)
		}
		if b.SessionCookie() != "" {
			t.Errorf("a refused login left a gateway session cookie in the jar")
		}
		wantNoSecrets(t, b, msg, wrong)
		t.Logf("error: %v", err)
	})

	if strings.Contains(s.Logs(), "not-the-password") {
		t.Errorf("bffgate logged a password")
	}
}

// wantUser wants /bff/user answered 200 with a sub claim, and returns it.
func wantUser(t *testing.T, b *Browser, gatewayURL, cookie string) string {
	t.Helper()
	a, err := b.Get(t.Context(), gatewayURL+"/bff/user", cookie)
	if err != nil || a.Status != http.StatusOK {
		t.Fatalf("GET /bff/user: %v %s; want 200", err, a)
	}
	var claims []struct {
		Type  string `json:"type"`
		Value any    `json:"value"`
	}
	if err := json.Unmarshal([]byte(a.Body), &claims); err != nil {
		t.Fatalf("GET /bff/user: %s: not a list of claims: %v", a, err)
	}
	for _, c := range claims {
		if s, ok := c.Value.(string); ok && c.Type == "sub" && s != "" {
			return s
		}
	}
	t.Fatalf("GET /bff/user: %s; want a sub claim", a)
	return ""
}

// wantNoSecrets fails the test when msg holds the password, the login
// form's field names with values, or the value of any cookie in b's jar.
func wantNoSecrets(t *testing.T, b *Browser, msg, password string) {
	t.Helper()
	if strings.Contains(msg, password) || strings.Contains(msg, "csrf") || strings.Contains(msg, "value=") {
		t.Errorf("the error quotes the password or the login form's fields: %v", msg)
	}
	b.jar.mu.Lock()
	defer b.jar.mu.Unlock()
	for name, v := range b.jar.m {
		if strings.Contains(msg, v) {
			t.Errorf("the error holds the value of the cookie %s", name)
		}
	}
}

// TestGatewayLoginStops runs GatewayLogin against a stand-in gateway and
// issuer (an httptest server) that break the flow where the real ones do
// not: the error names the step, and the form is posted once only.
func TestGatewayLoginStops(t *testing.T) {
	t.Parallel()
	const form = `<html><body><form method="post" action="/login">` +
		`<input type="hidden" name="csrf_token" value="SECRET-CSRF">` +
		`<input name="username"><input type="password" name="password"></form></body></html>`
	for _, tc := range []struct {
		name string
		// login answers the form's POST.
		login func(w http.ResponseWriter, r *http.Request)
		// callback answers /bff/callback.
		callback func(w http.ResponseWriter, r *http.Request)
		want     string
	}{
		{
			name:  "form again after the post",
			login: func(w http.ResponseWriter, r *http.Request) { writeHTML(w, http.StatusOK, form) },
			want:  "showed its login form again",
		},
		{
			name: "callback without a redirect",
			callback: func(w http.ResponseWriter, r *http.Request) {
				writeHTML(w, http.StatusBadRequest, "<p>state mismatch</p>")
			},
			want: "callback answered HTTP 400 page text: state mismatch",
		},
		{
			name:     "callback sets no session cookie",
			callback: func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/", http.StatusFound) },
			want:     "set no __Host-bff cookie",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var posts atomic.Int32
			mux := http.NewServeMux()
			mux.HandleFunc("GET /bff/login", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/authorize?state=SECRET-STATE", http.StatusFound)
			})
			mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
				http.SetCookie(w, &http.Cookie{Name: "csrf", Value: "SECRET-COOKIE"})
				writeHTML(w, http.StatusOK, form)
			})
			mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
				posts.Add(1)
				if tc.login != nil {
					tc.login(w, r)
					return
				}
				http.Redirect(w, r, "/bff/callback?code=SECRET-CODE&state=SECRET-STATE", http.StatusFound)
			})
			mux.HandleFunc("GET /bff/callback", func(w http.ResponseWriter, r *http.Request) { tc.callback(w, r) })
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)

			b := NewBrowser(t)
			c, err := b.GatewayLogin(t.Context(), srv.URL, "user", "SECRET-PASSWORD")
			if err == nil || c != "" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GatewayLogin: cookie of %d bytes, error %v; want an error with %q", len(c), err, tc.want)
			}
			if n := posts.Load(); n != 1 {
				t.Errorf("the login form was posted %d times, want once", n)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the error holds a secret: %v", err)
			}
		})
	}
}

// writeHTML writes page as an HTML answer with status.
func writeHTML(w http.ResponseWriter, status int, page string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprint(w, page)
}

// TestBrowserTransportErrorRedacted sends a callback request to a closed
// port: the transport error names the URL without its query values.
func TestBrowserTransportErrorRedacted(t *testing.T) {
	t.Parallel()
	u := fmt.Sprintf("http://127.0.0.1:%d/bff/callback?code=SECRET-CODE&state=SECRET-STATE", stack.FreePort(t))
	_, err := NewBrowser(t).Get(t.Context(), u, "")
	if err == nil {
		t.Fatalf("GET on a closed port succeeded")
	}
	if strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "/bff/callback?code=...&state=...") {
		t.Fatalf("error = %v, want the URL with its query values removed", err)
	}
}

// TestAnswer checks how an Answer shows itself in a failure message and
// reads the gateway's JSON errors.
func TestAnswer(t *testing.T) {
	t.Parallel()
	jsonHeader := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	htmlHeader := http.Header{"Content-Type": {"text/html; charset=utf-8"}}
	for _, tc := range []struct {
		name        string
		a           Answer
		wantString  string
		notInString string
		wantError   string
	}{
		{
			name:       "gateway JSON error",
			a:          Answer{Status: 401, Header: jsonHeader, Body: `{"error":"login_required","login_url":"/bff/login"}`},
			wantString: `HTTP 401 {"error":"login_required","login_url":"/bff/login"}`,
			wantError:  "login_required",
		},
		{
			name:        "login page",
			a:           Answer{Status: 401, Header: htmlHeader, Body: `<p>Wrong username or password.</p><form><input type="hidden" name="csrf_token" value="SECRET"></form>`},
			wantString:  "HTTP 401 page text: Wrong username or password.",
			notInString: "SECRET",
		},
		{
			name:        "long body",
			a:           Answer{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: strings.Repeat("x", 300) + "TAIL"},
			wantString:  "HTTP 200 " + strings.Repeat("x", 300) + "...",
			notInString: "TAIL",
		},
		{
			name: "JSON body with the wrong type",
			a:    Answer{Status: 400, Header: htmlHeader, Body: `{"error":"invalid_request"}`},
		},
		{
			name:       "JSON without an error member",
			a:          Answer{Status: 200, Header: jsonHeader, Body: `[{"type":"sub","value":"1"}]`},
			wantString: `HTTP 200 [{"type":"sub","value":"1"}]`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.a.String()
			if tc.wantString != "" && s != tc.wantString {
				t.Errorf("String() = %q, want %q", s, tc.wantString)
			}
			if tc.notInString != "" && strings.Contains(s, tc.notInString) {
				t.Errorf("String() = %q holds %q", s, tc.notInString)
			}
			if got := tc.a.JSONError(); got != tc.wantError {
				t.Errorf("JSONError() = %q, want %q", got, tc.wantError)
			}
		})
	}
}
