package bff

import (
	"errors"
	"log/slog"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/session"
)

// api serves every path outside BasePath: a configured API route through
// the proxy, anything else through the SPA handler (or 404 JSON).
func (g *Gateway) api(c *fiber.Ctx) error {
	// Whatever the answer (a refusal before the body was read above
	// all), the unread rest of the body must not become the next request.
	defer proxy.FinishBody(c)
	// Before any route is matched, and for the SPA handler too (which may
	// proxy to a dev server): a path an upstream could resolve above the
	// route it matched is refused, from the raw request URI.
	if err := proxy.CheckPath(c.Request().URI().PathOriginal()); err != nil {
		g.log.LogAttrs(c.UserContext(), slog.LevelInfo, "request path refused",
			slog.String("request_id", obs.RequestID(c)), slog.String("method", c.Method()), slog.Any("err", err))
		return writeError(c, newError(fiber.StatusBadRequest, "invalid_path", err.Error()+"; fix the URL"))
	}
	if g.proxy != nil {
		if r, ok := g.proxy.Match(c.Path()); ok {
			return g.forward(c, r)
		}
	}
	if g.cfg.SPA != nil {
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
	// A WebSocket upgrade is checked by its Origin (browsers cannot add
	// the anti-CSRF header to one), then by the session like any call.
	check := g.csrf.check
	if websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
		check = g.csrf.checkUpgrade
	}
	if reason := check(c); reason != "" {
		return g.csrf.reject(c, reason)
	}
	policy := g.routes[normPrefix(r.Prefix)]
	switch policy {
	case PolicyNone:
		return g.proxy.Forward(c, r, "")
	case PolicyClient:
		tok, err := g.tokens.ClientToken(c.UserContext())
		if err != nil {
			g.log.LogAttrs(c.UserContext(), slog.LevelError, "client credentials token unavailable",
				slog.String("request_id", obs.RequestID(c)), slog.String("route", r.Prefix), slog.Any("err", err))
			return writeError(c, newError(fiber.StatusServiceUnavailable, "provider_unavailable",
				"the gateway could not obtain its client token from the provider; retry shortly"))
		}
		err = g.proxy.Forward(c, r, tok)
		if !errors.Is(err, proxy.ErrInvalidToken) {
			return err
		}
		// The upstream refused the cached client token (revoked, keys
		// rotated): fetch a new one and replay once. If none comes, the
		// upstream's 401 stands.
		g.tokens.ForgetClientToken(tok)
		next, err := g.tokens.ClientToken(c.UserContext())
		if err != nil || next == tok {
			return nil
		}
		return g.proxy.Forward(c, r, next)
	}

	handle, s, err := g.current(c)
	if err != nil {
		return writeError(c, asError(err))
	}
	if s != nil {
		if handle, s, err = g.slide(c, handle, s); err != nil {
			return writeError(c, asError(err))
		}
	}
	if s == nil {
		if policy == PolicyUserOptional {
			err := g.proxy.Forward(c, r, "")
			if errors.Is(err, proxy.ErrInvalidToken) {
				return nil
			}
			return err
		}
		return writeError(c, g.loginRequired())
	}
	handle, s, err = g.fresh(c, handle, s, false)
	if err != nil {
		return writeError(c, asError(err))
	}
	err = g.proxy.Forward(c, r, s.AccessToken)
	if !errors.Is(err, proxy.ErrInvalidToken) {
		return err
	}
	// The upstream refused a token that looked fresh (revoked, or keys
	// rotated): refresh once and replay the request.
	_, s, err = g.fresh(c, handle, s, true)
	if err != nil {
		c.Response().ResetBody()
		c.Response().Header.Del(fiber.HeaderWWWAuthenticate)
		return writeError(c, asError(err))
	}
	return g.proxy.Forward(c, r, s.AccessToken)
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
		e.LoginURL = g.cfg.BasePath + "/login"
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
