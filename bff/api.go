package bff

import (
	"context"
	"errors"
	"log/slog"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/session"
)

// api serves every path outside BasePath: a configured API route through
// the proxy, anything else through the SPA handler (or 404 JSON).
func (g *Gateway) api(c *fiber.Ctx) error {
	raw := c.Request().URI().PathOriginal()
	// A path an upstream could resolve above the route it matched is
	// refused, from the raw request URI. MatchRaw parses the path as
	// CheckPath does and matches none that CheckPath refuses, so a
	// proxied call is matched first and parsed once here, not twice.
	if g.proxy != nil {
		if r, ok := g.proxy.MatchRaw(raw); ok {
			obs.SetRoute(c, r.Prefix) // the configured prefix, never the path
			return g.forward(c, r)
		}
	}
	// For the SPA handler too (which may proxy to a dev server).
	if err := proxy.CheckPath(raw); err != nil {
		g.log.LogAttrs(c.UserContext(), slog.LevelInfo, "request path refused",
			slog.String("request_id", obs.RequestID(c)), slog.String("method", c.Method()), slog.Any("err", err))
		return writeError(c, newError(fiber.StatusBadRequest, "invalid_path", err.Error()+"; fix the URL"))
	}
	if g.cfg.SPA != nil {
		obs.SetRoute(c, "spa")
		if g.spaRules != nil {
			if answered, err := g.guardSPA(c); answered {
				return err
			}
		}
		return g.cfg.SPA(c)
	}
	return writeError(c, newError(fiber.StatusNotFound, "not_found",
		"nothing is served at "+c.Path()+": it is neither a gateway endpoint nor a configured API route"))
}

// forward proxies one API call under its route's policy. It never answers
// a redirect: no session is 401 JSON with the login URL, whatever the
// Accept header says, since a fetch that follows a redirect to the provider
// fails on CORS and the SPA cannot tell why.
func (g *Gateway) forward(c *fiber.Ctx, r *proxy.Route) error {
	if b := g.bearers[normPrefix(r.Prefix)]; b != nil {
		// Bearer callers are no browsers: no CSRF rule, no cookie.
		if done, err := g.forwardBearer(c, r, b); done {
			return err
		}
	}
	// A WebSocket upgrade is checked by its Origin (browsers cannot add
	// the anti-CSRF header to one), then by the session like any call.
	check := g.csrf.check
	if proxy.IsWebSocketUpgrade(c) {
		check = g.csrf.checkUpgrade
	}
	if reason := check(c); reason != "" {
		return g.csrf.reject(c, reason)
	}
	policy := g.routes[normPrefix(r.Prefix)]
	rules := g.rules[normPrefix(r.Prefix)]
	var src proxy.TokenSource
	switch policy {
	case PolicyNone:
		src = proxy.Bearer("")
	case PolicyClient:
		src = &clientTokens{g: g, c: c, route: r.Prefix}
	default:
		handle, s, err := g.current(c)
		if err != nil {
			return writeError(c, asError(err))
		}
		if s != nil {
			if handle, s, err = g.slide(c, handle, s); err != nil {
				return writeError(c, asError(err))
			}
		}
		if m := g.mcps[normPrefix(r.Prefix)]; m != nil {
			sub := ""
			if s != nil {
				sub = s.Subject
			}
			if done, err := g.checkMCP(c, r.Prefix, nil, m, nil, sub); done {
				return err
			}
		}
		switch {
		case s != nil:
			src = &sessionTokens{g: g, c: c, handle: handle, s: s, route: r.Prefix, rules: rules, id: g.idents[normPrefix(r.Prefix)],
				exchange: g.exchanges[normPrefix(r.Prefix)]}
		case policy == PolicyUserOptional:
			// Anonymous: the upstream's 401, if any, is its answer. Rules
			// decide over no claims; a denial asks for a login, which may
			// bring the claims they want.
			if rules != nil {
				if e := g.authorize(c, r.Prefix, rules, nil); e != nil {
					return writeError(c, g.loginRequired())
				}
			}
			src = proxy.Bearer("")
		default:
			return writeError(c, g.loginRequired())
		}
	}
	if err := g.proxy.ForwardWith(c, r, src); err != nil {
		// Nothing was written: the token source failed (the session
		// ended, the provider is down), and its error is the answer.
		return writeError(c, asError(err))
	}
	return nil
}

