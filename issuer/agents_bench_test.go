package issuer_test

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bffgate/bffgate/issuer"
)

// BenchmarkClientCredentialsAuth is the client_credentials grant rate of
// /token over loopback with grantWorkers clients at once, by client
// authentication: client_secret_basic, private_key_jwt with an ES256 and
// an RS256 assertion (signature check, claims, and the jti replay record
// written to the bbolt file before the answer), and spiffe_jwt (a JWT-SVID
// checked by go-spiffe against a bundle file; no replay record). Access
// tokens are ES256. The assertions are made before the timer starts: the
// figure is the issuer's, not the client's signing.
func BenchmarkClientCredentialsAuth(b *testing.B) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	a := startAgents(b, func(c *issuer.Config) {
		quiet(nil)(c)
		c.TokenAlg, c.IDTokenAlg = "ES256", "ES256"
		c.Audit.File = "" // measured on its own: audit BenchmarkLog
		c.Clients = append(c.Clients, issuer.Client{ID: "agent-rsa", Kind: issuer.KindAgent,
			JWKS:       jwksOf(jose.JSONWebKey{Key: rsaKey.Public(), KeyID: "r1", Algorithm: "RS256", Use: "sig"}),
			GrantTypes: []string{issuer.GrantClientCredentials}, Scopes: []string{"profile"}})
	})
	rsaSign := func(claims map[string]any) string {
		sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: rsaKey}, (&jose.SignerOptions{}).WithHeader("kid", "r1"))
		raw, _ := jwt.Signed(sig).Claims(claims).Serialize()
		return raw
	}
	post := func(form url.Values, basic bool) error {
		req, _ := http.NewRequest(http.MethodPost, a.url+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic {
			req.Header.Set("Authorization", basicAuth(svcID, svcSecret))
		}
		resp, err := a.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != 200 {
			return fmt.Errorf("%d %s", resp.StatusCode, raw)
		}
		return nil
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	assertionForm := func(id, typ, assertion string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "scope": {"profile"}, "client_id": {id},
			"client_assertion_type": {typ}, "client_assertion": {assertion}}
	}
	premade := func(b *testing.B, mk func() string) chan string {
		ch := make(chan string, b.N)
		for range b.N {
			ch <- mk()
		}
		close(ch)
		return ch
	}
	b.Run("client_secret_basic", func(b *testing.B) {
		runWorkers(b, b.N, func(int) error { return post(cc, true) })
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
	})
	b.Run("private_key_jwt-ES256", func(b *testing.B) {
		ch := premade(b, func() string { return a.key.sign(b, a.claims(agentID), nil) })
		b.ResetTimer()
		runWorkers(b, b.N, func(int) error { return post(assertionForm(agentID, issuer.AssertionTypeJWT, <-ch), false) })
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
	})
	b.Run("private_key_jwt-RS256", func(b *testing.B) {
		ch := premade(b, func() string { return rsaSign(a.claims("agent-rsa")) })
		b.ResetTimer()
		runWorkers(b, b.N, func(int) error { return post(assertionForm("agent-rsa", issuer.AssertionTypeJWT, <-ch), false) })
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
	})
	b.Run("spiffe_jwt-ES256", func(b *testing.B) {
		now := a.clock.Now()
		svid := a.tdKey.sign(b, map[string]any{"sub": spiffeAgent, "aud": []string{a.url}, "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}, nil)
		runWorkers(b, b.N, func(int) error { return post(assertionForm(spiffeAgent, issuer.AssertionTypeSPIFFE, svid), false) })
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
	})
}
