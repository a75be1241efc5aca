package issuer_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/token"
)

// quiet drops the issuer's log lines (one per request would swamp the
// benchmark output).
func quiet(f func(*issuer.Config)) func(*issuer.Config) {
	return func(c *issuer.Config) {
		c.Logger = slog.New(slog.DiscardHandler)
		if f != nil {
			f(c)
		}
	}
}

// benchClaims are the claims of a typical access token.
func benchClaims(e *env) token.Claims {
	now := e.clock.Now()
	return token.Claims{
		Subject:  "user-alice",
		Audience: []string{webID},
		ClientID: webID,
		Scope:    "openid profile email offline_access",
		Expiry:   now.Add(issuer.DefaultAccessTokenTTL),
		AuthTime: now,
		SID:      "Y2NmZjM2ZjYtYzQ0Ni00NjJmLWE1",
		GrantID:  "QZ3T6J2V4X7WQ5YB2N3K4L5M6N",
	}
}

// rawClaims is the same payload for go-jose alone.
type rawClaims struct {
	Iss      string `json:"iss"`
	Sub      string `json:"sub"`
	Aud      string `json:"aud"`
	Exp      int64  `json:"exp"`
	Iat      int64  `json:"iat"`
	Nbf      int64  `json:"nbf"`
	JTI      string `json:"jti"`
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	AuthTime int64  `json:"auth_time"`
	SID      string `json:"sid"`
	GrantID  string `json:"grant_id"`
}

// BenchmarkMint compares Codec.Mint of an access token with go-jose's raw
// sign (or encrypt) of the same claims with the same key: each op is one
// of each, timed apart. Metrics: tokens/s (ours), jose-tokens/s (raw), and
// ratio = ours/raw (1.0 means no overhead; the aim is above 0.8).
func BenchmarkMint(b *testing.B) {
	for _, f := range formats() {
		b.Run(f.name, func(b *testing.B) {
			e := start(b, envOptions{cfg: quiet(f.apply)})
			codec := e.srv.Codec()
			cl := benchClaims(e)
			mintRaw := rawMinter(b, e)
			rc := rawClaims{
				Iss: e.url, Sub: cl.Subject, Aud: webID, Exp: cl.Expiry.Unix(), ClientID: cl.ClientID,
				Scope: cl.Scope, AuthTime: cl.AuthTime.Unix(), SID: cl.SID, GrantID: cl.GrantID,
			}
			ours := func() {
				if _, err := codec.Mint(token.Access, cl); err != nil {
					b.Fatal(err)
				}
			}
			raw := func() {
				now := e.clock.Now().Unix()
				c := rc
				c.Iat, c.Nbf, c.JTI = now, now, token.NewID()
				p, err := json.Marshal(c)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := mintRaw(p); err != nil {
					b.Fatal(err)
				}
			}
			ours()
			raw()
			var tOurs, tRaw time.Duration
			const chunk = 8
			b.ResetTimer()
			for i := 0; i < b.N; i += chunk {
				k := min(chunk, b.N-i)
				t0 := time.Now()
				for range k {
					ours()
				}
				t1 := time.Now()
				for range k {
					raw()
				}
				t2 := time.Now()
				tOurs += t1.Sub(t0)
				tRaw += t2.Sub(t1)
			}
			b.ReportMetric(float64(b.N)/tOurs.Seconds(), "tokens/s")
			b.ReportMetric(float64(b.N)/tRaw.Seconds(), "jose-tokens/s")
			b.ReportMetric(tRaw.Seconds()/tOurs.Seconds(), "ratio")
		})
	}
}

// rawMinter returns go-jose's sign or encrypt of a payload with the
// instance's active key, with the same header (kid, typ at+jwt).
func rawMinter(b *testing.B, e *env) func([]byte) (string, error) {
	if e.cfg.TokenFormat == token.FormatEncrypted {
		kid, key, enc, err := e.srv.Keys().Encryption()
		if err != nil {
			b.Fatal(err)
		}
		en, err := jose.NewEncrypter(jose.ContentEncryption(enc), jose.Recipient{Algorithm: jose.DIRECT, Key: key, KeyID: kid},
			(&jose.EncrypterOptions{}).WithType(token.TypAccess))
		if err != nil {
			b.Fatal(err)
		}
		return func(p []byte) (string, error) {
			obj, err := en.Encrypt(p)
			if err != nil {
				return "", err
			}
			return obj.CompactSerialize()
		}
	}
	s, _, err := e.srv.Keys().Signer(e.cfg.TokenAlg, (&jose.SignerOptions{}).WithType(token.TypAccess))
	if err != nil {
		b.Fatal(err)
	}
	return func(p []byte) (string, error) {
		obj, err := s.Sign(p)
		if err != nil {
			return "", err
		}
		return obj.CompactSerialize()
	}
}

// BenchmarkCodeExchange is the authorization-code exchange rate of /token
// over loopback (client_secret_basic, PKCE, RS256 access, refresh and ID
// token, the code redemption and the allowlist record in one bbolt
// transaction). The codes are made before the timer starts.
func BenchmarkCodeExchange(b *testing.B) {
	e := start(b, envOptions{cfg: quiet(nil)})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	br := e.browser()
	codes := make([]string, b.N)
	for i := range codes {
		codes[i] = br.code(fl.authURL())
	}
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Authorization": {basicAuth(webID, webSecret)}}
	b.ResetTimer()
	for _, code := range codes {
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {webRedirect}, "code_verifier": {fl.verifier}}
		if r := e.request(http.MethodPost, "/token", strings.NewReader(form.Encode()), h); r.status != http.StatusOK {
			b.Fatalf("exchange: %d %s", r.status, r.raw)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "exchanges/s")
}

// BenchmarkIntrospect is /introspect over loopback for a live token (a
// denylist cache miss that reads the store) and a denylisted one (a cache
// hit).
func BenchmarkIntrospect(b *testing.B) {
	e := start(b, envOptions{cfg: quiet(nil)})
	_, _, live := e.loginTokens(webID)
	_, _, revoked := e.loginTokens(webID)
	if r := e.revoke(webBasic, revoked.access, "access_token"); r.status != http.StatusOK {
		b.Fatalf("revoke: %d", r.status)
	}
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Authorization": {basicAuth(webID, webSecret)}}
	for _, tc := range []struct {
		name   string
		tok    string
		active bool
	}{{"live", live.access, true}, {"denylisted", revoked.access, false}} {
		b.Run(tc.name, func(b *testing.B) {
			body := url.Values{"token": {tc.tok}}.Encode()
			for b.Loop() {
				r := e.request(http.MethodPost, "/introspect", strings.NewReader(body), h)
				if r.status != http.StatusOK || r.body["active"] != tc.active {
					b.Fatalf("introspect: %d %s", r.status, r.raw)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "introspections/s")
		})
	}
}
