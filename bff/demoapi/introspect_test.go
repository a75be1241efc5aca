package demoapi

import (
	"crypto/rand"
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// encryptedToken returns a real JWE access token (dir, A128CBC-HS256, typ
// at+jwt), as the embedded issuer mints in encrypted mode.
func encryptedToken(t *testing.T, cl any) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	enc, err := jose.NewEncrypter(jose.A128CBC_HS256, jose.Recipient{Algorithm: jose.DIRECT, Key: key},
		(&jose.EncrypterOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Encrypted(enc).Claims(cl).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestIntrospection(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clk := newClock()
	now := clk.Now()
	a := newTestAPI(t, Config{
		Issuer: ti.srv.URL, Audience: testAudience, Mode: ModeIntrospect,
		IntrospectionClientID: testClientID, IntrospectionClientSecret: testClientSecret,
		Now: clk.Now,
	})
	answer := func(sub string, mod func(m map[string]any)) (string, map[string]any) {
		tok := encryptedToken(t, ti.claims(sub, now))
		m := map[string]any{
			"active": true, "sub": sub, "client_id": "bffgate", "scope": "openid api",
			"aud": testAudience, "iss": ti.srv.URL, "exp": now.Add(5 * time.Minute).Unix(),
			"iat": now.Unix(), "jti": "jti-" + sub, "token_type": "access_token",
		}
		if mod != nil {
			mod(m)
		}
		ti.setActive(tok, m)
		return tok, m
	}

	t.Run("active encrypted token", func(t *testing.T) {
		tok, _ := answer("alice", nil)
		r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
		if r.status != http.StatusOK {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
		m := r.json(t)
		tf := m["token"].(map[string]any)
		if m["subject"] != "alice" || tf["format"] != "encrypted" || tf["alg"] != "dir" || tf["enc"] != "A128CBC-HS256" || tf["verified_by"] != "introspection" {
			t.Fatalf("whoami = %v", m)
		}
		hits := ti.introspectionHits.Load()
		do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
		if ti.introspectionHits.Load() != hits {
			t.Fatal("a second call within the cache TTL asked the issuer again")
		}
		clk.Add(DefaultCacheTTL + time.Second)
		defer func() { clk.Add(-(DefaultCacheTTL + time.Second)) }()
		do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
		if ti.introspectionHits.Load() != hits+1 {
			t.Fatal("the cache outlived its TTL")
		}
	})

	bad := []struct {
		name string
		mod  func(m map[string]any)
	}{
		{"inactive", func(m map[string]any) { m["active"] = false }},
		{"wrong audience", func(m map[string]any) { m["aud"] = []string{"other"} }},
		{"wrong issuer", func(m map[string]any) { m["iss"] = "https://evil.example" }},
		{"refresh token", func(m map[string]any) { m["token_type"] = "refresh_token" }},
		{"expired", func(m map[string]any) { m["exp"] = now.Add(-time.Hour).Unix() }},
		{"no subject", func(m map[string]any) { delete(m, "sub") }},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			tok, _ := answer("bob", tc.mod)
			r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
			if r.status != http.StatusUnauthorized || r.json(t)["error"] != "invalid_token" {
				t.Fatalf("status %d body %s", r.status, r.body)
			}
		})
	}
	t.Run("unknown token", func(t *testing.T) {
		r := do(t, a.App(), http.MethodGet, "/api/whoami", encryptedToken(t, ti.claims("x", now)), "")
		if r.status != http.StatusUnauthorized {
			t.Fatalf("status %d", r.status)
		}
	})
}

func TestIntrospectionWrongCredentials(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	a := newTestAPI(t, Config{
		Issuer: ti.srv.URL, Audience: testAudience, Mode: ModeIntrospect,
		IntrospectionClientID: testClientID, IntrospectionClientSecret: "wrong",
	})
	tok := encryptedToken(t, ti.claims("alice", time.Now()))
	ti.setActive(tok, map[string]any{"active": true, "sub": "alice"})
	// The API's own credentials are an operator problem: 503, not the
	// caller's fault.
	r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
}
