package trust

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func signES256(t *testing.T, k *ecdsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// TestJWKSFile: keys from a file, the subject mappings, and what a
// token of the trusted issuer may not be.
func TestJWKSFile(t *testing.T) {
	t.Parallel()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, set, 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	users := map[string]string{"alice@example.test": "user-alice", "twin@example.test": ""}
	newSet := func(m Mapping, scopes ...string) *Set {
		s, err := New(Config{
			Issuers:        []Issuer{{Issuer: "https://idp.example.test", JWKSFile: path, Algorithms: []string{"ES256"}, Audience: []string{"sts"}, Subject: m, Scopes: scopes}},
			ReservedPrefix: "client:",
			Lookup: func(claim, v string) (string, bool) {
				sub, ok := users[v]
				return sub, ok && claim == "email" && sub != ""
			},
			Now: func() time.Time { return now },
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(edit map[string]any) map[string]any {
		c := map[string]any{"iss": "https://idp.example.test", "sub": "u1", "aud": []string{"other", "sts"}, "exp": now.Add(time.Minute).Unix(),
			"scope": "a b c", "email": "alice@example.test", "azp": "kc-client"}
		for k, v := range edit {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	ctx := context.Background()

	tok, err := newSet(Mapping{Mode: MapPrefix, Prefix: "kc:"}, "a", "c").Verify(ctx, signES256(t, k, claims(nil)))
	if err != nil || tok.Subject != "kc:u1" || tok.ForeignSubject != "u1" || tok.Scope != "a c" || tok.ClientID != "kc-client" {
		t.Fatalf("prefix: %+v %v", tok, err)
	}
	tok, err = newSet(Mapping{Mode: MapKeep}, "x").Verify(ctx, signES256(t, k, claims(map[string]any{"scope": nil})))
	if err != nil || tok.Subject != "u1" || tok.Scope != "x" {
		t.Fatalf("keep, scopes by default: %+v %v", tok, err)
	}
	tok, err = newSet(Mapping{Mode: MapLookup}).Verify(ctx, signES256(t, k, claims(nil)))
	if err != nil || tok.Subject != "user-alice" {
		t.Fatalf("lookup: %+v %v", tok, err)
	}
	for _, c := range []struct {
		name  string
		m     Mapping
		tok   string
		want  error
		words string
	}{
		{"keep of a client subject", Mapping{Mode: MapKeep}, signES256(t, k, claims(map[string]any{"sub": "client:bff"})), ErrSubject, "clients"},
		{"lookup, unverified email", Mapping{Mode: MapLookup}, signES256(t, k, claims(map[string]any{"email_verified": false})), ErrSubject, "not verified"},
		{"lookup, ambiguous", Mapping{Mode: MapLookup}, signES256(t, k, claims(map[string]any{"email": "twin@example.test"})), ErrSubject, "no user"},
		{"expired", Mapping{}, signES256(t, k, claims(map[string]any{"exp": now.Add(-time.Second).Unix()})), ErrInvalid, "expired"},
		{"another aud", Mapping{}, signES256(t, k, claims(map[string]any{"aud": "other"})), ErrInvalid, "aud"},
		{"untrusted", Mapping{}, signES256(t, k, claims(map[string]any{"iss": "https://evil.example.test"})), ErrUntrusted, "evil"},
		{"not a JWS", Mapping{}, "a.b", ErrMalformed, "iss"},
		{"alg none", Mapping{}, b64(`{"alg":"none"}`) + "." + b64(`{"iss":"https://idp.example.test","sub":"u"}`) + ".", ErrInvalid, "algorithm"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := newSet(c.m).Verify(ctx, c.tok)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.words) {
				t.Fatalf("Verify: %v, want %v naming %q", err, c.want, c.words)
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// FuzzPeekIssuer reads the unverified iss of client input. Properties:
// no panic; a non-empty answer comes from a three-part compact JWS whose
// payload is a JSON object with that iss.
func FuzzPeekIssuer(f *testing.F) {
	f.Add(b64(`{"alg":"ES256"}`) + "." + b64(`{"iss":"https://idp.example.test"}`) + ".c2ln")
	f.Add("a.b.c.d.e")
	f.Add(b64(`{}`) + "." + b64(`{"iss":1}`) + ".")
	f.Add("..")
	f.Fuzz(func(t *testing.T, raw string) {
		iss := PeekIssuer(raw)
		if iss == "" {
			return
		}
		parts := strings.Split(raw, ".")
		if len(parts) != 3 {
			t.Fatalf("PeekIssuer(%q) = %q from %d parts", raw, iss, len(parts))
		}
		b, err := base64.RawURLEncoding.DecodeString(parts[1])
		var c map[string]any
		if err != nil || json.Unmarshal(b, &c) != nil || c["iss"] != iss {
			t.Fatalf("PeekIssuer(%q) = %q, not the payload's iss", raw, iss)
		}
	})
}

// TestJWKSURLSizeBound: a JWKS URL whose answer is larger than
// MaxJWKSSize is not read whole (go-oidc would take any size): the keys
// count as unavailable, and a key set of normal size verifies.
func TestJWKSURLSizeBound(t *testing.T) {
	t.Parallel()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"})
	for _, c := range []struct {
		name    string
		padding int
		want    error
	}{
		{"normal", 0, nil},
		{"larger than the bound", MaxJWKSSize, ErrUnavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			body := `{"keys":[` + string(key) + `],"padding":"` + strings.Repeat("a", c.padding) + `"}`
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, body)
			}))
			defer srv.Close()
			now := time.Now()
			s, err := New(Config{Issuers: []Issuer{{Issuer: "https://idp.example.test", JWKSURL: srv.URL + "/jwks",
				Algorithms: []string{"ES256"}, Audience: []string{"sts"}}}})
			if err != nil {
				t.Fatal(err)
			}
			tok := signES256(t, k, map[string]any{"iss": "https://idp.example.test", "sub": "u1", "aud": "sts", "exp": now.Add(time.Minute).Unix()})
			_, err = s.Verify(context.Background(), tok)
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("Verify: %v", err)
			case c.want != nil && (!errors.Is(err, c.want) || !strings.Contains(err.Error(), "larger than")):
				t.Fatalf("Verify: %v, want %v naming the size", err, c.want)
			}
		})
	}
}