// sessionTokens is the proxy's TokenSource for a route with a user
// session: the session's access token, refreshed first when it expires
// within the skew, and refreshed again (forced) when the upstream refuses
// it. Errors are the gateway's *Error answers (401 session_expired, 503),
// written by forward.
//
// With rules, the route's policy is decided on the session as it is once
// its tokens are fresh (so that claims read from the access token are the
// new token's), before anything is sent upstream; a denial is the
// 403 that forward writes.
type sessionTokens struct {
	g      *Gateway
	c      *fiber.Ctx
	handle string
	s      *session.Session
	route  string
	rules  *authz.Decider // nil: no rules
	id     *identity      // nil: no identity headers
	ident  []proxy.Header // id's headers for the session as Token left it
	// exchange, when set, sends a token exchanged for this target
	// instead of the session's (RFC 8693); sent is the one last sent.
	exchange *tokens.ExchangeTarget
	sent     string
}

var _ proxy.IdentitySource = (*sessionTokens)(nil)

// IdentityHeaders implements proxy.IdentitySource.
func (t *sessionTokens) IdentityHeaders() []proxy.Header { return t.ident }

// setIdentity builds the identity headers for s.
func (t *sessionTokens) setIdentity(s *session.Session) error {
	if t.id == nil {
		return nil
	}
	claims, err := t.g.claims.claims(t.id.source, s)
	var h []proxy.Header
	if err == nil {
		h, err = t.id.headersFrom(s, claims, t.g.now())
	}
	if err != nil {
		t.g.log.LogAttrs(t.c.UserContext(), slog.LevelError, "identity headers unavailable",
			slog.String("request_id", obs.RequestID(t.c)), slog.String("route", t.route), slog.String("sub", s.Subject), slog.Any("err", err))
		return newError(fiber.StatusBadGateway, "identity_unavailable",
			"the gateway could not build the identity headers for this route; the error is in its log")
	}
	t.ident = h
	return nil
}

func (t *sessionTokens) Token(ctx context.Context) (string, error) {
	handle, s, err := t.g.fresh(t.c, t.handle, t.s, false)
	if err != nil {
		return "", err
	}
	t.handle, t.s = handle, s
	if t.rules != nil {
		if e := t.g.authorize(t.c, t.route, t.rules, s); e != nil {
			return "", e
		}
	}
	if err := t.setIdentity(s); err != nil {
		return "", err
	}
	if t.exchange != nil {
		tok, err := t.exchanged(ctx)
		t.sent = tok
		return tok, err
	}
	return s.AccessToken, nil
}

// Renew refreshes a token that looked fresh but was refused (revoked,
// keys rotated): once per request, as the proxy calls it. On an exchange
// route the refused exchanged token is dropped, and the refreshed
// session's new token exchanged again.
func (t *sessionTokens) Renew(ctx context.Context, _ string) (string, error) {
	if t.exchange != nil {
		t.g.tokens.ForgetExchanged(t.s, *t.exchange, t.sent)
	}
	handle, s, err := t.g.fresh(t.c, t.handle, t.s, true)
	if err != nil {
		return "", err
	}
	t.handle, t.s = handle, s
	if t.rules != nil && t.rules.Source() == authz.SourceAccessToken {
		// The renewed token's claims decide the replay.
		if e := t.g.authorize(t.c, t.route, t.rules, s); e != nil {
			return "", e
		}
	}
	if err := t.setIdentity(s); err != nil {
		return "", err
	}
	if t.exchange != nil {
		tok, err := t.exchanged(ctx)
		t.sent = tok
		return tok, err
	}
	return s.AccessToken, nil
}

// clientTokens is the proxy's TokenSource for a route with the client
// policy: the gateway's cached client-credentials token (RFC 6749 §4.4),
// fetched again when the upstream refuses it.
type clientTokens struct {
	g     *Gateway
	c     *fiber.Ctx
	route string
}

func (t *clientTokens) Token(ctx context.Context) (string, error) {
	tok, err := t.g.tokens.ClientToken(ctx)
	if err != nil {
		t.g.log.LogAttrs(ctx, slog.LevelError, "client credentials token unavailable",
			slog.String("request_id", obs.RequestID(t.c)), slog.String("route", t.route), slog.Any("err", err))
		return "", newError(fiber.StatusServiceUnavailable, "provider_unavailable",
			"the gateway could not obtain its client token from the provider; retry shortly")
	}
	return tok, nil
}

