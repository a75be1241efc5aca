package proxy

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// headerNameSeeds are the names requestKindOf decides without a prefix
// match, in several cases, next to names that share their beginnings or
// take the slow path.
func headerNameSeeds() []string {
	seeds := []string{
		"", "a", "Accept", "X-CSRF", "x-csrf", "Sec-Fetch-Site", "X_Forwarded_For", "x-forwarded-for",
		"Cookie2", "Cookies", "Connectio", "Connection-X", "Hostname", "X-Real-Ip-Extra",
		"X-Forwarded", "X-Forwarded-", "X-Forwarded-Port", "x-forwarded-", "X-Auth-Request-", "X-Auth-Request",
		"Remote-User", "remote-", "Cf-Access-Jwt-Assertion", "TE", "te", "Trailer", "Upgrade", "Proxy-Authorization",
		strings.Repeat("X-Forwarded-", 6), strings.Repeat("a", maxListedName), strings.Repeat("a", maxListedName+1),
		"X-Forwarded-" + strings.Repeat("b", maxListedName), "\xe2\x84\xaaeep-Alive", "X-\x00",
	}
	names := [][]byte{hCookie, hConnection, hHost, hAuthorization, hContentLength, hDate, hSetCookie}
	names = append(names, hopByHopNames...)
	for _, e := range spoofable {
		names = append(names, e.name)
	}
	for _, n := range names {
		seeds = append(seeds, string(n), strings.ToLower(string(n)), strings.ToUpper(string(n)), string(n)+"x", string(n)+"_")
	}
	return seeds
}

func TestRequestKindOf(t *testing.T) {
	for _, name := range headerNameSeeds() {
		if got, want := requestKindOf([]byte(name)), requestKindSlow([]byte(name)); got != want {
			t.Errorf("requestKindOf(%q) = %d, requestKindSlow says %d", name, got, want)
		}
		if got, want := responseKindOf([]byte(name)), responseKindSlow([]byte(name)); got != want {
			t.Errorf("responseKindOf(%q) = %d, responseKindSlow says %d", name, got, want)
		}
	}
	for name, want := range map[string]responseKind{
		"Set-Cookie": respSetCookie, "set-cookie": respSetCookie, "Date": respDrop, "CONTENT-LENGTH": respDrop,
		"Transfer-Encoding": respDrop, "Keep-Alive": respDrop, "Content-Type": respPass, "Server": respPass,
	} {
		if got := responseKindOf([]byte(name)); got != want {
			t.Errorf("responseKindOf(%q) = %d, want %d", name, got, want)
		}
	}
	for name, want := range map[string]requestKind{
		"Cookie": reqCookie, "connection": reqConnection, "Keep-Alive": reqDrop, "HOST": reqDrop,
		"Authorization": reqDrop, "Content-Length": reqDrop, "X-Forwarded-For": reqDrop, "X-Real-Ip": reqTrusted,
		"X-Forwarded-Prefix": reqDrop, "X-Goog-Authenticated-User-Email": reqDrop, "X_Custom": reqDrop,
		"X-Csrf": reqPass, "Accept": reqPass, "Content-Type": reqPass,
	} {
		if got := requestKindOf([]byte(name)); got != want {
			t.Errorf("requestKindOf(%q) = %d, want %d", name, got, want)
		}
	}
}

// FuzzRequestKind checks that the fast decisions of a request header's
// and a response header's fate equal their definitions (requestKindSlow,
// responseKindSlow) for any name.
func FuzzRequestKind(f *testing.F) {
	for _, s := range headerNameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		k := []byte(name)
		before := bytes.Clone(k)
		if got, want := requestKindOf(k), requestKindSlow(k); got != want {
			t.Fatalf("requestKindOf(%q) = %d, requestKindSlow says %d", name, got, want)
		}
		if got, want := responseKindOf(k), responseKindSlow(k); got != want {
			t.Fatalf("responseKindOf(%q) = %d, responseKindSlow says %d", name, got, want)
		}
		if !bytes.Equal(k, before) {
			t.Fatalf("requestKindOf changed its argument: %q -> %q", before, k)
		}
	})
}

// BenchmarkRequestKind is the header loop's decision for the headers of
// a browser's fetch (BenchmarkHandler's request), fast and by definition.
func BenchmarkRequestKind(b *testing.B) {
	names := [][]byte{[]byte("Host"), []byte("Connection"), []byte("Sec-Ch-Ua"), []byte("Sec-Ch-Ua-Mobile"),
		[]byte("Sec-Ch-Ua-Platform"), []byte("X-Csrf"), []byte("User-Agent"), []byte("Accept"), []byte("Sec-Fetch-Site"),
		[]byte("Sec-Fetch-Mode"), []byte("Sec-Fetch-Dest"), []byte("Referer"), []byte("Accept-Encoding"),
		[]byte("Accept-Language"), []byte("Cookie")}
	for _, fn := range []struct {
		name string
		f    func([]byte) requestKind
	}{{"map", requestKindOf}, {"compare", requestKindSlow}} {
		b.Run(fn.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, n := range names {
					fn.f(n)
				}
			}
		})
	}
}

