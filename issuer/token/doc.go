// Package token mints and parses the embedded issuer's tokens with go-jose
// v4: access tokens in the JWT profile of RFC 9068, refresh tokens of the
// same shape, and OpenID Connect ID tokens (OIDC Core §2).
//
// Following ForgeRock AM's client-side tokens, access and refresh tokens
// are self-contained: either a compact JWS signed with one configured alg
// (HS, RS, PS or ES 256/384/512) or a compact JWE (alg "dir", enc
// A128CBC-HS256 or A256GCM) whose plaintext is the claims JSON. The store
// holds no token, only the refresh-token allowlist and the access-token
// denylist that make them revocable (issuer/storage). ID tokens are always
// signed with an asymmetric alg, because relying parties verify them with
// the published JWK set.
//
// # Wire format
//
// Access token: header {alg, kid, typ: "at+jwt"}; claims iss, sub, aud,
// exp, iat, nbf, jti, client_id, scope, auth_time, sid, grant_id (plus
// Extra). Refresh token: the same claims, typ "rt+jwt". ID token: typ "JWT";
// iss, sub, aud, exp, iat, auth_time, nonce, sid, at_hash, azp plus Extra
// (user claims). Encrypted tokens: header {alg: "dir", enc, kid, typ}.
//
// # Security
//
// Parse takes the algorithm from the configuration, never from the token.
// The header alg must equal the one alg configured for the kind (and go-jose
// is given that one-element allowlist too), and the kid must name a key of
// that same alg. This closes the classic JWT holes: alg "none"; algorithm
// confusion, where a token says HS256 and the verifier, handed the RSA
// public key, uses its bytes as the HMAC secret (anyone can then forge);
// and cross-key confusion, where a key meant for one alg verifies another.
// Keys come only from our key set by kid; an embedded "jwk" header is
// refused.
//
// Every kind has its own typ (RFC 8725 §3.11, explicit typing), checked
// after the signature. Access and refresh tokens share keys and claims, so
// without typ an access token, which travels to every resource server and
// may leak from any of them, would be accepted as a refresh token, which
// lives much longer; an ID token, which the browser-side client sees, would
// pass as an access token. With typ each is accepted only as what it was
// minted as.
//
// Encrypted tokens are not also signed (the seed design's choice, kept):
// with "dir" the only holder of the key is the issuer itself, and the
// content encryptions used are authenticated (AES-CBC with HMAC-SHA-2 per
// RFC 7518 §5.2, or AES-GCM), so the tag already proves the token was made
// with our key and has not been changed; a nested signature would add a
// second proof of the same fact and a second key to manage. The flip side:
// anyone holding the dir key can mint tokens, so it must never leave the
// issuer (keys.Set.PublicJWKS never publishes it), and resource servers
// validate such tokens by introspection (RFC 7662), not locally. Decryption
// is refused for any alg but "dir", any enc but the configured one, and any
// compressed ("zip") token.
//
// # Sealed refresh tokens
//
// With Config.RefreshFormat sealed, access tokens stay signed (resource
// servers verify them with the JWK set) while refresh tokens, which only
// the issuer ever reads, are sealed: a compact JWE, alg "dir", enc A256GCM,
// under the key set's dir key, header {alg, enc, kid, typ: "rt+jwt"}, the
// claims encrypted and so opaque to the client. For RS256 this removes one
// of a refresh grant's three RSA signatures (access, refresh, ID token).
// The reasoning of the encrypted format holds: the GCM tag proves the
// token was made with the issuer's key. A sealed refresh token is never an
// access token: Parse(Access) in the signed format reads only JWS (a JWE
// is malformed there), and the typ differs as always. Parse(Refresh)
// takes either shape in the signed format, so switching the option keeps
// issued refresh tokens working (a sealed one while its dir key, active or
// retired, is in the set). ForgeRock AM's all-signed behaviour stays the
// default.
//
// Parse checks iss, exp (required), nbf and iat with a small leeway, the
// presence of sub, and of jti and client_id in access and refresh tokens.
// It does not check aud (the caller knows what it expects) nor revocation
// (the store's denylist and allowlist). Errors wrap sentinels from
// errors.go, never contain the token, and shorten header values they quote.
package token
