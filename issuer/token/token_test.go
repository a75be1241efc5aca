package token

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/storage"
)

var wireNames = map[Kind][]string{
	Access:  {"aud", "auth_time", "client_id", "exp", "grant_id", "iat", "iss", "jti", "nbf", "scope", "sid", "sub"},
	Refresh: {"aud", "auth_time", "client_id", "exp", "grant_id", "iat", "iss", "jti", "nbf", "scope", "sid", "sub"},
	ID:      {"at_hash", "aud", "auth_time", "azp", "email", "email_verified", "exp", "iat", "iss", "name", "nonce", "sid", "sub"},
}

// relyingPartyJWKS is the key set as a third party sees it: the JSON of
// PublicJWKS, decoded afresh.
func relyingPartyJWKS(t *testing.T, ks *keys.Set) jose.JSONWebKeySet {
	t.Helper()
	b, err := json.Marshal(ks.PublicJWKS())
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	return set
}

func checkPayload(t *testing.T, kind Kind, payload []byte, want Claims) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("payload is not JSON: %v", err)
	}
	names := slices.Sorted(maps.Keys(m))
	if !slices.Equal(names, wireNames[kind]) {
		t.Fatalf("%s claims %v, want %v", kind, names, wireNames[kind])
	}
	if m["iss"] != testIssuer || m["sub"] != want.Subject || m["exp"] != float64(want.Expiry.Unix()) || m["iat"] != float64(want.IssuedAt.Unix()) {
		t.Fatalf("payload %v", m)
	}
	// One audience is a string (RFC 7519 §4.1.3).
	if m["aud"] != want.Audience[0] {
		t.Fatalf("aud %v", m["aud"])
	}
}

func checkClaims(t *testing.T, got *Claims, want Claims) {
	t.Helper()
	want.Issuer = testIssuer
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("claims differ:\n got %+v\nwant %+v", *got, want)
	}
}

// TestSignedRoundTrip mints every kind with every alg, parses it back,
// and verifies it with plain go-jose: with the published JWK set only for
// RS, PS and ES, with the secret for HS.
func TestSignedRoundTrip(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, "")
	jwks := relyingPartyJWKS(t, ks)
	for _, alg := range keys.SigningAlgorithms() {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			idAlg := "RS256"
			if keys.IsAsymmetric(alg) {
				idAlg = alg
			}
			c := newCodec(t, ks, Config{Alg: alg, IDTokenAlg: idAlg})
			for _, kind := range []Kind{Access, Refresh, ID} {
				cl := sample(kind)
				raw, err := c.Mint(kind, cl)
				if err != nil {
					t.Fatalf("Mint %s: %v", kind, err)
				}
				got, err := c.Parse(raw, kind, t0.Add(time.Minute))
				if err != nil {
					t.Fatalf("Parse %s: %v", kind, err)
				}
				checkClaims(t, got, cl)

				wantAlg := c.Algorithm(kind)
				jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(wantAlg)})
				if err != nil {
					t.Fatalf("go-jose parse %s: %v", kind, err)
				}
				h := jws.Signatures[0].Protected
				if h.ExtraHeaders[jose.HeaderType] != kind.Typ() || h.Algorithm != wantAlg {
					t.Fatalf("%s header %+v", kind, h)
				}
				var key any
				if keys.IsAsymmetric(wantAlg) {
					found := jwks.Key(h.KeyID)
					if len(found) != 1 || found[0].Algorithm != wantAlg {
						t.Fatalf("%s kid %s is not in the published JWK set", kind, h.KeyID)
					}
					key = found[0].Key
				} else {
					if jwks.Key(h.KeyID) != nil {
						t.Fatal("an HS key is published")
					}
					key, _, _ = ks.VerificationKey(h.KeyID)
				}
				payload, err := jws.Verify(key)
				if err != nil {
					t.Fatalf("go-jose verify %s: %v", kind, err)
				}
				checkPayload(t, kind, payload, cl)
			}
		})
	}
}

