package bff

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestValidReturnURL(t *testing.T) {
	t.Parallel()
	ok := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/orders", "/orders"},
		{"/orders/42?tab=items#top", "/orders/42?tab=items#top"},
		{"/search?q=a%20b", "/search?q=a%20b"},
		{"/caf%C3%A9", "/caf%C3%A9"},
		{"/a:b", "/a:b"},
		{"/bff/user", "/bff/user"},
	}
	for _, tc := range ok {
		t.Run("ok "+tc.in, func(t *testing.T) {
			got, err := validReturnURL(tc.in, "/bff")
			if err != nil || got != tc.want {
				t.Fatalf("validReturnURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	for _, in := range returnURLAttacks {
		t.Run("attack "+url.QueryEscape(in[:min(len(in), 40)]), func(t *testing.T) {
			got, err := validReturnURL(in, "/bff")
			if err == nil {
				t.Fatalf("validReturnURL(%q) = %q, accepted", in, got)
			}
			if !errors.Is(err, ErrInvalidReturnURL) {
				t.Fatalf("error %v does not match ErrInvalidReturnURL", err)
			}
		})
	}
}

// returnURLAttacks are return URLs that must be refused: each would send
// the browser off the site, smuggle a header, or loop into the gateway.
var returnURLAttacks = []string{
	"https://evil.example",
	"http:evil.example",
	"//evil.example",
	"//evil.example/path",
	"///evil.example",
	"/\\evil.example",
	"\\\\evil.example",
	"\\/evil.example",
	"/%2fevil.example",
	"/%2F%2Fevil.example",
	"%2f%2fevil.example",
	"/%5cevil.example",
	"/%5Cevil.example",
	"/%252f%252fevil.example",
	"/%25252f%25252fevil.example",
	"/%2525252525252f%2f",
	"javascript:alert(1)",
	"JAVASCRIPT:alert(1)",
	"data:text/html,<script>alert(1)</script>",
	"evil.example",
	"./evil",
	"../evil",
	" /orders",
	"/orders\r\nSet-Cookie: x=y",
	"/orders%0d%0aSet-Cookie:%20x=y",
	"/orders\x00",
	"/orders%00",
	"/\torders",
	"/%09/evil.example",
	"/ /evil",
	"/caf\u00e9",
	"/\u3002evil.example",
	"/%ZZ",
	"/bff/login",
	"/bff/login?returnUrl=//evil.example",
	"/BFF/Callback",
	"/bff/logout",
	"/x/../bff/login",
	"/bff/%6cogin",
	"/" + strings.Repeat("a", 2048),
}

// FuzzReturnURL checks that whatever validReturnURL accepts resolves, in
// a browser's view (URL resolution against the site), to the site itself.
func FuzzReturnURL(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//x", "/%2f%2fx", "/\\x", "/%5c", "https://x", "/bff/login"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://app.example.test/some/page")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := validReturnURL(in, "/bff")
		if err != nil {
			return
		}
		u, perr := base.Parse(strings.ReplaceAll(got, "\\", "/"))
		if perr != nil {
			t.Fatalf("accepted %q does not parse: %v", got, perr)
		}
		if u.Host != "app.example.test" || u.Scheme != "https" {
			t.Fatalf("accepted %q resolves to %s", got, u)
		}
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") {
			t.Fatalf("accepted %q is not a local path", got)
		}
		dec := got
		for range 8 {
			d, err := url.PathUnescape(dec)
			if err != nil || d == dec {
				break
			}
			dec = d
		}
		if strings.HasPrefix(dec, "//") || strings.Contains(dec, "\\") {
			t.Fatalf("accepted %q decodes to %q", got, dec)
		}
	})
}
