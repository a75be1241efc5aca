package demoapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/testhttp"
)

func TestWhoamiSignedTokens(t *testing.T) {
	t.Parallel()
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			ti := newTestIssuer(t)
			key := ti.addKey("k-"+string(alg), alg)
			clk := newClock()
			a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, Now: clk.Now})
			tok := sign(t, key, "at+jwt", ti.claims("alice", clk.Now()))

			r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
			if r.status != http.StatusOK {
				t.Fatalf("status %d, body %s", r.status, r.body)
			}
			m := r.json(t)
			sum := sha256.Sum256([]byte("jti-alice"))
			want := map[string]any{
				"subject":    "alice",
				"client_id":  "bffgate",
				"issuer":     ti.srv.URL,
				"expires_in": float64(300),
				"jti_sha256": hex.EncodeToString(sum[:8]),
				"expires_at": clk.Now().Add(5 * time.Minute).UTC().Format(time.RFC3339),
			}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("%s = %v, want %v", k, m[k], v)
				}
			}
			if got := fmt.Sprint(m["scopes"]); got != "[openid profile api]" {
				t.Errorf("scopes = %s", got)
			}
			tf := m["token"].(map[string]any)
			if tf["format"] != "signed" || tf["alg"] != string(alg) || tf["typ"] != "at+jwt" || tf["verified_by"] != "jwks" {
				t.Errorf("token = %v", tf)
			}
			if strings.Contains(string(r.body), tok) || strings.Contains(string(r.body), "jti-alice") {
				t.Error("the response echoes the token or its jti")
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
			}
		})
	}
}

