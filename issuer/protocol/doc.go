// Package protocol holds the embedded issuer's protocol types that carry no
// HTTP: the one OAuth 2.0 error type (RFC 6749 §4.1.2.1 and §5.2, RFC 6750
// §3.1, RFC 7009 §2.2.1, OpenID Connect Core §3.1.2.6), scope helpers (RFC
// 6749 §3.3) and the PKCE check (RFC 7636 §4.6). The endpoints build on
// it; it imports nothing of theirs, as dex's server/oauth2 and fosite's
// errors.go.
//
// # Security
//
// An *Error has two faces. Code and Description go to the client, so a
// description says what was wrong and what to do but never quotes a
// secret: not the code, the token, the client secret, the code_verifier.
// The cause (WithCause) goes to the log only: it may name store records and
// key ids. The sentinels are never mutated; the With* methods return
// copies, so two requests cannot race on one description.
//
// VerifyPKCE accepts only S256 (RFC 9700 §2.1.1: the plain method leaks
// the verifier with the authorization request) and compares in constant
// time.
package protocol
