package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/internal/fuzzcorpus"
	"github.com/bffgate/bffgate/issuer/keys"
)

// The fuzz key set is imported from issuer/keys/testdata, so that the
// real tokens kept in testdata/fuzz/FuzzParse/ (minted at t0, valid for an
// hour) verify in every run.
const fuzzKeyDir = "../keys/testdata"

var fuzzFiles = []keys.FileKey{
	{Path: fuzzKeyDir + "/rs256-pkcs1.pem", Alg: "RS256", KID: "rs256-fuzz"},
	{Path: fuzzKeyDir + "/es256-sec1.pem", Alg: "ES256", KID: "es256-fuzz"},
	{Path: fuzzKeyDir + "/hs256.b64", Alg: "HS256", KID: "hs256-fuzz"},
	{Path: fuzzKeyDir + "/dir.b64", Alg: "dir", KID: "dir-fuzz"},
}

// fuzzCodecs are the shapes Parse takes: access and refresh tokens
// signed with an asymmetric alg, with HMAC, or encrypted (JWE dir), and
// signed access tokens with sealed refresh tokens (JWE dir A256GCM); ID
// tokens signed with RS256 or ES256.
type fuzzCodec struct {
	name string
	c    *Codec
}

// fuzzFixture is the key set and codecs, and what a relying party holds:
// the published JWK set and, read from the files without the keys
// package, the HMAC secret and the dir key.
type fuzzFixture struct {
	codecs []fuzzCodec
	jwks   jose.JSONWebKeySet
	hs256  []byte
	dir    []byte
}

var fuzzSetup = sync.OnceValues(func() (*fuzzFixture, error) {
	st := &memStore{}
	ks, err := keys.Open(context.Background(), keys.Config{Store: st, Algorithms: []string{"RS256", "ES256", "HS256"},
		Encryption: "A128CBC-HS256", Files: fuzzFiles, Now: func() time.Time { return t0 }, Logger: quiet})
	if err != nil {
		return nil, err
	}
	// The same stored keys with the enc of sealed refresh tokens.
	sealKS, err := keys.Open(context.Background(), keys.Config{Store: st, Algorithms: []string{"RS256", "ES256", "HS256"},
		Encryption: SealEnc, Files: fuzzFiles, Now: func() time.Time { return t0 }, Logger: quiet})
	if err != nil {
		return nil, err
	}
	fx := &fuzzFixture{}
	for _, cfg := range []struct {
		name string
		ks   *keys.Set
		cfg  Config
	}{
		{"es256", ks, Config{Alg: "ES256", IDTokenAlg: "RS256"}},
		{"hs256", ks, Config{Alg: "HS256", IDTokenAlg: "ES256"}},
		{"jwe", ks, Config{Format: FormatEncrypted, IDTokenAlg: "RS256"}},
		{"sealed", sealKS, Config{Alg: "RS256", IDTokenAlg: "ES256", RefreshFormat: RefreshSealed}},
	} {
		c := cfg.cfg
		c.Keys, c.Issuer, c.Now = cfg.ks, testIssuer, func() time.Time { return t0 }
		codec, err := New(c)
		if err != nil {
			return nil, err
		}
		fx.codecs = append(fx.codecs, fuzzCodec{cfg.name, codec})
	}
	b, err := json.Marshal(ks.PublicJWKS())
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &fx.jwks); err != nil {
		return nil, err
	}
	if fx.hs256, err = readSecret(fuzzKeyDir + "/hs256.b64"); err != nil {
		return nil, err
	}
	if fx.dir, err = readSecret(fuzzKeyDir + "/dir.b64"); err != nil {
		return nil, err
	}
	return fx, nil
})

func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
}

func fixture(tb testing.TB) *fuzzFixture {
	tb.Helper()
	fx, err := fuzzSetup()
	if err != nil {
		tb.Fatal(err)
	}
	return fx
}

var kinds = []Kind{Access, Refresh, ID}

var parseErrors = []error{ErrMalformed, ErrWrongAlg, ErrUnknownKey, ErrSignature, ErrDecrypt,
	ErrWrongType, ErrWrongIssuer, ErrExpired, ErrNotYetValid}

// fuzzNow is when the fuzz target parses: within the hour the seeds are
// valid.
var fuzzNow = t0.Add(10 * time.Minute)

// FuzzParse feeds raw to Parse (every codec, every kind) and to
// ParseIDTokenHint. Properties:
//   - never a panic, and an error always wraps one of Parse's sentinels
//     and never contains the token;
//   - an accepted token was made by the issuer: a relying party holding
//     only the published JWK set (or, for HS and JWE, the secret read from
//     the key file) verifies or decrypts it with the header's kid and the
//     configured alg, and finds the same claims, typ, iss, and a time
//     window containing now;
//   - the claims of an accepted token mint again into a token that parses
//     to the same claims.
//
// Seeds: real tokens of each kind and codec (real-*, regenerated with
// -fuzzcorpus.update), and adversarial ones (alg none, alg confusion, a
// jwk header, wrong typ, zip, truncations, huge input).
func FuzzParse(f *testing.F) {
	fx := fixture(f)
	fuzzcorpus.Add(f, "adv-empty", "")
	fuzzcorpus.Add(f, "adv-three-parts", "a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		for _, fc := range fx.codecs {
			for _, kind := range kinds {
				cl, err := fc.c.Parse(raw, kind, fuzzNow)
				checkParse(t, fx, fc, raw, kind, cl, err, true)
			}
			cl, err := fc.c.ParseIDTokenHint(raw, fuzzNow)
			checkParse(t, fx, fc, raw, ID, cl, err, false)
		}
	})
}

