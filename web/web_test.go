package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
)

func TestPages(t *testing.T) {
	t.Parallel()
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		render func(*bytes.Buffer) error
		want   []string
		absent []string
	}{
		{
			name: "login",
			render: func(b *bytes.Buffer) error {
				return p.Login(b, Login{
					Action: "/login", Fields: []Field{{"request", `se"aled<x>`}},
					ClientName: "spa", Scopes: []string{"openid", "email"},
					Username: "alice", Error: "Wrong username or password.",
				})
			},
			want: []string{`<html lang="en">`, `action="/login"`, `name="request" value="se&#34;aled&lt;x&gt;"`,
				`<label for="username">`, `autocomplete="username"`, `autocomplete="current-password"`,
				`role="alert"`, "Wrong username or password.", `value="alice"`, "Sign in to spa", "openid, email"},
			absent: []string{"<script", "http://", "https://"},
		},
		{
			name: "error with mismatch",
			render: func(b *bytes.Buffer) error {
				return p.Error(b, Error{Title: "Redirect URI not registered", Message: "m",
					Mismatch: &RedirectMismatch{Requested: "http://a/<b>", Registered: []string{"http://a/cb"},
						Differences: []string{"the path differs"}}, RequestID: "rid"})
			},
			want:   []string{"Redirect URI not registered", "http://a/&lt;b&gt;", "<li><code>http://a/cb</code></li>", "the path differs", "rid"},
			absent: []string{"<b>"},
		},
		{
			name: "gateway error with code and link",
			render: func(b *bytes.Buffer) error {
				return p.Error(b, Error{Title: "Sign-in failed", Message: "The sign-in took too long.", Code: "state_missing",
					Link: "/bff/login?returnUrl=%2Fa%3Cb", LinkText: "Sign in again", RequestID: "rid"})
			},
			want: []string{"<h1>Sign-in failed</h1>", "The sign-in took too long.", `<code id="error-code">state_missing</code>`,
				`<a class="button" id="next" href="/bff/login?returnUrl=%2Fa%3Cb">Sign in again</a>`, "rid"},
			absent: []string{"<b>", "<script"},
		},
		{
			name: "error without code or link",
			render: func(b *bytes.Buffer) error {
				return p.Error(b, Error{Title: "Unknown application", Message: "m"})
			},
			absent: []string{"error-code", `id="next"`},
		},
		{
			name: "logout confirm",
			render: func(b *bytes.Buffer) error {
				return p.Logout(b, Logout{Confirm: true, Action: "/logout", Fields: []Field{{"state", "s"}}})
			},
			want: []string{"Sign out?", `action="/logout"`, `name="state" value="s"`},
		},
		{
			name:   "logged out",
			render: func(b *bytes.Buffer) error { return p.Logout(b, Logout{ClientName: "spa"}) },
			want:   []string{"Signed out", "signed out of spa"},
			absent: []string{"<form"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			if err := tc.render(&b); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("page lacks %q:\n%s", w, out)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("page contains %q", a)
				}
			}
			// The CSP's style hash must match the inlined stylesheet, or
			// browsers would drop the styles.
			m := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(out)
			if m == nil {
				t.Fatal("no <style>")
			}
			sum := sha256.Sum256([]byte(m[1]))
			if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(p.ContentSecurityPolicy(), h) {
				t.Errorf("CSP %q lacks the stylesheet hash %s", p.ContentSecurityPolicy(), h)
			}
		})
	}
}

func TestFS(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"layout.html", "login.html", "error.html", "logout.html", "style.css"} {
		if _, err := FS().Open(name); err != nil {
			t.Errorf("FS lacks %s: %v", name, err)
		}
	}
}
