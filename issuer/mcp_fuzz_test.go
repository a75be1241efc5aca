package issuer

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzClientDocument decodes a client metadata document (what a client's
// URL serves) and a registration request (what a client posts).
// Properties: never a panic; an accepted document yields a public client
// with the document's id, at least one redirect URI, each of which passes
// the configured-client rules and matches itself, and the code grant; a
// refusal is errCIMD.
func FuzzClientDocument(f *testing.F) {
	const id = "https://client.example.test/meta.json"
	for _, s := range []string{
		`{"client_id":"` + id + `","redirect_uris":["http://127.0.0.1/cb"],"client_name":"x"}`,
		`{"client_id":"` + id + `","redirect_uris":["com.example.app:/cb"],"grant_types":["authorization_code","refresh_token"]}`,
		`{"client_id":"` + id + `","redirect_uris":["javascript:alert(1)"]}`,
		`{"client_id":"x","redirect_uris":[]}`,
		`{"client_id":"` + id + `","redirect_uris":["https://a.example.test/cb"],"client_secret":null}`,
		`[]`, `{`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cl, err := clientFromDocument(id, body)
		if err != nil {
			if !errors.Is(err, errCIMD) {
				t.Fatalf("refusal %v is not errCIMD", err)
			}
		} else {
			if cl.ID != id || !cl.public() || len(cl.RedirectURIs) == 0 || !cl.hasGrant(GrantAuthorizationCode) || cl.source != sourceCIMD {
				t.Fatalf("accepted client %+v", cl)
			}
			for _, u := range cl.RedirectURIs {
				if err := validateRedirectURI(u, true, false); err != nil || !redirectAllowed(cl.RedirectURIs, u) {
					t.Fatalf("redirect URI %q accepted: %v", u, err)
				}
			}
			if strings.ContainsAny(cl.name, "\x00\n\r") {
				t.Fatalf("client_name keeps control characters: %q", cl.name)
			}
		}
		var req registrationRequest
		if json.Unmarshal(body, &req) == nil {
			s := &Server{}
			if m, err := s.checkRegistration(req); err == nil {
				if len(m.RedirectURIs) == 0 || m.GrantTypes[0] == "" {
					t.Fatalf("accepted registration %+v", m)
				}
			}
		}
	})
}

// FuzzLoopbackRedirect: a requested redirect URI matches a registered
// one only when equal, or when both are plain-http loopback URIs equal
// but for the port; the match never depends on anything else.
func FuzzLoopbackRedirect(f *testing.F) {
	for _, s := range [][2]string{
		{"http://127.0.0.1/cb", "http://127.0.0.1:8080/cb"},
		{"http://[::1]:1/cb", "http://[::1]:65535/cb"},
		{"http://localhost/cb", "http://127.0.0.1:80/cb"},
		{"http://127.0.0.1/cb", "http://127.0.0.1:+1/cb"},
		{"http://127.0.0.1/cb", "http://127.0.0.1:80@evil.example/cb"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, registered, requested string) {
		if !redirectAllowed([]string{registered}, requested) || registered == requested {
			return
		}
		a, okA := loopbackParts(registered)
		b, okB := loopbackParts(requested)
		if !okA || !okB || a != b {
			t.Fatalf("%q matched %q without being its loopback twin", requested, registered)
		}
		if !strings.HasPrefix(requested, "http://127.0.0.1") && !strings.HasPrefix(requested, "http://[::1]") && !strings.HasPrefix(requested, "http://localhost") {
			t.Fatalf("%q matched on a host that is not loopback", requested)
		}
	})
}