func checkParse(t *testing.T, fx *fuzzFixture, fc fuzzCodec, raw string, kind Kind, cl *Claims, err error, timed bool) {
	t.Helper()
	if err != nil {
		if cl != nil {
			t.Fatalf("%s %s: claims with an error", fc.name, kind)
		}
		known := false
		for _, e := range parseErrors {
			known = known || errors.Is(err, e)
		}
		if !known {
			t.Fatalf("%s %s: error %q wraps none of Parse's sentinels", fc.name, kind, err)
		}
		if len(raw) > 100 && strings.Contains(err.Error(), raw) {
			t.Fatalf("%s %s: the error contains the token", fc.name, kind)
		}
		return
	}
	payload, typ := relyingParty(t, fx, fc, raw, kind)
	if !typMatches(typ, kind.Typ()) {
		t.Fatalf("%s %s accepted with typ %v", fc.name, kind, typ)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("%s %s accepted with a payload that is not JSON: %v", fc.name, kind, err)
	}
	if m["iss"] != testIssuer || m["sub"] != cl.Subject || cl.Subject == "" {
		t.Fatalf("%s %s accepted: iss %v sub %v, claims %+v", fc.name, kind, m["iss"], m["sub"], cl)
	}
	if exp, _ := m["exp"].(float64); int64(exp) != cl.Expiry.Unix() {
		t.Fatalf("%s %s accepted: exp %v, claims say %s", fc.name, kind, m["exp"], cl.Expiry)
	}
	if timed && (!fuzzNow.Before(cl.Expiry.Add(DefaultLeeway)) || fuzzNow.Add(DefaultLeeway).Before(cl.IssuedAt)) {
		t.Fatalf("%s %s accepted outside its time window: iat %s exp %s", fc.name, kind, cl.IssuedAt, cl.Expiry)
	}
	again, err := decodeClaims(payload)
	if err != nil || !reflect.DeepEqual(again, cl) {
		t.Fatalf("%s %s: the relying party's payload decodes to other claims (%v)", fc.name, kind, err)
	}
	// Round trip: the claims mint again and parse to the same claims.
	if !timed {
		return // an expired hint need not be mintable at its old times
	}
	tok, err := fc.c.Mint(kind, *cl)
	if err != nil {
		t.Fatalf("%s %s: accepted claims do not mint again: %v", fc.name, kind, err)
	}
	back, err := fc.c.Parse(tok, kind, fuzzNow)
	if err != nil || !reflect.DeepEqual(back, cl) {
		t.Fatalf("%s %s: re-minted claims parse to %+v, %v; want %+v", fc.name, kind, back, err, cl)
	}
}

// relyingParty verifies or decrypts raw as a party outside this package
// would, failing t when it cannot: Parse accepted something its issuer
// did not make.
func relyingParty(t *testing.T, fx *fuzzFixture, fc fuzzCodec, raw string, kind Kind) ([]byte, any) {
	t.Helper()
	// What Parse may take as a JWE: every access and refresh token of
	// the encrypted format (its enc), and in the signed format a sealed
	// refresh token (SealEnc), whatever the codec's refresh format.
	enc := ""
	switch {
	case kind != ID && fc.c.Format() == FormatEncrypted:
		enc = "A128CBC-HS256"
	case kind == Refresh && strings.Count(raw, ".") == 4:
		enc = SealEnc
	}
	if enc != "" {
		obj, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.ContentEncryption(enc)})
		if err != nil {
			t.Fatalf("%s %s accepted, but it is no dir/%s JWE: %v", fc.name, kind, enc, err)
		}
		if obj.Header.KeyID != "dir-fuzz" {
			t.Fatalf("%s %s accepted under kid %q", fc.name, kind, obj.Header.KeyID)
		}
		payload, err := obj.Decrypt(fx.dir)
		if err != nil {
			t.Fatalf("%s %s accepted, but the dir key does not decrypt it: %v", fc.name, kind, err)
		}
		return payload, obj.Header.ExtraHeaders[jose.HeaderType]
	}
	alg := fc.c.Algorithm(kind)
	obj, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil || len(obj.Signatures) != 1 {
		t.Fatalf("%s %s accepted, but it is no %s JWS: %v", fc.name, kind, alg, err)
	}
	hdr := obj.Signatures[0].Protected
	var key any
	if alg == "HS256" {
		if hdr.KeyID != "hs256-fuzz" {
			t.Fatalf("%s %s accepted under kid %q", fc.name, kind, hdr.KeyID)
		}
		key = fx.hs256
	} else {
		ks := fx.jwks.Key(hdr.KeyID)
		if len(ks) != 1 || ks[0].Algorithm != alg {
			t.Fatalf("%s %s accepted under kid %q, which the JWK set does not publish for %s", fc.name, kind, hdr.KeyID, alg)
		}
		key = ks[0].Key
	}
	payload, err := obj.Verify(key)
	if err != nil {
		t.Fatalf("%s %s accepted, but a relying party's key does not verify it: %v", fc.name, kind, err)
	}
	return payload, hdr.ExtraHeaders[jose.HeaderType]
}