func TestRejectsBadTokens(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	key := ti.addKey("good", jose.ES256)
	rsaKey := ti.addKey("rsa", jose.RS256)
	clk := newClock()
	now := clk.Now()
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, Now: clk.Now, Leeway: 10 * time.Second})

	// A key the issuer never published, with a kid it does publish.
	stranger := newTestIssuer(t).addKey("good", jose.ES256)

	mod := func(f func(c *claims)) claims {
		c := ti.claims("alice", now)
		f(&c)
		return c
	}
	good := sign(t, key, "at+jwt", ti.claims("alice", now))
	parts := strings.Split(good, ".")

	// HS256 keyed with the RSA public key's bytes: the classic
	// alg-confusion attack.
	rsaPub := rsaKey.Public()
	pubJSON, _ := rsaPub.MarshalJSON()
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pubJSON},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "rsa"))
	if err != nil {
		t.Fatal(err)
	}
	hsTok, _ := jwt.Signed(hs).Claims(ti.claims("alice", now)).Serialize()

	// A real JWE (dir, A128CBC-HS256): unreadable to a resource server.
	cek := make([]byte, 32)
	_, _ = rand.Read(cek)
	enc, err := jose.NewEncrypter(jose.A128CBC_HS256, jose.Recipient{Algorithm: jose.DIRECT, Key: cek},
		(&jose.EncrypterOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	jweTok, _ := jwt.Encrypted(enc).Claims(ti.claims("alice", now)).Serialize()

	cases := []struct {
		name, token, wantDesc string
	}{
		{"expired", sign(t, key, "at+jwt", mod(func(c *claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Minute)) })), "the access token expired"},
		{"not yet valid", sign(t, key, "at+jwt", mod(func(c *claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) })), "the access token is not valid for this API"},
		{"wrong issuer", sign(t, key, "at+jwt", mod(func(c *claims) { c.Issuer = "https://evil.example" })), "the access token is not valid for this API"},
		{"wrong audience", sign(t, key, "at+jwt", mod(func(c *claims) { c.Audience = jwt.Audience{"other-api"} })), "the access token is not valid for this API"},
		{"no exp", sign(t, key, "at+jwt", mod(func(c *claims) { c.Expiry = nil })), "the access token is not valid for this API"},
		{"no sub", sign(t, key, "at+jwt", mod(func(c *claims) { c.Subject = "" })), "the access token is not valid for this API"},
		{"id token typ", sign(t, key, "JWT", ti.claims("alice", now)), "the access token is not valid for this API"},
		{"refresh token typ", sign(t, key, "rt+jwt", ti.claims("alice", now)), "the access token is not valid for this API"},
		{"no typ", sign(t, key, "", ti.claims("alice", now)), "the access token is not valid for this API"},
		{"unknown signer", sign(t, stranger, "at+jwt", ti.claims("alice", now)), "the access token is not valid for this API"},
		{"unknown kid", sign(t, jose.JSONWebKey{Key: key.Key, KeyID: "nope", Algorithm: "ES256"}, "at+jwt", ti.claims("alice", now)), "the access token is not valid for this API"},
		{"tampered payload", parts[0] + "." + strings.Split(sign(t, key, "at+jwt", ti.claims("mallory", now)), ".")[1] + "." + parts[2], "the access token is not valid for this API"},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + parts[1] + ".", "the access token is not valid for this API"},
		{"hmac with public key", hsTok, "the access token is not valid for this API"},
		{"encrypted", jweTok, "the access token is not valid for this API"},
		{"garbage", "not-a-jwt", "the access token is not valid for this API"},
		{"bad characters", "abc!def", "the access token is malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, a.App(), http.MethodGet, "/api/whoami", tc.token, "")
			if r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %s", r.status, r.body)
			}
			wantHdr := `Bearer realm="demoapi", error="invalid_token", error_description="` + tc.wantDesc + `"`
			if got := r.header.Get("WWW-Authenticate"); got != wantHdr {
				t.Errorf("WWW-Authenticate = %q, want %q", got, wantHdr)
			}
			if m := r.json(t); m["error"] != "invalid_token" || m["error_description"] != tc.wantDesc {
				t.Errorf("body = %v", m)
			}
		})
	}
	// Within the leeway, expiry is forgiven.
	t.Run("expired within leeway", func(t *testing.T) {
		tok := sign(t, key, "at+jwt", mod(func(c *claims) { c.Expiry = jwt.NewNumericDate(now.Add(-5 * time.Second)) }))
		if r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, ""); r.status != http.StatusOK {
			t.Fatalf("status %d, body %s", r.status, r.body)
		}
	})
	t.Run("good token still passes", func(t *testing.T) {
		if r := do(t, a.App(), http.MethodGet, "/api/whoami", good, ""); r.status != http.StatusOK {
			t.Fatalf("status %d, body %s", r.status, r.body)
		}
	})
}

