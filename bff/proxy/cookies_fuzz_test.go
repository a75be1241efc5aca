package proxy

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/internal/fuzzcorpus"
)

// model is EachCookie written the obvious way, on strings: split at ';',
// trim, skip empty pairs, cut at the first '='.
func model(header string) [][2]string {
	var out [][2]string
	for _, pair := range strings.Split(header, ";") {
		pair = strings.Trim(pair, " \t")
		if pair == "" {
			continue
		}
		if n, v, ok := strings.Cut(pair, "="); ok {
			out = append(out, [2]string{strings.Trim(n, " \t"), strings.Trim(v, " \t")})
		} else {
			out = append(out, [2]string{"", pair})
		}
	}
	return out
}

// FuzzEachCookie scans a Cookie header (and a second line, as a request
// with two Cookie fields has) with EachCookie and keepCookies. Properties:
//   - no name or value contains ';', none starts or ends with a space or
//     tab, no name contains '=';
//   - the cookies are the model's (strings.Split at ';', cut at '='), in
//     order, and EachCookie stops at the first false;
//   - the Cookie header keepCookies builds for the upstream holds no
//     gateway cookie and no dropped cookie, read either as EachCookie
//     reads it or as net/http's parser does, and nothing the browser did
//     not send.
func FuzzEachCookie(f *testing.F) {
	for _, s := range []struct {
		name string
		h    string
		stop uint8
	}{
		{"two", "a=1; b=2", 0},
		{"session-chunks", "__Host-bff=" + strings.Repeat("x", 300) + "; __Host-bff.1=yy; theme=dark", 0},
		{"spaces-and-empties", " sp = ace ; x=1;;; ;k=v=w", 2},
		{"nameless-gateway", "=__Host-bff=forged; legacy=1", 0},
		{"bare-name-quoted", "__Host-bff; LEGACY=2; a=\"q;uoted\"", 1},
		{"tabs-and-equals", "\t=\t;=;==;a\t=\tb\t", 0},
	} {
		fuzzcorpus.Add(f, "adv-"+s.name, s.h, "other=1; __Host-bff.2=z", s.stop)
	}
	p := &Proxy{gwCook: [][]byte{[]byte("__Host-bff")}}
	rt := &route{dropCookies: [][]byte{[]byte("legacy")}}
	f.Fuzz(func(t *testing.T, header, second string, stop uint8) {
		var got [][2]string
		calls := 0
		EachCookie([]byte(header), func(name, value []byte) bool {
			calls++
			if bytes.ContainsAny(name, ";=") || bytes.ContainsRune(value, ';') {
				t.Fatalf("cookie %q=%q holds a separator", name, value)
			}
			for _, b := range [][]byte{name, value} {
				if len(b) > 0 && (isSpace(b[0]) || isSpace(b[len(b)-1])) {
					t.Fatalf("cookie %q=%q is not trimmed", name, value)
				}
			}
			got = append(got, [2]string{string(name), string(value)})
			return stop == 0 || calls < int(stop)
		})
		want := model(header)
		if stop > 0 && len(want) > int(stop) {
			want = want[:stop]
		}
		if len(got) != len(want) {
			t.Fatalf("EachCookie(%q) = %q, want %q", header, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("EachCookie(%q) = %q, want %q", header, got, want)
			}
		}

		out := p.keepCookies(nil, rt, []byte(header))
		out = p.keepCookies(out, rt, []byte(second))
		// keepCookies writes each kept pair as name=value, or the value of
		// a nameless pair, joined by "; ": each piece is one the browser
		// sent, and none reads as a gateway or dropped cookie.
		var sent []string
		for _, s := range model(header + ";" + second) {
			sent = append(sent, serialize(s))
		}
		for _, piece := range strings.Split(string(out), ";") {
			piece = strings.Trim(piece, " \t")
			if piece == "" {
				continue
			}
			if !slices.Contains(sent, piece) {
				t.Fatalf("the upstream's Cookie header %q has %q, which the browser did not send (%q)", out, piece, sent)
			}
		}
		EachCookie(out, func(name, value []byte) bool {
			for _, n := range upstreamNames(name, value) {
				if strings.HasPrefix(n, "__Host-bff") || strings.EqualFold(n, "legacy") {
					t.Fatalf("the upstream's Cookie header %q carries %q", out, n)
				}
			}
			return true
		})
		req := http.Request{Header: http.Header{"Cookie": {string(out)}}}
		for _, c := range req.Cookies() {
			if strings.HasPrefix(c.Name, "__Host-bff") || strings.EqualFold(c.Name, "legacy") {
				t.Fatalf("net/http reads cookie %q in the upstream's Cookie header %q", c.Name, out)
			}
		}
	})
}

// upstreamNames are the names an upstream may read for a pair: its name,
// and for a nameless pair what precedes '=' in the value, or the value.
func upstreamNames(name, value []byte) []string {
	if len(name) > 0 {
		return []string{string(name)}
	}
	n, _, _ := bytes.Cut(value, []byte("="))
	return []string{string(trimSpace(n))}
}

func serialize(c [2]string) string {
	if c[0] == "" {
		return c[1]
	}
	return c[0] + "=" + c[1]
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' }

// TestKeepCookiesNamelessPairs: a pair without a name reaches the upstream
// as its value; when that reads as a gateway or dropped cookie it is
// dropped like one (FuzzEachCookie found "=__Host-bff=forged" forwarded as
// the cookie __Host-bff).
func TestKeepCookiesNamelessPairs(t *testing.T) {
	p := &Proxy{gwCook: [][]byte{[]byte("__Host-bff")}}
	rt := &route{dropCookies: [][]byte{[]byte("legacy")}}
	for _, tc := range []struct{ in, want string }{
		{"=__Host-bff=forged; a=1", "a=1"},
		{"= __Host-bff.1 =x; a=1", "a=1"},
		{"__Host-bff; a=1", "a=1"},
		{"=LEGACY=1; a=1", "a=1"},
		{"=theme=dark; plain", "theme=dark; plain"},
	} {
		if got := string(p.keepCookies(nil, rt, []byte(tc.in))); got != tc.want {
			t.Errorf("keepCookies(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
