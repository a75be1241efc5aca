package issuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/token"
)

// tokenResponse is the successful token response (RFC 6749 §5.1, OIDC
// Core §3.1.3.3).
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
	Scope        string `json:"scope,omitempty"`

	// RefreshExpiresIn is the refresh token's lifetime in seconds, as
	// Keycloak sends it: a client cannot read it from a sealed or
	// encrypted refresh token (the gateway bounds its sessions by it).
	RefreshExpiresIn int64 `json:"refresh_expires_in,omitempty"`

	// audit is what the audit record of the grant names (never a token).
	audit grantAudit
}

// grantInfo is what every token of one grant shares.
type grantInfo struct {
	ID      string
	Subject string
	SID     string
	// Scope is the grant's scope: what the resource owner granted, and the
	// scope of every refresh token of the grant.
	Scope string
	// AccessScope narrows this response's access (and ID) token when a
	// refresh asks for less (RFC 6749 §6); "" means Scope. The grant and
	// its refresh tokens keep Scope: a narrowed refresh narrows that one
	// access token only.
	AccessScope string
	AuthTime    time.Time
	// Resource is the grant's RFC 8707 resource indicator: the aud of its
	// access tokens; "" gives the client's audience.
	Resource string
}

// accessScope is the scope of the access token being minted.
func (g grantInfo) accessScope() string {
	if g.AccessScope != "" {
		return g.AccessScope
	}
	return g.Scope
}

// newGrantID returns a random grant id that also names its client
// (random "." base64url(client_id)). The store's RevokeSID returns only
// grant ids; carrying the client in the id is what lets logout find the
// clients to notify by back-channel without a second index. The client id
// is no secret: every token of the grant carries it in client_id.
func newGrantID(clientID string) string {
	return token.NewID() + "." + base64.RawURLEncoding.EncodeToString([]byte(clientID))
}

// grantClient returns the client id a grant id names, or "".
func grantClient(grantID string) string {
	i := strings.LastIndexByte(grantID, '.')
	if i < 0 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(grantID[i+1:])
	if err != nil {
		return ""
	}
	return string(b)
}

// handleToken is the token endpoint (RFC 6749 §3.2).
func (s *Server) handleToken(c *fiber.Ctx) error {
	if len(c.Request().URI().QueryString()) > 0 {
		return s.writeError(c, epToken, protocol.ErrInvalidRequest.WithDescription("the token endpoint takes its parameters in the form body, not in the URL query (which ends up in logs)"))
	}
	form, err := parseTokenForm(c)
	if err != nil {
		return s.writeError(c, epToken, err)
	}
	cl, method, err := s.authenticateClient(c, form, true)
	if err != nil {
		return s.writeError(c, epToken, err)
	}
	var resp tokenResponse
	gt := form.Get("grant_type")
	if why := s.clientDisabled(cl.ID); why != "" {
		s.ag.metrics.refused.WithLabelValues(epToken).Inc()
		err = refuseDisabled(why)
	} else if gt == GrantTokenExchange {
		// The exchange writes its own answer, log line and audit record.
		return s.handleTokenExchange(c, cl, method, form)
	} else {
		resp, err = s.grant(c, cl, gt, form)
	}
	s.auditGrant(c, cl, method, gt, form, resp, err)
	if err != nil {
		pe := toProtocol(err)
		s.logError(c, epToken, pe, cl.ID)
		return s.writeErrorLogged(c, pe)
	}
	noStore(c)
	return c.JSON(resp)
}

