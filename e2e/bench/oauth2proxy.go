package bench

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// OAuth2ProxyVersion is the oauth2-proxy release the benchmark compares
// with: the newest the Go module proxy serves here (../shared/PEERS.md).
const OAuth2ProxyVersion = "v7.8.1"

const oauth2ProxyModule = "github.com/oauth2-proxy/oauth2-proxy/v7"

// OAuth2ProxyBinary returns oauth2-proxy built into the user's cache
// directory (outside the repository), building it the first time. `go
// install ...@latest` fails here (the module proxy refuses the
// deprecation look-up), so it is built from a scratch module, as
// PEERS.md describes; with the version stamped as the release's Makefile
// does, so `--version` names it.
func OAuth2ProxyBinary(t testing.TB) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("oauth2-proxy: no cache directory to build it in: %v (set XDG_CACHE_HOME or HOME)", err)
	}
	dir := filepath.Join(cache, "bffgate-bench", "oauth2-proxy-"+OAuth2ProxyVersion)
	bin := filepath.Join(dir, "oauth2-proxy")
	if strings.Contains(firstLine(bin, "--version"), OAuth2ProxyVersion) {
		return bin
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("building oauth2-proxy %s into %s (about 2 minutes the first time)", OAuth2ProxyVersion, dir)
	run := func(args ...string) {
		cmd := exec.Command("go", args...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("oauth2-proxy: go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
		run("mod", "init", "bffgate-bench/oauth2-proxy")
	}
	run("get", oauth2ProxyModule+"@"+OAuth2ProxyVersion)
	run("build", "-ldflags", "-X "+oauth2ProxyModule+"/pkg/version.VERSION="+OAuth2ProxyVersion, "-o", bin+".tmp", oauth2ProxyModule)
	if err := os.Rename(bin+".tmp", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// OAuth2ProxyOptions configures one oauth2-proxy run.
type OAuth2ProxyOptions struct {
	Bin          string
	Addr         string // 127.0.0.1:PORT, registered at the issuer with /oauth2/callback
	IssuerURL    string
	ClientID     string
	ClientSecret string
	UpstreamURL  string
	// CookieRefresh is --cookie-refresh: sessions older than this are
	// refreshed with the refresh token (0: never).
	CookieRefresh time.Duration
}

// StartOAuth2Proxy runs oauth2-proxy as users deploy it in front of an
// API: provider oidc (discovery at IssuerURL), PKCE S256, cookie
// sessions, skip the provider button, and the access token sent upstream
// as Authorization: Bearer through the alpha config's
// injectRequestHeaders (--pass-access-token would send it as
// X-Forwarded-Access-Token instead). Request logging is off, as is
// bffgate's access log in the benchmark: the request path is measured,
// not the log writer.
func StartOAuth2Proxy(t testing.TB, o OAuth2ProxyOptions) *Proc {
	t.Helper()
	alpha := fmt.Sprintf(`server:
  bindAddress: %q
upstreamConfig:
  upstreams:
  - id: api
    path: /
    uri: %q
injectRequestHeaders:
- name: Authorization
  values:
  - claim: access_token
    prefix: "Bearer "
providers:
- id: bffgate
  provider: oidc
  clientID: %q
  clientSecret: %q
  code_challenge_method: S256
  scope: "openid email profile offline_access"
  oidcConfig:
    issuerURL: %q
    emailClaim: email
    audienceClaims: [aud]
`, o.Addr, o.UpstreamURL, o.ClientID, o.ClientSecret, o.IssuerURL)
	path := filepath.Join(t.TempDir(), "oauth2-proxy-alpha.yaml")
	mustf(t, os.WriteFile(path, []byte(alpha), 0o600), "write the oauth2-proxy alpha config")
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	base := "http://" + o.Addr
	args := []string{
		"--alpha-config=" + path,
		"--cookie-secret=" + base64.RawURLEncoding.EncodeToString(secret)[:32],
		"--cookie-secure=false", // plain http on loopback
		"--email-domain=*",
		"--redirect-url=" + base + "/oauth2/callback",
		"--skip-provider-button=true",
		"--request-logging=false",
		"--silence-ping-logging=true",
		fmt.Sprintf("--cookie-refresh=%s", o.CookieRefresh),
	}
	return StartPolling(t, "oauth2-proxy", o.Bin, base, base+"/ping", args, nil)
}