// rawFieldSeeds are header blocks (after the request line) of the shapes
// browsers, proxies and attackers send.
func rawFieldSeeds() []string {
	return []string{
		"Host: a\r\n\r\n",
		"Host: a\r\nCookie: __Host-bff=x; theme=dark\r\nX-CSRF: 1\r\n\r\n",
		"host:a\r\nx-a:  padded \t\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
		"Host: a\nX-Lf: v\r\n\r\n",
		"Host: a\r\nX-Folded: one\r\n two\r\n\r\n",
		"Host: a\r\nX-Folded: one\r\n\ttwo\r\nX-B: b\r\n\r\n",
		"Host: a\r\nX-Colon: a:b:c\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
		"Host: a\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: keep-alive, X-Dup\r\n\r\n",
		"Host: a\r\nContent-Length: 3\r\nContent-Type: text/plain\r\nUser-Agent: u\r\n\r\n",
		"Host: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n",
		"Host: a\r\nX-Weird Name: v\r\nX-Utf: \xc3\xbc\r\n\r\n",
	}
}

// parsedFields reads "GET / HTTP/1.1\r\n" + block with fasthttp's
// server-side header parser and returns the header, or nil if it refuses
// it.
func parsedFields(block string) *fasthttp.RequestHeader {
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\n" + block))); err != nil {
		return nil
	}
	return &h
}

// FuzzEachRawField: for any header block fasthttp's parser accepts,
// eachRawField gives the fields fasthttp's own in-order visit gives, in
// the same order, names equal without case and values equal; or, for a
// block with a folded field, false.
func FuzzEachRawField(f *testing.F) {
	for _, s := range rawFieldSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, block string) {
		req := parsedFields(block)
		if req == nil {
			return
		}
		raw := bytes.Clone(req.RawHeaders())
		type field struct{ k, v string }
		var got, want []field
		ok := eachRawField(raw, func(k, v []byte) { got = append(got, field{string(k), string(v)}) })
		folded := bytes.Contains(raw, []byte("\n ")) || bytes.Contains(raw, []byte("\n\t"))
		if !ok {
			if !folded {
				t.Fatalf("eachRawField(%q) = false for a block without a fold", raw)
			}
			return
		}
		if folded {
			t.Fatalf("eachRawField(%q) split a folded block", raw)
		}
		req.VisitAllInOrder(func(k, v []byte) { want = append(want, field{string(k), string(v)}) })
		if len(got) != len(want) {
			t.Fatalf("block %q: eachRawField %q, fasthttp %q", raw, got, want)
		}
		for i := range got {
			if !strings.EqualFold(got[i].k, want[i].k) || got[i].v != want[i].v {
				t.Fatalf("block %q: field %d is %q, fasthttp says %q", raw, i, got[i], want[i])
			}
		}
	})
}

// TestEachRawField runs FuzzEachRawField's property on its seeds, and
// checks that the folded seeds are the ones handed back.
func TestEachRawField(t *testing.T) {
	for _, s := range rawFieldSeeds() {
		req := parsedFields(s)
		if req == nil {
			t.Fatalf("fasthttp refused the seed %q", s)
		}
		n := 0
		ok := eachRawField(req.RawHeaders(), func(k, v []byte) { n++ })
		if folded := strings.Contains(s, "\n ") || strings.Contains(s, "\n\t"); ok == folded {
			t.Errorf("eachRawField(%q) = %v, want %v", s, ok, !folded)
		}
		if ok && n == 0 {
			t.Errorf("eachRawField(%q) visited nothing", s)
		}
	}
}

func TestRepeated(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  bool
	}{
		{nil, false},
		{[]string{"Accept"}, false},
		{[]string{"Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Accept"}, false},
		{[]string{"X-Keep", "Accept", "x-keep"}, true},
		{[]string{"Sec-Fetch-Site", "Sec-Fetch-Mode", "SEC-FETCH-SITE"}, true},
		{[]string{"a", "b", "A"}, true},
		{[]string{"ab", "ba"}, false},
	} {
		names := make([][]byte, len(tc.names))
		for i, n := range tc.names {
			names[i] = []byte(n)
		}
		if got := repeated(names); got != tc.want {
			t.Errorf("repeated(%q) = %v, want %v", tc.names, got, tc.want)
		}
	}
}
