package bff

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/session"
)

// slideEvery is the least time between two idle-timeout extensions of one
// session: sliding on every request would cost a store write (and, for the
// cookie store, a new cookie) per API call. A twentieth of the idle
// timeout, at most a minute, loses at most that much of the idle window.
func slideEvery(idle time.Duration) time.Duration {
	return min(idle/20, time.Minute)
}

// current returns the request's session and its handle, or a nil session
// when there is none. A cookie that does not decode, fails authentication,
// names no live session or an expired one counts as no session and is
// cleared. Only a store outage is an error (errStore: 503, cookies kept).
func (g *Gateway) current(c *fiber.Ctx) (string, *session.Session, error) {
	handle := g.jar.readHandle(c)
	if handle == "" {
		if g.jar.hasSessionCookie(c) {
			g.jar.clearSession(c) // chunks without a base cookie
		}
		return "", nil, nil
	}
	s, err := g.store.Get(c.UserContext(), handle)
	switch {
	case errors.Is(err, session.ErrNotFound):
		g.log.LogAttrs(c.UserContext(), slog.LevelDebug, "session cookie names no live session; cleared",
			slog.String("request_id", obs.RequestID(c)))
		g.jar.clearSession(c)
		return "", nil, nil
	case err != nil:
		g.log.LogAttrs(c.UserContext(), slog.LevelError, "session store read failed",
			slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		return "", nil, errStore
	}
	if s.Frontend != g.cfg.Name {
		// Another frontend's session (a cookie copied across, or a
		// record of another namespace): no session here. Neither deleted
		// nor ended: it is not this frontend's to end.
		g.log.LogAttrs(c.UserContext(), slog.LevelWarn, "session cookie of another frontend refused; cleared",
			slog.String("request_id", obs.RequestID(c)), slog.String("session_frontend", s.Frontend))
		g.jar.clearSession(c)
		return "", nil, nil
	}
	if s.Issuer != "" && s.Issuer != g.cfg.Provider.IssuerURL {
		// Signed in at a provider this frontend no longer uses (its
		// provider changed by a reload or a restart): its identity and
		// tokens are not this provider's to vouch for. Ended, so that a
		// change back does not revive it.
		g.log.LogAttrs(c.UserContext(), slog.LevelInfo, "session of another provider ended: the frontend's provider changed",
			slog.String("request_id", obs.RequestID(c)), slog.String("session_issuer", s.Issuer))
		_ = g.store.Delete(c.UserContext(), handle)
		g.jar.clearSession(c)
		return "", nil, nil
	}
	if s.Expired(g.now()) {
		_ = g.store.Delete(c.UserContext(), handle)
		g.jar.clearSession(c)
		return "", nil, nil
	}
	return handle, s, nil
}

// slide extends the session's idle deadline when the last extension is
// older than slideEvery, and writes the new handle when the store gave one.
// A session that ended meanwhile yields a nil session (cookies cleared).
func (g *Gateway) slide(c *fiber.Ctx, handle string, s *session.Session) (string, *session.Session, error) {
	now := g.now()
	if s.IdleTimeout <= 0 || now.Sub(s.LastSeen) < slideEvery(s.IdleTimeout) {
		return handle, s, nil
	}
	var out *session.Session
	nh, err := g.store.Update(c.UserContext(), handle, func(cur *session.Session) error {
		if cur.Expired(now) {
			return session.ErrNotFound
		}
		cur.LastSeen = now
		cp := *cur
		out = &cp
		return nil
	})
	switch {
	case errors.Is(err, session.ErrNotFound):
		g.jar.clearSession(c)
		return "", nil, nil
	case err != nil:
		g.log.LogAttrs(c.UserContext(), slog.LevelError, "session store update failed",
			slog.String("request_id", obs.RequestID(c)), slog.Any("err", err))
		return "", nil, errStore
	}
	if nh != handle {
		if err := g.writeSession(c, nh, out); err != nil {
			return "", nil, err
		}
	}
	return nh, out, nil
}

// writeSession sets the session cookies for handle. They live until the
// session's absolute end; the idle deadline is enforced on the server side.
func (g *Gateway) writeSession(c *fiber.Ctx, handle string, s *session.Session) error {
	return g.jar.writeHandle(c, handle, s.AbsoluteExpiry)
}

// logoutSID is the value the logout URL carries (Duende BFF's sid
// parameter): the ID token's sid, or, when the provider issues none, a
// digest of what identifies this session, so that a plain link from
// another site cannot log the user out.
func logoutSID(s *session.Session) string {
	if s.SID != "" {
		return s.SID
	}
	h := sha256.New()
	h.Write([]byte(s.Subject))
	h.Write([]byte{0})
	h.Write([]byte(s.IDToken))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(s.Created.Unix(), 10)))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}
