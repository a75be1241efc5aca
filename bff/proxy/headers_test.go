package proxy

import (
	"bytes"
	"strings"
	"testing"
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
