package protocol

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// PKCE code challenge methods (RFC 7636 §4.2). Only S256 is accepted: RFC
// 9700 §2.1.1 says plain "SHOULD NOT" be used, and an issuer that accepts
// it lets an attacker who sees the authorization request redeem the code.
const (
	PKCEMethodS256  = "S256"
	PKCEMethodPlain = "plain"
)

// Length limits of a code_verifier (RFC 7636 §4.1).
const (
	MinVerifierLen = 43
	MaxVerifierLen = 128
)

// VerifyPKCE checks a token request's code_verifier against the
// code_challenge and code_challenge_method stored with the authorization
// code (RFC 7636 §4.6): BASE64URL(SHA256(ASCII(verifier))) must equal the
// challenge. The verifier must be 43 to 128 characters of
// [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~" (§4.1). The comparison is
// constant-time.
//
// Every failure is invalid_grant (RFC 7636 §4.6: "the authorization server
// MUST return an error response with error code invalid_grant") with a
// description naming the cause; neither the verifier nor the challenge
// appears in it.
func VerifyPKCE(verifier, challenge, method string) error {
	if challenge == "" {
		return ErrInvalidGrant.WithDescription("the authorization code was issued without a code_challenge; PKCE (S256) is required, start a new authorization request with code_challenge and code_challenge_method=S256")
	}
	switch method {
	case PKCEMethodS256:
	case "", PKCEMethodPlain:
		return ErrInvalidGrant.WithDescription("code_challenge_method %q is not supported; only S256 is accepted", methodOrPlain(method))
	default:
		return ErrInvalidGrant.WithDescription("code_challenge_method is not supported; only S256 is accepted")
	}
	if verifier == "" {
		return ErrInvalidGrant.WithDescription("code_verifier is missing; send the code_verifier whose S256 hash was the code_challenge")
	}
	if n := len(verifier); n < MinVerifierLen || n > MaxVerifierLen {
		return ErrInvalidGrant.WithDescription("code_verifier must be %d to %d characters long (RFC 7636 §4.1), got %d", MinVerifierLen, MaxVerifierLen, n)
	}
	if !validVerifier(verifier) {
		return ErrInvalidGrant.WithDescription("code_verifier contains characters outside [A-Za-z0-9-._~] (RFC 7636 §4.1)")
	}
	sum := sha256.Sum256([]byte(verifier))
	var enc [43]byte // base64url of 32 bytes, no padding
	base64.RawURLEncoding.Encode(enc[:], sum[:])
	if subtle.ConstantTimeCompare(enc[:], []byte(challenge)) != 1 {
		return ErrInvalidGrant.WithDescription("code_verifier does not match the code_challenge of the authorization request; send the verifier generated for that request")
	}
	return nil
}

func methodOrPlain(m string) string {
	if m == "" {
		return PKCEMethodPlain // RFC 7636 §4.3: absent means plain
	}
	return m
}

func validVerifier(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}