// grant runs the grant of a token request by an authenticated client.
func (s *Server) grant(c *fiber.Ctx, cl *client, gt string, form url.Values) (resp tokenResponse, err error) {
	switch gt {
	case GrantAuthorizationCode:
		resp, err = s.exchangeCode(c.UserContext(), cl, form)
	case GrantRefreshToken:
		resp, err = s.refresh(c.UserContext(), cl, form)
	case GrantClientCredentials:
		resp, err = s.clientCredentials(cl, form)
	case GrantJWTBearer:
		resp, err = s.jwtBearer(c.UserContext(), cl, form)
	case "":
		err = protocol.ErrInvalidRequest.WithDescription("grant_type is missing (authorization_code, refresh_token, client_credentials, %s or %s)", GrantTokenExchange, GrantJWTBearer)
	default:
		err = protocol.ErrUnsupportedGrantType.WithDescription("grant_type %q is not supported (authorization_code, refresh_token, client_credentials, %s, %s)", clip(gt, 64), GrantTokenExchange, GrantJWTBearer)
	}
	return resp, err
}

// writeErrorLogged writes pe like writeError, for an error logError has
// already logged with the client id.
func (s *Server) writeErrorLogged(c *fiber.Ctx, pe *protocol.Error) error {
	status := pe.Status
	if status == 0 {
		status = fiber.StatusBadRequest
	}
	if pe.Code == protocol.ErrInvalidClient.Code {
		c.Set(fiber.HeaderWWWAuthenticate, `Basic realm="bffgate issuer", charset="UTF-8"`)
	}
	noStore(c)
	return c.Status(status).JSON(errorBody{Error: pe.Code, Description: pe.Description})
}

func invalidGrant(format string, args ...any) *protocol.Error {
	return protocol.ErrInvalidGrant.WithDescription(format, args...)
}

// exchangeCode is the authorization_code grant (RFC 6749 §4.1.3, RFC 7636
// §4.6). The code is redeemed and the grant and refresh token stored in
// one store transaction; a replay revokes what the first use minted.
func (s *Server) exchangeCode(ctx context.Context, cl *client, form url.Values) (tokenResponse, error) {
	if !cl.hasGrant(GrantAuthorizationCode) {
		return tokenResponse{}, protocol.ErrUnauthorizedClient.WithDescription("client %q is not allowed the authorization_code grant", cl.ID)
	}
	code := form.Get("code")
	if code == "" {
		return tokenResponse{}, protocol.ErrInvalidRequest.WithDescription("code is missing")
	}
	redirectURI := form.Get("redirect_uri")
	now := s.now()
	var resp tokenResponse
	_, err := s.stores.token.RedeemCode(ctx, codeHash(code), now, func(ac storage.AuthCode) (storage.Issued, error) {
		if ac.ClientID != cl.ID {
			return storage.Issued{}, invalidGrant("the authorization code was issued to another client, not to %q", cl.ID)
		}
		if redirectURI == "" {
			return storage.Issued{}, invalidGrant("redirect_uri is missing; send the redirect_uri of the authorization request (RFC 6749 §4.1.3)")
		}
		if redirectURI != ac.RedirectURI {
			return storage.Issued{}, invalidGrant("redirect_uri differs from the one of the authorization request")
		}
		if err := protocol.VerifyPKCE(form.Get("code_verifier"), ac.CodeChallenge, ac.CodeChallengeMethod); err != nil {
			return storage.Issued{}, err
		}
		resource, err := s.narrowResource(cl, form, ac.Resource)
		if err != nil {
			return storage.Issued{}, err
		}
		if s.bySubject[ac.Subject] == nil {
			return storage.Issued{}, invalidGrant("the user the code was issued for is no longer configured at the issuer")
		}
		var claims map[string]any
		if len(ac.Claims) > 0 {
			if err := json.Unmarshal(ac.Claims, &claims); err != nil {
				return storage.Issued{}, fmt.Errorf("decode the code's user claims: %w", err)
			}
		}
		g := grantInfo{ID: newGrantID(cl.ID), Subject: ac.Subject, SID: ac.SID, Scope: ac.Scope, AuthTime: ac.AuthTime, Resource: resource}
		var rt *storage.RefreshToken
		resp, rt, err = s.mint(GrantAuthorizationCode, cl, g, cl.hasGrant(GrantRefreshToken), ac.Nonce, claims, now)
		if err != nil {
			return storage.Issued{}, err
		}
		grant := &storage.Grant{ID: g.ID, ClientID: cl.ID, Subject: g.Subject, SID: g.SID, Scope: g.Scope,
			AuthTime: g.AuthTime, Created: now, ExpiresAt: now.Add(s.cfg.AccessTokenTTL), Claims: ac.Claims}
		if rt != nil {
			grant.ExpiresAt = rt.ExpiresAt
		}
		return storage.Issued{Grant: grant, Refresh: rt}, nil
	})
	var reused *storage.CodeReusedError
	switch {
	case err == nil:
		return resp, nil
	case errors.As(err, &reused):
		if gid := reused.Code.RedeemedGrant; gid != "" {
			if rerr := s.revokeGrant(ctx, gid, now); rerr != nil {
				return tokenResponse{}, rerr
			}
			s.log.Warn("authorization code replayed; the grant of its first use is revoked",
				"client_id", cl.ID, "code_client_id", reused.Code.ClientID, "grant_id", gid)
		}
		return tokenResponse{}, invalidGrant("the authorization code was already used; as RFC 6749 §4.1.2 requires, the tokens minted with it have been revoked")
	case errors.Is(err, storage.ErrNotFound):
		return tokenResponse{}, invalidGrant("the authorization code is unknown: it was not issued by this issuer, or it expired and was purged")
	case errors.Is(err, storage.ErrExpired):
		return tokenResponse{}, invalidGrant("the authorization code expired (codes are valid for %s); start a new authorization request", s.cfg.CodeTTL)
	}
	return tokenResponse{}, err
}

