package token

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer/keys"
)

// Sealed refresh tokens: a dir + A256GCM JWE the client cannot read,
// beside signed access and ID tokens.
func TestSealedRefreshRoundTrip(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"RS256", "ES256", "HS256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			ks, _ := keySet(t, SealEnc)
			c := newCodec(t, ks, Config{Alg: alg, RefreshFormat: RefreshSealed})
			if c.Algorithm(Refresh) != "dir" || c.Algorithm(Access) != alg || c.FormatOf(Refresh) != "sealed" || c.FormatOf(Access) != "signed" {
				t.Fatalf("Algorithm/FormatOf: refresh %s %s, access %s %s", c.Algorithm(Refresh), c.FormatOf(Refresh), c.Algorithm(Access), c.FormatOf(Access))
			}
			cl := sample(Refresh)
			raw, err := c.Mint(Refresh, cl)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(raw, ".") != 4 {
				t.Fatalf("a sealed refresh token has %d parts, want 5 (a compact JWE)", strings.Count(raw, ".")+1)
			}
			got, err := c.Parse(raw, Refresh, t0)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkClaims(t, got, cl)

			jwe, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A256GCM})
			if err != nil {
				t.Fatal(err)
			}
			if jwe.Header.Algorithm != "dir" || jwe.Header.ExtraHeaders[jose.HeaderType] != TypRefresh || jwe.Header.KeyID == "" {
				t.Fatalf("JWE header %+v", jwe.Header)
			}
			// Opaque: no claim is readable in any part of the token.
			for i, part := range strings.Split(raw, ".") {
				b, _ := base64.RawURLEncoding.DecodeString(part)
				for _, v := range []string{cl.Subject, cl.ClientID, cl.JTI, cl.GrantID, cl.SID, testIssuer} {
					if strings.Contains(string(b), v) || strings.Contains(part, v) {
						t.Errorf("part %d of a sealed refresh token shows %q", i, v)
					}
				}
			}
			// Access and ID tokens stay signed.
			for _, kind := range []Kind{Access, ID} {
				raw, err := c.Mint(kind, sample(kind))
				if err != nil {
					t.Fatal(err)
				}
				if strings.Count(raw, ".") != 2 {
					t.Errorf("%s is not a JWS with sealed refresh tokens", kind)
				}
				if _, err := c.Parse(raw, kind, t0); err != nil {
					t.Errorf("Parse %s: %v", kind, err)
				}
			}
		})
	}
}

// A refresh token of either format never passes as an access token, nor
// an access token as a refresh token.
func TestSealedRefreshIsNoAccessToken(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, SealEnc)
	sealed := newCodec(t, ks, Config{Alg: "RS256", RefreshFormat: RefreshSealed})
	signed := newCodec(t, ks, Config{Alg: "RS256"})
	for name, c := range map[string]*Codec{"sealed": sealed, "signed": signed} {
		rt, err := c.Mint(Refresh, sample(Refresh))
		if err != nil {
			t.Fatal(err)
		}
		for cname, parser := range map[string]*Codec{"sealed": sealed, "signed": signed} {
			if _, err := parser.Parse(rt, Access, t0); err == nil {
				t.Errorf("a %s refresh token parsed as an access token by the %s codec", name, cname)
			}
		}
		at, err := c.Mint(Access, sample(Access))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Parse(at, Refresh, t0); !errors.Is(err, ErrWrongType) {
			t.Errorf("an access token parsed as a refresh token by the %s codec: %v, want ErrWrongType", name, err)
		}
	}
	// A JWE access token made with the dir key (the encrypted format's
	// shape) is no refresh token either: typ decides.
	enc := newCodec(t, ks, Config{Format: FormatEncrypted})
	at, err := enc.Mint(Access, sample(Access))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sealed.Parse(at, Refresh, t0); !errors.Is(err, ErrWrongType) {
		t.Errorf("a dir-encrypted access token parsed as a sealed refresh token: %v, want ErrWrongType", err)
	}
}

