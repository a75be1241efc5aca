package issuer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/token"
)

// bearerToken returns the access token of a protected-resource request:
// the Authorization: Bearer header (RFC 6750 §2.1) or, on a form POST,
// the access_token body parameter (§2.2); never the query (§2.3, which
// leaks into logs). Both at once is invalid_request (§2).
func bearerToken(c *fiber.Ctx) (string, error) {
	var fromHeader string
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", protocol.ErrInvalidToken.WithDescription("the Authorization header is not of the Bearer scheme")
		}
		fromHeader = strings.TrimSpace(rest)
	}
	var fromBody string
	if c.Method() == fiber.MethodPost && len(c.Request().Body()) > 0 { // raw: parseForm refuses a compressed one
		form, err := parseForm(c)
		if err != nil {
			return "", err
		}
		fromBody = form.Get("access_token")
	}
	switch {
	case fromHeader != "" && fromBody != "":
		return "", protocol.ErrInvalidRequest.WithDescription("the access token was sent both in the Authorization header and in the body; send it once (RFC 6750 §2)")
	case fromHeader != "":
		return fromHeader, nil
	case fromBody != "":
		return fromBody, nil
	}
	return "", protocol.ErrInvalidToken.WithDescription("no access token was sent; send it as Authorization: Bearer <token>")
}

// handleUserinfo is the UserInfo endpoint (OIDC Core §5.3).
func (s *Server) handleUserinfo(c *fiber.Ctx) error {
	c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
	raw, err := bearerToken(c)
	if err != nil {
		return s.writeError(c, epUserinfo, err)
	}
	cl, err := s.activeAccessToken(c.UserContext(), raw)
	if err != nil {
		return s.writeError(c, epUserinfo, err)
	}
	if isClientToken(cl) {
		return s.writeError(c, epUserinfo, protocol.ErrInvalidToken.WithDescription("the access token is a client_credentials token, which a client got for itself and which names no user; the UserInfo endpoint needs a token issued for a user"))
	}
	if !protocol.HasScope(cl.Scope, ScopeOpenID) {
		return s.writeError(c, epUserinfo, protocol.ErrInsufficientScope.WithDescription("the access token lacks the openid scope the UserInfo endpoint requires"))
	}
	u := s.bySubject[cl.Subject]
	if u == nil {
		return s.writeError(c, epUserinfo, protocol.ErrInvalidToken.WithDescription("the access token does not name a user of this issuer"))
	}
	out := releasedClaims(u, cl.Scope)
	out["sub"] = u.Subject
	noStore(c)
	return c.JSON(out)
}

// activeAccessToken parses an access token and checks the denylist; every
// failure is invalid_token except a store failure (fail closed, 503).
func (s *Server) activeAccessToken(ctx context.Context, raw string) (*token.Claims, error) {
	cl, err := s.parseToken(raw, token.Access, s.now())
	if err != nil {
		return nil, protocol.ErrInvalidToken.WithDescription("%s", describeTokenError(err, "access token"))
	}
	if why := s.checkAudience(cl); why != "" {
		return nil, protocol.ErrInvalidToken.WithDescription("%s", why)
	}
	if why := s.tokenRefused(cl, token.Access); why != "" {
		s.ag.metrics.refused.WithLabelValues(epUserinfo).Inc()
		return nil, protocol.ErrInvalidToken.WithDescription("%s", why)
	}
	denied, err := s.deny.Denied(ctx, cl.JTI, cl.GrantID)
	if err != nil {
		return nil, protocol.ErrTemporarilyUnavailable.WithDescription("the revocation list cannot be read; retry later").WithCause(err)
	}
	if denied {
		return nil, protocol.ErrInvalidToken.WithDescription("the access token was revoked")
	}
	return cl, nil
}

// checkAudience checks an access token's client_id and aud against the
// configuration: the client must be registered and the aud exactly what
// the issuer gives that client's tokens (RFC 9068 §4: the aud is
// validated). It returns why the token is refused, or "".
func (s *Server) checkAudience(tc *token.Claims) string {
	cl := s.tokenClient(tc.ClientID)
	if cl == nil {
		return "the access token's client_id names no registered client"
	}
	if len(tc.Audience) == 0 {
		return "the access token has no aud"
	}
	if tc.GrantType == GrantTokenExchange {
		// An exchanged token's aud is its target (RFC 8693 §2.1), one
		// its client's policy allows.
		if !cl.exchangeAudienceAllowed(tc.Audience) {
			return "the exchanged access token's aud is not a target its client's token_exchange policy allows"
		}
		return ""
	}
	for _, a := range tc.Audience {
		if !slices.Contains(cl.Audience, a) && !s.resourceAllowed(cl, a) {
			return "the access token's aud is not an audience of its client"
		}
	}
	return ""
}