// TestEncryptedRoundTrip mints access and refresh tokens as dir JWEs with
// both encs, parses them back, and decrypts them with plain go-jose and
// the key.
func TestEncryptedRoundTrip(t *testing.T) {
	t.Parallel()
	for _, enc := range []string{"A128CBC-HS256", "A256GCM"} {
		t.Run(enc, func(t *testing.T) {
			t.Parallel()
			ks, _ := keySet(t, enc)
			c := newCodec(t, ks, Config{Format: FormatEncrypted, IDTokenAlg: "ES256"})
			if c.Algorithm(Access) != "dir" || c.Encryption() != enc || c.Algorithm(ID) != "ES256" {
				t.Fatal("Algorithm/Encryption")
			}
			for _, kind := range []Kind{Access, Refresh} {
				cl := sample(kind)
				raw, err := c.Mint(kind, cl)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Count(raw, ".") != 4 {
					t.Fatalf("not a compact JWE: %d parts", strings.Count(raw, ".")+1)
				}
				got, err := c.Parse(raw, kind, t0)
				if err != nil {
					t.Fatalf("Parse %s: %v", kind, err)
				}
				checkClaims(t, got, cl)

				jwe, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.ContentEncryption(enc)})
				if err != nil {
					t.Fatal(err)
				}
				if jwe.Header.Algorithm != "dir" || jwe.Header.ExtraHeaders[jose.HeaderType] != kind.Typ() {
					t.Fatalf("JWE header %+v", jwe.Header)
				}
				key, ok := ks.DecryptionKey(jwe.Header.KeyID)
				if !ok {
					t.Fatal("JWE kid is not the dir key")
				}
				payload, err := jwe.Decrypt(key)
				if err != nil {
					t.Fatal(err)
				}
				// The plaintext is the claims, not a nested JWS.
				checkPayload(t, kind, payload, cl)

				// RFC 7516 §5.2 step 10: a dir JWE whose encrypted key is
				// not empty is invalid, although it still decrypts.
				parts := strings.Split(raw, ".")
				parts[1] = "AAAA"
				if _, err := c.Parse(strings.Join(parts, "."), kind, t0); !errors.Is(err, ErrMalformed) {
					t.Errorf("Parse of a dir %s with a non-empty encrypted key: %v, want ErrMalformed", kind, err)
				}
			}
			// ID tokens stay signed and verifiable with the JWK set.
			raw, err := c.Mint(ID, sample(ID))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(raw, ".") != 2 {
				t.Fatal("ID token is not a JWS in the encrypted format")
			}
			if _, err := c.Parse(raw, ID, t0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMintFillsAndRefuses(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, "")
	c := newCodec(t, ks, Config{Alg: "HS256"})

	// Defaults: issuer, iat from Now, nbf = iat, a random jti.
	raw, err := c.Mint(Access, Claims{Subject: "s", Audience: []string{"a", "b"}, ClientID: "c", Expiry: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Parse(raw, Access, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Issuer != testIssuer || !got.IssuedAt.Equal(t0) || !got.NotBefore.Equal(t0) || len(got.JTI) < 20 || !slices.Equal(got.Audience, []string{"a", "b"}) {
		t.Fatalf("filled claims %+v", got)
	}
	seg := strings.Split(raw, ".")[1]
	payload, _ := base64.RawURLEncoding.DecodeString(seg)
	if !strings.Contains(string(payload), `"aud":["a","b"]`) {
		t.Fatalf("two audiences not an array: %s", payload)
	}
	raw2, _ := c.Mint(Access, Claims{Subject: "s", Audience: []string{"a"}, ClientID: "c", Expiry: t0.Add(time.Minute)})
	got2, _ := c.Parse(raw2, Access, t0)
	if got2.JTI == got.JTI {
		t.Fatal("two tokens got one jti")
	}

	// Sub-second times are truncated to NumericDate seconds.
	raw3, _ := c.Mint(Access, Claims{Subject: "s", Audience: []string{"a"}, ClientID: "c", IssuedAt: t0.Add(999 * time.Millisecond), Expiry: t0.Add(time.Minute)})
	got3, _ := c.Parse(raw3, Access, t0)
	if !got3.IssuedAt.Equal(t0) {
		t.Fatalf("iat %v", got3.IssuedAt)
	}

	base := Claims{Subject: "s", Audience: []string{"a"}, ClientID: "c", Expiry: t0.Add(time.Minute)}
	tests := []struct {
		name string
		kind Kind
		edit func(*Claims)
		says string
	}{
		{"no subject", Access, func(c *Claims) { c.Subject = "" }, "Subject"},
		{"no expiry", Access, func(c *Claims) { c.Expiry = time.Time{} }, "Expiry is required"},
		{"expiry before iat", Access, func(c *Claims) { c.IssuedAt = t0.Add(time.Hour) }, "not after IssuedAt"},
		{"other issuer", Access, func(c *Claims) { c.Issuer = "https://evil.test" }, "not the configured issuer"},
		{"no audience", Access, func(c *Claims) { c.Audience = nil }, "Audience is required"},
		{"empty audience", Access, func(c *Claims) { c.Audience = []string{""} }, "empty value"},
		{"ID without audience", ID, func(c *Claims) { c.Audience = nil }, "Audience is required"},
		{"no client id", Refresh, func(c *Claims) { c.ClientID = "" }, "ClientID is required"},
		{"reserved extra", ID, func(c *Claims) { c.Extra = map[string]any{"exp": 1} }, `"exp"`},
		{"reserved extra iss", Access, func(c *Claims) { c.Extra = map[string]any{"iss": "x"} }, `"iss"`},
		{"unencodable extra", ID, func(c *Claims) { c.Extra = map[string]any{"f": func() {}} }, "Extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cl := base
			tt.edit(&cl)
			_, err := c.Mint(tt.kind, cl)
			if !errors.Is(err, ErrInvalidClaims) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("got %v, want ErrInvalidClaims saying %q", err, tt.says)
			}
		})
	}
	if _, err := c.Mint(Kind(9), base); err == nil {
		t.Fatal("unknown kind minted")
	}
	// A refresh token may carry no audience.
	cl := base
	cl.Audience = nil
	if _, err := c.Mint(Refresh, cl); err != nil {
		t.Fatal(err)
	}
}

// TestRotation: tokens minted before a rotation still parse after it (the
// retired key verifies), new tokens carry the new kid, and once the old
// key is pruned its tokens are refused as unknown-key.
func TestRotation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		alg    string
		format Format
	}{{"ES256", FormatSigned}, {"HS256", FormatSigned}, {"dir", FormatEncrypted}} {
		t.Run(tc.alg, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			ks, st := keySet(t, "A128CBC-HS256")
			alg := tc.alg
			if alg == "dir" {
				alg = "RS256"
			}
			c := newCodec(t, ks, Config{Alg: alg, Format: tc.format})
			old, err := c.Mint(Access, sample(Access))
			if err != nil {
				t.Fatal(err)
			}
			oldKID := headerKID(t, old)
			newKID, err := keys.Rotate(ctx, st, tc.alg, t0)
			if err != nil {
				t.Fatal(err)
			}
			if err := ks.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			fresh, err := c.Mint(Access, sample(Access))
			if err != nil {
				t.Fatal(err)
			}
			if headerKID(t, fresh) != newKID || oldKID == newKID {
				t.Fatal("Mint did not follow the rotation")
			}
			for _, raw := range []string{old, fresh} {
				if _, err := c.Parse(raw, Access, t0); err != nil {
					t.Fatalf("after rotation: %v", err)
				}
			}
			if err := st.UpdateKeys(ctx, func(k []storage.Key) ([]storage.Key, error) {
				return keys.PruneRetired(k, t0.Add(time.Hour), time.Minute), nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := ks.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Parse(old, Access, t0); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("token of a pruned key: %v", err)
			}
		})
	}
}

func headerKID(t *testing.T, raw string) string {
	t.Helper()
	seg, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

func TestAccessTokenHash(t *testing.T) {
	t.Parallel()
	// Expected value computed outside Go:
	//   printf %s jHkWEdUXMU1BwAsC4vtUsZwnNMLkyXdP | sha256sum | cut -c1-32 | xxd -r -p | base64url
	if got := AccessTokenHash("jHkWEdUXMU1BwAsC4vtUsZwnNMLkyXdP", "RS256"); got != "a-EtUUXCqp9Yjz8cUmVBFA" {
		t.Fatalf("at_hash = %q", got)
	}
	lengths := map[string]int{"RS256": 22, "ES384": 32, "PS512": 43, "HS256": 22}
	for alg, n := range lengths {
		if got := AccessTokenHash("x", alg); len(got) != n {
			t.Errorf("%s at_hash has %d chars, want %d", alg, len(got), n)
		}
	}
	if AccessTokenHash("x", "none") != "" {
		t.Error("at_hash for alg none")
	}
}

func TestParseIDTokenHint(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, "")
	c := newCodec(t, ks, Config{})
	raw, err := c.Mint(ID, sample(ID))
	if err != nil {
		t.Fatal(err)
	}
	later := t0.Add(48 * time.Hour)
	if _, err := c.Parse(raw, ID, later); !errors.Is(err, ErrExpired) {
		t.Fatalf("Parse of an expired ID token: %v", err)
	}
	cl, err := c.ParseIDTokenHint(raw, later)
	if err != nil || cl.Subject != "user-1" || cl.SID != "sid-1" {
		t.Fatalf("ParseIDTokenHint: %v %+v", err, cl)
	}
	access, _ := c.Mint(Access, sample(Access))
	if _, err := c.ParseIDTokenHint(access, t0); !errors.Is(err, ErrWrongType) {
		t.Fatalf("access token as id_token_hint: %v", err)
	}
	other := newCodec(t, ks, Config{Issuer: "https://other.test"})
	if _, err := other.ParseIDTokenHint(raw, t0); !errors.Is(err, ErrWrongIssuer) {
		t.Fatalf("id_token_hint of another issuer: %v", err)
	}
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, "")
	hsOnly, _ := func() (*keys.Set, error) {
		return keys.Open(t.Context(), keys.Config{Store: &memStore{}, Algorithms: []string{"HS256"}, Logger: quiet})
	}()
	tests := []struct {
		name string
		cfg  Config
		says string
	}{
		{"no issuer", Config{Keys: ks}, "Config.Issuer"},
		{"no keys", Config{Issuer: testIssuer}, "Config.Keys"},
		{"bad format", Config{Issuer: testIssuer, Keys: ks, Format: "jwt"}, "Config.Format"},
		{"HS ID tokens", Config{Issuer: testIssuer, Keys: ks, IDTokenAlg: "HS256"}, "Config.IDTokenAlg"},
		{"alg none", Config{Issuer: testIssuer, Keys: ks, Alg: "none"}, "Config.Alg"},
		{"no RS256 key", Config{Issuer: testIssuer, Keys: hsOnly, Alg: "HS256"}, "Config.IDTokenAlg RS256"},
		{"encrypted without dir key", Config{Issuer: testIssuer, Keys: ks, Format: FormatEncrypted}, "Config.Format is encrypted"},
		{"negative leeway", Config{Issuer: testIssuer, Keys: ks, Leeway: -time.Second}, "Config.Leeway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("got %v, want an error naming %s", err, tt.says)
			}
		})
	}
}

// TestGrantTypeClaim: a client's own token carries gty, in both formats,
// and Parse reads it back; an Extra "gty" is refused (the codec writes it).
func TestGrantTypeClaim(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, "A256GCM")
	for _, f := range []Format{FormatSigned, FormatEncrypted} {
		c := newCodec(t, ks, Config{Format: f})
		cl := sample(Access)
		cl.Subject, cl.GrantType, cl.GrantID, cl.SID, cl.AuthTime = "client:svc", "client_credentials", "", "", time.Time{}
		raw, err := c.Mint(Access, cl)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Parse(raw, Access, t0)
		if err != nil {
			t.Fatalf("%s: Parse: %v", f, err)
		}
		checkClaims(t, got, cl)
		extra := sample(Access)
		extra.Extra = map[string]any{"gty": "client_credentials"}
		if _, err := c.Mint(Access, extra); !errors.Is(err, ErrInvalidClaims) {
			t.Errorf("%s: Mint with Extra gty: %v, want ErrInvalidClaims", f, err)
		}
	}
}
