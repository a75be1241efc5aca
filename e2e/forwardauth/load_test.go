package forwardauth

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/nginx"
	"github.com/bffgate/bffgate/e2e/stack"
)

// loadEnv turns the load run on: it measures, it asserts nothing about
// speed, and it takes a few minutes.
const loadEnv = "BFFGATE_E2E_LOAD"

// oauth2ProxyEnv names an oauth2-proxy binary to measure beside bffgate
// (built outside the repository, see PEERS.md: v7.8.1).
const oauth2ProxyEnv = "BFFGATE_E2E_OAUTH2_PROXY"

// TestLoad measures protected requests per second through nginx with
// wrk on loopback, in one run: nginx straight to the app (no auth), the
// README's nginx recipe with bffgate's /bff/auth (a groups rule with plain
// identity headers, and with the signed assertion too), and, when
// BFFGATE_E2E_OAUTH2_PROXY names a binary, oauth2-proxy's documented
// auth_request recipe (/oauth2/auth, --set-xauthrequest). Each is signed
// in as the same user of the embedded issuer. The figures go to the test
// log (go test -v); the README quotes them.
//
//	BFFGATE_E2E_LOAD=1 BFFGATE_E2E_OAUTH2_PROXY=/tmp/o2p/oauth2-proxy go test -v -count=1 -run TestLoad ./e2e/forwardauth/
func TestLoad(t *testing.T) {
	if os.Getenv(loadEnv) != "1" {
		t.Skipf("a measurement, not a check: set %s=1 to run it", loadEnv)
	}
	wrk := need(t, "/usr/bin/wrk", "apt-get install -y wrk")
	nginx.Need(t)
	dur := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("BFFGATE_E2E_LOAD_DURATION")); err == nil && d > 0 && d <= time.Minute {
		dur = d
	}

	portA, portB := stack.FreePort(t), stack.FreePort(t)
	urlA, urlB := fmt.Sprintf("http://127.0.0.1:%d", portA), fmt.Sprintf("http://127.0.0.1:%d", portB)
	a := newApp(t)

	// bffgate with the README's configuration, one more rule without the
	// assertion, and a client for oauth2-proxy at its embedded issuer.
	o2pSecret := randomString(t, 24)
	rules := `[{"prefix": "/", "allow": [{"groups": [staff]}], "identity_headers": {"user": X-Auth-Request-User, "email": X-Auth-Request-Email, "groups": X-Auth-Request-Groups, "assertion": X-Bffgate-Jwt-Assertion}},
	  {"prefix": "/plain/", "allow": [{"groups": [staff]}], "identity_headers": {"user": X-Auth-Request-User, "email": X-Auth-Request-Email, "groups": X-Auth-Request-Groups}}]`
	clients := fmt.Sprintf(`[{"id": oauth2-proxy, "secret": %q, "redirect_uris": ["%s/oauth2/callback"], "grant_types": [authorization_code, refresh_token]}]`, o2pSecret, urlB)
	st := startBffgate(t, urlA, "BFFGATE_GATEWAY_FORWARD_AUTH_RULES="+rules, "BFFGATE_ISSUER_CLIENTS="+clients)
	startNginx(t, portA, nginxSite(t, portA, strings.TrimPrefix(st.GatewayURL, "http://"), a.addr()))

	c := newClient(t)
	if p := c.open(urlA+"/", alice, alicePassword); p.status != 200 || seenBy(t, p).User != "user-alice" {
		t.Fatalf("bffgate login: %d %.300s", p.status, p.body)
	}
	cookieA := cookieHeader(c, urlA, "__Host-bff")

	type run struct {
		name, url, cookie string
	}
	runs := []run{
		{"nginx -> app, no auth", urlB + "/open/x", ""},
		{"nginx auth_request -> bffgate /bff/auth (groups rule, 3 identity headers)", urlA + "/plain/x", cookieA},
		{"nginx auth_request -> bffgate /bff/auth (groups rule, 3 headers + ES256 assertion)", urlA + "/x", cookieA},
	}
	o2pSite := ""
	if bin := os.Getenv(oauth2ProxyEnv); bin != "" {
		o2pAddr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
		cookieSecret := randomString(t, 32)[:32]
		p := startProc(t, bin, []string{
			"--http-address=" + o2pAddr, "--provider=oidc", "--oidc-issuer-url=" + st.IssuerURL,
			"--client-id=oauth2-proxy", "--client-secret=" + o2pSecret, "--redirect-url=" + urlB + "/oauth2/callback",
			"--cookie-secret=" + cookieSecret, "--cookie-secure=false", "--email-domain=*", "--upstream=static://202",
			"--reverse-proxy=true", "--set-xauthrequest=true", "--skip-provider-button=true", "--code-challenge-method=S256",
			"--scope=openid email profile",
		}, nil)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("oauth2-proxy output:\n%s", p.out.String())
			}
		})
		waitPort(t, o2pAddr, p.done, p.out.String)
		o2pSite = oauth2ProxySite(portB, o2pAddr, a.addr())
	} else {
		t.Logf("%s is not set: oauth2-proxy is not measured", oauth2ProxyEnv)
		o2pSite = oauth2ProxySite(portB, "127.0.0.1:9", a.addr())
	}
	startNginx(t, portB, o2pSite)
	if os.Getenv(oauth2ProxyEnv) != "" {
		c2 := newClient(t)
		p := c2.open(urlB+"/oauth2/start?rd=%2Fx", alice, alicePassword)
		if p.status != 200 || seenBy(t, p).User == "" {
			t.Fatalf("oauth2-proxy login: %d at %s: %.300s", p.status, p.url, p.body)
		}
		runs = append(runs, run{"nginx auth_request -> oauth2-proxy v7.8.1 /oauth2/auth (--set-xauthrequest)", urlB + "/x", cookieHeader(c2, urlB, "_oauth2_proxy")})
	}

	a.quiet.Store(true)
	// Two rounds, interleaved, so that a noisy neighbour shows as spread.
	for round := 1; round <= 2; round++ {
		for _, r := range runs {
			args := []string{"-t2", "-c64", "-d" + dur.String(), "--latency", "-H", "Accept: text/html"}
			if r.cookie != "" {
				args = append(args, "-H", "Cookie: "+r.cookie)
			}
			out, err := exec.Command(wrk, append(args, r.url)...).CombinedOutput()
			if err != nil {
				t.Fatalf("wrk %s: %v\n%s", r.url, err, out)
			}
			text := string(out)
			if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindStringSubmatch(text); m != nil {
				t.Errorf("%s: %s responses were not 2xx or 3xx\n%s", r.name, m[1], text)
			}
			t.Logf("round %d | %-85s | %10s req/s | p50 %8s | p99 %8s", round, r.name, field(text, `Requests/sec:\s+([\d.]+)`),
				field(text, `\s50%\s+(\S+)`), field(text, `\s99%\s+(\S+)`))
		}
	}
	if a.denied() > 0 {
		t.Errorf("the app received %d requests without identity headers", a.denied())
	}
}

