package issuer_test

import (
	"net/http"
	"testing"

	"github.com/bffgate/bffgate/issuer"
)

// BenchmarkDynamicRegistration: one RFC 7591 registration over HTTP on a
// bbolt store (the rate-limit counter and the registration are two
// durable writes).
func BenchmarkDynamicRegistration(b *testing.B) {
	e := start(b, envOptions{cfg: func(c *issuer.Config) {
		withResources(c)
		c.Registration = issuer.DynamicRegistration{Enabled: true, RateLimit: 1 << 30}
	}})
	body := mustJSON(sdkLikeMetadata)
	b.ResetTimer()
	for b.Loop() {
		r := e.register(string(body), nil)
		if r.status != http.StatusCreated {
			b.Fatalf("%d %s", r.status, r.raw)
		}
	}
}

// BenchmarkCIMDAuthorize: an authorization request of a metadata-document
// client whose document is cached, up to the consent page (SSO session).
func BenchmarkCIMDAuthorize(b *testing.B) {
	ce := startCIMD(b, nil)
	id := ce.id("/client.json")
	br := ce.browser()
	u := ce.rawAuthURL(id, "http://127.0.0.1:5000/callback", "openid mcp:tools", mcpResource, "s", testVerifier)
	if p := br.authorize(u, aliceUser, alicePassword); p.status != http.StatusOK {
		b.Fatalf("%d", p.status)
	}
	b.ResetTimer()
	for b.Loop() {
		if p := br.get(u); p.status != http.StatusOK {
			b.Fatalf("%d", p.status)
		}
	}
}
