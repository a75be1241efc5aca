package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestEachCookie(t *testing.T) {
	tests := []struct {
		header string
		want   string // name=value pairs joined by "|"
	}{
		{"", ""},
		{"a=1", "a=1"},
		{"a=1; b=2", "a=1|b=2"},
		{"a=1;b=2;", "a=1|b=2"},
		{" a = 1 ;\tb=2 ; ; ", "a=1|b=2"},
		{"a=x=y; b=", "a=x=y|b="},
		{"flag; a=1", "=flag|a=1"},
		{"__Host-bff=AAA==; __Host-bff.1=BBB", "__Host-bff=AAA==|__Host-bff.1=BBB"},
		{`q="quoted value"`, `q="quoted value"`},
	}
	for _, tt := range tests {
		var got []string
		EachCookie([]byte(tt.header), func(n, v []byte) bool {
			got = append(got, string(n)+"="+string(v))
			return true
		})
		if g := strings.Join(got, "|"); g != tt.want {
			t.Errorf("EachCookie(%q) = %q, want %q", tt.header, g, tt.want)
		}
	}
	n := 0
	EachCookie([]byte("a=1; b=2; c=3"), func(_, _ []byte) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("EachCookie went on after fn returned false: %d calls, want 2", n)
	}
}

// EachCookie finds the same cookies as fasthttp's own parser for the
// headers browsers send.
func TestEachCookieAgreesWithFasthttp(t *testing.T) {
	for _, h := range []string{
		"a=1; b=2", "__Host-bff=" + strings.Repeat("x", 5000) + "; other=v", " sp = ace ; x=1", "a=1; a=2", "k=v=w",
	} {
		var req fasthttp.Request
		req.Header.Set("Cookie", h)
		var want, got []string
		req.Header.VisitAllCookie(func(k, v []byte) { want = append(want, fmt.Sprintf("%s=%s", k, v)) })
		EachCookie([]byte(h), func(n, v []byte) bool { got = append(got, fmt.Sprintf("%s=%s", n, v)); return true })
		if !slicesEqual(got, want) {
			t.Errorf("header %.40q: EachCookie %v, fasthttp %v", h, clip(got), clip(want))
		}
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func clip(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = v[:min(len(v), 40)]
	}
	return out
}

func BenchmarkEachCookie(b *testing.B) {
	h := []byte("__Host-bff=" + strings.Repeat("A", 3800) + "; __Host-bff.1=" + strings.Repeat("B", 1000) + "; theme=dark")
	b.SetBytes(int64(len(h)))
	var n int
	for b.Loop() {
		EachCookie(h, func(name, _ []byte) bool {
			if bytes.HasPrefix(name, []byte("__Host-bff")) {
				n++
			}
			return true
		})
	}
	_ = n
}
