package issuer_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer/token"
)

// TestBadTokens holds every bad-token case of issue 3 in one table: each
// is inactive at /introspect and 401 invalid_token at /userinfo, and none
// is a 500.
func TestBadTokens(t *testing.T) {
	t.Parallel()
	signed := start(t, envOptions{cfg: format{alg: "RS256", idAlg: "RS256", signed: true}.apply})
	encrypted := start(t, envOptions{cfg: format{enc: "A128CBC-HS256", idAlg: "RS256"}.apply})
	_, _, st := signed.loginTokens(webID)
	_, _, et := encrypted.loginTokens(webID)
	wantActive(t, signed.introspect(st.access))
	wantActive(t, encrypted.introspect(et.access))

	claims := payload(t, st.access)
	with := func(edit map[string]any) map[string]any {
		c := maps.Clone(claims)
		for k, v := range edit {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	now := signed.clock.Now()
	jws, err := jose.ParseSignedCompact(st.access, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	rsKID := jws.Signatures[0].Header.KeyID
	pub, _, ok := signed.srv.Keys().VerificationKey(rsKID)
	if !ok {
		t.Fatal("no verification key for the access token's kid")
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubJWK, err := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: rsKID, Algorithm: "RS256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	b64 := func(v any) string { return base64.RawURLEncoding.EncodeToString(mustJSON(v)) }
	sign := func(alg jose.SignatureAlgorithm, key any, header map[jose.HeaderKey]any, cl map[string]any, embed bool) string {
		t.Helper()
		opts := (&jose.SignerOptions{EmbedJWK: embed}).WithType(token.TypAccess)
		for k, v := range header {
			opts.WithHeader(k, v)
		}
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
		if err != nil {
			t.Fatal(err)
		}
		j, err := s.Sign(mustJSON(cl))
		if err != nil {
			t.Fatal(err)
		}
		out, err := j.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	jwe, err := jose.ParseEncryptedCompact(et.access, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A128CBC_HS256})
	if err != nil {
		t.Fatal(err)
	}
	dirKID := jwe.Header.KeyID
	dirKey, ok := encrypted.srv.Keys().DecryptionKey(dirKID)
	if !ok {
		t.Fatal("no dir key for the JWE's kid")
	}
	ePlain, err := jwe.Decrypt(dirKey)
	if err != nil {
		t.Fatal(err)
	}
	var eClaims map[string]any
	if err := json.Unmarshal(ePlain, &eClaims); err != nil {
		t.Fatal(err)
	}
	encrypt := func(key []byte, kid string, cl map[string]any) string {
		t.Helper()
		enc, err := jose.NewEncrypter(jose.A128CBC_HS256, jose.Recipient{Algorithm: jose.DIRECT, Key: key, KeyID: kid}, (&jose.EncrypterOptions{}).WithType(token.TypAccess))
		if err != nil {
			t.Fatal(err)
		}
		obj, err := enc.Encrypt(mustJSON(cl))
		if err != nil {
			t.Fatal(err)
		}
		out, err := obj.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	randomKey := make([]byte, 32)
	rand.Read(randomKey)
	flipLast := func(s string) string {
		c := byte('A')
		if s[len(s)-1] == 'A' {
			c = 'B'
		}
		return s[:len(s)-1] + string(c)
	}
	// RFC 7516 §5.2 step 10: with alg dir the JWE Encrypted Key is empty;
	// go-jose ignores that part, so a token with one decrypts unless the
	// issuer checks.
	withEncryptedKey := func(jwe string) string {
		parts := strings.Split(jwe, ".")
		parts[1] = base64.RawURLEncoding.EncodeToString([]byte("not an empty encrypted key"))
		return strings.Join(parts, ".")
	}
	eClaimsWith := func(edit map[string]any) map[string]any {
		c := maps.Clone(eClaims)
		maps.Copy(c, edit)
		return c
	}

	for _, tc := range []struct {
		name         string
		e            *env
		tok          string
		userinfoOnly bool // a valid token of another kind: introspection may call it active
	}{
		{name: "malformed", e: signed, tok: "not-a-token"},
		{name: "three garbage segments", e: signed, tok: "a.b.c"},
		{name: "truncated", e: signed, tok: st.access[:len(st.access)/2]},
		{name: "bad base64 header", e: signed, tok: "!!!." + b64(claims) + ".c2ln"},
		{name: "header not JSON", e: signed, tok: base64.RawURLEncoding.EncodeToString([]byte("{")) + "." + b64(claims) + ".c2ln"},
		{name: "signature flipped", e: signed, tok: flipLast(st.access)},
		{name: "other key same kid", e: signed, tok: sign(jose.RS256, otherRSA, map[jose.HeaderKey]any{"kid": rsKID}, claims, false)},
		{name: "alg none", e: signed, tok: b64(map[string]any{"alg": "none", "kid": rsKID, "typ": "at+jwt"}) + "." + b64(claims) + "."},
		{name: "alg None", e: signed, tok: b64(map[string]any{"alg": "None", "kid": rsKID, "typ": "at+jwt"}) + "." + b64(claims) + "."},
		{name: "HMAC keyed with the RSA public key PEM", e: signed, tok: sign(jose.HS256, pubPEM, map[jose.HeaderKey]any{"kid": rsKID}, claims, false)},
		{name: "HMAC keyed with the RSA public key DER", e: signed, tok: sign(jose.HS256, pubDER, map[jose.HeaderKey]any{"kid": rsKID}, claims, false)},
		{name: "HMAC keyed with the RSA public JWK", e: signed, tok: sign(jose.HS256, pubJWK, map[jose.HeaderKey]any{"kid": rsKID}, claims, false)},
		{name: "embedded jwk", e: signed, tok: sign(jose.RS256, otherRSA, nil, claims, true)},
		{name: "unknown kid", e: signed, tok: mintWith(t, signed, map[jose.HeaderKey]any{"kid": "no-such-kid"}, claims)},
		{name: "no kid", e: signed, tok: sign(jose.RS256, mustSigningKey(t, signed), nil, claims, false)},
		{name: "expired", e: signed, tok: mintWith(t, signed, nil, with(map[string]any{"iat": now.Add(-2 * time.Hour).Unix(), "nbf": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}))},
		{name: "no exp", e: signed, tok: mintWith(t, signed, nil, with(map[string]any{"exp": nil}))},
		{name: "not yet valid", e: signed, tok: mintWith(t, signed, nil, with(map[string]any{"iat": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}))},
		{name: "wrong iss", e: signed, tok: mintWith(t, signed, nil, with(map[string]any{"iss": "https://evil.example"}))},
		{name: "wrong aud", e: signed, tok: mintWith(t, signed, nil, with(map[string]any{"aud": "https://evil.example"}))},
		{name: "no aud", e: signed, tok: mintWith(t, signed, nil, with(map[string]any{"aud": nil}))},
		{name: "unknown client_id", e: signed, tok: mintWith(t, signed, nil, with(map[string]any{"client_id": "ghost", "aud": "ghost"}))},
		{name: "wrong typ", e: signed, tok: mintWith(t, signed, map[jose.HeaderKey]any{"typ": "JWT"}, claims)},
		{name: "ID token", e: signed, tok: st.id},
		{name: "refresh token at userinfo", e: signed, tok: st.refresh, userinfoOnly: true},
		{name: "JWE at a signed issuer", e: signed, tok: et.access},
		{name: "JWE wrong tag", e: encrypted, tok: flipLast(et.access)},
		{name: "JWE wrong key same kid", e: encrypted, tok: encrypt(randomKey, dirKID, eClaims)},
		{name: "JWE unknown kid", e: encrypted, tok: encrypt(dirKey, "no-such-kid", eClaims)},
		{name: "JWE expired", e: encrypted, tok: encrypt(dirKey, dirKID, eClaimsWith(map[string]any{"exp": now.Add(-time.Hour).Unix()}))},
		{name: "JWE wrong iss", e: encrypted, tok: encrypt(dirKey, dirKID, eClaimsWith(map[string]any{"iss": "https://evil.example"}))},
		{name: "JWE dir with a non-empty encrypted key", e: encrypted, tok: withEncryptedKey(et.access)},
		{name: "JWS at an encrypted issuer", e: encrypted, tok: st.access},
		{name: "JWE refresh token at userinfo", e: encrypted, tok: et.refresh, userinfoOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.userinfoOnly {
				wantInactive(t, tc.e.introspect(tc.tok))
			}
			wantError(t, tc.e.userinfo(tc.tok), http.StatusUnauthorized, "invalid_token")
		})
	}

	t.Run("no bearer", func(t *testing.T) {
		r := signed.request(http.MethodGet, "/userinfo", nil, nil)
		if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
			t.Fatalf("userinfo without a token: %d %q", r.status, r.header.Get("WWW-Authenticate"))
		}
	})
	t.Run("JWE refresh token with a non-empty encrypted key", func(t *testing.T) {
		bad := withEncryptedKey(et.refresh)
		wantInactive(t, encrypted.post("/introspect", webBasic, url.Values{"token": {bad}, "token_type_hint": {"refresh_token"}}))
		wantGrantError(t, encrypted.refresh(webBasic, bad), "malformed")
	})
	// The real tokens are still good: no case above changed state.
	wantActive(t, signed.introspect(st.access))
	wantActive(t, encrypted.introspect(et.access))
}

func mustSigningKey(t testing.TB, e *env) any {
	t.Helper()
	sk, _, err := e.srv.Keys().Signing(e.cfg.TokenAlg)
	if err != nil {
		t.Fatal(err)
	}
	return sk.Key.(jose.JSONWebKey).Key
}
