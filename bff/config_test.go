package bff

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/session"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
)

// validConfig is a configuration that passes validation (discovery aside).
func validConfig() Config {
	cfg := DefaultConfig()
	cfg.PublicURL = "https://app.example.test"
	cfg.Provider.IssuerURL = "https://idp.example.test"
	cfg.Provider.ClientID = "bff"
	cfg.Cookie.FlowKeys = []KeyPair{{Hash: make([]byte, 32), Block: make([]byte, 32)}}
	return cfg
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no public url", func(c *Config) { c.PublicURL = "" }, "public_url"},
		{"public url with path", func(c *Config) { c.PublicURL = "https://app.example.test/app" }, "public_url"},
		{"plain http", func(c *Config) { c.PublicURL = "http://app.example.test" }, "public_url"},
		{"no issuer", func(c *Config) { c.Provider.IssuerURL = "" }, "provider.issuer_url"},
		{"issuer not a url", func(c *Config) { c.Provider.IssuerURL = "idp.example.test" }, "provider.issuer_url"},
		{"no client id", func(c *Config) { c.Provider.ClientID = "" }, "provider.client_id"},
		{"hmac id tokens", func(c *Config) { c.Provider.AllowedAlgs = []string{"HS256"} }, "provider.allowed_algs[0]"},
		{"alg none", func(c *Config) { c.Provider.AllowedAlgs = []string{"none"} }, "provider.allowed_algs[0]"},
		{"reserved param", func(c *Config) { c.Provider.ExtraAuthParams = map[string]string{"redirect_uri": "x"} }, "provider.extra_auth_params.redirect_uri"},
		{"no store", func(c *Config) { c.Store = nil }, "store"},
		{"no flow keys", func(c *Config) { c.Cookie.FlowKeys = nil }, "cookie.flow_keys"},
		{"short hash key", func(c *Config) { c.Cookie.FlowKeys[0].Hash = make([]byte, 16) }, "cookie.flow_keys[0].hash"},
		{"bad block key", func(c *Config) { c.Cookie.FlowKeys[0].Block = make([]byte, 20) }, "cookie.flow_keys[0].block"},
		{"samesite none", func(c *Config) { c.Cookie.SameSite = "None" }, "cookie.same_site"},
		{"cookie name", func(c *Config) { c.Cookie.Name = "bad name;" }, "cookie.name"},
		{"max flows", func(c *Config) { c.Cookie.MaxFlows = 100 }, "cookie.max_flows"},
		{"base path", func(c *Config) { c.BasePath = "bff/" }, "base_path"},
		{"csrf header", func(c *Config) { c.CSRFHeader = "X CSRF" }, "csrf_header"},
		{"origin", func(c *Config) { c.AllowedOrigins = []string{"https://x.example/path"} }, "allowed_origins[0]"},
		{"post logout redirect", func(c *Config) { c.PostLogoutRedirect = "https://evil.example" }, "post_logout_redirect"},
		{"post logout javascript", func(c *Config) { c.PostLogoutRedirect = "javascript:alert(1)" }, "post_logout_redirect"},
		{"post logout scheme-relative", func(c *Config) { c.PostLogoutRedirect = "//evil.example/" }, "post_logout_redirect"},
		{"plain http provider", func(c *Config) { c.Provider.IssuerURL = "http://idp.example.test" }, "provider.issuer_url"},
		{"public url without host", func(c *Config) { c.PublicURL = "http://:8080" }, "public_url"},
		{"upstream not http", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "ftp://127.0.0.1:1"}}}
		}, "routes[0].upstream"},
		{"negative grace window", func(c *Config) { c.Tokens.GraceWindow = -time.Second }, "tokens.grace_window"},
		{"policy", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://127.0.0.1:1"}, Policy: "admin"}}
		}, "routes[0].policy"},
		{"route over base path", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/bff/api/", Upstream: "http://127.0.0.1:1"}}}
		}, "routes[0].prefix"},
		{"duplicate route", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://127.0.0.1:1"}}, {Route: proxy.Route{Prefix: "/api", Upstream: "http://127.0.0.1:2"}}}
		}, "routes[1].prefix"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.Store = realStore(t)
			tc.edit(&cfg)
			_, err := New(context.Background(), cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			if !hasField(err, tc.field) {
				t.Fatalf("error %q has no FieldError at %s", err, tc.field)
			}
			// Validate, which a configuration loader calls without a
			// store, finds the same problem (the runtime fields aside).
			if tc.field != "store" && !strings.HasPrefix(tc.field, "cookie.flow_keys") && !hasField(cfg.Validate(), tc.field) {
				t.Fatalf("Validate() = %v, want a FieldError at %s as New found", cfg.Validate(), tc.field)
			}
		})
	}
}

