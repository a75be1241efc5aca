package issuer

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/token"
	"github.com/bffgate/bffgate/web"
)

// logoutRequest is a validated RP-initiated logout request, sealed into
// the confirmation form when the issuer asks the user.
type logoutRequest struct {
	ClientID              string `json:"c,omitempty"`
	PostLogoutRedirectURI string `json:"r,omitempty"`
	State                 string `json:"s,omitempty"`
	// HintSID and HintSub come from a verified id_token_hint.
	HintSID string `json:"hs,omitempty"`
	HintSub string `json:"hu,omitempty"`
	CSRF    string `json:"x,omitempty"`
}

// handleLogout is the end_session_endpoint (OpenID Connect RP-Initiated
// Logout 1.0 §2, §3).
//
// With a valid id_token_hint the session it names ends at once: the hint
// shows the request comes from a relying party of that session. Without
// one, a user who is signed in is asked to confirm (§2: "the OP SHOULD ask
// the End-User"), so that a cross-site link cannot sign anyone out. Ending
// a session deletes the login session, revokes every grant made under it
// (refresh tokens leave the allowlist, access tokens are denylisted), and
// notifies the clients by back-channel.
func (s *Server) handleLogout(c *fiber.Ctx) error {
	var (
		p   url.Values
		err error
	)
	if c.Method() == fiber.MethodPost {
		p, err = parseForm(c)
	} else {
		p, err = parseQuery(c)
	}
	if err != nil {
		pe := toProtocol(err)
		return s.errorPage(c, epLogout, formStatus(pe), pe, web.Error{Title: "Invalid sign-out request", Message: pe.Description + "."})
	}
	sess, _, err := s.currentSession(c)
	if err != nil {
		return s.logoutFailed(c, err)
	}
	if c.Method() == fiber.MethodPost && p.Has("confirm") {
		return s.confirmLogout(c, p, sess)
	}

	lr, err := s.validateLogout(p)
	if err != nil {
		return err.(*logoutPageError).render(s, c)
	}
	if lr.HintSID == "" && sess != nil && lr.ClientID != "" {
		// logout_hint (RP-Initiated Logout 1.0 §2; its format is the OP's
		// to define) carrying the session's sid proves, like an
		// id_token_hint, that the request comes from a relying party of
		// this session: only they got the sid, inside an ID token. It lets
		// a gateway end the session without putting the ID token, and the
		// personal data in it, into a URL.
		if h := p.Get("logout_hint"); h != "" && subtle.ConstantTimeCompare([]byte(h), []byte(sess.ID)) == 1 {
			lr.HintSID, lr.HintSub = sess.ID, sess.Subject
		}
	}
	if lr.HintSID != "" || sess == nil {
		return s.performLogout(c, lr, sess)
	}
	// No hint and a live session: ask.
	csrf := c.Cookies(cookieCSRF)
	if !safeToken(csrf) || len(csrf) != 43 {
		csrf = randomToken(32)
	}
	s.setCookie(c, cookieCSRF, csrf, formMaxAge)
	lr.CSRF = csrf
	sealed, err := s.seal.Encode(sealLogout, lr)
	if err != nil {
		return fmt.Errorf("issuer: seal the logout request: %w", err)
	}
	return s.html(c, fiber.StatusOK, func(w *strings.Builder) error {
		return s.pages.Logout(w, web.Logout{
			Confirm: true, Action: s.endpoint(pathLogout), ClientName: lr.ClientID,
			Fields: []web.Field{{Name: "request", Value: sealed}, {Name: "csrf_token", Value: csrf}},
		})
	})
}

// logoutPageError is a logout request error: never redirected (the
// post_logout_redirect_uri is not trusted until checked), shown as a page.
type logoutPageError struct {
	pe   *protocol.Error
	page web.Error
}

func (e *logoutPageError) Error() string { return e.pe.Error() }

func (e *logoutPageError) render(s *Server, c *fiber.Ctx) error {
	return s.errorPage(c, epLogout, fiber.StatusBadRequest, e.pe, e.page)
}

