package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/trust"
)

// GrantJWTBearer is the JWT bearer authorization grant (RFC 7523 §2.1): a
// JWT from a trusted issuer is exchanged for an access token of this one.
// It is how a workload of another domain (a JWT-SVID of a federated trust
// domain, a cloud provider's identity token) or an MCP client doing
// workload identity federation gets a token here.
//
// The trusted issuers are those of token exchange (issuer.trusted_issuers,
// package trust): one list, one verification (trust.Set.Verify), one
// subject mapping. On top of it the grant applies the rules of RFC 7523
// §3: a bounded lifetime, iat not in the future, the jti recorded as used
// until the assertion expires, and the scope capped by the trusted
// issuer's scopes.
const GrantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// maxBearerLifetime bounds how far ahead a bearer assertion's exp may lie
// (RFC 7523 §3 item 4: the server may reject an exp "unreasonably far in
// the future"): a day covers the identity tokens of cloud platforms.
const maxBearerLifetime = 24 * time.Hour

// jwtBearer is the JWT bearer grant (RFC 7523 §2.1, §3): the assertion is
// verified against its trusted issuer, its subject mapped, the scope
// capped, and an access token minted for the mapped subject with the
// authenticated client as client_id. No refresh token: the client
// presents a fresh assertion instead (RFC 7521 §4.1).
func (s *Server) jwtBearer(ctx context.Context, cl *client, form url.Values) (tokenResponse, error) {
	if !cl.hasGrant(GrantJWTBearer) {
		return tokenResponse{}, protocol.ErrUnauthorizedClient.WithDescription("client %q is not allowed the jwt-bearer grant", cl.ID)
	}
	raw := form.Get("assertion")
	if raw == "" {
		return tokenResponse{}, protocol.ErrInvalidRequest.WithDescription("assertion is missing (RFC 7523 §2.1)")
	}
	if len(form["assertion"]) > 1 {
		return tokenResponse{}, protocol.ErrInvalidRequest.WithDescription("assertion was sent more than once")
	}
	now := s.now()
	ti, t, c, err := s.verifyBearerAssertion(ctx, raw, now)
	if err != nil {
		return tokenResponse{}, err
	}
	scope := form.Get("scope")
	if err := cl.checkScope(scope); err != nil {
		return tokenResponse{}, err
	}
	scopes := protocol.ParseScope(scope)
	for _, sc := range scopes {
		if sc == ScopeOpenID || sc == ScopeOfflineAccess {
			return tokenResponse{}, protocol.ErrInvalidScope.WithDescription("scope %q is not granted for an assertion (no sign-in, no refresh token); ask for the API scopes only", sc)
		}
		if len(ti.Scopes) > 0 && !slices.Contains(ti.Scopes, sc) {
			return tokenResponse{}, protocol.ErrInvalidScope.WithDescription("scope %q exceeds what assertions of %s may get (%s)", sc, ti.Issuer, strings.Join(ti.Scopes, ", "))
		}
	}
	if c.ID != "" {
		sum := sha256.Sum256([]byte(ti.Issuer + "\x00" + c.ID))
		err := s.stores.agents.UseAssertion(bgContext(ctx), "bearer:"+base64.RawURLEncoding.EncodeToString(sum[:]), c.Expiry.Time().Add(assertionLeeway), now)
		if errors.Is(err, storage.ErrReplayed) {
			s.ag.metrics.replays.Inc()
			return tokenResponse{}, invalidGrant("the assertion was already used (its jti was seen before)")
		}
		if err != nil {
			return tokenResponse{}, fmt.Errorf("record the assertion's jti: %w", err)
		}
	}
	g := grantInfo{Subject: t.Subject, Scope: strings.Join(scopes, " ")}
	var released map[string]any
	if u := s.bySubject[t.Subject]; u != nil {
		released = releasedClaims(u, g.Scope)
	}
	resp, _, err := s.mint(GrantJWTBearer, cl, g, false, "", released, now)
	return resp, err
}

// verifyBearerAssertion verifies a JWT bearer assertion with the trusted
// issuers' verifier (a trusted iss, an accepted alg, a key of that issuer,
// exp and nbf, an accepted aud, the subject mapped), then the rules of RFC
// 7523 §3 the verifier leaves to grants: exp at most maxBearerLifetime
// ahead, iat not in the future. Failures are invalid_grant (RFC 7523
// §3.1); unreachable keys are temporarily_unavailable.
func (s *Server) verifyBearerAssertion(ctx context.Context, raw string, now time.Time) (trust.Issuer, *trust.Token, jwt.Claims, error) {
	var c jwt.Claims
	if len(raw) > maxAssertionLen || !canonicalSegments(raw) {
		return trust.Issuer{}, nil, c, invalidGrant("the assertion is not a compact JWS of canonical base64url parts (at most %d bytes)", maxAssertionLen)
	}
	iss := trust.PeekIssuer(raw)
	if iss == "" {
		return trust.Issuer{}, nil, c, invalidGrant("the assertion is not a signed JWT with an iss claim")
	}
	ti, ok := s.trust.Issuer(iss)
	if !ok || iss == s.cfg.Issuer {
		return trust.Issuer{}, nil, c, invalidGrant("the assertion's issuer %q is not a trusted issuer of this server (issuer.trusted_issuers)", clip(iss, 255))
	}
	t, err := s.trust.Verify(ctx, raw)
	if err != nil {
		if errors.Is(err, trust.ErrUnavailable) {
			return trust.Issuer{}, nil, c, protocol.ErrTemporarilyUnavailable.WithDescription("the keys of trusted issuer %s could not be fetched; retry later", clip(iss, 255)).WithCause(err)
		}
		return trust.Issuer{}, nil, c, invalidGrant("the assertion of %s does not verify: %s", clip(iss, 255), trustReason(err)).WithCause(err)
	}
	// The times and the jti come from the verified claims.
	num := func(name string) *jwt.NumericDate {
		if v, ok := t.Claims[name].(float64); ok {
			return jwt.NewNumericDate(time.Unix(int64(v), 0))
		}
		return nil
	}
	c.Expiry, c.IssuedAt, c.NotBefore = num("exp"), num("iat"), num("nbf")
	c.ID, _ = t.Claims["jti"].(string)
	if _, err := s.checkAssertionTimes("assertion", c, maxBearerLifetime, now); err != nil {
		return trust.Issuer{}, nil, c, invalidGrant("%v", err)
	}
	return ti, t, c, nil
}
