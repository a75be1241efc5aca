package issuer

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/token"
	"github.com/bffgate/bffgate/issuer/trust"
)

// Token exchange (RFC 8693): the issuer as a Security Token Service.
//
// A client allowed by its policy (Client.TokenExchange) trades a subject
// token (one of this issuer's access, refresh or ID tokens, or a JWT of a
// trusted issuer) for an access token made for one target: its aud is
// exactly the requested audience and resource values, its scope at most
// the subject's, its lifetime at most the subject's remaining life and the
// policy's maximum. With an actor token the exchange is a delegation and
// the issued token records the actor in act (§4.1), nested when the
// subject already had one; without, an impersonation, which the policy
// must allow. A may_act claim in the subject token (§4.4) limits who may
// act for it.
//
// The issued token carries the subject's grant_id: revoking that grant
// (logout, a refresh token reuse, /revoke of its refresh token) denylists
// every token exchanged from it on every instance, as it does the
// grant's own access tokens.

// Exchange limits.
const (
	// maxExchangeTokenLen bounds subject_token and actor_token: foreign
	// access tokens (Keycloak's, Entra's) exceed the 4 KiB of other
	// parameters.
	maxExchangeTokenLen = 16 << 10
	// maxActDepth bounds a delegation chain (nested act claims).
	maxActDepth = 8
	// maxExchangeTargets bounds the audience and resource values of one
	// request.
	maxExchangeTargets = 8
)

// exchangeResponse is the token exchange response (RFC 8693 §2.2.1): no
// refresh token (§2.2.1 allows one; an exchanged token is renewed by
// exchanging again, so that its subject's revocation always reaches it).
type exchangeResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// exchangeRequest is the parsed request (RFC 8693 §2.1).
type exchangeRequest struct {
	subjectToken, subjectType string
	actorToken, actorType     string
	requestedType             string
	audiences, resources      []string
	scope                     string
}

// party is a verified subject or actor token.
type party struct {
	Subject  string
	ClientID string
	// Issuer is the trusted issuer of a foreign token, "" for this
	// issuer's own.
	Issuer   string
	Scope    string
	Expiry   time.Time
	GrantID  string
	SID      string
	AuthTime time.Time
	// Act and MayAct are the token's own act and may_act claims.
	Act    map[string]any
	MayAct any
	// local reports a subject that is a user of this issuer.
	local bool
}

// exchangeOutcome is what the log line and the metric report.
type exchangeOutcome struct {
	subject, actor, subjectIssuer string
	targets                       []string
	scope                         string
	grantID, jti                  string
	expiry                        time.Time
}

// tokenTypes maps the accepted subject and actor token types onto the
// kinds of this issuer's tokens tried, in order.
var tokenTypes = map[string][]token.Kind{
	TokenTypeAccess:  {token.Access},
	TokenTypeRefresh: {token.Refresh},
	TokenTypeID:      {token.ID},
	TokenTypeJWT:     {token.Access, token.ID},
}

// parseTokenForm parses the token endpoint's body as parseForm does, but
// lets a token exchange repeat audience and resource (RFC 8693 §2.1, RFC
// 8707 §2: "may be used multiple times") and carry subject and actor
// tokens longer than other parameters.
func parseTokenForm(c *fiber.Ctx) (url.Values, error) {
	form, err := formValues(c)
	if err != nil {
		return nil, err
	}
	exchange := len(form["grant_type"]) == 1 && form.Get("grant_type") == GrantTokenExchange
	for k, vals := range form {
		repeatable := exchange && (k == "audience" || k == "resource")
		limit := maxParamLen
		if exchange && (k == "subject_token" || k == "actor_token") {
			limit = maxExchangeTokenLen
		}
		if len(vals) > 1 && !repeatable {
			return nil, protocol.ErrInvalidRequest.WithDescription("parameter %q is repeated; each parameter may appear once (RFC 6749 §3.1)", clip(k, 64))
		}
		if !utf8.ValidString(k) {
			return nil, protocol.ErrInvalidRequest.WithDescription("parameter %q is not valid UTF-8", clip(strings.ToValidUTF8(k, "?"), 64))
		}
		for _, v := range vals {
			if len(v) > limit {
				return nil, protocol.ErrInvalidRequest.WithDescription("parameter %q is longer than %d bytes", clip(k, 64), limit)
			}
			if !utf8.ValidString(v) {
				return nil, protocol.ErrInvalidRequest.WithDescription("parameter %q is not valid UTF-8", clip(k, 64))
			}
		}
	}
	return form, nil
}