func (s *Server) validateLogout(p url.Values) (logoutRequest, error) {
	bad := func(desc, msg string, m *web.RedirectMismatch) (logoutRequest, error) {
		return logoutRequest{}, &logoutPageError{
			pe:   protocol.ErrInvalidRequest.WithDescription("%s", desc),
			page: web.Error{Title: "Sign-out request refused", Message: msg, Mismatch: m},
		}
	}
	lr := logoutRequest{ClientID: p.Get("client_id"), PostLogoutRedirectURI: p.Get("post_logout_redirect_uri"), State: p.Get("state")}
	if len(lr.State) > 2048 {
		return bad("state is longer than 2048 bytes", "The application sent a state parameter longer than 2048 bytes.", nil)
	}
	if hint := p.Get("id_token_hint"); hint != "" {
		hc, err := s.parseIDTokenHint(hint, s.now())
		if err != nil {
			return bad("id_token_hint is invalid: "+describeTokenError(err, "ID token"),
				"The application sent an id_token_hint that is not a valid ID token of this issuer ("+describeTokenError(err, "ID token")+").", nil)
		}
		switch {
		case lr.ClientID == "":
			lr.ClientID = hc.ClientID
			if lr.ClientID == "" && len(hc.Audience) == 1 {
				lr.ClientID = hc.Audience[0]
			}
		case !slices.Contains(hc.Audience, lr.ClientID):
			return bad("client_id is not an audience of the id_token_hint",
				fmt.Sprintf("The client_id %q does not match the ID token the application sent.", clip(lr.ClientID, 64)), nil)
		}
		lr.HintSID, lr.HintSub = hc.SID, hc.Subject
		if lr.HintSID == "" {
			// An ID token without sid (not one of ours in practice):
			// fall back to asking the user.
			lr.HintSub = ""
		}
	}
	var cl *client
	if lr.ClientID != "" {
		if cl = s.client(lr.ClientID); cl == nil {
			return bad(fmt.Sprintf("unknown client_id %q", clip(lr.ClientID, 64)),
				fmt.Sprintf("No application with client_id %q is registered with this issuer.", clip(lr.ClientID, 64)), nil)
		}
	}
	if lr.PostLogoutRedirectURI != "" {
		if cl == nil {
			return bad("post_logout_redirect_uri without id_token_hint or client_id",
				"The application asked to be sent back after sign-out but did not say who it is: it must send id_token_hint or client_id with post_logout_redirect_uri.", nil)
		}
		if !slices.Contains(cl.PostLogoutRedirectURIs, lr.PostLogoutRedirectURI) {
			return bad(fmt.Sprintf("post_logout_redirect_uri %q is not registered for client %q", clip(lr.PostLogoutRedirectURI, 256), cl.ID),
				fmt.Sprintf("The application %q asked to return to a post-logout redirect URI that is not registered for it.", cl.ID),
				redirectMismatch(lr.PostLogoutRedirectURI, cl.PostLogoutRedirectURIs))
		}
	}
	return lr, nil
}

// confirmLogout handles the user's answer to the confirmation form.
func (s *Server) confirmLogout(c *fiber.Ctx, p url.Values, sess *storage.LoginSession) error {
	refuse := func(desc, msg string) error {
		return s.errorPage(c, epLogout, fiber.StatusForbidden, protocol.ErrAccessDenied.WithDescription("%s", desc),
			web.Error{Title: "Sign-out could not continue", Message: msg})
	}
	if err := checkSameOrigin(c); err != nil {
		return refuse("cross-origin logout post refused: "+err.Error(), "The sign-out form was posted from another site.")
	}
	var lr logoutRequest
	if err := s.seal.Decode(sealLogout, p.Get("request"), &lr); err != nil {
		return refuse("the sealed logout request is invalid or expired",
			"The sign-out form expired or was altered. Sign out again from the application.")
	}
	cookie := c.Cookies(cookieCSRF)
	if cookie == "" || subtle.ConstantTimeCompare([]byte(cookie), []byte(lr.CSRF)) != 1 ||
		subtle.ConstantTimeCompare([]byte(p.Get("csrf_token")), []byte(lr.CSRF)) != 1 {
		return refuse("the logout form's CSRF token does not match the browser's CSRF cookie",
			"The sign-out form could not be verified: your browser did not send the issuer's cookie. Allow cookies for this site and try again.")
	}
	s.clearCookie(c, cookieCSRF)
	return s.performLogout(c, lr, sess)
}

// performLogout ends the session the request names and answers: a
// redirect to the checked post_logout_redirect_uri with state, or the
// signed-out page.
func (s *Server) performLogout(c *fiber.Ctx, lr logoutRequest, sess *storage.LoginSession) error {
	ctx := c.UserContext()
	if lr.HintSID != "" {
		if err := s.endSession(ctx, lr.HintSID, lr.HintSub, "rp-initiated logout"); err != nil {
			return s.logoutFailed(c, err)
		}
	}
	if sess != nil && (lr.HintSID == "" || sess.ID == lr.HintSID) {
		if sess.ID != lr.HintSID {
			if err := s.endSession(ctx, sess.ID, sess.Subject, "logout confirmed by the user"); err != nil {
				return s.logoutFailed(c, err)
			}
		}
		s.clearCookie(c, cookieSSO)
	}
	if lr.PostLogoutRedirectURI != "" {
		q := url.Values{}
		if lr.State != "" {
			q.Set("state", lr.State)
		}
		to := lr.PostLogoutRedirectURI
		if len(q) > 0 {
			to = appendQuery(to, q)
		}
		return s.redirect(c, to)
	}
	return s.html(c, fiber.StatusOK, func(w *strings.Builder) error {
		return s.pages.Logout(w, web.Logout{ClientName: lr.ClientID})
	})
}

