// Package ws is the browser end-to-end test of WebSockets through an API
// route: the real bffgate binary (e2e/stack) with the embedded issuer,
// driven by Debian's chromium (e2e/browser).
//
// A browser cannot add headers to a WebSocket handshake, so the gateway
// checks upgrades by their Origin (the public origin or allowed_origins;
// none is refused) and by the session, instead of the anti-CSRF header
// every other API call carries. The test logs in through the demo SPA,
// opens a WebSocket through a user route to an echo upstream that checks
// the bearer token at the issuer's userinfo endpoint, and then has pages
// of another origin (the same site on another port, and another site) try
// the same.
//
// # Caveats
//
// Without chromium the test skips with a message; BFFGATE_E2E_REQUIRE=1
// turns that into a failure.
package ws
