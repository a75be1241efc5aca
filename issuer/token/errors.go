package token

import "errors"

// Parse errors. Every error Parse returns wraps one of them (with %w and
// context that never includes the token). The endpoints map all of them to
// invalid_token or invalid_grant; the distinction is for logs and metrics.
var (
	// ErrMalformed: not a compact JWS/JWE, bad base64 or JSON, a required
	// claim (exp, iat, jti, sub) missing or of the wrong type.
	ErrMalformed = errors.New("token: malformed")
	// ErrWrongAlg: the header alg (or JWE alg/enc) is not the one
	// configured for this kind of token; includes alg "none".
	ErrWrongAlg = errors.New("token: unexpected algorithm")
	// ErrUnknownKey: no kid, or the kid names no key of the expected alg.
	ErrUnknownKey = errors.New("token: unknown key")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("token: invalid signature")
	// ErrDecrypt: the JWE does not decrypt (wrong key, tampered
	// ciphertext or tag).
	ErrDecrypt = errors.New("token: decryption failed")
	// ErrExpired: exp is past (beyond the leeway).
	ErrExpired = errors.New("token: expired")
	// ErrNotYetValid: nbf or iat is in the future (beyond the leeway).
	ErrNotYetValid = errors.New("token: not yet valid")
	// ErrWrongIssuer: iss is not this issuer.
	ErrWrongIssuer = errors.New("token: wrong issuer")
	// ErrWrongType: the header typ is not the kind asked for (an access
	// token presented as a refresh token, an ID token as an access token).
	ErrWrongType = errors.New("token: wrong token type")
	// ErrInvalidClaims is returned by Mint for claims it refuses to sign
	// (missing subject or expiry, a reserved name in Extra, ...).
	ErrInvalidClaims = errors.New("token: invalid claims")
)
