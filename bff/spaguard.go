package bff

import (
	"errors"
	"log/slog"
	"net/url"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/obs"
)

// guardSPA decides gateway.spa's rules for a request the SPA would serve,
// and answers when they deny; it reports whether it answered.
//
// An anonymous request is decided over no claims, like a user-optional
// route's: rules that need a user deny it, and then signing in may help,
// so a page load (GET or HEAD asking for HTML) is sent to the login,
// which returns to it; a fetch gets 401 login_required. A signed-in user
// the rules deny gets 403: a page saying so (with a link to sign in as
// someone else) or {"error":"forbidden"} for a fetch. The gateway's own
// endpoints (BasePath) are not the SPA: /bff/user still tells a denied
// user's script who is signed in, and logout still works.
func (g *Gateway) guardSPA(c *fiber.Ctx) (bool, error) {
	handle, s, err := g.sessionOf(c)
	if err == nil && s != nil && g.spaRules.Source() == authz.SourceAccessToken {
		_, s, err = g.fresh(c, handle, s, false)
	}
	if err != nil {
		e := asError(err)
		if e.Status != fiber.StatusUnauthorized {
			return true, writeError(c, e)
		}
		s = nil // the session ended at the refresh: anonymous now
	}
	var claims map[string]any
	sub := ""
	if s != nil {
		sub = s.Subject
		var cerr error
		if claims, cerr = g.claims.claims(g.spaRules.Source(), s); cerr != nil {
			g.log.LogAttrs(c.UserContext(), slog.LevelWarn, "authorization claims unreadable",
				slog.String("request_id", obs.RequestID(c)), slog.String("route", "spa"),
				slog.String("claims_from", string(g.spaRules.Source())), slog.String("sub", sub), slog.Any("err", cerr))
		}
	}
	path, err := proxy.CanonicalPath(c.Request().URI().PathOriginal())
	if err != nil {
		return true, writeError(c, newError(fiber.StatusBadRequest, "invalid_path", err.Error()+"; fix the URL"))
	}
	dec := g.spaRules.Decide(authz.Input{Claims: claims, Method: c.Method(), Path: path, Host: string(c.Request().Host())})
	if dec.Allowed {
		g.met.decisions.WithLabelValues("spa", "allowed").Inc()
		return false, nil
	}
	result := "denied"
	if dec.Err != nil {
		result = "error"
	}
	g.met.decisions.WithLabelValues("spa", result).Inc()
	attrs := []slog.Attr{
		slog.String("request_id", obs.RequestID(c)), slog.String("route", "spa"),
		slog.String("method", c.Method()), slog.String("sub", sub), slog.Bool("signed_in", s != nil),
		slog.String("rule", dec.Rule), slog.String("condition", dec.Text),
	}
	if dec.Err != nil {
		attrs = append(attrs, slog.Any("err", dec.Err))
	}
	g.log.LogAttrs(c.UserContext(), slog.LevelInfo, "request forbidden by the SPA's rules", attrs...)

	page := (c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead) && !wantsJSON(c)
	login := g.base + "/login"
	if ret, err := validReturnURL(string(c.Request().RequestURI()), g.base); err == nil && ret != "/" {
		login += "?returnUrl=" + url.QueryEscape(ret)
	}
	if s == nil {
		if page {
			c.Set(fiber.HeaderCacheControl, "no-store")
			return true, c.Redirect(login, fiber.StatusFound)
		}
		return true, writeError(c, g.loginRequired())
	}
	if !page {
		return true, writeError(c, errForbidden)
	}
	sep := "?"
	if u, err := url.Parse(login); err == nil && u.RawQuery != "" {
		sep = "&"
	}
	return true, g.failPage(c, newError(fiber.StatusForbidden, "forbidden",
		"your account is not allowed to use this application; sign in with another account, or ask for access"),
		"Access denied", login+sep+"prompt=login", "Sign in with another account")
}

// checkSPARules validates gateway.spa's allow, deny and claims_from.
func (cfg *Config) checkSPARules() []error {
	var errs []error
	if _, err := authz.Compile(cfg.SPARules); err != nil {
		for _, e := range unjoin(err) {
			var fe *authz.FieldError
			if errors.As(e, &fe) {
				errs = append(errs, ferr("spa."+fe.Path, "%s", fe.Msg))
			} else {
				errs = append(errs, e)
			}
		}
	}
	if cfg.SPARules.ClaimsFrom == authz.SourceUserinfo && !cfg.Provider.UseUserinfo {
		errs = append(errs, ferr("spa.claims_from", "userinfo needs gateway.provider.use_userinfo: true (the session has no userinfo claims otherwise)"))
	}
	return errs
}