// Renew drops the refused token (revoked, keys rotated) and fetches a
// new one. When none comes, the upstream's 401 stands: the gateway's
// client is not the user's session, so there is nothing to end.
func (t *clientTokens) Renew(ctx context.Context, refused string) (string, error) {
	t.g.tokens.ForgetClientToken(refused)
	next, err := t.g.tokens.ClientToken(ctx)
	if err != nil {
		t.g.log.LogAttrs(ctx, slog.LevelWarn, "client credentials token not renewed after the upstream refused it",
			slog.String("request_id", obs.RequestID(t.c)), slog.String("route", t.route), slog.Any("err", err))
		return "", nil
	}
	return next, nil
}

// fresh returns the session with an access token that does not expire
// within the refresh skew (refreshing it, single-flight, through
// bff/tokens), writing the new handle when the store issued one. force
// refreshes even a token that looks fresh.
func (g *Gateway) fresh(c *fiber.Ctx, handle string, s *session.Session, force bool) (string, *session.Session, error) {
	ctx := c.UserContext()
	ns, nh, err := g.tokens.Fresh(ctx, g.store, handle, s, force)
	switch {
	case err == nil:
	case errors.Is(err, tokens.ErrRefreshRejected), errors.Is(err, session.ErrNotFound):
		// The provider refused the refresh token (expired, revoked,
		// reused), or the session ended meanwhile: the session is over.
		_ = g.store.Delete(ctx, handle)
		g.jar.clearSession(c)
		g.log.LogAttrs(ctx, slog.LevelInfo, "session ended: refresh refused", slog.String("request_id", obs.RequestID(c)),
			slog.String("sub", s.Subject), slog.Any("err", err))
		e := newError(fiber.StatusUnauthorized, "session_expired",
			"the session has ended (the provider refused to renew its tokens); send the user to login_url")
		e.LoginURL = g.base + "/login"
		return "", nil, e
	case errors.Is(err, tokens.ErrProviderUnavailable):
		g.log.LogAttrs(ctx, slog.LevelWarn, "token refresh failed: provider unavailable", slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		return "", nil, newError(fiber.StatusServiceUnavailable, "provider_unavailable",
			"the sign-in provider cannot be reached to renew the session's tokens; the session is kept, retry shortly")
	case isUnavailable(err):
		g.log.LogAttrs(ctx, slog.LevelError, "token refresh failed: session store", slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		return "", nil, errStore
	default:
		g.log.LogAttrs(ctx, slog.LevelError, "token refresh failed", slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		return "", nil, newError(fiber.StatusBadGateway, "refresh_failed",
			"the gateway could not renew the session's tokens; the error is in its log")
	}
	if nh != "" && nh != handle {
		if err := g.writeSession(c, nh, ns); err != nil {
			return "", nil, err
		}
		handle = nh
	}
	return handle, ns, nil
}

// errForbidden is the answer to a call the route's rules deny: no detail
// for the browser (which rule, which claim), all of it in the log.
var errForbidden = &Error{Status: fiber.StatusForbidden, Code: "forbidden"}

// authorize decides the route's rules for the request in c and the
// session s (nil: anonymous). It returns errForbidden when they deny,
// after logging the route, the subject and the rule that denied.
func (g *Gateway) authorize(c *fiber.Ctx, route string, d *authz.Decider, s *session.Session) *Error {
	ctx := c.UserContext()
	var claims map[string]any
	var claimsErr error
	sub := ""
	if s != nil {
		sub = s.Subject
		claims, claimsErr = g.claims.claims(d.Source(), s)
		if claimsErr != nil {
			// No claims: the rules decide over none, which denies any
			// rule that needs one.
			g.log.LogAttrs(ctx, slog.LevelWarn, "authorization claims unreadable",
				slog.String("request_id", obs.RequestID(c)), slog.String("route", route),
				slog.String("claims_from", string(d.Source())), slog.String("sub", sub), slog.Any("err", claimsErr))
		}
	}
	return g.decide(c, route, d, claims, sub)
}

// sessionClaims returns the claims a route's rules read from s.
func sessionClaims(src authz.Source, s *session.Session) (map[string]any, error) {
	switch src {
	case authz.SourceIDToken:
		if s.IDToken == "" {
			return nil, errors.New("the session keeps no ID token")
		}
		return authz.JWTClaims(s.IDToken)
	case authz.SourceAccessToken:
		return authz.JWTClaims(s.AccessToken)
	}
	return authz.Claims(s.Claims)
}