// parseToken is codec.Parse refusing non-canonical encodings first.
func (s *Server) parseToken(raw string, kind token.Kind, now time.Time) (*token.Claims, error) {
	if !canonicalSegments(raw) {
		return nil, fmt.Errorf("%w: a segment is not canonical base64url", token.ErrMalformed)
	}
	return s.codec.Parse(raw, kind, now)
}

func (s *Server) parseIDTokenHint(raw string, now time.Time) (*token.Claims, error) {
	if !canonicalSegments(raw) {
		return nil, fmt.Errorf("%w: a segment is not canonical base64url", token.ErrMalformed)
	}
	return s.codec.ParseIDTokenHint(raw, now)
}

// kindsFor orders the kinds to try by token_type_hint (RFC 7009 §2.1, RFC
// 7662 §2.1): the hint is tried first, then the other kind; an unknown
// hint is ignored.
func kindsFor(hint string) []token.Kind {
	if hint == "refresh_token" {
		return []token.Kind{token.Refresh, token.Access}
	}
	return []token.Kind{token.Access, token.Refresh}
}

// parseAny parses raw as the first kind that verifies. expired reports a
// token of this issuer that has expired.
func (s *Server) parseAny(raw, hint string, now time.Time) (cl *token.Claims, kind token.Kind, expired bool) {
	for _, k := range kindsFor(hint) {
		c, err := s.parseToken(raw, k, now)
		if err == nil {
			return c, k, false
		}
		if errors.Is(err, token.ErrExpired) {
			expired = true
		}
	}
	return nil, 0, expired
}

// handleRevoke is the revocation endpoint (RFC 7009). Revoking an access
// token denylists its jti and removes its grant's refresh tokens from the
// allowlist; revoking a refresh token revokes its grant, access tokens
// included (§2.1). Unknown, expired and other clients' tokens answer 200
// and change nothing (§2.2).
func (s *Server) handleRevoke(c *fiber.Ctx) error {
	form, err := parseForm(c)
	if err != nil {
		return s.writeError(c, epRevoke, err)
	}
	cl, _, err := s.authenticateClient(c, form, true)
	if err != nil {
		return s.writeError(c, epRevoke, err)
	}
	raw := form.Get("token")
	if raw == "" {
		return s.writeError(c, epRevoke, protocol.ErrInvalidRequest.WithDescription("token is missing"))
	}
	ctx := c.UserContext()
	now := s.now()
	tc, kind, expired := s.parseAny(raw, form.Get("token_type_hint"), now)
	switch {
	case tc == nil:
		s.logToken(c, "revocation of an unknown, invalid or expired token: nothing to do",
			slog.String("client_id", cl.ID), slog.Bool("expired", expired))
	case tc.ClientID != cl.ID:
		s.logToken(c, "revocation refused: the token belongs to another client",
			slog.String("client_id", cl.ID), slog.String("token_client_id", tc.ClientID))
	case kind == token.Access:
		until := tc.Expiry.Add(s.cfg.PurgeDelay + token.DefaultLeeway)
		grantID := tc.GrantID
		if tc.GrantType == GrantTokenExchange {
			// An exchanged token shares its subject's grant; revoking it
			// revokes it alone, not the session it was exchanged from.
			grantID = ""
		}
		if err := s.stores.lifecycle.RevokeAccessToken(bgContext(ctx), tc.JTI, grantID, until, now); err != nil {
			return s.writeError(c, epRevoke, err)
		}
		s.deny.Add(storage.DenyEntry{Kind: storage.DenyJTI, ID: tc.JTI, Until: until})
		s.metrics.revocations.WithLabelValues("access_token").Inc()
		s.logToken(c, "access token revoked", slog.String("client_id", cl.ID), slog.String("sub", tc.Subject),
			slog.String("jti", tc.JTI), slog.String("grant_id", tc.GrantID))
		s.audit(c, AuditRecord{Action: "revoke", ClientID: cl.ID, Subject: tc.Subject, Audience: tc.Audience, Decision: DecisionAllow,
			Reason: "access token revoked (RFC 7009)", TokenID: tc.JTI})
	default:
		if err := s.revokeGrant(ctx, tc.GrantID, now); err != nil {
			return s.writeError(c, epRevoke, err)
		}
		s.metrics.revocations.WithLabelValues("refresh_token").Inc()
		s.logToken(c, "refresh token revoked with its grant", slog.String("client_id", cl.ID), slog.String("sub", tc.Subject),
			slog.String("grant_id", tc.GrantID))
		s.audit(c, AuditRecord{Action: "revoke", ClientID: cl.ID, Subject: tc.Subject, Decision: DecisionAllow,
			Reason: "refresh token revoked with its grant (RFC 7009)", TokenID: tc.GrantID})
		if err := s.forgetConsent(ctx, cl, tc.Subject); err != nil {
			return s.writeError(c, epRevoke, err)
		}
	}
	noStore(c)
	return c.SendStatus(fiber.StatusOK)
}

