// Package forwardauth tests bffgate's forward-auth endpoint (/bff/auth)
// behind the proxies people run it with, as real processes: Debian's nginx
// (auth_request) and Caddy (forward_auth) in front of a test app that
// records the identity headers it receives, the real bffgate binary
// (e2e/stack) with its embedded issuer, and a browser-like client (a
// cookie jar, redirects followed, the issuer's login form submitted), plus
// one full login in chromium through nginx.
//
// The proxies run exactly the recipes of the README: testdata/nginx.conf,
// testdata/Caddyfile and testdata/bffgate.yaml are the README's text (a
// test compares them), with only the addresses replaced by the test's
// loopback ports.
//
//	BFFGATE_E2E_REQUIRE=1 go test -race -count=1 ./e2e/forwardauth/
//
// # Caveats
//
// Without /usr/sbin/nginx, /usr/bin/caddy or chromium the tests that need
// them skip with a message, unless BFFGATE_E2E_REQUIRE=1, when they fail.
// nginx runs through e2e/nginx (shared with the load benchmark): in the
// foreground (daemon off, one worker) with its pid, temp paths and logs in
// the test's temporary directory; when the test runs as root its worker
// runs as root too (user root), so that it can write there.
package forwardauth
