package bff

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/obs"
)

// logout answers {base}/logout: POST with the anti-CSRF header (checked by
// the route's guard), or GET with the sid parameter that /bff/user gave
// (Duende BFF's rule: a plain link or image from another site cannot log
// the user out, since it cannot know the sid). It deletes the session,
// revokes the refresh token (RFC 7009), clears the cookies and sends the
// browser to the provider's end_session_endpoint (OpenID Connect
// RP-Initiated Logout 1.0) with client_id, logout_hint (the sid) and
// post_logout_redirect_uri, or to PostLogoutRedirect when there is none.
func (g *Gateway) logout(c *fiber.Ctx) error {
	ctx := c.UserContext()
	handle, s, err := g.current(c)
	if err != nil {
		return writeError(c, asError(err))
	}
	local := g.pub.String() + g.cfg.PostLogoutRedirect
	if s == nil {
		g.jar.clearSession(c)
		return g.logoutRedirect(c, g.cfg.PostLogoutRedirect)
	}
	if c.Method() == fiber.MethodGet {
		sid := c.Query("sid")
		if sid == "" || subtle.ConstantTimeCompare([]byte(sid), []byte(logoutSID(s))) != 1 {
			g.log.LogAttrs(ctx, slog.LevelWarn, "logout refused: the sid parameter does not match the session",
				slog.String("request_id", obs.RequestID(c)), slog.Bool("sid_present", sid != ""))
			return g.failPage(c, newError(fiber.StatusBadRequest, "invalid_sid",
				"log out with the bff:logout_url that /bff/user gives (it carries the session's sid), or POST with the anti-CSRF header"),
				"Sign-out failed", "/", "Back to the application")
		}
	}
	if err := g.store.Delete(ctx, handle); err != nil {
		g.log.LogAttrs(ctx, slog.LevelError, "logout: session delete failed", slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		return writeError(c, errStore)
	}
	g.jar.clearSession(c)
	g.tokens.ForgetSession(s)
	if s.RefreshToken != "" {
		// Revocation is best effort: the session is gone either way, and
		// a provider outage must not keep the user signed in here.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := g.tokens.Revoke(rctx, s.RefreshToken); err != nil {
			g.log.LogAttrs(ctx, slog.LevelWarn, "logout: refresh token revocation failed", slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		}
		cancel()
	}
	g.met.logouts.Inc()
	g.log.LogAttrs(ctx, slog.LevelInfo, "logout", slog.String("request_id", obs.RequestID(c)), slog.String("sub", s.Subject))
	target := g.cfg.PostLogoutRedirect
	if g.meta.EndSession != "" {
		if u, err := url.Parse(g.meta.EndSession); err == nil {
			q := u.Query()
			// Not id_token_hint: it would put the ID token, and the
			// personal data in it, into a URL (the address bar, the
			// history, every access log on the way). The session's sid
			// as logout_hint (RP-Initiated Logout 1.0 §2) names the
			// session without exposing anything; the embedded issuer
			// accepts it as proof, other providers may ask the user.
			if s.SID != "" {
				q.Set("logout_hint", s.SID)
			}
			q.Set("client_id", g.cfg.Provider.ClientID)
			q.Set("post_logout_redirect_uri", local)
			u.RawQuery = q.Encode()
			target = u.String()
		}
	}
	return g.logoutRedirect(c, target)
}

// logoutRedirect sends the browser to target: a 302 for a navigation, or
// for a fetch (POST asking for JSON) 200 JSON {"redirect": target}, since
// a fetch would follow the redirect into the provider and fail on CORS.
func (g *Gateway) logoutRedirect(c *fiber.Ctx, target string) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	if c.Method() == fiber.MethodPost && wantsJSON(c) {
		return c.JSON(fiber.Map{"redirect": target})
	}
	return c.Redirect(target, fiber.StatusFound)
}

// logoutEvent is the events member of a logout token (OpenID Connect
// Back-Channel Logout 1.0 section 2.4).
const logoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// iatSkew bounds how far in the future a logout token's iat may be, and
// maxLogoutTokenAge how old it may be.
const (
	iatSkew           = 2 * time.Minute
	maxLogoutTokenAge = 10 * time.Minute
)