// A changed byte anywhere in a sealed token, or another enc, is refused.
func TestSealedRefreshTampered(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, SealEnc)
	c := newCodec(t, ks, Config{Alg: "ES256", RefreshFormat: RefreshSealed})
	raw, err := c.Mint(Refresh, sample(Refresh))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(raw, ".")
	for i, name := range map[int]string{2: "iv", 3: "ciphertext", 4: "tag"} {
		t.Run(name, func(t *testing.T) {
			p := append([]string(nil), parts...)
			b, _ := base64.RawURLEncoding.DecodeString(p[i])
			b[len(b)/2] ^= 1
			p[i] = base64.RawURLEncoding.EncodeToString(b)
			if _, err := c.Parse(strings.Join(p, "."), Refresh, t0); !errors.Is(err, ErrDecrypt) {
				t.Errorf("Parse with a changed %s: %v, want ErrDecrypt", name, err)
			}
		})
	}
	// The header is authenticated data: a changed kid or typ fails too.
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	forged := strings.Replace(string(h), `"rt+jwt"`, `"RT+jwt"`, 1)
	p := append([]string(nil), parts...)
	p[0] = base64.RawURLEncoding.EncodeToString([]byte(forged))
	if _, err := c.Parse(strings.Join(p, "."), Refresh, t0); err == nil {
		t.Error("Parse with a changed protected header succeeded")
	}
	// A refresh token sealed with another enc is refused before decryption.
	other, _ := keySet(t, "A128CBC-HS256")
	enc := newCodec(t, other, Config{Format: FormatEncrypted})
	cbc, err := enc.Mint(Refresh, sample(Refresh))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Parse(cbc, Refresh, t0); !errors.Is(err, ErrWrongAlg) {
		t.Errorf("a dir A128CBC-HS256 refresh token: %v, want ErrWrongAlg", err)
	}
}

// Switching the refresh format keeps the tokens already issued: a signed
// refresh token verifies after the switch to sealed, a sealed one opens
// after the switch back while its dir key is in the set.
func TestRefreshFormatSwitch(t *testing.T) {
	t.Parallel()
	ks, st := keySet(t, SealEnc)
	signed := newCodec(t, ks, Config{Alg: "RS256"})
	old, err := signed.Mint(Refresh, sample(Refresh))
	if err != nil {
		t.Fatal(err)
	}
	sealed := newCodec(t, ks, Config{Alg: "RS256", RefreshFormat: RefreshSealed})
	if _, err := sealed.Parse(old, Refresh, t0); err != nil {
		t.Errorf("a signed refresh token after the switch to sealed: %v", err)
	}
	fresh, err := sealed.Mint(Refresh, sample(Refresh))
	if err != nil {
		t.Fatal(err)
	}
	// Back to signed, on a key set opened without JWE: the dir key is
	// still stored, and still opens what it sealed.
	plain, err := keys.Open(t.Context(), keys.Config{Store: st, Algorithms: keys.SigningAlgorithms(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	back := newCodec(t, plain, Config{Alg: "RS256"})
	if _, err := back.Parse(fresh, Refresh, t0); err != nil {
		t.Errorf("a sealed refresh token after the switch back to signed: %v", err)
	}
	if _, err := back.Parse(old, Refresh, t0); err != nil {
		t.Errorf("a signed refresh token after switching twice: %v", err)
	}
}

// Rotating the dir key (bffgate keys rotate --alg dir) seals new refresh
// tokens with the new key; the retired key keeps opening older ones.
func TestSealedRefreshRotation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	ks, st := keySet(t, SealEnc)
	c := newCodec(t, ks, Config{Alg: "ES256", RefreshFormat: RefreshSealed})
	old, err := c.Mint(Refresh, sample(Refresh))
	if err != nil {
		t.Fatal(err)
	}
	kid, err := keys.Rotate(ctx, st, keys.AlgDir, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	fresh, err := c.Mint(Refresh, sample(Refresh))
	if err != nil {
		t.Fatal(err)
	}
	if headerKID(t, fresh) != kid || headerKID(t, old) == kid {
		t.Fatal("Mint did not seal with the rotated dir key")
	}
	for name, raw := range map[string]string{"older": old, "newer": fresh} {
		if _, err := c.Parse(raw, Refresh, t0); err != nil {
			t.Errorf("the %s sealed refresh token after rotation: %v", name, err)
		}
	}
}

func TestSealedConfigErrors(t *testing.T) {
	t.Parallel()
	withJWE, _ := keySet(t, SealEnc)
	cbc, _ := keySet(t, "A128CBC-HS256")
	none, _ := keySet(t, "")
	for _, tc := range []struct {
		name string
		ks   *keys.Set
		cfg  Config
		want string
	}{
		{"unknown format", withJWE, Config{RefreshFormat: "opaque"}, "RefreshFormat"},
		{"with the encrypted format", withJWE, Config{Format: FormatEncrypted, RefreshFormat: RefreshSealed}, "already encrypted"},
		{"no dir key", none, Config{RefreshFormat: RefreshSealed}, "no dir key"},
		{"another enc", cbc, Config{RefreshFormat: RefreshSealed}, SealEnc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Issuer, cfg.Keys = testIssuer, tc.ks
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v; want an error saying %q", err, tc.want)
			}
		})
	}
}
