package issuer_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// TestCompressedBodyRefusedEveryEndpoint: every issuer endpoint that reads
// a body answers a compressed one 415 without inflating it (TestEdge
// sends the bomb to /token only): the JSON endpoints with RFC 6749's
// invalid_request, the HTML forms with a page. A gzip-in-gzip body of a
// few hundred bytes that inflates to 64 MiB goes to each; together they
// allocate far less than one inflated copy. Not parallel: it measures the
// process's allocations.
func TestCompressedBodyRefusedEveryEndpoint(t *testing.T) {
	e := start(t, envOptions{})
	bomb := gzipTwice(t, 64<<20)
	cases := []struct {
		path string
		json bool
	}{
		{"/token", true},
		{"/revoke", true},
		{"/introspect", true},
		{"/userinfo", true},
		{"/authorize", false},
		{"/login", false},
		{"/logout", false},
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, tc := range cases {
		h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Content-Encoding": {"gzip, gzip"}}
		if tc.path == "/userinfo" {
			h.Set("Authorization", "Bearer x")
		}
		r := e.request(http.MethodPost, tc.path, bytes.NewReader(bomb), h)
		if r.status != http.StatusUnsupportedMediaType {
			t.Errorf("POST %s, compressed: %d %.200s, want 415", tc.path, r.status, r.raw)
			continue
		}
		if tc.json && r.str("error") != "invalid_request" {
			t.Errorf("POST %s, compressed: error %q, want invalid_request", tc.path, r.str("error"))
		}
		if !tc.json && !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
			t.Errorf("POST %s, compressed: Content-Type %q, want a page", tc.path, r.header.Get("Content-Type"))
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("%d compressed posts allocated %d MiB: a body was inflated", len(cases), grew>>20)
	}
}

// gzipTwice returns n zero bytes gzipped twice.
func gzipTwice(t *testing.T, n int) []byte {
	t.Helper()
	var inner, outer bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&inner, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range n >> 20 {
		_, _ = zw.Write(zero)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zw, _ = gzip.NewWriterLevel(&outer, gzip.BestCompression)
	_, _ = zw.Write(inner.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return outer.Bytes()
}