// refresh is the refresh_token grant (RFC 6749 §6) with rotation and reuse
// detection (RFC 9700 §4.14.2).
func (s *Server) refresh(ctx context.Context, cl *client, form url.Values) (tokenResponse, error) {
	if !cl.hasGrant(GrantRefreshToken) {
		return tokenResponse{}, protocol.ErrUnauthorizedClient.WithDescription("client %q is not allowed the refresh_token grant", cl.ID)
	}
	raw := form.Get("refresh_token")
	if raw == "" {
		return tokenResponse{}, protocol.ErrInvalidRequest.WithDescription("refresh_token is missing")
	}
	now := s.now()
	rc, err := s.parseToken(raw, token.Refresh, now)
	if err != nil {
		return tokenResponse{}, invalidGrant("%s", describeTokenError(err, "refresh token"))
	}
	if rc.ClientID != cl.ID {
		return tokenResponse{}, invalidGrant("the refresh token was issued to another client, not to %q", cl.ID)
	}
	if why := s.tokenRefused(rc, token.Refresh); why != "" {
		return tokenResponse{}, invalidGrant("%s", why)
	}
	// A scope parameter narrows this access token only (RFC 6749 §6: the
	// requested scope "MUST NOT include any scope not originally granted");
	// "" gives the grant's full scope.
	scope := form.Get("scope")
	if !protocol.ValidScope(scope) {
		return tokenResponse{}, protocol.ErrInvalidScope.WithDescription("the scope parameter holds characters RFC 6749 §3.3 does not allow")
	}
	scope = strings.Join(protocol.ParseScope(scope), " ")
	u := s.bySubject[rc.Subject]
	if u == nil {
		return tokenResponse{}, invalidGrant("the user of the refresh token is no longer configured at the issuer")
	}
	rotate := !s.cfg.DisableRefreshRotation
	var resp tokenResponse
	err = s.stores.token.RotateRefresh(ctx, rc.JTI, rotate, now, func(rec storage.RefreshToken) (storage.Issued, error) {
		if rec.ClientID != cl.ID {
			return storage.Issued{}, invalidGrant("the refresh token was issued to another client, not to %q", cl.ID)
		}
		// The stored record holds the grant's scope (a refresh token
		// minted before narrowed refreshes kept it may carry less).
		if scope != "" && !protocol.SubsetScope(scope, rec.Scope) {
			return storage.Issued{}, protocol.ErrInvalidScope.WithDescription("the requested scope exceeds the scope of the grant (%s); a refresh may only narrow it (RFC 6749 §6)", rec.Scope)
		}
		resource, err := s.narrowResource(cl, form, rec.Resource)
		if err != nil {
			return storage.Issued{}, err
		}
		g := grantInfo{ID: rec.GrantID, Subject: rec.Subject, SID: rec.SID, Scope: rec.Scope, AccessScope: scope, AuthTime: rc.AuthTime, Resource: resource}
		var rt *storage.RefreshToken
		resp, rt, err = s.mint(GrantRefreshToken, cl, g, rotate, "", releasedClaims(u, g.accessScope()), now)
		if err != nil {
			return storage.Issued{}, err
		}
		if rt == nil {
			resp.RefreshToken = "" // rotation off: the client keeps its refresh token
			return storage.Issued{}, nil
		}
		grant := &storage.Grant{ID: rec.GrantID, ClientID: cl.ID, Subject: rec.Subject, SID: rec.SID, Scope: rec.Scope,
			AuthTime: rc.AuthTime, Created: rec.IssuedAt, ExpiresAt: rt.ExpiresAt}
		if cj, err := json.Marshal(releasedClaims(u, rec.Scope)); err == nil {
			grant.Claims = cj
		}
		return storage.Issued{Grant: grant, Refresh: rt}, nil
	})
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, storage.ErrExpired):
		return tokenResponse{}, invalidGrant("the refresh token expired; sign in again")
	case errors.Is(err, storage.ErrNotFound):
		denied, derr := s.deny.Denied(ctx, "", rc.GrantID)
		if derr != nil {
			return tokenResponse{}, derr
		}
		if denied || !rotate {
			return tokenResponse{}, invalidGrant("the refresh token was revoked (by the client, by a logout, or with its grant); sign in again")
		}
		// Not on the allowlist and its grant not revoked: it was rotated
		// away (or its access token revoked). A rotated-away token
		// presented again means it leaked, or two refreshes raced: RFC
		// 9700 §4.14.2 revokes the whole grant.
		if rerr := s.revokeGrant(ctx, rc.GrantID, now); rerr != nil {
			return tokenResponse{}, rerr
		}
		s.metrics.reuse.Inc()
		s.log.Warn("refresh token reused after rotation; its grant is revoked", "client_id", cl.ID, "grant_id", rc.GrantID, "sub", rc.Subject)
		return tokenResponse{}, invalidGrant("the refresh token was already used and rotated away (or revoked with its access token); as a precaution against a stolen token every token of its grant is now revoked (RFC 9700 §4.14.2); sign in again")
	}
	return tokenResponse{}, err
}

