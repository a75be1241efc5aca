package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
)

// Client assertion types (RFC 7521 §4.2, RFC 7523 §2.2;
// draft-ietf-oauth-spiffe-client-auth §3.1 for JWT-SVIDs).
const (
	AssertionTypeJWT    = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	AssertionTypeSPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
)

// Client authentication methods beyond secrets (OpenID Connect Core §9;
// draft-ietf-oauth-spiffe-client-auth §4 names spiffe_jwt).
const (
	authPrivateKeyJWT = "private_key_jwt"
	authSPIFFEJWT     = "spiffe_jwt"
)

// Assertion limits.
const (
	// maxAssertionLen bounds a client assertion (an RS512 JWT with a few
	// claims is under 1 KiB).
	maxAssertionLen = 8 << 10
	// maxAssertionLifetime is how far in the future a private_key_jwt
	// assertion's exp may lie: "exp within a few minutes". A longer-lived
	// assertion is a credential an attacker could replay elsewhere; the
	// replay record would also have to be kept that long.
	maxAssertionLifetime = 5 * time.Minute
	// maxSVIDLifetime is the same for a JWT-SVID. The SPIFFE Workload API
	// (SPIRE's default jwt_svid_ttl is 5 minutes) hands out short-lived
	// SVIDs; an hour tolerates a longer configured TTL, not a static one.
	maxSVIDLifetime = time.Hour
	// assertionLeeway is the clock skew accepted between the client and
	// the issuer on exp, iat and nbf.
	assertionLeeway = 30 * time.Second
)

// AssertionAlgorithms are the JWS algorithms a client assertion may use
// unless the client narrows them: asymmetric only. "none" is never
// accepted, nor any HS algorithm: an HMAC "signed" with the client's
// public key (the algorithm confusion attack) would verify against what
// anyone can download.
var AssertionAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// keySource gives a client's (or trusted issuer's) verification keys;
// kid is the key the token names ("" for none), which a remote set may
// refetch for.
type keySource interface {
	Keys(now time.Time, kid string) ([]jose.JSONWebKey, error)
}

// staticKeys is a key set given in the configuration (inline or a file).
type staticKeys []jose.JSONWebKey

func (k staticKeys) Keys(time.Time, string) ([]jose.JSONWebKey, error) { return k, nil }

// joseHeader is the part of a JWS header read before verification, to
// name what is wrong in the error description.
type joseHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// peekHeader decodes the protected header of a compact JWS without
// verifying anything.
func peekHeader(raw string) (joseHeader, error) {
	var h joseHeader
	seg, _, ok := strings.Cut(raw, ".")
	if !ok || strings.Count(raw, ".") != 2 {
		return h, errors.New("is not a compact JWS (three base64url parts separated by dots)")
	}
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return h, errors.New("has a header that is not base64url")
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, errors.New("has a header that is not a JSON object")
	}
	return h, nil
}