// backchannelLogout answers POST {base}/backchannel-logout (OpenID Connect
// Back-Channel Logout 1.0 section 2.8): the provider posts a logout token;
// the gateway verifies it (go-oidc: signature with the provider's keys,
// iss, aud, exp, the event, sid or sub, no nonce; here: iat, the event's
// value, jti not seen before) and ends the sessions it names.
func (g *Gateway) backchannelLogout(c *fiber.Ctx) error {
	ctx := c.UserContext()
	c.Set(fiber.HeaderCacheControl, "no-store")
	bad := func(reason string, err error) error {
		g.met.backchannelLogouts.WithLabelValues(reason).Inc()
		g.log.LogAttrs(ctx, slog.LevelWarn, "back-channel logout refused", slog.String("request_id", obs.RequestID(c)),
			slog.String("reason", reason), slog.String("err", err.Error()))
		return c.Status(fiber.StatusBadRequest).JSON(fiber.Map{"error": "invalid_request",
			"error_description": "the logout_token is missing or not valid: " + reason})
	}
	raw, err := logoutToken(c)
	if err != nil {
		g.met.backchannelLogouts.WithLabelValues("invalid_body").Inc()
		g.log.LogAttrs(ctx, slog.LevelWarn, "back-channel logout refused", slog.String("request_id", obs.RequestID(c)),
			slog.String("reason", "invalid_body"), slog.String("err", err.Error()))
		return errorHandler(c, err)
	}
	if raw == "" {
		return bad("invalid_token", errors.New("no logout_token form parameter"))
	}
	lt, err := g.verifier.VerifyLogout(oidc.ClientContext(ctx, g.cfg.Provider.HTTPClient), raw)
	if err != nil {
		return bad("invalid_token", err)
	}
	var extra struct {
		Events map[string]json.RawMessage `json:"events"`
	}
	if err := lt.Claims(&extra); err != nil {
		return bad("invalid_token", err)
	}
	if ev := strings.TrimSpace(string(extra.Events[logoutEvent])); !strings.HasPrefix(ev, "{") {
		return bad("invalid_token", errors.New("the backchannel-logout event is not a JSON object"))
	}
	now := g.now()
	if lt.IssuedAt.IsZero() || lt.IssuedAt.After(now.Add(iatSkew)) || now.Sub(lt.IssuedAt) > maxLogoutTokenAge {
		return bad("invalid_token", errors.New("iat is missing, in the future or too old"))
	}
	exp := lt.Expiry
	if exp.Before(now.Add(maxLogoutTokenAge)) {
		exp = now.Add(maxLogoutTokenAge) // remember the jti as long as it could be accepted
	}
	if !g.replay.add(lt.Issuer+"\x00"+lt.TokenID, exp, now) {
		return bad("replayed", errors.New("jti seen before"))
	}
	var n int
	how := "sub"
	if lt.SessionID != "" {
		how = "sid"
	}
	// The sessions of every frontend signed in through this provider and
	// client (usually this one alone), and of no other: a logout token
	// names a session at its audience only.
	for _, st := range g.sameClientStores() {
		var k int
		if lt.SessionID != "" {
			k, err = st.EndBySID(ctx, lt.SessionID)
		} else {
			k, err = st.EndBySubject(ctx, lt.Subject)
		}
		n += k
		if err != nil {
			break
		}
	}
	if err != nil {
		g.replay.remove(lt.Issuer + "\x00" + lt.TokenID) // let the provider retry
		g.met.backchannelLogouts.WithLabelValues("store_error").Inc()
		g.log.LogAttrs(ctx, slog.LevelError, "back-channel logout: ending sessions failed", slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		return writeError(c, errStore)
	}
	g.met.backchannelLogouts.WithLabelValues("ok").Inc()
	g.log.LogAttrs(ctx, slog.LevelInfo, "back-channel logout", slog.String("request_id", obs.RequestID(c)),
		slog.String("by", how), slog.String("sub", lt.Subject), slog.Int("sessions_ended", n))
	return c.SendStatus(fiber.StatusOK)
}

// maxBackchannelBody bounds the body of a back-channel logout request: a
// form with one logout token, a JWT of a kilobyte or two.
const maxBackchannelBody = 8 << 10

// logoutToken reads the logout_token parameter of the
// application/x-www-form-urlencoded body (Back-Channel Logout 1.0 §2.5)
// through edge.ReadBody: at most maxBackchannelBody bytes read from the
// stream (413 past that, whatever the client declares), never inflated
// (415 for a Content-Encoding). Another content type has no token ("").
func logoutToken(c *fiber.Ctx) (string, error) {
	body, err := edge.ReadBody(c, maxBackchannelBody)
	if err != nil {
		return "", err
	}
	mt, _, _ := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if mt != fiber.MIMEApplicationForm {
		return "", nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", newError(fiber.StatusBadRequest, "invalid_request",
			"the body is not valid application/x-www-form-urlencoded data; send logout_token=<JWT>")
	}
	return form.Get("logout_token"), nil
}

// replayCache remembers logout token ids until they expire, bounded in
// size: when full, the entries expiring first make room.
type replayCache struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: make(map[string]time.Time)}
}

// add records key until exp and reports whether it was new.
func (r *replayCache) add(key string, exp, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.seen[key]; ok && now.Before(e) {
		return false
	}
	if len(r.seen) >= r.max {
		r.purgeLocked(now)
		for len(r.seen) >= r.max {
			var oldest string
			var oe time.Time
			for k, e := range r.seen {
				if oldest == "" || e.Before(oe) {
					oldest, oe = k, e
				}
			}
			delete(r.seen, oldest)
		}
	}
	r.seen[key] = exp
	return true
}

func (r *replayCache) remove(key string) {
	r.mu.Lock()
	delete(r.seen, key)
	r.mu.Unlock()
}

func (r *replayCache) purge(now time.Time) {
	r.mu.Lock()
	r.purgeLocked(now)
	r.mu.Unlock()
}

func (r *replayCache) purgeLocked(now time.Time) {
	for k, e := range r.seen {
		if !now.Before(e) {
			delete(r.seen, k)
		}
	}
}