func TestExpiryFollowsTheClock(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	key := ti.addKey("k", jose.ES256)
	clk := newClock()
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, Now: clk.Now})
	tok := sign(t, key, "at+jwt", ti.claims("alice", clk.Now()))
	if r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, ""); r.status != http.StatusOK {
		t.Fatalf("fresh token: status %d", r.status)
	}
	clk.Add(5*time.Minute + DefaultLeeway + time.Second)
	r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
	if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("expired token: status %d, WWW-Authenticate %q", r.status, r.header.Get("WWW-Authenticate"))
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	key := ti.addKey("k", jose.ES256)
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience})
	tok := sign(t, key, "at+jwt", ti.claims("alice", time.Now()))

	t.Run("no token", func(t *testing.T) {
		r := do(t, a.App(), http.MethodGet, "/api/whoami", "", "")
		if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Bearer realm="demoapi"` {
			t.Fatalf("status %d, WWW-Authenticate %q", r.status, r.header.Get("WWW-Authenticate"))
		}
	})
	t.Run("basic credentials are no token", func(t *testing.T) {
		req := newReq(http.MethodGet, "/api/whoami", "")
		req.Header.Set("Authorization", "Basic YTpi")
		resp, _ := a.App().Test(req, -1)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Bearer realm="demoapi"` {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("token in query", func(t *testing.T) {
		r := do(t, a.App(), http.MethodGet, "/api/whoami?access_token="+tok, "", "")
		if r.status != http.StatusBadRequest || r.json(t)["error"] != "invalid_request" {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
	})
	t.Run("unknown endpoint", func(t *testing.T) {
		r := do(t, a.App(), http.MethodGet, "/api/nothing", tok, "")
		if r.status != http.StatusNotFound || r.json(t)["error"] != "not_found" {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
	})
	t.Run("lower-case scheme", func(t *testing.T) {
		req := newReq(http.MethodGet, "/api/whoami", "")
		req.Header.Set("Authorization", "bearer "+tok)
		resp, _ := a.App().Test(req, -1)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestRequiredScope(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	key := ti.addKey("k", jose.ES256)
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, RequiredScope: "items"})
	tok := sign(t, key, "at+jwt", ti.claims("alice", time.Now()))
	r := do(t, a.App(), http.MethodGet, "/api/items", tok, "")
	if r.status != http.StatusForbidden || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("status %d, WWW-Authenticate %q", r.status, r.header.Get("WWW-Authenticate"))
	}
	cl := ti.claims("alice", time.Now())
	cl.Scope = "openid items"
	if r := do(t, a.App(), http.MethodGet, "/api/items", sign(t, key, "at+jwt", cl), ""); r.status != http.StatusOK {
		t.Fatalf("with scope: status %d", r.status)
	}
}

func TestKeyRotationAndRefetchLimit(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	k1 := ti.addKey("k1", jose.ES256)
	clk := newClock()
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, Now: clk.Now})
	get := func(tok string) int { return do(t, a.App(), http.MethodGet, "/api/whoami", tok, "").status }

	if s := get(sign(t, k1, "at+jwt", ti.claims("alice", clk.Now()))); s != http.StatusOK {
		t.Fatalf("k1: %d", s)
	}
	if n := ti.jwksHits.Load(); n != 1 {
		t.Fatalf("JWK set fetched %d times, want 1", n)
	}
	// Forged kids within the rate-limit window cause no fetch at all.
	for i := range 20 {
		forged := sign(t, jose.JSONWebKey{Key: k1.Key, KeyID: fmt.Sprintf("forged-%d", i), Algorithm: "ES256"}, "at+jwt", ti.claims("alice", clk.Now()))
		if s := get(forged); s != http.StatusUnauthorized {
			t.Fatalf("forged kid: %d", s)
		}
	}
	if n := ti.jwksHits.Load(); n > 2 {
		t.Fatalf("20 unknown kids caused %d JWK set fetches, want at most 2", n)
	}
	// The issuer rotates; after the refetch interval the new key is found.
	k2 := ti.addKey("k2", jose.ES256)
	clk.Add(6 * time.Second)
	before := ti.jwksHits.Load()
	if s := get(sign(t, k2, "at+jwt", ti.claims("alice", clk.Now()))); s != http.StatusOK {
		t.Fatalf("k2 after rotation: %d", s)
	}
	if n := ti.jwksHits.Load() - before; n != 1 {
		t.Fatalf("rotation caused %d fetches, want 1", n)
	}
	// The old key still verifies, from the cache.
	if s := get(sign(t, k1, "at+jwt", ti.claims("alice", clk.Now()))); s != http.StatusOK {
		t.Fatalf("k1 after rotation: %d", s)
	}
	if n := ti.jwksHits.Load() - before; n != 1 {
		t.Fatalf("known keys caused a fetch")
	}
}

func TestIssuerUnavailable(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	key := ti.addKey("k", jose.ES256)
	clk := newClock()
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, Now: clk.Now})
	tok := sign(t, key, "at+jwt", ti.claims("alice", clk.Now()))
	ti.down.Store(true)

	r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
	if r.status != http.StatusServiceUnavailable || r.json(t)["error"] != "temporarily_unavailable" || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	if r := do(t, a.App(), http.MethodGet, "/readyz", "", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the issuer down: %d", r.status)
	}
	// Within the retry interval a down issuer costs requests nothing.
	hits := ti.discoveryHits.Load()
	do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
	if ti.discoveryHits.Load() != hits {
		t.Fatal("discovery retried within the retry interval")
	}
	ti.down.Store(false)
	clk.Add(2 * time.Second)
	if r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, ""); r.status != http.StatusOK {
		t.Fatalf("issuer back: status %d body %s", r.status, r.body)
	}
	if r := do(t, a.App(), http.MethodGet, "/readyz", "", ""); r.status != http.StatusOK {
		t.Fatalf("readyz with the issuer up: %d", r.status)
	}
	// Once the keys are known, a later outage does not stop verification.
	ti.down.Store(true)
	if r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, ""); r.status != http.StatusOK {
		t.Fatalf("issuer down after warm-up: %d", r.status)
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	key := ti.addKey("k", jose.ES256)
	ti.badIssuer.Store(true)
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience})
	r := do(t, a.App(), http.MethodGet, "/api/whoami", sign(t, key, "at+jwt", ti.claims("alice", time.Now())), "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503 when discovery names another issuer", r.status)
	}
}

