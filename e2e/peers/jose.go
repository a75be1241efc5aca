package peers

import (
	"context"
	"encoding/base64"
	"testing"
)

// Jose is panva's jose, an implementation independent of go-jose, for
// checking the issuer's tokens from the outside and forging bad ones.
type Jose struct {
	proc *proc
}

// StartJose starts the jose peer and stops it when the test ends.
func StartJose(t testing.TB) *Jose {
	t.Helper()
	p, _ := startProc(t, "jose.mjs")
	return &Jose{proc: p}
}

// VerifyOptions say how Verify checks a signed JWT. Exactly one of JWKSURI
// and Secret is set.
type VerifyOptions struct {
	// JWKSURI is fetched with createRemoteJWKSet (cached per URI and
	// process unless Fresh).
	JWKSURI string
	Fresh   bool
	// Secret is the HMAC key for HS256/384/512 tokens.
	Secret []byte
	// Issuer, Audience and Typ are checked when set; Algorithms limits the
	// accepted alg values.
	Issuer     string
	Audience   string
	Typ        string
	Algorithms []string
	// AccessToken requires typ at+jwt and the RFC 9068 §2.2 claims (iss,
	// exp, aud, sub, client_id, iat, jti, with their JSON types).
	AccessToken    bool
	RequiredClaims []string
}

// Verified is a token that passed Verify or Decrypt.
type Verified struct {
	Payload         map[string]any `json:"payload"`
	ProtectedHeader map[string]any `json:"protected_header"`
}

// Verify checks a compact JWS with jose.jwtVerify. A rejection is a
// *PeerError whose Code is jose's (ERR_JWS_SIGNATURE_VERIFICATION_FAILED,
// ERR_JWKS_NO_MATCHING_KEY, ERR_JOSE_ALG_NOT_ALLOWED, ERR_JWT_CLAIM_VALIDATION_FAILED, ...).
func (j *Jose) Verify(ctx context.Context, token string, opts VerifyOptions) (Verified, error) {
	req := map[string]any{
		"token":        token,
		"fresh":        opts.Fresh,
		"access_token": opts.AccessToken,
	}
	if opts.JWKSURI != "" {
		req["jwks_uri"] = opts.JWKSURI
	}
	if opts.Secret != nil {
		req["secret"] = base64.RawURLEncoding.EncodeToString(opts.Secret)
	}
	if opts.Issuer != "" {
		req["issuer"] = opts.Issuer
	}
	if opts.Audience != "" {
		req["audience"] = opts.Audience
	}
	if opts.Typ != "" {
		req["typ"] = opts.Typ
	}
	if len(opts.Algorithms) > 0 {
		req["algorithms"] = opts.Algorithms
	}
	if len(opts.RequiredClaims) > 0 {
		req["required_claims"] = opts.RequiredClaims
	}
	var v Verified
	err := j.proc.call(ctx, "verify", req, &v)
	return v, err
}

// DecryptOptions say how Decrypt checks an encrypted JWT.
type DecryptOptions struct {
	// Key is the raw "dir" content-encryption key.
	Key []byte
	// Enc limits the content encryption (for example A128CBC-HS256).
	Enc      string
	Issuer   string
	Audience string
	Typ      string
}

// Decrypt decrypts a compact JWE with alg dir (jose.jwtDecrypt) and checks
// its JWT claims.
func (j *Jose) Decrypt(ctx context.Context, token string, opts DecryptOptions) (Verified, error) {
	req := map[string]any{
		"token": token,
		"key":   base64.RawURLEncoding.EncodeToString(opts.Key),
	}
	for k, v := range map[string]string{"enc": opts.Enc, "issuer": opts.Issuer, "audience": opts.Audience, "typ": opts.Typ} {
		if v != "" {
			req[k] = v
		}
	}
	var v Verified
	err := j.proc.call(ctx, "decrypt", req, &v)
	return v, err
}

// Decode returns a token's protected header and, for a JWS, its claims,
// without any verification.
func (j *Jose) Decode(ctx context.Context, token string) (Verified, error) {
	var v Verified
	err := j.proc.call(ctx, "decode", map[string]any{"token": token}, &v)
	return v, err
}

// ForgeKind names a way to forge a bad token from a good one.
type ForgeKind string

// The forgeries negative tests present to the issuer. Each must be inactive
// at introspection and rejected at userinfo and by resource servers.
const (
	// ForgeAlgNone keeps header and claims, sets alg "none", drops the
	// signature (RFC 8725 §2.1).
	ForgeAlgNone ForgeKind = "alg_none"
	// ForgeHS256PublicKey signs with HS256 keyed by the PEM of the public
	// key the token's kid names at the JWKS URI (algorithm confusion,
	// RFC 8725 §2.1). Needs ForgeOptions.JWKSURI.
	ForgeHS256PublicKey ForgeKind = "hs256_pubkey"
	// ForgeUnknownKID re-signs with a fresh key of the same alg under a kid
	// the issuer never published.
	ForgeUnknownKID ForgeKind = "unknown_kid"
	// ForgeTamperedPayload changes sub and keeps the original signature.
	ForgeTamperedPayload ForgeKind = "tampered_payload"
	// ForgeTamperedJWE flips one ciphertext bit of a compact JWE.
	ForgeTamperedJWE ForgeKind = "tampered_jwe"
)

// Sign makes a JWT of claims with jose.SignJWT under privateJWK (a JWK with
// its private part, alg and kid).
func (j *Jose) Sign(ctx context.Context, claims map[string]any, privateJWK any) (string, error) {
	var res struct {
		Token string `json:"token"`
	}
	err := j.proc.call(ctx, "sign", map[string]any{"claims": claims, "private_jwk": privateJWK}, &res)
	return res.Token, err
}

// Forge makes a bad token of the given kind from a genuine one. jwksURI is
// needed only by ForgeHS256PublicKey.
func (j *Jose) Forge(ctx context.Context, kind ForgeKind, token, jwksURI string) (string, error) {
	var res struct {
		Token string `json:"token"`
	}
	req := map[string]any{"kind": string(kind), "token": token}
	if jwksURI != "" {
		req["jwks_uri"] = jwksURI
	}
	err := j.proc.call(ctx, "forge", req, &res)
	return res.Token, err
}