// clientCredentials is the client_credentials grant (RFC 6749 §4.4): an
// access token for the client itself, no refresh token (§4.4.3).
func (s *Server) clientCredentials(cl *client, form url.Values) (tokenResponse, error) {
	if !cl.hasGrant(GrantClientCredentials) || cl.public() {
		return tokenResponse{}, protocol.ErrUnauthorizedClient.WithDescription("client %q is not allowed the client_credentials grant", cl.ID)
	}
	// A resource indicator (RFC 8707 §2) binds the client's own token to
	// one resource (an agent calling an MCP server), with its scopes.
	resource, err := s.requestedResource(cl, form)
	if err != nil {
		return tokenResponse{}, err
	}
	scope := form.Get("scope")
	if err := s.checkScopeFor(cl, scope, resource); err != nil {
		return tokenResponse{}, err
	}
	for _, sc := range protocol.ParseScope(scope) {
		if sc == ScopeOpenID || sc == ScopeOfflineAccess {
			return tokenResponse{}, protocol.ErrInvalidScope.WithDescription("scope %q needs a user; client_credentials tokens act for the client itself", sc)
		}
	}
	now := s.now()
	g := grantInfo{Subject: ClientSubject(cl.ID), Scope: strings.Join(protocol.ParseScope(scope), " "), Resource: resource}
	resp, _, err := s.mint(GrantClientCredentials, cl, g, false, "", nil, now)
	return resp, err
}

