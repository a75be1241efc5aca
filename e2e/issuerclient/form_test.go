package issuerclient

import (
	"bytes"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/web"
)

// loginPage renders the issuer's real login template.
func loginPage(t *testing.T, d web.Login) string {
	t.Helper()
	pages, err := web.New(web.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := pages.Login(&buf, d); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestParseForm(t *testing.T) {
	t.Parallel()
	const secret = "csrf-value-that-must-not-leak"
	issuerLogin := loginPage(t, web.Login{
		Action:     "/authorize/login?x=1&y=2",
		Fields:     []web.Field{{Name: "request", Value: "sealed+/=&<>"}, {Name: "csrf_token", Value: secret}},
		ClientName: "e2e", Scopes: []string{"openid"},
		Username: "demo", Error: "Wrong username or password.",
	})
	tests := []struct {
		name       string
		page       string
		wantAction string
		wantMethod string
		wantFields map[string][]string
		wantErr    string // a substring of the error; "" for none
	}{
		{
			name:       "issuer login page",
			page:       issuerLogin,
			wantAction: "/authorize/login?x=1&y=2",
			wantMethod: "POST",
			wantFields: map[string][]string{
				"request": {"sealed+/=&<>"}, "csrf_token": {secret}, "username": {"demo"}, "password": {""},
			},
		},
		{
			name: "first form only, inputs outside it ignored",
			page: `<input name="before" value="b"><form action="/one" method="get"><input name="a" value="1">` +
				`<input name="a" value="2"><button name="go" value="yes">Go</button><input value="unnamed"></form>` +
				`<input name="after" value="x"><form action="/two"><input name="b" value="3"></form>`,
			wantAction: "/one",
			wantMethod: "GET",
			wantFields: map[string][]string{"a": {"1", "2"}, "go": {"yes"}},
		},
		{
			name:    "no form",
			page:    `<html><body><p>Unknown application</p><input type="hidden" name="csrf_token" value="` + secret + `"></body></html>`,
			wantErr: "no form in the page: Unknown application",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := ParseForm(tc.page)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseForm error = %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("ParseForm error quotes a hidden field's value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Action != tc.wantAction || f.Method != tc.wantMethod {
				t.Errorf("action %q method %q, want %q %q", f.Action, f.Method, tc.wantAction, tc.wantMethod)
			}
			if len(f.Fields) != len(tc.wantFields) {
				t.Errorf("fields %v, want %v", f.Fields, tc.wantFields)
			}
			for k, want := range tc.wantFields {
				if got := f.Fields[k]; strings.Join(got, "\x00") != strings.Join(want, "\x00") {
					t.Errorf("field %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestPageTextHidesAttributes(t *testing.T) {
	t.Parallel()
	const secret = "sealed-request-value"
	page := loginPage(t, web.Login{
		Action: "/authorize/login", Fields: []web.Field{{Name: "request", Value: secret}},
		Error: "Wrong username or password.",
	})
	got := pageText(page, 1000)
	if strings.Contains(got, secret) {
		t.Fatalf("pageText shows a hidden field's value: %q", got)
	}
	if !strings.Contains(got, "Wrong username or password.") {
		t.Fatalf("pageText = %q, want the page's error text", got)
	}
	if got := pageText(strings.Repeat("word ", 100), 20); got != "word word word word ..." {
		t.Fatalf("pageText clipped = %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://client.e2e.test/callback?code=SECRET&state=s1&iss=x", "https://client.e2e.test/callback?code=...&iss=...&state=..."},
		{"https://client.e2e.test/callback#code=SECRET", "https://client.e2e.test/callback#code=..."},
		{"/authorize?request=SECRET", "/authorize?request=..."},
		{"https://u:pw@h/p", "https://h/p"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
