package issuer

import (
	"net/url"
	"strings"
)

// redirectAllowed reports whether requested is one of the client's
// registered redirect URIs. Matching is exact (RFC 9700 §2.1), with the
// one relaxation RFC 8252 §7.3 makes mandatory: a native app listens on a
// loopback port the operating system chooses when it starts, so for a
// registered plain-http URI on 127.0.0.1, [::1] or localhost the port of
// the request may differ (or be absent in the registration). Scheme, host,
// path and query must still be equal byte for byte: 127.0.0.1 does not
// match localhost, /cb does not match /cb/, and https URIs and private-use
// schemes are never port-agnostic.
//
// RFC 8252 §8.3 prefers the IP literals to localhost; the MCP clients in
// use (the TypeScript SDK's examples, desktop agents) register
// http://localhost:{port}/callback, so localhost gets the same rule, as in
// OAuth 2.1 §8.4.2's examples.
func redirectAllowed(registered []string, requested string) bool {
	for _, r := range registered {
		if r == requested {
			return true
		}
	}
	q, ok := loopbackParts(requested)
	if !ok {
		return false
	}
	for _, r := range registered {
		if p, ok := loopbackParts(r); ok && p == q {
			return true
		}
	}
	return false
}

// loopbackParts returns an http loopback URI without its port, or false
// when s is not one. The URI must be in the canonical form a registration
// has (lower-case scheme, no user information, no fragment): anything
// else is left to exact matching, which then fails.
func loopbackParts(s string) (string, bool) {
	if !strings.HasPrefix(s, "http://") {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return "", false
	}
	host := u.Hostname()
	switch host {
	case "127.0.0.1", "::1", "localhost":
	default:
		return "", false
	}
	if p := u.Port(); p != "" {
		// A port is digits without a leading zero or sign, 1 to 65535:
		// "http://127.0.0.1:+80/" must not slip through.
		if len(p) > 5 || p[0] == '0' || strings.Trim(p, "0123456789") != "" {
			return "", false
		}
		if n := atoiSmall(p); n < 1 || n > 65535 {
			return "", false
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return "", false
	}
	if u.Host != host && u.Host != "["+host+"]" && !strings.HasPrefix(u.Host, host+":") && !strings.HasPrefix(u.Host, "["+host+"]:") {
		return "", false
	}
	// The rest of the URI (path and query) is compared as written.
	rest := s[len("http://")+len(u.Host):]
	return host + "\x00" + rest, true
}

func atoiSmall(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
