package forwardauth

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/e2e/nginx"
	"github.com/bffgate/bffgate/e2e/stack"
)

// nginxSite is testdata/nginx.conf (the README's recipe) with the test's
// addresses: the listen port, bffgate's gateway and the app.
func nginxSite(t *testing.T, port int, gateway, app string) string {
	t.Helper()
	site := recipe(t, "nginx.conf")
	for old, repl := range map[string]string{
		"listen 443 ssl;":       fmt.Sprintf("listen 127.0.0.1:%d;", port),
		"server 127.0.0.1:8080": "server " + gateway,
		"server 127.0.0.1:3000": "server " + app,
	} {
		if !strings.Contains(site, old) {
			t.Fatalf("testdata/nginx.conf no longer contains %q", old)
		}
		site = strings.ReplaceAll(site, old, repl)
	}
	return site
}

// startNginx runs the shared e2e/nginx with site (one worker, an access
// log) and waits until it listens on port.
func startNginx(t *testing.T, port int, site string) {
	t.Helper()
	nginx.Need(t)
	nginx.Start(t, nginx.Config{Port: port, Site: site, AccessLog: true})
}

// nginxStack is bffgate behind nginx in front of the test app.
type nginxStack struct {
	url string // nginx's origin: the browser's, and gateway.public_url
	st  *stack.Stack
	app *app
}

func startNginxStack(t *testing.T) *nginxStack {
	t.Helper()
	nginx.Need(t)
	port := stack.FreePort(t)
	s := &nginxStack{url: fmt.Sprintf("http://127.0.0.1:%d", port), app: newApp(t)}
	s.st = startBffgate(t, s.url)
	startNginx(t, port, nginxSite(t, port, strings.TrimPrefix(s.st.GatewayURL, "http://"), s.app.addr()))
	return s
}

