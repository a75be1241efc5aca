package proxy

import (
	"bytes"
	"errors"
	"testing"
)

func TestParsePath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, fwd, canon string // fwd "" means refused
	}{
		{"", "/", "/"},
		{"/", "/", "/"},
		{"/a/b", "/a/b", "/a/b"},
		{"//a///b", "/a/b", "/a/b"},
		{"/a//", "/a/", "/a/"},
		{"/a/b/", "/a/b/", "/a/b/"},
		{"/%61pi/x", "/%61pi/x", "/api/x"},
		{"/%2561pi/x", "/%2561pi/x", "/api/x"},
		{"/api/orders;v=1/x", "/api/orders;v=1/x", "/api/orders/x"},
		{"/api;jsessionid=1/x", "/api;jsessionid=1/x", "/api/x"},
		{"/search/100%25", "/search/100%25", "/search/100%"},
		{"/a.b/..c/...x", "/a.b/..c/...x", "/a.b/..c/...x"},
		{"/caf%C3%A9", "/caf%C3%A9", "/caf\xc3\xa9"},

		// Dot segments in every disguise.
		{"/a/./b", "", ""},
		{"/a/../b", "", ""},
		{"/a/..", "", ""},
		{"/a/%2e%2E/c", "", ""},
		{"/a/.%2e/c", "", ""},
		{"/a/%252e%252e/c", "", ""},
		{"/a/%25252e%25252e/c", "", ""},
		{"/svc/..;/internal/admin", "", ""},
		{"/svc/.;/internal", "", ""},
		{"/svc/..;jsessionid=x/admin", "", ""},
		{"/svc/%2e%2e;/admin", "", ""},
		{"/svc/..%3b/admin", "", ""},
		{"/svc/..%20/admin", "", ""},
		{"/svc/.../admin", "", ""},
		// Encoded slashes and backslashes, once or twice.
		{"/a%2Fb", "", ""},
		{"/a%2fb", "", ""},
		{"/a/..%2F..%2Fetc", "", ""},
		{"/a%252Fb", "", ""},
		{"/a%5cb", "", ""},
		{"/a%255Cb", "", ""},
		{"/a\\b", "", ""},
		// Path parameters without a segment.
		{"/api/;x/admin", "", ""},
		// Control characters, malformed escapes, not origin-form.
		{"/a%00b", "", ""},
		{"/a%250ab", "", ""},
		{"/a%zz", "", ""},
		{"/a%2", "", ""},
		{"a/b", "", ""},
		{"/a b", "", ""},
		{"/a%2525252561", "", ""}, // five rounds
	} {
		fwd, canon, err := parsePath([]byte(tc.in), nil, nil)
		if tc.fwd == "" {
			if err == nil {
				t.Errorf("parsePath(%q) = %q, %q; want refused", tc.in, fwd, canon)
			} else if !errors.Is(err, ErrInvalidPath) {
				t.Errorf("parsePath(%q): %v does not match ErrInvalidPath", tc.in, err)
			}
			if CheckPath([]byte(tc.in)) == nil {
				t.Errorf("CheckPath(%q) = nil", tc.in)
			}
			continue
		}
		if err != nil || string(fwd) != tc.fwd || string(canon) != tc.canon {
			t.Errorf("parsePath(%q) = %q, %q, %v; want %q, %q", tc.in, fwd, canon, err, tc.fwd, tc.canon)
		}
	}
}

// FuzzParsePath checks that whatever a client sends, an accepted path is
// safe to match and forward: absolute, no empty segment, no segment an
// upstream could read as a dot segment or split at an encoded slash,
// canonical and forwarded forms with the same segments, and stable under
// a second pass.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/", "/api/x", "/api/../x", "/a/%2e%2e/b", "//a//b/", "/a%2F..%2Fb", "/%2e/", "/svc/..;/x", "/a;b/c", "/%252e%252e/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		fwd, canon, err := parsePath([]byte(in), nil, nil)
		if err != nil {
			return
		}
		if len(fwd) == 0 || fwd[0] != '/' || canon[0] != '/' {
			t.Fatalf("parsePath(%q) = %q: not absolute", in, fwd)
		}
		if bytes.Contains(fwd, []byte("//")) || bytes.Contains(canon, []byte("//")) {
			t.Fatalf("parsePath(%q) = %q, %q: empty segment", in, fwd, canon)
		}
		if bytes.Count(fwd, []byte("/")) != bytes.Count(canon, []byte("/")) {
			t.Fatalf("parsePath(%q) = %q, %q: segment counts differ", in, fwd, canon)
		}
		for _, seg := range bytes.Split(canon[1:], []byte("/")) {
			if dotsOnly(seg) || bytes.IndexByte(seg, '\\') >= 0 || bytes.IndexByte(seg, ';') >= 0 {
				t.Fatalf("parsePath(%q) = canonical %q: segment %q", in, canon, seg)
			}
		}
		again, canon2, err := parsePath(fwd, nil, nil)
		if err != nil || !bytes.Equal(again, fwd) || !bytes.Equal(canon2, canon) {
			t.Fatalf("parsePath not idempotent: %q -> %q -> %q (%v)", in, fwd, again, err)
		}
	})
}
