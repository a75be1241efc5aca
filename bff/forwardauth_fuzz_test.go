package bff

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzForwardAuthOriginal feeds the original URI a proxy describes to the
// forward-auth parsing and the login URL built from it. Properties: a
// path that parses is absolute and holds no dot segment; the login URL
// always stays on the public origin at the login endpoint, and its
// returnUrl, if any, is a local path the login itself accepts.
func FuzzForwardAuthOriginal(f *testing.F) {
	for _, s := range []string{"/app/page?x=1&y=%2F2", "/", "/a/../b", "//evil.example/x", "/%2e%2e/admin",
		"https://app.example.com/app?q=1", "http://evil.example/", "/\\evil", "/a%00b", "/bff/login", "/x?returnUrl=//evil",
		"/%252e%252e/x", "javascript:alert(1)", "/a;b/c", "/\u00e9", "", "?x", "#f"} {
		f.Add(s)
	}
	const pub = "https://app.example.com"
	f.Fuzz(func(t *testing.T, uri string) {
		if ruri, p, err := parseOriginalURI(uri); err == nil {
			if !strings.HasPrefix(p, "/") || !strings.HasPrefix(ruri, "/") {
				t.Fatalf("path %q or request URI %q of %q is not absolute", p, ruri, uri)
			}
			for _, seg := range strings.Split(p, "/") {
				if seg == ".." || seg == "." {
					t.Fatalf("path %q of %q holds a dot segment", p, uri)
				}
			}
		}
		login := loginURLFor(pub, "/bff", uri)
		u, err := url.Parse(login)
		if err != nil || u.Scheme != "https" || u.Host != "app.example.com" || u.Path != "/bff/login" || u.User != nil {
			t.Fatalf("login URL %q for %q leaves the login endpoint", login, uri)
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil || len(q) > 1 || len(q["returnUrl"]) > 1 {
			t.Fatalf("login URL %q for %q: query %v %v", login, uri, q, err)
		}
		if ret := q.Get("returnUrl"); ret != "" {
			if got, err := validReturnURL(ret, "/bff"); err != nil || got != ret || strings.HasPrefix(ret, "//") {
				t.Fatalf("returnUrl %q for %q is not one the login accepts: %v", ret, uri, err)
			}
		}
	})
}