// introspection is the RFC 7662 §2.2 response.
type introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Username  string   `json:"username,omitempty"`
	TokenType string   `json:"token_type,omitempty"`
	Exp       int64    `json:"exp,omitempty"`
	Iat       int64    `json:"iat,omitempty"`
	Nbf       int64    `json:"nbf,omitempty"`
	Sub       string   `json:"sub,omitempty"`
	Aud       []string `json:"aud,omitempty"`
	Iss       string   `json:"iss,omitempty"`
	JTI       string   `json:"jti,omitempty"`
	SID       string   `json:"sid,omitempty"`
	AuthTime  int64    `json:"auth_time,omitempty"`
	// Gty is "client_credentials" for a token a client got for itself:
	// its sub names the client (ClientSubjectPrefix), it has no username;
	// the token-exchange grant type for an exchanged token.
	Gty string `json:"gty,omitempty"`
	// Act is an exchanged token's actor chain (RFC 8693 §4.1); its
	// client_id is the client that made the exchange.
	Act map[string]any `json:"act,omitempty"`
}

// handleIntrospect is the introspection endpoint (RFC 7662), for
// confidential clients. A token is active for the client it was issued to
// and, for an access token, for the resource servers of its audience.
// Anything else is {"active": false} and nothing more (§2.2).
func (s *Server) handleIntrospect(c *fiber.Ctx) error {
	form, err := parseForm(c)
	if err != nil {
		return s.writeError(c, epIntrospect, err)
	}
	cl, _, err := s.authenticateClient(c, form, false)
	if err != nil {
		return s.writeError(c, epIntrospect, err)
	}
	raw := form.Get("token")
	if raw == "" {
		return s.writeError(c, epIntrospect, protocol.ErrInvalidRequest.WithDescription("token is missing"))
	}
	res, why, err := s.introspect(c.UserContext(), cl, raw, form.Get("token_type_hint"))
	if err != nil {
		return s.writeError(c, epIntrospect, err)
	}
	result := "active"
	if !res.Active {
		result = "inactive"
		s.logToken(c, "introspection: token inactive", slog.String("client_id", cl.ID), slog.String("reason", why))
		s.audit(c, AuditRecord{Action: "introspect", ClientID: cl.ID, Decision: DecisionDeny, Reason: why, TokenID: tokenDigest(raw)})
	}
	s.metrics.introspections.WithLabelValues(result).Inc()
	noStore(c)
	return c.JSON(res)
}

func (s *Server) introspect(ctx context.Context, cl *client, raw, hint string) (introspection, string, error) {
	tc, kind, why, err := s.activeToken(ctx, epIntrospect, cl, raw, kindsFor(hint))
	if err != nil || tc == nil {
		return introspection{}, why, err
	}
	res := introspection{
		Active: true, Scope: tc.Scope, ClientID: tc.ClientID, Sub: tc.Subject, Aud: tc.Audience, Iss: tc.Issuer,
		JTI: tc.JTI, SID: tc.SID, Exp: tc.Expiry.Unix(), Iat: tc.IssuedAt.Unix(), TokenType: "Bearer",
	}
	if kind == token.Refresh {
		res.TokenType = "refresh_token"
	}
	if !tc.NotBefore.IsZero() {
		res.Nbf = tc.NotBefore.Unix()
	}
	if !tc.AuthTime.IsZero() {
		res.AuthTime = tc.AuthTime.Unix()
	}
	if tc.GrantType == GrantTokenExchange {
		res.Gty = GrantTokenExchange
		res.Act, _ = tc.Extra["act"].(map[string]any)
	}
	switch {
	case isClientToken(tc):
		// A client's own token: never a username, whatever the sub
		// (RFC 7662 §2.2 username is "the resource owner who authorized
		// this token"; there is none).
		res.Gty = GrantClientCredentials
	default:
		if u := s.bySubject[tc.Subject]; u != nil {
			res.Username = u.Username
		}
	}
	return res, "", nil
}

