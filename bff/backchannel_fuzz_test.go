package bff

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/internal/fuzzcorpus"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
)

// The provider of FuzzBackchannelLogout: a fixed issuer name (go-oidc's
// InsecureIssuerURLContext lets discovery served by an httptest server
// name it), a fixed RSA key from issuer/keys/testdata and a fixed clock, so
// that the logout tokens kept in testdata/fuzz/ verify in every run.
const (
	bclIssuer = "https://idp.example.test"
	bclKID    = "bcl-fuzz"
)

var bclNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func bclKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	b, err := os.ReadFile("../issuer/keys/testdata/rs256-pkcs1.pem")
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatal("rs256-pkcs1.pem: no PEM block")
	}
	k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// bclGateway is a gateway (bbolt session store) whose provider is an
// httptest server publishing the fixed key.
func bclGateway(tb testing.TB, key *rsa.PrivateKey) *Gateway {
	tb.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/jwks" {
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: bclKID, Algorithm: "RS256", Use: "sig"}}})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": bclIssuer, "authorization_endpoint": srv.URL + "/authorize", "token_endpoint": srv.URL + "/token",
			"jwks_uri": srv.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"},
			"code_challenge_methods_supported": []string{"S256"}, "backchannel_logout_supported": true,
		})
	}))
	tb.Cleanup(srv.Close)
	db, err := datafile.Open(filepath.Join(tb.TempDir(), "s.db"), 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	store, err := sessionbolt.New(db, sessionbolt.Config{Now: func() time.Time { return bclNow }, Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := validConfig()
	cfg.Provider.IssuerURL = srv.URL
	cfg.Provider.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	cfg.Store = store
	cfg.Now = func() time.Time { return bclNow }
	cfg.Logger = quietLogger()
	g, err := New(oidc.InsecureIssuerURLContext(context.Background(), bclIssuer), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// signLogout signs claims with the provider's key (RS256, the kid of the
// JWK set, typ logout+jwt as Back-Channel Logout 1.0 §2.4 recommends).
func signLogout(tb testing.TB, key *rsa.PrivateKey, claims map[string]any) string {
	tb.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("logout+jwt").WithHeader("kid", bclKID))
	if err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	jws, err := s.Sign(b)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// logoutClaims is a valid logout token's claim set, changed by edit.
func logoutClaims(edit func(map[string]any)) map[string]any {
	m := map[string]any{
		"iss": bclIssuer, "aud": "bff", "iat": bclNow.Add(-time.Minute).Unix(), "exp": bclNow.Add(2 * time.Minute).Unix(),
		"jti": "jti-1", "sid": "sid-1", "sub": "user-1",
		"events": map[string]any{logoutEvent: map[string]any{}},
	}
	if edit != nil {
		edit(m)
	}
	return m
}

const bclCorpus = "testdata/fuzz/FuzzBackchannelLogout"

// writeBCLSeeds writes the logout tokens of FuzzBackchannelLogout: one
// valid of each shape, and validly signed ones that break one rule each
// (the gateway must refuse them all), and forgeries.
func writeBCLSeeds(tb testing.TB, key *rsa.PrivateKey) {
	del := func(names ...string) func(map[string]any) {
		return func(m map[string]any) {
			for _, n := range names {
				delete(m, n)
			}
		}
	}
	set := func(n string, v any) func(map[string]any) { return func(m map[string]any) { m[n] = v } }
	signed := map[string]func(map[string]any){
		"real-sid":             nil,
		"real-sub-only":        del("sid"),
		"real-aud-array":       set("aud", []string{"other", "bff"}),
		"bad-nonce":            set("nonce", "n-1"),
		"bad-no-events":        del("events"),
		"bad-event-not-object": set("events", map[string]any{logoutEvent: "yes"}),
		"bad-event-array":      set("events", map[string]any{logoutEvent: []any{}}),
		"bad-other-event":      set("events", map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}),
		"bad-no-jti":           del("jti"),
		"bad-no-exp":           del("exp"),
		"bad-expired":          set("exp", bclNow.Add(-time.Second).Unix()),
		"bad-no-iat":           del("iat"),
		"bad-iat-old":          set("iat", bclNow.Add(-11*time.Minute).Unix()),
		"bad-iat-future":       set("iat", bclNow.Add(3*time.Minute).Unix()),
		"bad-aud":              set("aud", "someone-else"),
		"bad-iss":              set("iss", "https://evil.example.test"),
		"bad-no-sid-no-sub":    del("sid", "sub"),
	}
	for name, edit := range signed {
		jti := "jti-" + name
		tok := signLogout(tb, key, logoutClaims(func(m map[string]any) {
			m["jti"] = jti
			if edit != nil {
				edit(m)
			}
		}))
		fuzzcorpus.Write(tb, bclCorpus, name, tok)
	}
	real := signLogout(tb, key, logoutClaims(nil))
	parts := strings.Split(real, ".")
	seg := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	pubDER := x509.MarshalPKCS1PublicKey(&key.PublicKey)
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pubDER}, (&jose.SignerOptions{}).WithHeader("kid", bclKID))
	if err != nil {
		tb.Fatal(err)
	}
	hsJWS, err := hs.Sign([]byte(strings.Repeat("x", 1)))
	if err != nil {
		tb.Fatal(err)
	}
	hsTok, _ := hsJWS.CompactSerialize()
	for name, tok := range map[string]string{
		"forged-alg-none":        seg(map[string]string{"alg": "none", "kid": bclKID}) + "." + parts[1] + ".",
		"forged-hs256-publickey": hsTok,
		"forged-payload-swap":    parts[0] + "." + seg(logoutClaims(set("sid", "sid-victim"))) + "." + parts[2],
		"forged-unknown-kid":     seg(map[string]string{"alg": "RS256", "kid": "other"}) + "." + parts[1] + "." + parts[2],
		"garbage":                "not.a.token",
	} {
		fuzzcorpus.Write(tb, bclCorpus, name, tok)
	}
}

// FuzzBackchannelLogout posts logout_token values to the gateway's
// back-channel logout endpoint (OpenID Connect Back-Channel Logout 1.0
// §2.5, §2.6). Properties:
//   - the answer is 200 or a 400 JSON invalid_request, never a 5xx, and
//     it never echoes the token;
//   - a token accepted (200) is one the provider signed: it verifies with
//     the provider's public key, and it meets every rule of §2.4 and §2.6
//     by an independent reading of its claims (iss, aud, iat window, exp,
//     jti, the event as a JSON object, sid or sub, no nonce);
//   - an accepted token posted again is refused as replayed.
//
// Seeds: valid logout tokens, validly signed ones that each break one
// rule, forgeries (testdata/fuzz/FuzzBackchannelLogout, regenerated with
// -fuzzcorpus.update).
func FuzzBackchannelLogout(f *testing.F) {
	key := bclKey(f)
	if fuzzcorpus.Update() {
		writeBCLSeeds(f, key)
	}
	if n := len(fuzzcorpus.Files(f, bclCorpus, "")); n < 20 {
		f.Fatalf("%d seeds in %s (write them with -fuzzcorpus.update)", n, bclCorpus)
	}
	g := bclGateway(f, key)
	post := func(t *testing.T, tok string) (int, string) {
		req := hostRequest(http.MethodPost, "https://app.example.test/bff/backchannel-logout",
			strings.NewReader(url.Values{"logout_token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := g.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		status, body := post(t, tok)
		if len(tok) > 20 && strings.Contains(body, tok) {
			t.Fatalf("the answer echoes the token: %s", body)
		}
		switch status {
		case http.StatusBadRequest:
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != "invalid_request" {
				t.Fatalf("400 with body %q", body)
			}
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d for a logout token: %s", status, body)
		}
		if reason := violates(key, tok); reason != "" {
			t.Fatalf("accepted a logout token that %s", reason)
		}
		if status, body := post(t, tok); status != http.StatusBadRequest || !strings.Contains(body, "replayed") {
			t.Fatalf("the same token again: %d %s", status, body)
		}
	})
}

// violates says which rule of Back-Channel Logout 1.0 tok breaks, reading
// it as a relying party would with only the provider's public key, or ""
// for none.
func violates(key *rsa.PrivateKey, tok string) string {
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "is no RS256 JWS: " + err.Error()
	}
	payload, err := jws.Verify(&key.PublicKey)
	if err != nil {
		return "the provider's key does not verify"
	}
	var c struct {
		Iss    string                     `json:"iss"`
		Aud    json.RawMessage            `json:"aud"`
		Iat    *float64                   `json:"iat"`
		Exp    *float64                   `json:"exp"`
		Jti    string                     `json:"jti"`
		Sid    string                     `json:"sid"`
		Sub    string                     `json:"sub"`
		Nonce  json.RawMessage            `json:"nonce"`
		Events map[string]json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "has claims that are not JSON"
	}
	var aud []string
	if err := json.Unmarshal(c.Aud, &aud); err != nil {
		var one string
		if json.Unmarshal(c.Aud, &one) == nil {
			aud = []string{one}
		}
	}
	ev := strings.TrimSpace(string(c.Events[logoutEvent]))
	switch {
	case c.Iss != bclIssuer:
		return "names another issuer"
	case !slices.Contains(aud, "bff"):
		return "is not for this client"
	case c.Iat == nil || time.Unix(int64(*c.Iat), 0).After(bclNow.Add(iatSkew)) || bclNow.Sub(time.Unix(int64(*c.Iat), 0)) > maxLogoutTokenAge:
		return "has no iat, or one out of the window"
	case c.Exp == nil || !time.Unix(int64(*c.Exp), 0).After(bclNow.Add(-time.Second)):
		return "has no exp, or a past one"
	case c.Jti == "":
		return "has no jti"
	case c.Sid == "" && c.Sub == "":
		return "names neither sid nor sub"
	case len(c.Nonce) > 0:
		return "has a nonce"
	case !strings.HasPrefix(ev, "{"):
		return "lacks the backchannel-logout event object"
	}
	return ""
}

// TestFuzzSeedsBackchannelLogout checks the seeds are what their names
// say: real-* are accepted (and ended the session they name), every other
// one is refused with a 400, validly signed or not.
func TestFuzzSeedsBackchannelLogout(t *testing.T) {
	t.Parallel()
	key := bclKey(t)
	g := bclGateway(t, key)
	files := fuzzcorpus.Files(t, bclCorpus, "")
	if len(files) < 20 {
		t.Fatalf("%d seeds in %s (write them with -fuzzcorpus.update)", len(files), bclCorpus)
	}
	for _, path := range files {
		name := filepath.Base(path)
		tok, _ := fuzzcorpus.Read(t, path)[0].(string)
		req := hostRequest(http.MethodPost, "https://app.example.test/bff/backchannel-logout",
			strings.NewReader(url.Values{"logout_token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := g.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := http.StatusBadRequest
		if strings.HasPrefix(name, "real-") {
			want = http.StatusOK
		} else if strings.HasPrefix(name, "bad-") && violates(key, tok) == "" {
			t.Fatalf("%s breaks no rule by the test's own reading", name)
		}
		if resp.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", name, resp.StatusCode, b, want)
		}
	}
}
