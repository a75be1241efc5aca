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
	issuerbolt "github.com/bffgate/bffgate/issuer/storage/bolt"
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
		{"no public url", func(c *Config) { c.PublicURL = "" }, "PublicURL"},
		{"public url with path", func(c *Config) { c.PublicURL = "https://app.example.test/app" }, "PublicURL"},
		{"plain http", func(c *Config) { c.PublicURL = "http://app.example.test" }, "PublicURL"},
		{"no issuer", func(c *Config) { c.Provider.IssuerURL = "" }, "Provider.IssuerURL"},
		{"issuer not a url", func(c *Config) { c.Provider.IssuerURL = "idp.example.test" }, "Provider.IssuerURL"},
		{"no client id", func(c *Config) { c.Provider.ClientID = "" }, "Provider.ClientID"},
		{"hmac id tokens", func(c *Config) { c.Provider.AllowedAlgs = []string{"HS256"} }, "Provider.AllowedAlgs"},
		{"alg none", func(c *Config) { c.Provider.AllowedAlgs = []string{"none"} }, "Provider.AllowedAlgs"},
		{"reserved param", func(c *Config) { c.Provider.ExtraAuthParams = map[string]string{"redirect_uri": "x"} }, "Provider.ExtraAuthParams"},
		{"no store", func(c *Config) { c.Store = nil }, "Store"},
		{"no flow keys", func(c *Config) { c.Cookie.FlowKeys = nil }, "Cookie.FlowKeys"},
		{"short hash key", func(c *Config) { c.Cookie.FlowKeys[0].Hash = make([]byte, 16) }, "Cookie.FlowKeys[0].Hash"},
		{"bad block key", func(c *Config) { c.Cookie.FlowKeys[0].Block = make([]byte, 20) }, "Cookie.FlowKeys[0].Block"},
		{"samesite none", func(c *Config) { c.Cookie.SameSite = "None" }, "Cookie.SameSite"},
		{"cookie name", func(c *Config) { c.Cookie.Name = "bad name;" }, "Cookie.Name"},
		{"max flows", func(c *Config) { c.Cookie.MaxFlows = 100 }, "Cookie.MaxFlows"},
		{"base path", func(c *Config) { c.BasePath = "bff/" }, "BasePath"},
		{"csrf header", func(c *Config) { c.CSRFHeader = "X CSRF" }, "CSRFHeader"},
		{"origin", func(c *Config) { c.AllowedOrigins = []string{"https://x.example/path"} }, "AllowedOrigins[0]"},
		{"post logout redirect", func(c *Config) { c.PostLogoutRedirect = "https://evil.example" }, "PostLogoutRedirect"},
		{"policy", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://127.0.0.1:1"}, Policy: "admin"}}
		}, "Routes[0].Policy"},
		{"route over base path", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/bff/api/", Upstream: "http://127.0.0.1:1"}}}
		}, "Routes[0].Prefix"},
		{"duplicate route", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://127.0.0.1:1"}}, {Route: proxy.Route{Prefix: "/api", Upstream: "http://127.0.0.1:2"}}}
		}, "Routes[1].Prefix"},
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
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
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
	db, err := issuerbolt.OpenDB(filepath.Join(t.TempDir(), "s.db"), 5*time.Second)
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