// TestNginx: the README's nginx recipe (auth_request) with the real
// bffgate. An anonymous visitor is sent to the login and back to the URL
// they asked for; an allowed user reaches the app with the identity
// headers and a signed assertion the app verifies, and the admin pages
// with the user's access token; a denied user gets 403 and never reaches
// the app; headers a visitor sends to impersonate someone or to describe
// another request are not believed.
func TestNginx(t *testing.T) {
	t.Parallel()
	s := startNginxStack(t)
	target := s.url + "/reports/q?x=1&y=a%2Fb"

	t.Run("anonymous: login and back", func(t *testing.T) {
		c := newClient(t)
		p := c.getOnce(target, nil)
		want := s.url + "/bff/login?returnUrl=" + url.QueryEscape("/reports/q?x=1&y=a%2Fb")
		if p.status != http.StatusFound || p.header.Get("Location") != want {
			t.Fatalf("anonymous: %d Location %q, want 302 to %s", p.status, p.header.Get("Location"), want)
		}
		if s.app.count() != 0 {
			t.Fatal("an anonymous request reached the app")
		}
		p = c.open(target, alice, alicePassword)
		if p.status != http.StatusOK || p.url.String() != target {
			t.Fatalf("after login: %d at %s, want the original URL %s: %.500s", p.status, p.url, target, p.body)
		}
		got := seenBy(t, p)
		if got.URI != "/reports/q?x=1&y=a%2Fb" || got.User != "user-alice" || got.Email != "alice@example.test" || got.Groups != "staff,admins" {
			t.Errorf("the app saw %+v", got)
		}
		claims := verifyAssertion(t, got.Assertion, s.url, s.url+"/")
		if claims["sub"] != "user-alice" || claims["email"] != "alice@example.test" {
			t.Errorf("assertion claims %v", claims)
		}
		if got.Authorization != "" {
			t.Errorf("the rule for / passes no token, but the app got Authorization %q", got.Authorization)
		}

		t.Run("identity headers from the visitor are replaced", func(t *testing.T) {
			got := seenBy(t, c.get(s.url+"/x", map[string]string{"X-Auth-Request-User": "user-mallory", "X-Auth-Request-Groups": "admins",
				"X-Bffgate-Jwt-Assertion": "forged", "Authorization": "Bearer forged"}))
			if got.User != "user-alice" || got.Groups != "staff,admins" || got.Assertion == "forged" || got.Authorization != "" {
				t.Errorf("the app saw %+v", got)
			}
		})
		t.Run("admin pages get the access token", func(t *testing.T) {
			got := seenBy(t, c.get(s.url+"/admin/users", nil))
			tok, ok := strings.CutPrefix(got.Authorization, "Bearer ")
			if !ok || tok == "" {
				t.Fatalf("no bearer token at the app: %+v", got)
			}
			if sub := accessTokenSubject(t, s.st.IssuerURL, tok); sub != "user-alice" {
				t.Errorf("access token sub %q", sub)
			}
			if got.User != "user-alice" || got.Email != "" {
				t.Errorf("the /admin/ rule names only the user header: %+v", got)
			}
		})
		t.Run("a spoofed original URI at /bff/auth", func(t *testing.T) {
			// Through nginx, a visitor asking /bff/auth itself cannot
			// describe another request: the recipe sets the headers.
			p := c.getOnce(s.url+"/bff/auth", map[string]string{"X-Original-URI": "/reports", "X-Forwarded-Uri": "/reports", "X-Original-Method": "GET"})
			if p.status != http.StatusForbidden || p.header.Get("X-Auth-Request-User") != "" {
				t.Errorf("spoofed through nginx: %d %v", p.status, p.header)
			}
		})
		t.Run("a spoofed original URI from an untrusted peer", func(t *testing.T) {
			// Straight to bffgate from 127.0.0.2, which is not in
			// trusted_proxies, with alice's cookies.
			u := newClientFrom(t, &net.TCPAddr{IP: net.ParseIP("127.0.0.2")})
			var pairs []string
			for _, ck := range c.jar.Cookies(mustParse(t, s.url)) {
				pairs = append(pairs, ck.Name+"="+ck.Value)
			}
			cookies := strings.Join(pairs, "; ")
			p := u.getOnce(s.st.GatewayURL+"/bff/auth", map[string]string{"Cookie": cookies, "X-Original-URI": "/reports", "X-Forwarded-Uri": "/reports",
				"X-Original-Method": "GET", "X-Forwarded-Host": strings.TrimPrefix(s.url, "http://")})
			if p.status != http.StatusForbidden || p.header.Get("X-Auth-Request-User") != "" {
				t.Errorf("untrusted peer: %d %s %v", p.status, p.body, p.header)
			}
			if !waitLog(s.st, "forward auth decision", `"reason":"untrusted_peer"`) {
				t.Errorf("no untrusted_peer decision in the log")
			}
			// The same cookies from nginx pass: they are alice's.
			if p := u.getOnce(s.url+"/reports", map[string]string{"Cookie": cookies}); p.status != http.StatusOK {
				t.Errorf("alice's cookies through nginx: %d", p.status)
			}
		})
	})

	t.Run("denied user: 403", func(t *testing.T) {
		c := newClient(t)
		before := s.app.count()
		p := c.open(target, bob, bobPassword)
		if p.status != http.StatusForbidden || p.url.String() != target {
			t.Errorf("bob: %d at %s, want 403 at %s", p.status, p.url, target)
		}
		if s.app.count() != before || s.app.sawUser("user-bob") {
			t.Error("a denied request reached the app")
		}
		if !waitLog(s.st, "forward auth decision", `"sub":"user-bob"`, `"result":"denied"`, `"rule":"/"`) {
			t.Errorf("no log line for bob's denial:\n%s", s.st.Logs())
		}
	})

	t.Run("staff without admins: 403 on /admin/, no email header", func(t *testing.T) {
		c := newClient(t)
		got := seenBy(t, c.open(s.url+"/", carol, carolPassword))
		if got.User != "user-carol" || got.EmailHeaders != 0 {
			t.Errorf("carol at the app: %+v", got)
		}
		if p := c.getOnce(s.url+"/admin/", nil); p.status != http.StatusForbidden {
			t.Errorf("carol on /admin/: %d", p.status)
		}
	})

	t.Run("no token, cookie or code in a log line", func(t *testing.T) {
		for _, l := range s.st.LogLines("forward auth decision") {
			if strings.Contains(l, "eyJ") || strings.Contains(strings.ToLower(l), "bearer") || strings.Contains(l, "__Host-") {
				t.Errorf("log line with a secret: %s", l)
			}
		}
	})
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
