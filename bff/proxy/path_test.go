package proxy

import (
	"bytes"
	"testing"
)

func TestCleanPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "/", true},
		{"/", "/", true},
		{"/a/b", "/a/b", true},
		{"/a/./b/../c", "/a/c", true},
		{"/a/%2e%2E/c", "/c", true},
		{"/a/.%2e/.%2E/../../c/", "/c/", true},
		{"//a///b", "/a/b", true},
		{"/a%2Fb", "/a%2Fb", true},
		{"/a/..%2F..%2Fetc", "", false},
		{"/a\\b", "", false},
		{"/a%5cb", "", false},
		{"/a%00b", "", false},
		{"/a%zz", "", false},
		{"/a%2", "", false},
		{"a/b", "", false},
		{"/a b", "", false},
	} {
		got, ok := cleanPath([]byte(tc.in), nil)
		if ok != tc.ok || (ok && string(got) != tc.want) {
			t.Errorf("cleanPath(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzCleanPath checks that whatever a browser sends, an accepted path is
// normalised: absolute, no empty or dot segments in any encoding, and
// stable under a second pass, so that prefix matching on it is sound.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/api/x", "/api/../x", "/a/%2e%2e/b", "//a//b/", "/a%2F..%2Fb", "/%2e/", "/a/b/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := cleanPath([]byte(in), nil)
		if !ok {
			return
		}
		if len(out) == 0 || out[0] != '/' {
			t.Fatalf("cleanPath(%q) = %q: not absolute", in, out)
		}
		if bytes.Contains(out, []byte("//")) {
			t.Fatalf("cleanPath(%q) = %q: empty segment", in, out)
		}
		for _, seg := range bytes.Split(out[1:], []byte("/")) {
			if dotSegment(seg) != 0 {
				t.Fatalf("cleanPath(%q) = %q: dot segment %q", in, out, seg)
			}
		}
		again, ok := cleanPath(out, nil)
		if !ok || !bytes.Equal(again, out) {
			t.Fatalf("cleanPath not idempotent: %q -> %q -> %q (%v)", in, out, again, ok)
		}
	})
}