const parseCorpus = "testdata/fuzz/FuzzParse"

// TestFuzzSeedsParse checks that the real seeds of FuzzParse are real: each
// parses with the codec and kind its name gives. With -fuzzcorpus.update
// it mints them afresh first, and writes the adversarial seeds.
func TestFuzzSeedsParse(t *testing.T) {
	fx := fixture(t)
	if fuzzcorpus.Update() {
		writeParseSeeds(t, fx)
	}
	files := fuzzcorpus.Files(t, parseCorpus, "real-")
	if len(files) != len(fx.codecs)*len(kinds) {
		t.Fatalf("%d real seeds in %s, want %d (regenerate with -fuzzcorpus.update)", len(files), parseCorpus, len(fx.codecs)*len(kinds))
	}
	for _, path := range files {
		raw, _ := fuzzcorpus.Read(t, path)[0].(string)
		name := strings.TrimPrefix(filepath.Base(path), "real-")
		ok := false
		for _, fc := range fx.codecs {
			for _, kind := range kinds {
				if name != fc.name+"-"+kind.Typ() {
					continue
				}
				if _, err := fc.c.Parse(raw, kind, fuzzNow); err != nil {
					t.Fatalf("%s does not parse: %v", path, err)
				}
				ok = true
			}
		}
		if !ok {
			t.Fatalf("%s names no codec and kind", path)
		}
	}
}

func writeParseSeeds(t *testing.T, fx *fuzzFixture) {
	seg := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	var realAccess, realID string
	for _, fc := range fx.codecs {
		for _, kind := range kinds {
			tok, err := fc.c.Mint(kind, sample(kind))
			if err != nil {
				t.Fatal(err)
			}
			fuzzcorpus.Write(t, parseCorpus, "real-"+fc.name+"-"+kind.Typ(), tok)
			if fc.name == "es256" && kind == Access {
				realAccess = tok
			}
			if fc.name == "es256" && kind == ID {
				realID = tok
			}
		}
	}
	parts := strings.Split(realAccess, ".")
	idParts := strings.Split(realID, ".")
	claims := parts[1]
	adv := map[string]string{
		// RFC 8725 §2.1, §3.1: alg none and alg confusion.
		"alg-none":          seg(map[string]string{"alg": "none", "typ": "at+jwt", "kid": "es256-fuzz"}) + "." + claims + ".",
		"alg-hs256-with-es": seg(map[string]string{"alg": "HS256", "typ": "at+jwt", "kid": "es256-fuzz"}) + "." + claims + "." + parts[2],
		"alg-case":          seg(map[string]string{"alg": "es256", "typ": "at+jwt", "kid": "es256-fuzz"}) + "." + claims + "." + parts[2],
		"embedded-jwk":      seg(map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "es256-fuzz", "jwk": map[string]string{"kty": "EC", "crv": "P-256"}}) + "." + claims + "." + parts[2],
		"no-kid":            seg(map[string]string{"alg": "ES256", "typ": "at+jwt"}) + "." + claims + "." + parts[2],
		"id-as-access":      realID,
		"swapped-payload":   parts[0] + "." + idParts[1] + "." + parts[2],
		"jwe-zip":           seg(map[string]string{"alg": "dir", "enc": "A128CBC-HS256", "zip": "DEF", "kid": "dir-fuzz", "typ": "at+jwt"}) + "..AAAAAAAAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
		"jwe-no-enc":        seg(map[string]string{"alg": "dir", "kid": "dir-fuzz"}) + "....",
		"truncated":         realAccess[:len(realAccess)-3],
		"extra-part":        realAccess + ".x",
		"header-not-object": base64.RawURLEncoding.EncodeToString([]byte(`["alg"]`)) + "." + claims + "." + parts[2],
		"padded-base64":     parts[0] + "=." + claims + "." + parts[2],
		"json-header-dup":   base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","alg":"none","typ":"at+jwt","kid":"es256-fuzz"}`)) + "." + claims + "." + parts[2],
		"exp-huge":          parts[0] + "." + seg(map[string]any{"iss": testIssuer, "sub": "x", "exp": 1e300, "iat": 1}) + "." + parts[2],
		"dots":              strings.Repeat(".", 4),
		"long":              strings.Repeat("A", MaxTokenLength+1),
	}
	for name, v := range adv {
		fuzzcorpus.Write(t, parseCorpus, "adv-"+name, v)
	}
}