// oauth2ProxySite is oauth2-proxy's documented nginx auth_request recipe
// (docs: Configuring for use with the Nginx auth_request directive), plus
// /open/ straight to the app for the no-auth baseline.
func oauth2ProxySite(port int, o2p, app string) string {
	return fmt.Sprintf(`upstream o2p { server %[2]s; keepalive 32; }
upstream app { server %[3]s; keepalive 32; }
server {
    listen 127.0.0.1:%[1]d;
    location /oauth2/ {
        proxy_pass http://o2p;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Auth-Request-Redirect $request_uri;
    }
    location = /oauth2/auth {
        proxy_pass http://o2p;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header Content-Length "";
        proxy_pass_request_body off;
    }
    location /open/ {
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }
    location / {
        auth_request /oauth2/auth;
        error_page 401 = /oauth2/sign_in;
        auth_request_set $user $upstream_http_x_auth_request_user;
        auth_request_set $email $upstream_http_x_auth_request_email;
        proxy_set_header X-Auth-Request-User $user;
        proxy_set_header X-Auth-Request-Email $email;
        auth_request_set $auth_cookie $upstream_http_set_cookie;
        add_header Set-Cookie $auth_cookie;
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }
}
`, port, o2p, app)
}

// cookieHeader is the Cookie header c sends to rawURL, with the cookies
// whose names start with prefix.
func cookieHeader(c *client, rawURL, prefix string) string {
	var parts []string
	for _, ck := range c.jar.Cookies(mustParse(c.t, rawURL)) {
		if strings.HasPrefix(ck.Name, prefix) {
			parts = append(parts, ck.Name+"="+ck.Value)
		}
	}
	if len(parts) == 0 {
		c.t.Fatalf("no %s cookie for %s", prefix, rawURL)
	}
	return strings.Join(parts, "; ")
}

func field(text, re string) string {
	if m := regexp.MustCompile(re).FindStringSubmatch(text); m != nil {
		return m[1]
	}
	return "?"
}

func randomString(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
