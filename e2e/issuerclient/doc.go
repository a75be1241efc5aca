// Package issuerclient is the confidential OAuth 2.0 client that the
// process-level e2e tests (e2e/durability, e2e/scaleout) run against
// bffgate's embedded issuer over real HTTP, as a relying party and its
// user's browser do: the authorization code flow with PKCE through the
// issuer's HTML login form (RFC 6749 §4.1, RFC 7636), then refresh
// (RFC 6749 §6), revocation (RFC 7009) and introspection (RFC 7662) with
// client_secret_basic.
//
// A test registers its client at the issuer with Config.Env, builds a
// Client for each issuer process it talks to with New, and signs in with
// Grant or MustGrant: the first grant of a Client posts the login form,
// later ones ride the issuer's SSO session in the Client's Jar.
//
// For the tests that drive a gateway (e2e/topology, e2e/scaleout, and
// this package's own), Browser is the user's browser without a real one:
// GatewayLogin walks /bff/login, the issuer's login form and the gateway's
// callback, and returns the session's Cookie header, which Do, Call and
// Get then send with the gateway's anti-CSRF header, each answer read in
// full as an Answer.
//
// Unlike a production client, it reports what the issuer answered instead
// of hiding it: Post returns a transport error only when no answer came
// (the process may have died with the request in flight), and every
// answer, errors included, comes back as a Reply with its status and its
// RFC 6749 §5.2 error code, so that tests can assert exact outcomes.
//
// # Caveats
//
// It is test code: it takes a testing.TB to fail the test on bad
// configuration and in MustGrant and Introspect, and it reads the issuer's
// login page with a general HTML parser, not one tuned for speed (the load
// benchmark in e2e/bench has its own).
//
// # Security
//
// Error messages name statuses, error bodies (clipped), the member names
// of 200 bodies and the visible text of pages, and URLs without their
// query values: never a token, a code, a cookie or the login form's CSRF
// token and sealed request.
package issuerclient
