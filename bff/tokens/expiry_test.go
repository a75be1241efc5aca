package tokens

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestAccessExpiry(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	enc := base64.RawURLEncoding.EncodeToString
	b64 := func(s string) string { return enc([]byte(s)) }
	hdr := b64(`{"alg":"RS256","kid":"k1"}`)
	sig := b64("not-a-real-signature")
	jws := func(claims string) string { return hdr + "." + b64(claims) + "." + sig }
	early := now.Add(2 * time.Minute)
	late := now.Add(time.Hour)

	for _, tc := range []struct {
		name      string
		token     string
		expiresIn int64
		expiry    time.Time // oauth2.Token.Expiry (system clock)
		want      time.Time
	}{
		{"jwt exp before expires_in", jws(`{"sub":"a","exp":1700000120}`), 300, time.Time{}, early},
		{"jwt exp after expires_in", jws(`{"sub":"a","exp":1700003600}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt exp, no expires_in", jws(`{"exp":1700003600}`), 0, time.Time{}, late},
		{"jwt fractional exp", jws(`{"exp":1700000120.75}`), 300, time.Time{}, early},
		{"jwt alg none", b64(`{"alg":"none"}`) + "." + b64(`{"exp":1700000120}`) + ".", 300, time.Time{}, early},
		{"jwt padded base64", hdr + "." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1700000120}`)) + "." + sig, 300, time.Time{}, early},
		{"jwt without exp", jws(`{"sub":"a","iat":1700000000}`), 300, time.Time{}, now.Add(300 * time.Second)},
		// A provider clock behind ours (or a lifetime written as exp):
		// a claim at or before now would make every call refresh.
		{"jwt exp in the past", jws(`{"exp":1699999990}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt exp now", jws(`{"exp":1700000000}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt exp a lifetime", jws(`{"exp":3600}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt without exp or expires_in", jws(`{"sub":"a"}`), 0, time.Time{}, time.Time{}},
		{"jwt exp as string", jws(`{"exp":"1700000120"}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt exp null", jws(`{"exp":null}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt exp negative", jws(`{"exp":-5}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt exp beyond 9999", jws(`{"exp":1e300}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt payload not an object", jws(`[1700000120]`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"jwt header not json", b64("nope") + "." + b64(`{"exp":1700000120}`) + "." + sig, 300, time.Time{}, now.Add(300 * time.Second)},
		// A JWE's second part is the encrypted key, never claims: even
		// one that happens to decode to an exp is not read.
		{"jwe", b64(`{"alg":"RSA-OAEP","enc":"A256GCM"}`) + "." + b64(`{"exp":1700000120}`) + "." + b64("iv") + "." + b64("ct") + "." + b64("tag"), 300, time.Time{}, now.Add(300 * time.Second)},
		{"opaque", "2YotnFZFEjr1zCsicMWpAA", 300, time.Time{}, now.Add(300 * time.Second)},
		{"opaque, nothing known", "2YotnFZFEjr1zCsicMWpAA", 0, time.Time{}, time.Time{}},
		{"opaque with dots", "a.b.c", 300, time.Time{}, now.Add(300 * time.Second)},
		{"garbage", "..", 300, time.Time{}, now.Add(300 * time.Second)},
		{"garbage base64", hdr + ".%%%." + sig, 300, time.Time{}, now.Add(300 * time.Second)},
		{"empty", "", 0, time.Time{}, time.Time{}},
		{"too large", jws(`{"exp":1700000120,"pad":"` + strings.Repeat("x", maxJWTLen) + `"}`), 300, time.Time{}, now.Add(300 * time.Second)},
		{"absurd expires_in", "opaque", 1 << 62, time.Time{}, now.Add(time.Duration(maxExpiresIn) * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok := &oauth2.Token{AccessToken: tc.token, ExpiresIn: tc.expiresIn, Expiry: tc.expiry}
			if got := AccessExpiry(tok, now); !got.Equal(tc.want) {
				t.Errorf("AccessExpiry = %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("expiry only", func(t *testing.T) {
		t.Parallel()
		// x/oauth2 set Expiry on the system clock: the lifetime carries
		// over to now, within the test's run time.
		tok := &oauth2.Token{AccessToken: "opaque", Expiry: time.Now().Add(time.Hour)}
		got := AccessExpiry(tok, now)
		if got.After(now.Add(time.Hour)) || got.Before(now.Add(59*time.Minute)) {
			t.Errorf("AccessExpiry = %v, want about %v", got, now.Add(time.Hour))
		}
	})
	t.Run("nil", func(t *testing.T) {
		t.Parallel()
		if got := AccessExpiry(nil, now); !got.IsZero() {
			t.Errorf("AccessExpiry(nil) = %v", got)
		}
	})
}

// FuzzJWTExpiry: jwtExpiry reads what a provider sends; no input makes it
// panic, and what it accepts is a plausible time.
func FuzzJWTExpiry(f *testing.F) {
	enc := base64.RawURLEncoding.EncodeToString
	f.Add(enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"exp":1700000000}`)) + ".")
	f.Add(enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"exp":1.5e9}`)) + "." + enc([]byte("sig")))
	f.Add("a.b.c.d.e")
	f.Add("opaque")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		exp, ok := jwtExpiry(token)
		if !ok {
			if !exp.IsZero() {
				t.Fatalf("not ok but exp %v", exp)
			}
			return
		}
		if exp.Unix() <= 0 || exp.Year() > 9999 || strings.Count(token, ".") != 2 {
			t.Fatalf("accepted %q with exp %v", token, exp)
		}
	})
}