func (s *Server) logoutFailed(c *fiber.Ctx, err error) error {
	pe := toProtocol(err)
	return s.errorPage(c, epLogout, pe.Status, pe, web.Error{Title: "Sign-out failed",
		Message: "The issuer could not end the session because its store is unavailable. Try again in a moment."})
}

// endSession ends the issuer login session sid: it deletes the session,
// revokes every grant made under it (RevokeSID: refresh tokens leave the
// allowlist, access tokens are denylisted), and sends a back-channel
// logout token to every client of those grants that registered a
// BackchannelLogoutURI. It runs detached from the request's cancellation.
func (s *Server) endSession(ctx context.Context, sid, subject, reason string) error {
	ctx = bgContext(ctx)
	now := s.now()
	if subject == "" {
		if ls, err := s.stores.logout.LoginSession(ctx, sid); err == nil {
			subject = ls.Subject
		}
	}
	if err := s.stores.logout.DeleteLoginSession(ctx, sid); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("delete login session: %w", err)
	}
	until := s.grantDenyUntil(now)
	grants, err := s.stores.logout.RevokeSID(ctx, sid, until, now)
	if err != nil {
		return fmt.Errorf("revoke the grants of the session: %w", err)
	}
	for _, g := range grants {
		s.deny.Add(storage.DenyEntry{Kind: storage.DenyGrant, ID: g, Until: until})
	}
	s.metrics.revocations.WithLabelValues("session").Inc()
	s.log.Info("login session ended; its grants are revoked", "sid", sid, "sub", subject, "reason", reason, "grants", len(grants))
	s.backchannelLogout(ctx, sid, subject, grants)
	return nil
}

// backchannelEvent is the events member of a logout token (OpenID Connect
// Back-Channel Logout 1.0 §2.4).
const backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// backchannelLogout sends logout tokens (§2.4) to the clients of grants,
// in parallel, each bounded by backchannelWait, and waits for them. It is
// best effort (§2.8): a failure is logged and counted, never fatal.
func (s *Server) backchannelLogout(ctx context.Context, sid, subject string, grants []string) {
	var targets []*client
	for _, g := range grants {
		cl := s.client(grantClient(g))
		if cl != nil && cl.BackchannelLogoutURI != "" && !slices.Contains(targets, cl) {
			targets = append(targets, cl)
		}
	}
	if len(targets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, backchannelWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, cl := range targets {
		wg.Go(func() {
			err := s.sendLogoutToken(ctx, cl, sid, subject)
			if err != nil {
				s.metrics.backchannel.WithLabelValues("error").Inc()
				s.log.Warn("back-channel logout failed", "client_id", cl.ID, "uri", cl.BackchannelLogoutURI, "sid", sid, "err", err)
				return
			}
			s.metrics.backchannel.WithLabelValues("ok").Inc()
			s.log.Info("back-channel logout sent", "client_id", cl.ID, "sid", sid)
		})
	}
	wg.Wait()
}

func (s *Server) sendLogoutToken(ctx context.Context, cl *client, sid, subject string) error {
	lt, err := s.logoutToken(cl, sid, subject)
	if err != nil {
		return err
	}
	body := url.Values{"logout_token": {lt}}.Encode()
	req, err := newFormRequest(ctx, cl.BackchannelLogoutURI, body)
	if err != nil {
		return err
	}
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	drain(resp.Body)
	if resp.StatusCode != 200 && resp.StatusCode != 204 {
		return fmt.Errorf("the client answered %s (want 200 or 204)", resp.Status)
	}
	return nil
}

// logoutToken mints a logout token (Back-Channel Logout §2.4): a JWT of
// typ logout+jwt (§2.4, RFC 8725 §3.11) signed like ID tokens, with iss,
// aud, iat, exp, jti, sub, sid and the events claim, and no nonce (§2.4:
// "MUST NOT contain a nonce"). token.Codec mints only access, refresh and
// ID tokens, so this one is signed here with the key set's signer.
func (s *Server) logoutToken(cl *client, sid, subject string) (string, error) {
	now := s.now().Truncate(time.Second)
	claims := map[string]any{
		"iss": s.cfg.Issuer, "aud": cl.ID, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": token.NewID(), "sid": sid, "events": map[string]any{backchannelEvent: map[string]any{}},
	}
	if subject != "" {
		claims["sub"] = subject
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signer, _, err := s.keys.Signer(s.cfg.IDTokenAlg, (&jose.SignerOptions{}).WithType("logout+jwt"))
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign logout token: %w", err)
	}
	return jws.CompactSerialize()
}
