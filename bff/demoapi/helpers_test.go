package demoapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/gofiber/fiber/v2"
)

// testIssuer is a real HTTP provider on loopback: discovery, a JWK set
// built from real go-jose keys, and an introspection endpoint answering
// from a table. Counters show how often the API called it.
type testIssuer struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	keys   []jose.JSONWebKey // private keys; the JWK set publishes their public halves
	active map[string]map[string]any

	discoveryHits     atomic.Int64
	jwksHits          atomic.Int64
	introspectionHits atomic.Int64
	down              atomic.Bool
	badIssuer         atomic.Bool
}

const (
	testAudience     = "bffgate"
	testClientID     = "demoapi"
	testClientSecret = "s3cret-for-introspection"
)

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	ti := &testIssuer{t: t, active: map[string]map[string]any{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.discoveryHits.Add(1)
		if ti.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		iss := ti.srv.URL
		if ti.badIssuer.Load() {
			iss += "/other"
		}
		writeJSON(w, map[string]any{
			"issuer":                                iss,
			"jwks_uri":                              ti.srv.URL + "/jwks",
			"introspection_endpoint":                ti.srv.URL + "/introspect",
			"id_token_signing_alg_values_supported": []string{"ES256", "ES384", "RS256", "PS256", "HS256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksHits.Add(1)
		if ti.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		ti.mu.Lock()
		var set jose.JSONWebKeySet
		for _, k := range ti.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		ti.mu.Unlock()
		writeJSON(w, set)
	})
	mux.HandleFunc("/introspect", func(w http.ResponseWriter, r *http.Request) {
		ti.introspectionHits.Add(1)
		if ti.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		id, secret, ok := r.BasicAuth()
		if !ok || id != testClientID || secret != testClientSecret {
			w.Header().Set("WWW-Authenticate", `Basic realm="issuer"`)
			w.WriteHeader(http.StatusUnauthorized)
			writeJSON(w, map[string]string{"error": "invalid_client"})
			return
		}
		if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
			w.WriteHeader(http.StatusBadRequest)
			writeJSON(w, map[string]string{"error": "invalid_request"})
			return
		}
		ti.mu.Lock()
		ans, ok := ti.active[r.PostForm.Get("token")]
		ti.mu.Unlock()
		if !ok {
			ans = map[string]any{"active": false}
		}
		writeJSON(w, ans)
	})
	ti.srv = httptest.NewServer(mux)
	t.Cleanup(ti.srv.Close)
	return ti
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// addKey creates and publishes a key of alg with kid.
func (ti *testIssuer) addKey(kid string, alg jose.SignatureAlgorithm) jose.JSONWebKey {
	ti.t.Helper()
	var priv any
	var err error
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.RS256, jose.PS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		ti.t.Fatalf("addKey: unsupported alg %s", alg)
	}
	if err != nil {
		ti.t.Fatal(err)
	}
	k := jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(alg), Use: "sig"}
	ti.mu.Lock()
	ti.keys = append(ti.keys, k)
	ti.mu.Unlock()
	return k
}

// setActive makes the introspection endpoint answer ans for token.
func (ti *testIssuer) setActive(token string, ans map[string]any) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.active[token] = ans
}

// claims are an access token's payload for the tests.
type claims struct {
	jwt.Claims
	ClientID string `json:"client_id,omitempty"`
	Scope    string `json:"scope,omitempty"`
}

func (ti *testIssuer) claims(sub string, now time.Time) claims {
	return claims{
		Claims: jwt.Claims{
			Issuer:    ti.srv.URL,
			Subject:   sub,
			Audience:  jwt.Audience{testAudience},
			Expiry:    jwt.NewNumericDate(now.Add(5 * time.Minute)),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ID:        "jti-" + sub,
		},
		ClientID: "bffgate",
		Scope:    "openid profile api",
	}
}

// sign serializes cl as a JWS with key and header typ.
func sign(t *testing.T, key jose.JSONWebKey, typ string, cl any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), key.KeyID)
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key.Key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(cl).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestAPI(t *testing.T, cfg Config) *API {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	a, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = a.App().Shutdown() })
	return a
}

// response is a test's view of one answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

func newReq(method, path, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	return httptest.NewRequest(method, path, rd)
}

func do(t *testing.T, app *fiber.App, method, path, token, body string) response {
	t.Helper()
	req := newReq(method, path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return doReq(t, app, req)
}

func doReq(t *testing.T, app *fiber.App, req *http.Request) response {
	t.Helper()
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// serve runs app on a loopback port until the test ends and returns its
// base URL.
func serve(t *testing.T, app *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return "http://" + ln.Addr().String()
}
