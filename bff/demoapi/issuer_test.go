package demoapi

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
	"github.com/bffgate/bffgate/issuer/token"
)

// startIssuer runs the embedded issuer on loopback with one
// client_credentials client whose tokens are for the demo API.
func startIssuer(t *testing.T, edit func(*issuer.Config)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	db, err := datafile.Open(filepath.Join(t.TempDir(), "issuer.db"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	store, err := bolt.New(db, bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	cfg := issuer.Config{
		Issuer: base,
		Store:  store,
		Clients: []issuer.Client{{
			ID: testClientID, Secret: testClientSecret,
			GrantTypes: []string{issuer.GrantClientCredentials},
			Audience:   []string{testAudience},
		}},
		Logger: quietLogger(),
	}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := issuer.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("issuer.New: %v", err)
	}
	go func() { _ = srv.App().Listener(ln) }()
	t.Cleanup(func() {
		_ = srv.App().Shutdown()
		cancel()
	})
	return base
}

func clientCredentialsToken(t *testing.T, base string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testClientID, testClientSecret)
	resp, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		t.Fatalf("token endpoint: status %d, %s %s (%v)", resp.StatusCode, out.Error, out.Description, err)
	}
	return out.AccessToken
}

// TestAgainstEmbeddedIssuer runs the API against the real issuer, as the
// zero-config run does: signed tokens checked with its JWKS, encrypted
// tokens with its introspection endpoint.
func TestAgainstEmbeddedIssuer(t *testing.T) {
	t.Parallel()
	t.Run("signed ES256 via JWKS", func(t *testing.T) {
		t.Parallel()
		base := startIssuer(t, func(c *issuer.Config) { c.TokenAlg = "ES256" })
		a := newTestAPI(t, Config{Issuer: base, Audience: testAudience})
		r := do(t, a.App(), http.MethodGet, "/api/whoami", clientCredentialsToken(t, base), "")
		if r.status != http.StatusOK {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
		m := r.json(t)
		tf := m["token"].(map[string]any)
		if m["subject"] == "" || m["client_id"] != testClientID || tf["format"] != "signed" || tf["alg"] != "ES256" || tf["typ"] != "at+jwt" {
			t.Fatalf("whoami = %s", r.body)
		}
	})
	t.Run("encrypted via introspection", func(t *testing.T) {
		t.Parallel()
		base := startIssuer(t, func(c *issuer.Config) { c.TokenFormat = token.FormatEncrypted })
		a := newTestAPI(t, Config{
			Issuer: base, Audience: testAudience, Mode: ModeIntrospect,
			IntrospectionClientID: testClientID, IntrospectionClientSecret: testClientSecret,
		})
		r := do(t, a.App(), http.MethodGet, "/api/whoami", clientCredentialsToken(t, base), "")
		if r.status != http.StatusOK {
			t.Fatalf("status %d body %s", r.status, r.body)
		}
		tf := r.json(t)["token"].(map[string]any)
		if tf["format"] != "encrypted" || tf["verified_by"] != "introspection" {
			t.Fatalf("whoami = %s", r.body)
		}
		// And the JWKS mode says plainly that it cannot read it.
		j := newTestAPI(t, Config{Issuer: base, Audience: testAudience})
		if r := do(t, j.App(), http.MethodGet, "/api/whoami", clientCredentialsToken(t, base), ""); r.status != http.StatusUnauthorized {
			t.Fatalf("JWKS mode on an encrypted token: %d", r.status)
		}
	})
}

// TestClientTokenIsNoUser: a client_credentials token of the embedded
// issuer is recognised as a client's (whoami says so, its subject is the
// client's namespaced sub) and never selects a user's items, whether the
// API checks it with the JWK set or by introspection.
func TestClientTokenIsNoUser(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*issuer.Config)
		cfg  func(base string) Config
	}{
		{"jwks", nil, func(base string) Config { return Config{Issuer: base, Audience: testAudience} }},
		{"introspection", func(c *issuer.Config) { c.TokenFormat = token.FormatEncrypted }, func(base string) Config {
			return Config{Issuer: base, Audience: testAudience, Mode: ModeIntrospect,
				IntrospectionClientID: testClientID, IntrospectionClientSecret: testClientSecret}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := startIssuer(t, tc.edit)
			a := newTestAPI(t, tc.cfg(base))
			tok := clientCredentialsToken(t, base)
			r := do(t, a.App(), http.MethodGet, "/api/whoami", tok, "")
			if r.status != http.StatusOK {
				t.Fatalf("whoami: %d %s", r.status, r.body)
			}
			m := r.json(t)
			if m["client"] != true || m["subject"] != issuer.ClientSubject(testClientID) || m["client_id"] != testClientID {
				t.Fatalf("whoami of a client token = %s, want client true and subject %s", r.body, issuer.ClientSubject(testClientID))
			}
			for _, req := range []struct{ method, path, body string }{
				{http.MethodGet, "/api/items", ""},
				{http.MethodPost, "/api/items", `{"title":"x"}`},
				{http.MethodDelete, "/api/items/x", ""},
			} {
				r := do(t, a.App(), req.method, req.path, tok, req.body)
				if r.status != http.StatusForbidden || r.json(t)["error"] != "user_required" {
					t.Errorf("%s %s with a client token: %d %s, want 403 user_required", req.method, req.path, r.status, r.body)
				}
			}
		})
	}
}
