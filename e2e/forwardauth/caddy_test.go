package forwardauth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/e2e/stack"
)

// caddyPath is Debian's caddy (2.6.2).
const caddyPath = "/usr/bin/caddy"

// caddySite is testdata/Caddyfile (the README's recipe) with the test's
// addresses, after a global block that turns the admin API off.
func caddySite(t *testing.T, port int, gateway, app string) string {
	t.Helper()
	site := recipe(t, "Caddyfile")
	for old, repl := range map[string]string{
		"app.example.com {":            fmt.Sprintf("http://127.0.0.1:%d {", port),
		"reverse_proxy 127.0.0.1:8080": "reverse_proxy " + gateway,
		"forward_auth 127.0.0.1:8080":  "forward_auth " + gateway,
		"reverse_proxy 127.0.0.1:3000": "reverse_proxy " + app,
	} {
		if !strings.Contains(site, old) {
			t.Fatalf("testdata/Caddyfile no longer contains %q", old)
		}
		site = strings.ReplaceAll(site, old, repl)
	}
	return "{\n\tadmin off\n}\n\n" + site
}

// startCaddy runs caddy with the Caddyfile site, its data and config
// directories in a temporary directory, and waits until it listens.
func startCaddy(t *testing.T, port int, site string) {
	t.Helper()
	need(t, caddyPath, "apt-get install -y caddy")
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	p := startProc(t, caddyPath, []string{"run", "--config", path, "--adapter", "caddyfile"}, env)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.out.String())
		}
	})
	waitPort(t, fmt.Sprintf("127.0.0.1:%d", port), p.done, p.out.String)
}

// TestCaddy: the README's Caddy recipe (forward_auth) with the real
// bffgate: a page load without a session is sent to the login and back
// (login=redirect), a fetch gets the 401 JSON; an allowed user reaches the
// app with the identity headers (none the answer lacks, despite Caddy
// 2.6.2's placeholder bug) and a verified assertion; a denied user gets
// 403; visitors' headers are not believed.
func TestCaddy(t *testing.T) {
	t.Parallel()
	need(t, caddyPath, "apt-get install -y caddy")
	port := stack.FreePort(t)
	pub := fmt.Sprintf("http://127.0.0.1:%d", port)
	a := newApp(t)
	st := startBffgate(t, pub)
	startCaddy(t, port, caddySite(t, port, strings.TrimPrefix(st.GatewayURL, "http://"), a.addr()))
	target := pub + "/reports/q?x=1&y=a%2Fb"
	login := pub + "/bff/login?returnUrl=" + url.QueryEscape("/reports/q?x=1&y=a%2Fb")

	t.Run("anonymous: login and back", func(t *testing.T) {
		c := newClient(t)
		p := c.getOnce(target, nil)
		if p.status != http.StatusFound || p.header.Get("Location") != login {
			t.Fatalf("anonymous page load: %d Location %q, want 302 to %s", p.status, p.header.Get("Location"), login)
		}
		f := c.getOnce(target, map[string]string{"Accept": "application/json", "Sec-Fetch-Mode": "cors"})
		var body struct {
			Error    string `json:"error"`
			LoginURL string `json:"login_url"`
		}
		if err := json.Unmarshal([]byte(f.body), &body); f.status != http.StatusUnauthorized || err != nil || body.Error != "login_required" || body.LoginURL != login {
			t.Errorf("anonymous fetch: %d %s, want 401 login_required with login_url %s", f.status, f.body, login)
		}
		if a.count() != 0 {
			t.Fatal("an anonymous request reached the app")
		}
		p = c.open(target, alice, alicePassword)
		if p.status != http.StatusOK || p.url.String() != target {
			t.Fatalf("after login: %d at %s, want %s: %.500s", p.status, p.url, target, p.body)
		}
		got := seenBy(t, p)
		if got.URI != "/reports/q?x=1&y=a%2Fb" || got.User != "user-alice" || got.Email != "alice@example.test" || got.Groups != "staff,admins" || got.Authorization != "" {
			t.Errorf("the app saw %+v", got)
		}
		if claims := verifyAssertion(t, got.Assertion, pub, pub+"/"); claims["sub"] != "user-alice" {
			t.Errorf("assertion claims %v", claims)
		}

		got = seenBy(t, c.get(pub+"/x", map[string]string{"X-Auth-Request-User": "user-mallory", "X-Auth-Request-Groups": "admins",
			"X-Bffgate-Jwt-Assertion": "forged", "Authorization": "Bearer forged"}))
		if got.User != "user-alice" || got.Groups != "staff,admins" || got.Assertion == "forged" || got.Authorization != "" {
			t.Errorf("with forged identity headers the app saw %+v", got)
		}

		got = seenBy(t, c.get(pub+"/admin/users", nil))
		tok, ok := strings.CutPrefix(got.Authorization, "Bearer ")
		if !ok || accessTokenSubject(t, st.IssuerURL, tok) != "user-alice" {
			t.Errorf("/admin/: the app saw Authorization %q", got.Authorization)
		}

		p = c.getOnce(pub+"/bff/auth", map[string]string{"X-Original-URI": "/reports", "X-Forwarded-Uri": "/reports"})
		if p.status != http.StatusForbidden || p.header.Get("X-Auth-Request-User") != "" {
			t.Errorf("a spoofed original URI through Caddy: %d %v", p.status, p.header)
		}
	})

	t.Run("missing claims: empty headers, never the browser's or a placeholder", func(t *testing.T) {
		c := newClient(t)
		got := seenBy(t, c.open(pub+"/", carol, carolPassword))
		if got.User != "user-carol" || got.Email != "" || got.Groups != "staff" {
			t.Errorf("carol (no email) at the app: %+v", got)
		}
		got = seenBy(t, c.get(pub+"/", map[string]string{"X-Auth-Request-Email": "mallory@example.test"}))
		if got.Email != "" {
			t.Errorf("carol with a forged email header: the app saw %q", got.Email)
		}
	})

	t.Run("denied user: 403", func(t *testing.T) {
		c := newClient(t)
		before := a.count()
		p := c.open(target, bob, bobPassword)
		if p.status != http.StatusForbidden || strings.TrimSpace(p.body) != `{"error":"forbidden"}` {
			t.Errorf("bob: %d %s, want 403 {\"error\":\"forbidden\"}", p.status, p.body)
		}
		if a.count() != before {
			t.Error("a denied request reached the app")
		}
		if !waitLog(st, "forward auth decision", `"sub":"user-bob"`, `"result":"denied"`) {
			t.Error("no log line for bob's denial")
		}
	})
}