func TestDiscoveryFailure(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	cfg := validConfig()
	cfg.Store = realStore(t)
	cfg.Provider.IssuerURL = dead
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = New(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), dead) {
		t.Fatalf("discovery against a closed port: %v", err)
	}
}

func TestMissingPKCE(t *testing.T) {
	t.Parallel()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": srv.URL, "authorization_endpoint": srv.URL + "/authorize", "token_endpoint": srv.URL + "/token",
			"jwks_uri": srv.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"},
		})
	}))
	defer srv.Close()
	cfg := validConfig()
	cfg.Store = realStore(t)
	cfg.Provider.IssuerURL = srv.URL
	if _, err := New(context.Background(), cfg); !errors.Is(err, ErrMissingPKCE) || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("provider without S256: %v", err)
	}
	cfg.Provider.InsecureAllowMissingPKCE = true
	if _, err := New(context.Background(), cfg); err != nil {
		t.Fatalf("with InsecureAllowMissingPKCE: %v", err)
	}
}

// realStore opens a bbolt session store in t's temporary directory.
func realStore(t *testing.T) session.Store {
	t.Helper()
	db, err := datafile.Open(filepath.Join(t.TempDir(), "s.db"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := sessionbolt.New(db, sessionbolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hasField reports whether err holds a *FieldError at path.
func hasField(err error, path string) bool {
	for _, e := range unjoin(err) {
		var fe *FieldError
		if errors.As(e, &fe) && fe.Path == path {
			return true
		}
	}
	return false
}

// A plain-http provider on loopback (the embedded issuer, a local
// Keycloak) is allowed; elsewhere only with InsecureAllowHTTP.
func TestPlainHTTPProvider(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		issuer string
		allow  bool
		ok     bool
	}{
		{"http://127.0.0.1:9090", false, true},
		{"http://localhost:8081/realms/dev", false, true},
		{"http://keycloak:8080/realms/dev", false, false},
		{"http://keycloak:8080/realms/dev", true, true},
		{"https://keycloak.example.com/realms/x", false, true},
	} {
		cfg := validConfig()
		cfg.Provider.IssuerURL = tc.issuer
		cfg.InsecureAllowHTTP = tc.allow
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("issuer %s, insecure_allow_http %t: Validate() = %v, want ok %t", tc.issuer, tc.allow, err, tc.ok)
		}
	}
}

// TestProviderResponseBound: a provider whose discovery document does not
// end (here 2 MiB of padding) stops New with the bound's error instead of
// growing the gateway's memory: go-oidc reads the document whole.
func TestProviderResponseBound(t *testing.T) {
	t.Parallel()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": srv.URL, "authorization_endpoint": srv.URL + "/authorize", "token_endpoint": srv.URL + "/token",
			"jwks_uri": srv.URL + "/jwks", "code_challenge_methods_supported": []string{"S256"},
			"padding": strings.Repeat("x", 2*MaxProviderResponse),
		})
	}))
	defer srv.Close()
	cfg := validConfig()
	cfg.Store = realStore(t)
	cfg.Provider.IssuerURL = srv.URL
	_, err := New(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a 2 MiB discovery document: %v, want the response bound's error", err)
	}
}