func TestItems(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	key := ti.addKey("k", jose.ES256)
	reg := prometheus.NewRegistry()
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, Registerer: reg, Gatherer: reg})
	alice := sign(t, key, "at+jwt", ti.claims("alice", time.Now()))
	bob := sign(t, key, "at+jwt", ti.claims("bob", time.Now()))
	app := a.App()

	r := do(t, app, http.MethodPost, "/api/items", alice, `{"title":"  buy milk  "}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	it := r.json(t)
	id, _ := it["id"].(string)
	if it["title"] != "buy milk" || id == "" || r.header.Get("Location") != "/api/items/"+id {
		t.Fatalf("created %v, Location %q", it, r.header.Get("Location"))
	}
	if r := do(t, app, http.MethodGet, "/api/items", alice, ""); !strings.Contains(string(r.body), id) {
		t.Fatalf("alice's list misses the item: %s", r.body)
	}
	if r := do(t, app, http.MethodGet, "/api/items", bob, ""); r.status != http.StatusOK || strings.Contains(string(r.body), id) {
		t.Fatalf("bob sees alice's item: %s", r.body)
	}
	if r := do(t, app, http.MethodDelete, "/api/items/"+id, bob, ""); r.status != http.StatusNotFound {
		t.Fatalf("bob deleted alice's item: %d", r.status)
	}
	if r := do(t, app, http.MethodDelete, "/api/items/"+id, alice, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := do(t, app, http.MethodDelete, "/api/items/"+id, alice, ""); r.status != http.StatusNotFound {
		t.Fatalf("second delete: %d", r.status)
	}

	bad := []struct {
		name, body, ctype string
		status            int
		code              string
	}{
		{"empty title", `{"title":"   "}`, "application/json", 422, "invalid_title"},
		{"too long", `{"title":"` + strings.Repeat("é", MaxTitleLength+1) + `"}`, "application/json", 422, "invalid_title"},
		{"control character", `{"title":"a\u0007b"}`, "application/json", 422, "invalid_title"},
		{"unknown field", `{"titel":"x"}`, "application/json", 400, "invalid_request"},
		{"not JSON", `title=x`, "application/json", 400, "invalid_request"},
		{"trailing data", `{"title":"x"} {}`, "application/json", 400, "invalid_request"},
		{"form content type", `title=x`, "application/x-www-form-urlencoded", 415, "invalid_request"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(http.MethodPost, "/api/items", tc.body)
			req.Header.Set("Authorization", "Bearer "+alice)
			req.Header.Set("Content-Type", tc.ctype)
			r := doReq(t, app, req)
			if r.status != tc.status || r.json(t)["error"] != tc.code {
				t.Fatalf("status %d body %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}

	t.Run("too large", func(t *testing.T) {
		// Over a real listener: fasthttp refuses the body before routing,
		// and fiber hands that to the API's error handler.
		base := serve(t, app)
		req, _ := http.NewRequest(http.MethodPost, base+"/api/items", strings.NewReader(`{"title":"`+strings.Repeat("x", maxBody)+`"}`))
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("Content-Type", "application/json")
		resp, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), `"invalid_request"`) {
			t.Fatalf("status %d body %s", resp.StatusCode, b)
		}
	})

	t.Run("limit", func(t *testing.T) {
		carol := sign(t, key, "at+jwt", ti.claims("carol", time.Now()))
		for i := range MaxItemsPerSubject {
			if r := do(t, app, http.MethodPost, "/api/items", carol, fmt.Sprintf(`{"title":"item %d"}`, i)); r.status != http.StatusCreated {
				t.Fatalf("item %d: %d", i, r.status)
			}
		}
		r := do(t, app, http.MethodPost, "/api/items", carol, `{"title":"one too many"}`)
		if r.status != http.StatusConflict || r.json(t)["error"] != "item_limit" {
			t.Fatalf("over the limit: %d %s", r.status, r.body)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		r := do(t, app, http.MethodGet, "/metrics", "", "")
		for _, want := range []string{
			`bffgate_demoapi_token_verifications_total{mode="jwks",result="ok"}`,
			`bffgate_demoapi_items `,
			`bffgate_http_requests_total{component="demoapi",method="POST",route="/api/items",status="201"}`,
		} {
			if !strings.Contains(string(r.body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

func TestItemStoreBounds(t *testing.T) {
	t.Parallel()
	s := newItems(time.Now)
	for i := range MaxSubjects {
		if _, err := s.add(fmt.Sprint("sub", i), "x"); err != nil {
			t.Fatalf("subject %d: %v", i, err)
		}
	}
	if _, err := s.add("one-more", "x"); err != ErrStoreFull {
		t.Fatalf("err = %v, want ErrStoreFull", err)
	}
	// A known subject can still add; a subject whose list empties frees its slot.
	if _, err := s.add("sub0", "y"); err != nil {
		t.Fatal(err)
	}
	for _, it := range s.list("sub1") {
		if err := s.remove("sub1", it.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.add("one-more", "x"); err != nil {
		t.Fatalf("after a subject left: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no issuer", Config{Audience: "a"}, "Config.Issuer is required"},
		{"relative issuer", Config{Issuer: "/x", Audience: "a"}, "Config.Issuer"},
		{"issuer with query", Config{Issuer: "https://x/?a=b", Audience: "a"}, "Config.Issuer"},
		{"no audience", Config{Issuer: "https://x"}, "Config.Audience"},
		{"bad mode", Config{Issuer: "https://x", Audience: "a", Mode: "magic"}, "Config.Mode"},
		{"introspect without secret", Config{Issuer: "https://x", Audience: "a", Mode: ModeIntrospect, IntrospectionClientID: "c"}, "IntrospectionClientSecret"},
		{"leeway too long", Config{Issuer: "https://x", Audience: "a", Leeway: time.Hour}, "Config.Leeway"},
		{"cache too long", Config{Issuer: "https://x", Audience: "a", CacheTTL: time.Hour}, "Config.CacheTTL"},
		{"two scopes", Config{Issuer: "https://x", Audience: "a", RequiredScope: "a b"}, "Config.RequiredScope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
	if _, err := New(context.Background(), DefaultConfig()); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
}

func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc.def.ghi", "bearer  x", "Basic YTpi", "Bearer", "Bearer \x00", "Bearer a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok, malformed := bearer(h)
		if tok != "" && (!ok || malformed) {
			t.Fatalf("token returned with ok=%v malformed=%v", ok, malformed)
		}
		if tok != "" && !strings.Contains(h, tok) {
			t.Fatal("token not taken from the header")
		}
		if strings.ContainsAny(tok, " \"\\\r\n") {
			t.Fatalf("token %q holds characters outside b64token", tok)
		}
	})
}