// peekClaims decodes the claims of a compact JWS without verifying
// anything: only to find the client an assertion names when the request
// has no client_id (RFC 7523 §3: the client is its sub).
func peekClaims(raw string) (jwt.Claims, error) {
	var c jwt.Claims
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return c, errors.New("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

// checkAlg refuses an alg outside allowed, naming why.
func checkAlg(what, alg string, allowed []string) error {
	switch {
	case alg == "" || strings.EqualFold(alg, "none"):
		return fmt.Errorf("the %s is unsigned (alg %q); sign it with one of %s", what, alg, strings.Join(allowed, ", "))
	case strings.HasPrefix(strings.ToUpper(alg), "HS"):
		return fmt.Errorf("the %s uses %s, a symmetric algorithm; this issuer accepts only signatures by a private key (%s)", what, clip(alg, 16), strings.Join(allowed, ", "))
	case !slices.Contains(allowed, alg):
		return fmt.Errorf("the %s uses alg %q, which is not allowed here (allowed: %s)", what, clip(alg, 16), strings.Join(allowed, ", "))
	}
	return nil
}

// verifyJWS verifies raw's signature with a key of src (the key named by
// the header's kid, or, without a kid, each key in turn) and decodes its
// claims into dest, verifying the signature once.
func verifyJWS(what, raw string, h joseHeader, allowed []string, src keySource, now time.Time, dest ...any) error {
	algs := make([]jose.SignatureAlgorithm, len(allowed))
	for i, a := range allowed {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	tok, err := jwt.ParseSigned(raw, algs)
	if err != nil {
		return fmt.Errorf("the %s is not a well-formed signed JWT", what)
	}
	if len(tok.Headers) != 1 {
		return fmt.Errorf("the %s must carry exactly one signature", what)
	}
	keys, err := src.Keys(now, h.Kid)
	if err != nil {
		return fmt.Errorf("the keys to verify the %s cannot be read: %w", what, err)
	}
	tried := 0
	for _, k := range keys {
		if h.Kid != "" && k.KeyID != h.Kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != h.Alg {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		tried++
		err := tok.Claims(k.Key, dest...)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jose.ErrCryptoFailure) {
			return fmt.Errorf("the %s's claims are not valid JSON claims", what)
		}
	}
	switch {
	case tried == 0 && h.Kid != "":
		return fmt.Errorf("the %s is signed with key %q, which is not in the registered key set", what, clip(h.Kid, 64))
	case tried == 0:
		return fmt.Errorf("the %s is signed with %s, and the registered key set has no key for it", what, h.Alg)
	}
	return fmt.Errorf("the %s's signature does not verify with the registered key set", what)
}

// audienceOK reports whether aud names the issuer, the token endpoint or
// the endpoint the assertion was sent to (RFC 7523 §3 item 3; OpenID
// Connect Core §9 has the token endpoint; RFC 7523bis the issuer).
func (s *Server) audienceOK(aud jwt.Audience, endpoint string) bool {
	for _, a := range aud {
		if a == s.cfg.Issuer || a == s.endpoint(pathToken) || (endpoint != "" && a == endpoint) {
			return true
		}
	}
	return false
}

// verifyClientAssertion authenticates cl with a private_key_jwt assertion
// (RFC 7523 §2.2, §3; OpenID Connect Core §9) sent to endpoint. Every
// failure is invalid_client naming the cause.
func (s *Server) verifyClientAssertion(ctx context.Context, cl *client, raw, endpoint string, now time.Time) error {
	bad := func(format string, args ...any) *protocol.Error {
		return protocol.ErrInvalidClient.WithDescription(format, args...)
	}
	if len(raw) > maxAssertionLen {
		return bad("the client assertion is longer than %d bytes", maxAssertionLen)
	}
	if !canonicalSegments(raw) {
		return bad("the client assertion is not a compact JWS of canonical base64url parts")
	}
	h, err := peekHeader(raw)
	if err != nil {
		return bad("the client assertion %v", err)
	}
	if err := checkAlg("client assertion", h.Alg, cl.assertionAlgs); err != nil {
		return bad("%v", err)
	}
	if h.Typ != "" && !strings.EqualFold(h.Typ, "JWT") && !strings.EqualFold(h.Typ, "client-authentication+jwt") {
		return bad("the client assertion has typ %q; a client assertion is a plain JWT (typ JWT or none)", clip(h.Typ, 32))
	}
	var c jwt.Claims
	err = verifyJWS("client assertion", raw, h, cl.assertionAlgs, cl.keys, now, &c)
	if err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return err
		}
		if errors.Is(err, errKeySetFetch) {
			return bad("the client's jwks_uri could not be fetched to verify the client assertion; retry later").WithCause(err)
		}
		return bad("%v", err)
	}
	switch {
	case c.Issuer != cl.ID:
		return bad("the client assertion's iss must be the client_id %q (RFC 7523 §3)", cl.ID)
	case c.Subject != cl.ID:
		return bad("the client assertion's sub must be the client_id %q (RFC 7523 §3)", cl.ID)
	case !s.audienceOK(c.Audience, endpoint):
		return bad("the client assertion's aud must name this issuer (%s) or its token endpoint", s.cfg.Issuer)
	case c.ID == "":
		return bad("the client assertion has no jti; OpenID Connect Core §9 requires one, and the issuer refuses a replayed jti")
	}
	exp, err := s.checkAssertionTimes("client assertion", c, maxAssertionLifetime, now)
	if err != nil {
		return bad("%v", err)
	}
	// The replay record: one use per jti and client within the
	// assertion's lifetime, in the store every instance shares.
	sum := sha256.Sum256([]byte(cl.ID + "\x00" + c.ID))
	err = s.stores.agents.UseAssertion(bgContext(ctx), "jwt:"+base64.RawURLEncoding.EncodeToString(sum[:]), exp.Add(assertionLeeway), now)
	switch {
	case errors.Is(err, storage.ErrReplayed):
		s.ag.metrics.replays.Inc()
		return bad("the client assertion was already used (its jti was seen before); make a new assertion for every request")
	case err != nil:
		return fmt.Errorf("record the client assertion's jti: %w", err)
	}
	return nil
}

// checkAssertionTimes checks exp (required, not past, at most max ahead),
// iat and nbf (not in the future), all with assertionLeeway. It returns
// exp.
func (s *Server) checkAssertionTimes(what string, c jwt.Claims, max time.Duration, now time.Time) (time.Time, error) {
	if c.Expiry == nil {
		return time.Time{}, fmt.Errorf("the %s has no exp", what)
	}
	exp := c.Expiry.Time()
	switch {
	case !now.Before(exp.Add(assertionLeeway)):
		return time.Time{}, fmt.Errorf("the %s expired at %s (now %s)", what, exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case exp.After(now.Add(max + assertionLeeway)):
		return time.Time{}, fmt.Errorf("the %s's exp is more than %s ahead; make short-lived assertions", what, max)
	case c.IssuedAt != nil && c.IssuedAt.Time().After(now.Add(assertionLeeway)):
		return time.Time{}, fmt.Errorf("the %s's iat is in the future (check the clocks)", what)
	case c.NotBefore != nil && c.NotBefore.Time().After(now.Add(assertionLeeway)):
		return time.Time{}, fmt.Errorf("the %s is not valid yet (its nbf is in the future)", what)
	}
	return exp, nil
}
