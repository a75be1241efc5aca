// Package spa holds bffgate's browser end-to-end tests of the zero-config
// run (issue 6): the real bffgate binary (e2e/stack) with the embedded
// issuer, the gateway and the demo API, driven through the demo SPA by
// Debian's chromium (e2e/browser).
//
// One test walks the whole life of a session for each session store
// (cookie, bbolt) and token format (signed, encrypted; and signed access
// tokens with sealed refresh tokens on bbolt): log in through the
// issuer's HTML form, call the API, create and delete an item, prove that
// no token reached the browser (storage and every response), let the
// access token expire and call again (a refresh the page never sees), fail
// to call the API from a cross-site page, log out, and replay the old
// cookie by hand.
//
// The tests know the access tokens from the issuer's side: the gateway's
// /api/ route points at a recording reverse proxy in the test process that
// notes every bearer token it forwards to the demo API. Refresh and ID
// tokens never leave the gateway, so the tests look for anything shaped
// like a JWT or JWE (base64url segments starting with "eyJ") as well.
//
// # Caveats
//
// Without chromium the tests skip with a message; BFFGATE_E2E_REQUIRE=1
// turns that into a failure (CI sets it). Screenshots of the logged-in SPA
// are written under e2e/out when a test fails.
package spa
