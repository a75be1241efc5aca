// Package demoapi is the demo resource server that `bffgate` starts next to
// the gateway: a small JSON API (who am I, and a per-user list of items)
// protected by OAuth 2.0 bearer tokens. It is written to be copied: it shows
// what any API behind a BFF must do with the access token the gateway
// attaches.
//
// # Verification
//
// The token travels in the Authorization header only (RFC 6750 §2.1; the
// query and form methods of §2.2 and §2.3 are refused). Two modes:
//
//   - "jwks" (default): the token is a JWT access token (RFC 9068). The API
//     finds the issuer by OpenID Connect discovery, fetches its JWK set and
//     checks, as RFC 9068 §4 lists: the header typ is "at+jwt" (or
//     "application/at+jwt"), the alg is one of the issuer's asymmetric
//     algorithms (never "none", never an HMAC alg: a public key must not
//     become an HMAC secret), the signature verifies with a published key,
//     iss equals Config.Issuer exactly, aud contains Config.Audience, and
//     exp, nbf and iat hold within a small leeway.
//   - "introspect": when the issuer's access tokens are encrypted (JWE) or
//     HMAC-signed, no third party can check them locally. The API then asks
//     the issuer's introspection endpoint (RFC 7662) with its own client
//     credentials, and accepts the token only when the answer is
//     active:true, from the right issuer and for the right audience.
//     Positive answers are cached for a few seconds, keyed by the SHA-256
//     of the token, so a revoked token stays usable at most that long.
//
// # Client tokens
//
// A client_credentials token (RFC 6749 §4.4) acts for a client, not for a
// user, and its sub names that client: keeping or reading items by it
// would hand a client named like a user that user's data (RFC 9068 §5).
// Principal.Client marks such a token (the issuer's gty claim, or gty in
// the introspection answer); /api/whoami reports it as "client": true and
// the per-user /api/items endpoints answer 403 "user_required".
//
// Errors follow RFC 6750 §3: 401 with WWW-Authenticate: Bearer
// error="invalid_token" for a bad token, a bare Bearer realm challenge when
// no token was sent, 403 error="insufficient_scope" when the token lacks
// Config.RequiredScope, and 503 when the issuer cannot be reached (the
// token may be fine; retry). Bodies are JSON {"error","error_description"}.
//
// # Security
//
// The token is never logged, never echoed and never a map key: the
// introspection cache is keyed by its SHA-256. Why a token failed goes to
// the log; the client gets a short description (expired, or not valid for
// this API), as go-oidc#327 recommends for auth boundaries. The JWK set is
// refetched when a token names an unknown kid (key rotation), but at most
// once per few seconds, so forged kids cannot make the API hammer the
// issuer.
package demoapi
