package main

import (
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/spa"
	"github.com/bffgate/bffgate/issuer"
)

// TestFrontendsConfig: gateway.frontends decodes, each frontend inherits
// gateway.session's keys field by field, gets its cookie name and, on
// the embedded issuer, its own client there.
func TestFrontendsConfig(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(filepath.Join("testdata", "config", "frontends-ok.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fs := cfg.Gateway.Frontends
	if len(fs) != 3 || !*cfg.Issuer.Enabled {
		t.Fatalf("%d frontends, issuer %v", len(fs), *cfg.Issuer.Enabled)
	}
	for _, tc := range []struct {
		i                  int
		client, cookie     string
		store              string
		idle               time.Duration
		registered         bool
		callback, postBack string
	}{
		{0, "bffgate-shop", "__Host-bff-shop", "bbolt", 20 * time.Minute, true, "http://127.0.0.1:8080/bff/callback", "http://127.0.0.1:8080/bff/backchannel-logout"},
		{1, "admin-bff", "__Secure-bff-admin", "cookie", 5 * time.Minute, false, "", ""},
		{2, "bffgate-partner", "__Host-bff-partner", "bbolt", 20 * time.Minute, true, "http://localhost:8080/bff/callback", "http://localhost:8080/bff/backchannel-logout"},
	} {
		f := fs[tc.i]
		if f.Provider.ClientID != tc.client || f.Session.CookieName != tc.cookie || f.Session.Store != tc.store || f.Session.IdleTimeout != tc.idle {
			t.Errorf("frontends[%d]: client %q cookie %q store %q idle %s", tc.i, f.Provider.ClientID, f.Session.CookieName, f.Session.Store, f.Session.IdleTimeout)
		}
		if got := cfg.registersFrontendClient(f); got != tc.registered {
			t.Errorf("frontends[%d]: registered %t", tc.i, got)
		}
		icfg := cfg.issuerConfig("")
		i := slices.IndexFunc(icfg.Clients, func(c issuer.Client) bool { return c.ID == tc.client })
		if (i >= 0) != tc.registered {
			t.Errorf("frontends[%d]: client %s at the embedded issuer: %t", tc.i, tc.client, i >= 0)
			continue
		}
		if i >= 0 {
			c := icfg.Clients[i]
			if !slices.Equal(c.RedirectURIs, []string{tc.callback}) || c.BackchannelLogoutURI != tc.postBack {
				t.Errorf("frontends[%d]: client %+v", tc.i, c)
			}
		}
	}
	b := cfg.frontendConfig(1)
	if b.Name != "admin" || b.PathPrefix != "/admin" || b.Provider.ClientSecret != "admin-secret" || b.CSRFHeader != "X-CSRF" {
		t.Fatalf("frontendConfig(1): %+v", b)
	}
	// No classic client without the demo API: the frontends have theirs.
	if slices.ContainsFunc(cfg.issuerConfig("").Clients, func(c issuer.Client) bool { return c.ID == embeddedClientID }) {
		t.Error("the classic gateway client is registered too")
	}
}

// TestFrontendsFromEnvironment: the list takes YAML in
// BFFGATE_GATEWAY_FRONTENDS, as other lists do.
func TestFrontendsFromEnvironment(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig("", []string{
		`BFFGATE_GATEWAY_FRONTENDS=[{name: a, public_url: "http://127.0.0.1:8080", provider: {issuer_url: "http://127.0.0.1:9090"}}, {name: b, match: {path_prefix: /b}, public_url: "http://127.0.0.1:8080", provider: {issuer_url: "http://127.0.0.1:9090"}}]`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Gateway.Frontends) != 2 || cfg.Gateway.Frontends[1].Session.CookieName != "__Secure-bff-b" {
		t.Fatalf("%+v", cfg.Gateway.Frontends)
	}
	_, err = loadConfig("", []string{`BFFGATE_GATEWAY_FRONTENDS=[{name: a, public_url: "http://127.0.0.1:8080", provider: {issuer_url: "http://127.0.0.1:9090"}, sesion: {}}]`})
	if err == nil || !strings.Contains(err.Error(), "gateway.frontends[0].sesion") || !strings.Contains(err.Error(), "BFFGATE_GATEWAY_FRONTENDS") {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestConfigCheckFrontends: config check reports the frontends' problems
// by YAML key, naming both frontends of a conflict.
func TestConfigCheckFrontends(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	err := cmdConfigCheck([]string{"--config", filepath.Join("testdata", "config", "frontends.yaml")}, &out, nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"gateway.frontends[1].session.cookie_name",
		"gateway.frontends[1] (admin) and gateway.frontends[0] (shop) both use the session cookie __Host-bff-x",
		"gateway.frontends[1].provider.issuer_url: frontend admin: is required",
		"/bff of gateway.frontends[2] (shop) hides the gateway endpoints /bff of gateway.frontends[0] (shop)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("config check lacks %q:\n%s", want, err)
		}
	}
	out.Reset()
	if err := cmdConfigCheck([]string{"--config", filepath.Join("testdata", "config", "frontends-ok.yaml")}, &out, nil); err != nil {
		t.Fatal(err)
	}
}

// TestFrontendsTopCookieName: gateway.session.cookie_name cannot be the
// frontends' default (they would all share it) and is not silently
// dropped either: the file is refused, naming the key.
func TestFrontendsTopCookieName(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bffgate.yaml")
	if err := os.WriteFile(path, []byte(`
gateway:
  session: {cookie_name: __Host-mine}
  frontends:
    - name: shop
      public_url: http://127.0.0.1:8080
      provider: {issuer_url: http://127.0.0.1:9090}
    - name: ops
      match: {hosts: [ops.localhost]}
      public_url: http://ops.localhost:8080
      provider: {issuer_url: http://127.0.0.1:9090}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path, nil)
	if err == nil || !strings.Contains(err.Error(), "gateway.session.cookie_name") || !strings.Contains(err.Error(), "gateway.frontends[].session.cookie_name") {
		t.Fatalf("gateway.session.cookie_name with frontends: %v", err)
	}
}

// TestFrontendsBadNameOnEmbedded: a frontend on the embedded issuer with
// no name, or an invalid one, is refused for its name alone, not also for
// a client id bffgate would register for it.
func TestFrontendsBadNameOnEmbedded(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bffgate.yaml")
	if err := os.WriteFile(path, []byte(`
issuer: {listen: 127.0.0.1:9090}
gateway:
  frontends:
    - name: shop
      public_url: http://127.0.0.1:8080
      provider: {issuer_url: http://127.0.0.1:9090}
    - name: "a b:c"
      match: {hosts: [a.localhost]}
      public_url: http://a.localhost:8080
      provider: {issuer_url: http://127.0.0.1:9090}
    - match: {hosts: [x.localhost]}
      public_url: http://x.localhost:8080
      provider: {issuer_url: http://127.0.0.1:9090}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path, nil)
	if err == nil || !strings.Contains(err.Error(), "gateway.frontends[1].name") || !strings.Contains(err.Error(), "gateway.frontends[2].name") {
		t.Fatalf("bad names: %v", err)
	}
	for _, unwanted := range []string{"provider.client_id", "bffgate-a b:c"} {
		if strings.Contains(err.Error(), unwanted) {
			t.Errorf("the name errors come with one about %s:\n%v", unwanted, err)
		}
	}
}

// The README's two-frontend file loads as written (its SPA directories
// made, its secrets filled in), with the frontends it describes.
func TestREADMEFrontendsConfig(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- frontends-config:[^>]*-->\n```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no frontends-config yaml block")
	}
	dir := t.TempDir()
	for _, d := range []string{"shop", "admin"} {
		if err := os.MkdirAll(filepath.Join(dir, d, "dist"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "dist", "index.html"), []byte("<!doctype html>"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	body := strings.NewReplacer(`"$argon2id$..."`, `"`+demoPasswordHash+`"`, `"..."`, `"admin-secret"`,
		"./shop/dist", filepath.Join(dir, "shop", "dist"), "./admin/dist", filepath.Join(dir, "admin", "dist")).Replace(string(m[1]))
	cfg, err := loadConfig(writeFile(t, body), nil)
	if err != nil {
		t.Fatalf("the README's frontends configuration: %v", err)
	}
	fs := cfg.Gateway.Frontends
	if len(fs) != 2 || fs[0].Provider.ClientID != "bffgate-shop" || fs[1].Session.CookieName != "__Secure-bff-admin" ||
		fs[1].Session.Store != "cookie" || fs[0].Session.IdleTimeout != 30*time.Minute || !cfg.registersFrontendClient(fs[0]) {
		t.Fatalf("frontends %+v", fs)
	}
	if w := startupWarnings(cfg); len(w) != 0 {
		t.Errorf("start-up warnings %q", w)
	}
}

// A frontend under a path prefix serves its spa.dir without the prefix
// (the build's base), and the request's path is its own again after.
func TestFrontendSPAUnderPrefix(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "assets"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"index.html": "<!doctype html>admin", "assets/app.js": "console.log(1)"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := Frontend{Name: "admin", Match: FrontendMatch{PathPrefix: "/admin"}, SPA: SPA{Config: spa.Config{Dir: dir}}}
	h, err := spa.New(f.SPA.Config)
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New()
	var after string
	app.Use(func(c *fiber.Ctx) error {
		err := frontendSPA(f, h)(c)
		after = c.Path()
		return err
	})
	for path, want := range map[string]string{"/admin/": "<!doctype html>admin", "/admin": "<!doctype html>admin",
		"/admin/assets/app.js": "console.log(1)", "/admin/items/42": "<!doctype html>admin"} {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want || after != path {
			t.Errorf("%s: %d %q, path after %q", path, resp.StatusCode, body, after)
		}
	}
}

// The start-up banner lists each frontend: where it is, how it is matched,
// its login, provider and client.
func TestBannerListsFrontends(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(filepath.Join("testdata", "config", "frontends-ok.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printBanner(&b, cfg)
	for _, want := range []string{
		"gateway        127.0.0.1:8080, 3 frontends (reload them with SIGHUP)",
		"shop         http://127.0.0.1:8080/ (any host; login /bff/login; provider http://127.0.0.1:9090, client bffgate-shop; API routes: /api/ -> http://127.0.0.1:7000)",
		"admin        http://127.0.0.1:8080/admin/ (any host, path /admin; login /admin/bff/login; provider http://127.0.0.1:3000, client admin-bff; API routes: /admin/api/ -> http://127.0.0.1:7001)",
		"partner      http://localhost:8080/ (host localhost; login /bff/login; provider http://127.0.0.1:9090, client bffgate-partner)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
}