// ClientSubjectPrefix begins the sub of every token a client gets for
// itself (client_credentials): "client:" + client_id.
//
// RFC 9068 §2.2 has such a sub "correspond to an identifier the
// authorization server uses to indicate the client application", and §5
// warns that a resource server keying data by sub must not mistake a
// client for a user. Client ids and user subjects are separate
// namespaces: with the bare client id as sub, a client registered as
// "alice" would read user alice's data at every resource server. So the
// sub is prefixed (client ids cannot hold ':', user subjects may not begin
// with the prefix: both are refused at start), the token carries
// gty=client_credentials, and introspection reports no username for it.
// Keycloak reaches the same end with a service-account-<client> user per
// client; Auth0 with sub <client>@clients and gty.
const ClientSubjectPrefix = "client:"

// ClientSubject is the sub of client id's client_credentials tokens.
func ClientSubject(clientID string) string { return ClientSubjectPrefix + clientID }

// isClientToken reports whether tc is a client's own token (no user).
func isClientToken(tc *token.Claims) bool {
	return tc.GrantType == GrantClientCredentials || strings.HasPrefix(tc.Subject, ClientSubjectPrefix)
}

// mint makes the tokens of one token response: an access token (RFC 9068),
// a refresh token when withRefresh (returned with its allowlist record),
// and an ID token when the scope has openid.
func (s *Server) mint(grantType string, cl *client, g grantInfo, withRefresh bool, nonce string, claims map[string]any, now time.Time) (tokenResponse, *storage.RefreshToken, error) {
	now = now.Truncate(time.Second)
	scope := g.accessScope()
	atc := token.Claims{
		Subject: g.Subject, Audience: tokenAudience(cl, g.Resource), ClientID: cl.ID, Scope: scope,
		IssuedAt: now, Expiry: now.Add(s.cfg.AccessTokenTTL), AuthTime: g.AuthTime, SID: g.SID, GrantID: g.ID,
	}
	if grantType == GrantClientCredentials {
		atc.GrantType = GrantClientCredentials // marks a token that acts for no user
	}
	// The user's groups and roles go into the access token too (when
	// their scopes were granted, and so released in claims), as Keycloak
	// puts realm_access.roles there: resource servers and gateways
	// authorize by them without a userinfo call.
	for _, k := range []string{"groups", "roles"} {
		if v, ok := claims[k]; ok {
			if atc.Extra == nil {
				atc.Extra = map[string]any{}
			}
			atc.Extra[k] = v
		}
	}
	at, err := s.codec.Mint(token.Access, atc)
	if err != nil {
		return tokenResponse{}, nil, fmt.Errorf("mint access token: %w", err)
	}
	format := string(s.codec.Format())
	s.metrics.minted.WithLabelValues(grantType, "access", format).Inc()
	resp := tokenResponse{AccessToken: at, TokenType: "Bearer", ExpiresIn: int64(s.cfg.AccessTokenTTL / time.Second), Scope: scope,
		audit: grantAudit{subject: g.Subject, audience: tokenAudience(cl, g.Resource), grantID: g.ID, tokenHash: tokenDigest(at)}}

	var rec *storage.RefreshToken
	if withRefresh && g.ID != "" {
		jti := token.NewID()
		exp := now.Add(s.cfg.RefreshTokenTTL)
		rt, err := s.codec.Mint(token.Refresh, token.Claims{
			Subject: g.Subject, ClientID: cl.ID, Scope: g.Scope, JTI: jti,
			IssuedAt: now, Expiry: exp, AuthTime: g.AuthTime, SID: g.SID, GrantID: g.ID,
		})
		if err != nil {
			return tokenResponse{}, nil, fmt.Errorf("mint refresh token: %w", err)
		}
		s.metrics.minted.WithLabelValues(grantType, "refresh", s.codec.FormatOf(token.Refresh)).Inc()
		resp.RefreshToken = rt
		resp.RefreshExpiresIn = int64(s.cfg.RefreshTokenTTL / time.Second)
		rec = &storage.RefreshToken{JTI: jti, GrantID: g.ID, ClientID: cl.ID, Subject: g.Subject, SID: g.SID, Scope: g.Scope, IssuedAt: now, ExpiresAt: exp, Resource: g.Resource}
	}

	if protocol.HasScope(scope, ScopeOpenID) {
		extra := make(map[string]any, len(claims))
		for k, v := range claims {
			if !token.IsReserved(k) {
				extra[k] = v
			}
		}
		idt, err := s.codec.Mint(token.ID, token.Claims{
			Subject: g.Subject, Audience: []string{cl.ID}, ClientID: cl.ID, Nonce: nonce,
			IssuedAt: now, Expiry: now.Add(s.cfg.IDTokenTTL), AuthTime: g.AuthTime, SID: g.SID,
			AccessTokenHash: token.AccessTokenHash(at, s.codec.Algorithm(token.ID)), Extra: extra,
		})
		if err != nil {
			return tokenResponse{}, nil, fmt.Errorf("mint ID token: %w", err)
		}
		s.metrics.minted.WithLabelValues(grantType, "id", string(token.FormatSigned)).Inc()
		resp.IDToken = idt
	}
	return resp, rec, nil
}