// parseExchange reads and checks the parameters of a token exchange
// request: missing, empty or unknown values are invalid_request.
func parseExchange(form url.Values) (exchangeRequest, error) {
	r := exchangeRequest{
		subjectToken: form.Get("subject_token"), subjectType: form.Get("subject_token_type"),
		actorToken: form.Get("actor_token"), actorType: form.Get("actor_token_type"),
		requestedType: form.Get("requested_token_type"), scope: form.Get("scope"),
	}
	bad := protocol.ErrInvalidRequest.WithDescription
	switch {
	case r.subjectToken == "":
		return r, bad("subject_token is missing (RFC 8693 §2.1)")
	case r.subjectType == "":
		return r, bad("subject_token_type is missing (RFC 8693 §2.1)")
	case tokenTypes[r.subjectType] == nil:
		return r, bad("subject_token_type %q is not supported (access_token, refresh_token, id_token or jwt, as urn:ietf:params:oauth:token-type:...)", clip(r.subjectType, 80))
	case r.actorToken != "" && r.actorType == "":
		return r, bad("actor_token_type is missing; RFC 8693 §2.1 requires it with actor_token")
	case r.actorToken == "" && r.actorType != "":
		return r, bad("actor_token_type is set without actor_token (RFC 8693 §2.1)")
	case r.actorType != "" && (tokenTypes[r.actorType] == nil || r.actorType == TokenTypeRefresh):
		return r, bad("actor_token_type %q is not supported (access_token, id_token or jwt)", clip(r.actorType, 80))
	}
	switch r.requestedType {
	case "":
		r.requestedType = TokenTypeAccess
	case TokenTypeAccess, TokenTypeJWT:
	default:
		return r, bad("requested_token_type %q is not supported: this issuer issues access_token or jwt (as urn:ietf:params:oauth:token-type:...)", clip(r.requestedType, 80))
	}
	if _, dup := form["audience"]; dup && slices.Contains(form["audience"], "") {
		return r, bad("an audience parameter is empty")
	}
	if _, dup := form["resource"]; dup && slices.Contains(form["resource"], "") {
		return r, bad("a resource parameter is empty")
	}
	r.audiences = dedupe(form["audience"])
	r.resources = dedupe(form["resource"])
	if len(r.audiences)+len(r.resources) > maxExchangeTargets {
		return r, protocol.ErrInvalidTarget.WithDescription("the request names more than %d audience and resource values", maxExchangeTargets)
	}
	return r, nil
}

