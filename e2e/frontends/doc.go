// Package frontends holds the end-to-end tests of several frontends in one
// bffgate instance (issue 21): the real bffgate binary (e2e/stack) with
// gateway.frontends, the embedded issuer and panva's oidc-provider
// (e2e/peers) as the providers, Debian's chromium (e2e/browser) as the
// user's browser.
//
// Four frontends share one gateway port. Two are selected by host name:
// "a" on localhost with the embedded issuer, "b" on b.localhost with
// oidc-provider. Two are selected by path prefix on 127.0.0.1: "one"
// under /one with the embedded issuer, "two" under /two with
// oidc-provider (another client of it than b's). Each has its SPA (a
// static page the test writes: who is signed in, a login and a logout
// link, an API button) and an API route to an echo server in the test,
// which answers with the frontend that called (a header the route adds)
// and the bearer token's subject and audience (the embedded issuer's JWT
// read as is, oidc-provider's opaque token by introspection).
//
// The tests sign in to the frontends in chromium and check that each
// sees only its own user and API; that a session cookie replayed to
// another frontend (under its own name or the other's) is no session;
// that signing out of one leaves the others signed in (by host, and on
// one host by path, the cookie cleared with its own Path); that a
// back-channel logout from oidc-provider for one client ends only that
// frontend's sessions; that an authorization response of the other
// frontend's provider delivered to a frontend's callback is refused
// (RFC 9207 mix-up); that a reload (the file edited, SIGHUP) adds a
// frontend while the sessions of the others live on, changes one whose
// sessions then reach the API through its new route, and removes one,
// whose session gets 401 and whose stored sessions are deleted; that a
// file with a mistake keeps the running frontends; that `bffgate config check` refuses
// overlapping matches, a shared cookie name and a frontend without a
// provider, naming the frontends; and that a request no frontend serves
// gets 404 JSON. The browser tests run over the cookie and bbolt stores
// and, with BFFGATE_TEST_REDIS_URL, over Redis.
//
// # Host names
//
// Chromium resolves every name under .localhost to loopback and treats
// http://b.localhost:PORT as a secure context, so the frontends' __Host-
// and __Secure- cookies work over plain http there as on 127.0.0.1 (seen
// in Chromium 156). The test's own HTTP clients dial 127.0.0.1 for those
// names, and oidc-provider delivers back-channel logout tokens to them the
// same way (e2e/peers/provider.mjs). The embedded issuer accepts http
// redirect URIs on localhost and 127.0.0.1 only, so its frontends are the
// ones on those hosts.
//
// # Caveats
//
// Without chromium, node or npm the tests skip with a message;
// BFFGATE_E2E_REQUIRE=1 turns that into a failure (CI sets it).
package frontends