// activeToken is the check introspection makes of a token of this issuer
// (RFC 7662 §2.2), and the one token exchange makes of its subject and
// actor tokens (RFC 8693 §2.1: "the authorization server MUST perform the
// appropriate validation procedures"): raw parses as the first of kinds
// that verifies (signature or decryption, typ, expiry); it is issued to cl
// or, for an access token, has cl in its aud; an access token's aud fits
// its client and neither its jti nor its grant is denylisted; a refresh
// token is on the allowlist and its grant is not revoked; the token's
// client is not disabled, nor was it disabled after the token was issued
// (tokenRefused). A nil token comes with why it is inactive; an error is
// the store failing (503). ep labels the refusal metric.
func (s *Server) activeToken(ctx context.Context, ep string, cl *client, raw string, kinds []token.Kind) (tc *token.Claims, kind token.Kind, why string, err error) {
	now := s.now()
	var first, expired error
	for _, k := range kinds {
		c, perr := s.parseToken(raw, k, now)
		if perr == nil {
			tc, kind = c, k
			break
		}
		if first == nil {
			first = perr
		}
		if errors.Is(perr, token.ErrExpired) && expired == nil {
			expired = perr
		}
	}
	if tc == nil {
		// The reason names the first kind tried, or the one that
		// verified but expired: "the access token expired", "the
		// refresh token's signature does not verify".
		if expired != nil {
			first = expired
		}
		what := "token"
		if len(kinds) > 0 {
			what = kinds[0].String()
		}
		return nil, 0, describeTokenError(first, what), nil
	}
	inactive := func(why string) (*token.Claims, token.Kind, string, error) { return nil, 0, why, nil }
	unavailable := func(what string, err error) (*token.Claims, token.Kind, string, error) {
		return nil, 0, "", protocol.ErrTemporarilyUnavailable.WithDescription("the %s cannot be read; retry later", what).WithCause(err)
	}
	switch kind {
	case token.Access:
		// The resource server of an RFC 8707 token (a confidential client
		// listing the resource) may introspect or exchange it too.
		if tc.ClientID != cl.ID && !slices.Contains(tc.Audience, cl.ID) && !cl.servesResource(tc.Audience) {
			return inactive("issued to another client, which is not in its audience")
		}
		if why := s.checkAudience(tc); why != "" {
			return inactive(why)
		}
		denied, err := s.deny.Denied(ctx, tc.JTI, tc.GrantID)
		if err != nil {
			return unavailable("revocation list", err)
		}
		if denied {
			return inactive("revoked (denylisted)")
		}
	case token.ID:
		// Token exchange only (introspection takes access and refresh
		// tokens): an ID token carries no grant, so it is alive while the
		// login session it names is (logout deletes it).
		if !slices.Contains(tc.Audience, cl.ID) {
			return inactive("ID token of another client (its aud does not name the client)")
		}
		if tc.SID == "" {
			return inactive("ID token without sid")
		}
		ls, err := s.stores.lifecycle.LoginSession(ctx, tc.SID)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return inactive("the login session of the ID token ended (logout)")
		case err != nil:
			return unavailable("login session", err)
		case !now.Before(ls.ExpiresAt):
			return inactive("the login session of the ID token expired")
		}
	default:
		if tc.ClientID != cl.ID || s.client(tc.ClientID) == nil {
			return inactive("refresh token of another client")
		}
		rec, err := s.stores.lifecycle.RefreshToken(ctx, tc.JTI)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return inactive("refresh token not on the allowlist (rotated away or revoked)")
		case err != nil:
			return unavailable("allowlist", err)
		case !now.Before(rec.ExpiresAt):
			return inactive("expired")
		}
		denied, err := s.deny.Denied(ctx, "", tc.GrantID)
		if err != nil {
			return unavailable("revocation list", err)
		}
		if denied {
			return inactive("grant revoked")
		}
	}
	// A disabled client's tokens are refused everywhere they are checked
	// (bffgate agents disable): at introspection, and as the subject or
	// actor token of an exchange, so that a disabled agent cannot turn its
	// live tokens into new ones.
	if why := s.tokenRefused(tc, kind); why != "" {
		s.ag.metrics.refused.WithLabelValues(ep).Inc()
		return inactive(why)
	}
	return tc, kind, "", nil
}