func dedupe(vals []string) []string {
	var out []string
	for _, v := range vals {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// handleTokenExchange is the token-exchange grant (RFC 8693 §2). It
// writes its own response: every exchange, granted or refused, is one log
// line and one count.
func (s *Server) handleTokenExchange(c *fiber.Ctx, cl *client, method string, form url.Values) error {
	var out exchangeOutcome
	resp, err := s.tokenExchange(c.UserContext(), cl, form, &out)
	s.auditExchange(c, cl, method, out, err)
	attrs := []slog.Attr{
		slog.String("client_id", cl.ID), slog.String("decision", "granted"),
		slog.String("sub", out.subject), slog.String("actor", out.actor),
		slog.String("target", strings.Join(out.targets, " ")), slog.String("scope", out.scope),
		slog.String("request_id", obs.RequestID(c)),
	}
	if out.subjectIssuer != "" {
		attrs = append(attrs, slog.String("subject_issuer", out.subjectIssuer))
	}
	if err == nil {
		s.metrics.exchanges.WithLabelValues(cl.ID, "granted", "").Inc()
		attrs = append(attrs, slog.String("grant_id", out.grantID), slog.String("jti", out.jti), slog.Time("exp", out.expiry))
		s.log.LogAttrs(c.UserContext(), slog.LevelInfo, "token exchange", attrs...)
		noStore(c)
		return c.JSON(resp)
	}
	pe := toProtocol(err)
	s.metrics.exchanges.WithLabelValues(cl.ID, "refused", pe.Code).Inc()
	s.metrics.errors.WithLabelValues(epToken, pe.Code).Inc()
	attrs[1] = slog.String("decision", "refused")
	attrs = append(attrs, slog.String("error", pe.Code), slog.String("reason", pe.Description))
	if cause := pe.Cause(); cause != nil {
		attrs = append(attrs, slog.String("cause", cause.Error()))
	}
	level := slog.LevelInfo
	if pe.Status >= 500 {
		level = slog.LevelError
	}
	s.log.LogAttrs(c.UserContext(), level, "token exchange", attrs...)
	return s.writeErrorLogged(c, pe)
}

// auditExchange writes the audit record of a token exchange: the
// delegated subject, the actor, the targets, the new token's jti (never a
// token).
func (s *Server) auditExchange(c *fiber.Ctx, cl *client, method string, out exchangeOutcome, err error) {
	r := AuditRecord{Action: "token_exchange", ClientID: cl.ID, GrantType: GrantTokenExchange, AuthMethod: method,
		Subject: out.subject, Actor: out.actor, Audience: out.targets, Scope: out.scope}
	if err != nil {
		r.Decision, r.Reason = DecisionDeny, reasonOf(err)
	} else {
		r.Decision, r.TokenID = DecisionAllow, out.jti
	}
	s.audit(c, r)
}

// tokenExchange makes the checks of RFC 8693 §2.1 and mints the token.
func (s *Server) tokenExchange(ctx context.Context, cl *client, form url.Values, out *exchangeOutcome) (exchangeResponse, error) {
	pol := &cl.TokenExchange
	if !pol.Allowed {
		return exchangeResponse{}, protocol.ErrUnauthorizedClient.WithDescription("client %q is not allowed the token-exchange grant (issuer.clients[].token_exchange.allowed)", cl.ID)
	}
	req, err := parseExchange(form)
	if err != nil {
		return exchangeResponse{}, err
	}
	targets, err := s.exchangeTargets(cl, req)
	out.targets = targets
	if err != nil {
		return exchangeResponse{}, err
	}
	subject, err := s.verifyParty(ctx, cl, req.subjectToken, req.subjectType, "subject token")
	if err != nil {
		return exchangeResponse{}, err
	}
	out.subject, out.subjectIssuer, out.grantID = subject.Subject, subject.Issuer, subject.GrantID

	// Delegation or impersonation (RFC 8693 §1.1).
	var actor *party
	if req.actorToken != "" {
		if actor, err = s.verifyParty(ctx, cl, req.actorToken, req.actorType, "actor token"); err != nil {
			return exchangeResponse{}, err
		}
		out.actor = actor.Subject
	} else if !pol.Impersonation {
		return exchangeResponse{}, protocol.ErrUnauthorizedClient.WithDescription("client %q may only delegate (token_exchange.impersonation is off): send an actor_token naming who acts for the subject", cl.ID)
	}
	if err := s.checkMayAct(cl, subject, actor); err != nil {
		return exchangeResponse{}, err
	}
	act, err := actClaim(subject, actor)
	if err != nil {
		return exchangeResponse{}, err
	}

	// Scope: only narrows (RFC 8693 §2.1 scope; RFC 6749 §3.3).
	if !protocol.ValidScope(req.scope) {
		return exchangeResponse{}, protocol.ErrInvalidScope.WithDescription("the scope parameter holds characters RFC 6749 §3.3 does not allow")
	}
	scope := strings.Join(protocol.ParseScope(req.scope), " ")
	for _, sc := range protocol.ParseScope(scope) {
		if !protocol.HasScope(subject.Scope, sc) {
			have := subject.Scope
			if have == "" {
				have = "none"
			}
			return exchangeResponse{}, protocol.ErrInvalidScope.WithDescription("scope %q is not in the subject token's scope (%s); an exchange may only narrow it", clip(sc, 64), have)
		}
	}
	if scope == "" {
		scope = subject.Scope
	}
	out.scope = scope

	// Lifetime: the policy's maximum, the subject's (and the actor's)
	// remaining life.
	now := s.now().Truncate(time.Second)
	exp := now.Add(s.cfg.AccessTokenTTL)
	if pol.MaxLifetime > 0 {
		exp = now.Add(pol.MaxLifetime)
	}
	if subject.Expiry.Before(exp) {
		exp = subject.Expiry.Truncate(time.Second)
	}
	if actor != nil && actor.Expiry.Before(exp) {
		exp = actor.Expiry.Truncate(time.Second)
	}
	if !exp.After(now) {
		return exchangeResponse{}, invalidGrant("the subject or actor token expires within a second; nothing is left to exchange")
	}

	tc := token.Claims{
		Subject: subject.Subject, Audience: targets, ClientID: cl.ID, Scope: scope,
		IssuedAt: now, Expiry: exp, AuthTime: subject.AuthTime, SID: subject.SID, GrantID: subject.GrantID,
		GrantType: GrantTokenExchange,
	}
	if act != nil {
		tc.Extra = map[string]any{"act": act}
	}
	if u := s.bySubject[subject.Subject]; u != nil && subject.local {
		for k, v := range releasedClaims(u, scope) {
			if k == "groups" || k == "roles" {
				if tc.Extra == nil {
					tc.Extra = map[string]any{}
				}
				tc.Extra[k] = v
			}
		}
	}
	tc.JTI = token.NewID()
	at, err := s.codec.Mint(token.Access, tc)
	if err != nil {
		return exchangeResponse{}, protocol.ErrServerError.WithCause(err)
	}
	s.metrics.minted.WithLabelValues(GrantTokenExchange, "access", string(s.codec.Format())).Inc()
	out.jti, out.expiry = tc.JTI, exp
	return exchangeResponse{
		AccessToken: at, IssuedTokenType: req.requestedType, TokenType: "Bearer",
		ExpiresIn: int64(exp.Sub(now) / time.Second), Scope: scope,
	}, nil
}

// exchangeTargets returns the aud of the issued token: every requested
// audience and resource, each allowed by the client's policy; with none
// requested, the policy's only target when it has exactly one.
func (s *Server) exchangeTargets(cl *client, req exchangeRequest) ([]string, error) {
	pol := &cl.TokenExchange
	for _, r := range req.resources {
		if err := checkResource(r); err != nil {
			return nil, protocol.ErrInvalidTarget.WithDescription("resource %v", err)
		}
	}
	targets := append(slices.Clone(req.audiences), req.resources...)
	targets = dedupe(targets)
	if len(targets) == 0 {
		all := append(slices.Clone(pol.Audiences), pol.Resources...)
		if len(all) != 1 {
			return nil, protocol.ErrInvalidTarget.WithDescription("name the target with audience or resource; client %q may ask for %s", cl.ID, strings.Join(all, ", "))
		}
		return all, nil
	}
	for _, a := range req.audiences {
		if !slices.Contains(pol.Audiences, a) {
			return targets, protocol.ErrInvalidTarget.WithDescription("client %q may not obtain tokens for audience %q (token_exchange.audiences)", cl.ID, clip(a, 80))
		}
	}
	for _, r := range req.resources {
		if !slices.Contains(pol.Resources, r) {
			return targets, protocol.ErrInvalidTarget.WithDescription("client %q may not obtain tokens for resource %q (token_exchange.resources)", cl.ID, clip(r, 80))
		}
	}
	return targets, nil
}

// verifyParty verifies a subject or actor token of type typ: one of this
// issuer's, checked exactly as introspection checks it (activeToken), or a
// JWT of a trusted issuer (issuer.trusted_issuers). what names it in
// errors ("subject token").
func (s *Server) verifyParty(ctx context.Context, cl *client, raw, typ, what string) (*party, error) {
	iss := trust.PeekIssuer(raw)
	if iss != "" && iss != s.cfg.Issuer {
		if typ == TokenTypeRefresh {
			return nil, invalidGrant("the %s is a refresh token of another issuer (%q); only this issuer's refresh tokens can be exchanged", what, clip(iss, 80))
		}
		if !s.trust.Trusts(iss) {
			return nil, invalidGrant("the %s was issued by %q, which this issuer does not trust (issuer.trusted_issuers)", what, clip(iss, 80))
		}
		t, err := s.trust.Verify(ctx, raw)
		if err != nil {
			if errors.Is(err, trust.ErrUnavailable) {
				return nil, protocol.ErrTemporarilyUnavailable.WithDescription("the keys of the %s's issuer cannot be fetched; retry later", what).WithCause(err)
			}
			return nil, invalidGrant("the %s of %s does not verify: %s", what, clip(iss, 80), trustReason(err)).WithCause(err)
		}
		p := &party{Subject: t.Subject, ClientID: t.ClientID, Issuer: t.Issuer, Scope: t.Scope, Expiry: t.Expiry, MayAct: t.Claims["may_act"]}
		p.Act, _ = t.Claims["act"].(map[string]any)
		if _, ok := t.Claims["act"]; ok && p.Act == nil {
			return nil, invalidGrant("the %s's act claim is not a JSON object (RFC 8693 §4.1)", what)
		}
		p.local = s.bySubject[p.Subject] != nil
		if at, ok := t.Claims["auth_time"].(float64); ok && at > 0 {
			p.AuthTime = time.Unix(int64(at), 0).UTC()
		}
		return p, nil
	}
	tc, _, why, err := s.activeToken(ctx, epToken, cl, raw, tokenTypes[typ])
	if err != nil {
		return nil, err
	}
	if tc == nil {
		return nil, invalidGrant("the %s is not active: %s", what, why)
	}
	p := &party{Subject: tc.Subject, ClientID: tc.ClientID, Scope: tc.Scope, Expiry: tc.Expiry,
		GrantID: tc.GrantID, SID: tc.SID, AuthTime: tc.AuthTime, MayAct: tc.Extra["may_act"]}
	if a, ok := tc.Extra["act"]; ok {
		if p.Act, ok = a.(map[string]any); !ok {
			return nil, invalidGrant("the %s's act claim is not a JSON object (RFC 8693 §4.1)", what)
		}
	}
	// A token of a login (it has a grant or a login session) names a
	// user, who must still be configured; a token this issuer exchanged
	// from a foreign one names a mapped subject and is taken as it is.
	if (tc.GrantID != "" || tc.SID != "") && !isClientToken(tc) {
		if s.bySubject[tc.Subject] == nil {
			return nil, invalidGrant("the user of the %s is no longer configured at the issuer", what)
		}
		p.local = true
	}
	return p, nil
}

// trustReason is the detail of a trust error ("its signature does not
// verify with the issuer's keys"), without the sentinel's words.
func trustReason(err error) string {
	msg := err.Error()
	for _, sentinel := range []error{trust.ErrInvalid, trust.ErrMalformed, trust.ErrSubject, trust.ErrUntrusted} {
		if errors.Is(err, sentinel) {
			if rest, ok := strings.CutPrefix(msg, sentinel.Error()+": "); ok {
				return rest
			}
		}
	}
	return strings.TrimPrefix(msg, "trust: ")
}

// checkMayAct enforces the subject token's may_act claim (RFC 8693 §4.4):
// when present, the party that acts (the actor token's, or without one
// the client itself) must be the one it names.
func (s *Server) checkMayAct(cl *client, subject, actor *party) error {
	if subject.MayAct == nil {
		return nil
	}
	m, ok := subject.MayAct.(map[string]any)
	if !ok || len(m) == 0 {
		return invalidGrant("the subject token's may_act claim is not a JSON object naming who may act (RFC 8693 §4.4)")
	}
	sub, cid, iss := ClientSubject(cl.ID), cl.ID, s.cfg.Issuer
	who := "client " + cl.ID
	if actor != nil {
		sub, cid, iss = actor.Subject, actor.ClientID, actor.Issuer
		if iss == "" {
			iss = s.cfg.Issuer
		}
		who = "actor " + actor.Subject
	}
	named := false
	for k, want := range map[string]string{"sub": sub, "client_id": cid, "iss": iss} {
		v, present := m[k]
		if !present {
			continue
		}
		named = named || k != "iss"
		if got, _ := v.(string); got != want {
			return invalidGrant("the subject token's may_act does not allow %s to act for its subject (its %s differs)", clip(who, 80), k)
		}
	}
	if !named {
		return invalidGrant("the subject token's may_act names neither a sub nor a client_id (RFC 8693 §4.4)")
	}
	return nil
}

// actClaim is the act claim of the issued token (RFC 8693 §4.1): the
// actor, with the subject's own act nested under it; without an actor
// (impersonation) the subject's act as it is, so that a chain on record
// is never dropped.
func actClaim(subject, actor *party) (map[string]any, error) {
	if actor == nil {
		return subject.Act, nil
	}
	act := map[string]any{"sub": actor.Subject}
	if actor.ClientID != "" {
		act["client_id"] = actor.ClientID
	}
	if actor.Issuer != "" {
		act["iss"] = actor.Issuer
	}
	if subject.Act != nil {
		act["act"] = subject.Act
	}
	depth := 0
	for a := act; a != nil; depth++ {
		if depth >= maxActDepth {
			return nil, invalidGrant("the delegation chain is longer than %d actors", maxActDepth)
		}
		next, ok := a["act"]
		if !ok {
			break
		}
		if a, ok = next.(map[string]any); !ok {
			return nil, invalidGrant("a nested act claim of the subject token is not a JSON object (RFC 8693 §4.1)")
		}
	}
	return act, nil
}

// exchangeAudienceAllowed reports whether an exchanged token's aud fits
// its client's current policy (checkAudience's rule for such tokens: a
// target removed from the policy stops being accepted).
func (c *client) exchangeAudienceAllowed(aud []string) bool {
	if !c.TokenExchange.Allowed || len(aud) == 0 {
		return false
	}
	for _, a := range aud {
		if !c.TokenExchange.allows(a) {
			return false
		}
	}
	return true
}

// exchangeEnabled reports whether any client may exchange tokens (the
// grant is advertised in discovery then).
func (s *Server) exchangeEnabled() bool {
	for _, c := range *s.clients.Load() {
		if c.TokenExchange.Allowed {
			return true
		}
	}
	return false
}

// newTrust builds the trusted issuers' verifier from cfg, mapping lookups
// onto users; hc fetches their key sets.
func newTrust(cfg Config, users map[string]*user, hc *http.Client) (*trust.Set, error) {
	return trust.New(trust.Config{
		Issuers:        cfg.TrustedIssuers,
		HTTPClient:     hc,
		Now:            cfg.Now,
		ReservedPrefix: ClientSubjectPrefix,
		// An ambiguous match (two users with one email) maps onto no
		// one rather than onto whichever comes first.
		Lookup: func(claim, value string) (string, bool) {
			var found []string
			for _, u := range users {
				switch {
				case claim == "preferred_username" && u.Username == value,
					claim == "sub" && u.Subject == value:
					found = append(found, u.Subject)
				case claim == "email":
					if e, _ := u.Claims["email"].(string); e != "" && strings.EqualFold(e, value) {
						if v, ok := u.Claims["email_verified"].(bool); !ok || v {
							found = append(found, u.Subject)
						}
					}
				}
			}
			if len(found) != 1 {
				return "", false
			}
			return found[0], true
		},
	})
}
