package issuer

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/internal/fuzzcorpus"
)

// basicHeader is how a client writes client_secret_basic (RFC 6749
// §2.3.1: each part form-urlencoded, then RFC 7617 base64).
func basicHeader(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// FuzzParseBasicAuth parses an Authorization header, and one built from
// (id, secret) as RFC 6749 §2.3.1 has a client build it. Properties:
//   - a header of another scheme (or none) is errNoBasic, a Basic one that
//     does not decode an error of its own, never both;
//   - parsed credentials have a client_id, and encoded again they parse to
//     themselves;
//   - any (id, secret) with a non-empty id, encoded by the rules, parses
//     back exactly, whatever bytes (':', '%', '+', NUL, non-UTF-8) it holds.
func FuzzParseBasicAuth(f *testing.F) {
	for _, s := range []struct{ name, header, id, secret string }{
		{"real", basicHeader("bff", "bff-secret-0123456789abcdef0123"), "bff", "bff-secret-0123456789abcdef0123"},
		{"colon-in-id", basicHeader("urn:client:1", "s:e:c"), "urn:client:1", "s:e:c"},
		{"plus-and-percent", "Basic " + base64.StdEncoding.EncodeToString([]byte("a+b:%41%zz")), "a b", "100%"},
		{"lowercase-scheme", "basic   " + base64.StdEncoding.EncodeToString([]byte("id:")), "id", ""},
		{"bearer", "Bearer eyJhbGciOiJub25lIn0.e30.", "x", "y"},
		{"no-colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("idonly")), "", ""},
		{"empty-id", "Basic " + base64.StdEncoding.EncodeToString([]byte(":secret")), "\x00", "\xff"},
		{"not-base64", "Basic ***", "é", "日本"},
		{"unpadded", "Basic YTpi", "a", "b"},
		{"too-long", "Basic " + strings.Repeat("QUFB", 1100), "a", "b"},
	} {
		fuzzcorpus.Add(f, "adv-"+s.name, s.header, s.id, s.secret)
	}
	f.Fuzz(func(t *testing.T, header, id, secret string) {
		gotID, gotSecret, err := parseBasicAuth(header)
		scheme, _, _ := strings.Cut(header, " ")
		isBasic := strings.EqualFold(scheme, "Basic") && strings.Contains(header, " ")
		switch {
		case errors.Is(err, errNoBasic):
			if isBasic {
				t.Fatalf("parseBasicAuth(%q): errNoBasic for a Basic header", header)
			}
		case err != nil:
			if !isBasic {
				t.Fatalf("parseBasicAuth(%q): %v, for a header of another scheme", header, err)
			}
		default:
			if !isBasic || gotID == "" {
				t.Fatalf("parseBasicAuth(%q) = %q, %q", header, gotID, gotSecret)
			}
			again, againSecret, err := parseBasicAuth(basicHeader(gotID, gotSecret))
			if err != nil || again != gotID || againSecret != gotSecret {
				t.Fatalf("re-encoded %q:%q parses to %q:%q, %v", gotID, gotSecret, again, againSecret, err)
			}
		}

		h := basicHeader(id, secret)
		gotID, gotSecret, err = parseBasicAuth(h)
		switch {
		case id == "":
			if err == nil {
				t.Fatalf("an empty client_id was accepted")
			}
		case len(h) > len("Basic ")+4096:
			if err == nil {
				t.Fatalf("credentials of %d bytes were accepted", len(h))
			}
		case err != nil || gotID != id || gotSecret != secret:
			t.Fatalf("%q:%q encoded parses to %q:%q, %v", id, secret, gotID, gotSecret, err)
		}
	})
}

var fuzzTrusted = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("192.0.2.7/32"),
}

var fuzzPeers = []netip.Addr{
	netip.MustParseAddr("10.1.2.3"),
	netip.MustParseAddr("2001:db8::1"),
	netip.MustParseAddr("192.0.2.7"),
}

// modelClient is forwardedClient's rule on strings: the hops of every
// line, right to left; the first that does not parse ends the walk (the
// client is the hop to its right); the first untrusted one is the client.
func modelClient(s *Server, lines []string, peer netip.Addr) netip.Addr {
	var hops []string
	for _, l := range lines {
		for _, h := range strings.Split(l, ",") {
			if h = strings.Trim(h, " \t"); h != "" {
				hops = append(hops, h)
			}
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		ip, ok := parseHop([]byte(hops[i]))
		if !ok {
			return client
		}
		client = ip
		if !s.trustedProxy(ip) {
			return ip
		}
	}
	return client
}

// FuzzForwardedClient resolves the client behind a trusted proxy from two
// X-Forwarded-For lines. Properties:
//   - the result is the peer or an address written in the header, valid,
//     not unspecified, without a zone, not IPv4-mapped;
//   - it is what the rule gives on the hops split with strings.Split (the
//     scanner works on bytes from the right);
//   - two lines count as one list joined by ',' (RFC 9110 §5.3);
//   - every hop to the right of the one chosen is a trusted proxy.
func FuzzForwardedClient(f *testing.F) {
	for _, s := range []struct {
		name, a, b string
		peer       uint8
	}{
		{"one-client", "203.0.113.9", "", 0},
		{"chain", "198.51.100.1, 203.0.113.9, 10.0.0.5", "10.9.9.9", 0},
		{"spoofed-left", "6.6.6.6, 203.0.113.9", "", 1},
		{"junk-right", "203.0.113.9, junk", "", 0},
		{"ports", "[2001:db8::5]:4711, 198.51.100.2:80", "", 1},
		{"mapped-and-zone", "::ffff:203.0.113.9, fe80::1%eth0", "", 2},
		{"unspecified", "0.0.0.0", "::", 0},
		{"empty-elements", " , ,\t,", ",203.0.113.1,,", 2},
		{"all-trusted", "10.0.0.1,10.0.0.2", "2001:db8::9", 0},
		{"unknown", "unknown", "", 0},
	} {
		fuzzcorpus.Add(f, "adv-"+s.name, s.a, s.b, s.peer)
	}
	s := &Server{cfg: Config{trustedProxies: fuzzTrusted}}
	f.Fuzz(func(t *testing.T, a, b string, peerSel uint8) {
		peer := fuzzPeers[int(peerSel)%len(fuzzPeers)]
		lines := [][]byte{[]byte(a), []byte(b)}
		got := s.forwardedClient(lines, peer)
		if !got.IsValid() || got.IsUnspecified() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("forwardedClient(%q, %q) = %v", a, b, got)
		}
		if want := modelClient(s, []string{a, b}, peer); got != want {
			t.Fatalf("forwardedClient(%q, %q, %v) = %v, the rule gives %v", a, b, peer, got, want)
		}
		if joined := s.forwardedClient([][]byte{[]byte(a + "," + b)}, peer); joined != got {
			t.Fatalf("forwardedClient(%q, %q) = %v on two lines, %v on one", a, b, got, joined)
		}
		if got == peer {
			return
		}
		// The chosen hop is written in the header, and every hop to its
		// right is a trusted proxy.
		hops := strings.FieldsFunc(a+","+b, func(r rune) bool { return r == ',' })
		for i := len(hops) - 1; i >= 0; i-- {
			ip, ok := parseHop([]byte(strings.Trim(hops[i], " \t")))
			if ok && ip == got {
				return
			}
			if strings.Trim(hops[i], " \t") != "" && (!ok || !s.trustedProxy(ip)) {
				t.Fatalf("forwardedClient(%q, %q) = %v, past the untrusted hop %q", a, b, got, hops[i])
			}
		}
		t.Fatalf("forwardedClient(%q, %q) = %v, an address the header does not hold", a, b, got)
	})
}