// grantDenyUntil is how long a revoked grant stays denylisted: past the
// expiry of any token it may have minted (its refresh tokens live longest
// and keep the "revoked" answer exact), plus the purge delay and leeway.
func (s *Server) grantDenyUntil(now time.Time) time.Time {
	return now.Add(max(s.cfg.AccessTokenTTL, s.cfg.RefreshTokenTTL) + s.cfg.PurgeDelay + token.DefaultLeeway)
}

// revokeGrant revokes every token of a grant and caches the denial, so
// this instance refuses its access tokens at once.
func (s *Server) revokeGrant(ctx context.Context, grantID string, now time.Time) error {
	until := s.grantDenyUntil(now)
	if err := s.stores.token.RevokeGrant(bgContext(ctx), grantID, until, now); err != nil {
		return fmt.Errorf("revoke grant: %w", err)
	}
	s.deny.Add(storage.DenyEntry{Kind: storage.DenyGrant, ID: grantID, Until: until})
	s.metrics.revocations.WithLabelValues("grant").Inc()
	return nil
}

// describeTokenError names why a token was refused, for error_description
// and the log (never the token itself).
func describeTokenError(err error, what string) string {
	switch {
	case errors.Is(err, token.ErrExpired):
		return "the " + what + " expired"
	case errors.Is(err, token.ErrNotYetValid):
		return "the " + what + " is not valid yet (its nbf or iat is in the future; check the clocks)"
	case errors.Is(err, token.ErrWrongType):
		return "the token is not " + article(what) + " " + what + " (its typ header is of another kind of token)"
	case errors.Is(err, token.ErrWrongIssuer):
		return "the " + what + " was issued by another issuer"
	case errors.Is(err, token.ErrUnknownKey):
		return "the " + what + " names a key this issuer does not have (issued by another issuer, or its key was retired and removed)"
	case errors.Is(err, token.ErrWrongAlg):
		return "the " + what + " uses an algorithm this issuer does not use for it"
	case errors.Is(err, token.ErrSignature):
		return "the " + what + "'s signature does not verify"
	case errors.Is(err, token.ErrDecrypt):
		return "the " + what + " does not decrypt with this issuer's keys"
	}
	return "the " + what + " is malformed"
}

// logToken logs a token-related event without the token.
func (s *Server) logToken(c *fiber.Ctx, msg string, attrs ...slog.Attr) {
	attrs = append(attrs, slog.String("request_id", obs.RequestID(c)))
	s.log.LogAttrs(c.UserContext(), slog.LevelInfo, msg, attrs...)
}

// article is the indefinite article of what ("an access token", "a
// refresh token").
func article(what string) string {
	if what != "" && strings.ContainsRune("aeiou", rune(what[0])) {
		return "an"
	}
	return "a"
}
