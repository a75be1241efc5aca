package issuer

import (
	"crypto/subtle"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/web"
)

// pathConsent receives the consent form of an agent's authorization
// request.
const pathConsent = "/consent"

// sealConsent binds the consent form's sealed request to its purpose.
const sealConsent = "bffgate-consent"

// consentRequest is the authorization request the consent form carries,
// with the login session and user it was shown to.
type consentRequest struct {
	Req     authRequest `json:"r"`
	SID     string      `json:"sid"`
	Subject string      `json:"sub"`
}

// issueOrConsent answers a validated authorization request of a signed-in
// user: a code at once, or, when the client is an agent or a workload,
// first the consent page naming it (an agent acting for a user must be
// something the user agreed to, each time it asks: consent is not
// remembered). promptNone refuses the page with consent_required (OIDC
// Core §3.1.2.6).
func (s *Server) issueOrConsent(c *fiber.Ctx, req authRequest, sess *storage.LoginSession, u *user, promptNone bool) error {
	cl := s.knownClient(c.UserContext(), req.ClientID)
	if cl == nil || (cl.Kind == "" && !cl.thirdParty()) {
		return s.issueCode(c, req, sess, u)
	}
	if cl.Kind == "" && !req.PromptConsent {
		remembered, err := s.consentRemembered(c.UserContext(), u.Subject, req)
		if err != nil {
			return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
		}
		if remembered {
			return s.issueCode(c, req, sess, u)
		}
	}
	if promptNone {
		what := "a third-party client"
		if cl.Kind != "" {
			what = "an " + cl.Kind
		}
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID,
			protocol.ErrConsentRequired.WithDescription("client %q is %s; the user must consent to its authorization request, which prompt=none does not allow", clip(cl.ID, 255), what))
	}
	csrf := c.Cookies(cookieCSRF)
	if !safeToken(csrf) || len(csrf) != 43 {
		csrf = randomToken(32)
	}
	s.setCookie(c, cookieCSRF, csrf, formMaxAge)
	req.CSRF = csrf
	sealed, err := s.seal.Encode(sealConsent, consentRequest{Req: req, SID: sess.ID, Subject: u.Subject})
	if err != nil {
		return fmt.Errorf("issuer: seal the consent request: %w", err)
	}
	return s.html(c, fiber.StatusOK, func(w *strings.Builder) error {
		return s.pages.Consent(w, s.consentPage(cl, req, u, []web.Field{{Name: "request", Value: sealed}, {Name: "csrf_token", Value: csrf}}))
	})
}

// handleConsent is the consent form's post: the same-origin and CSRF
// checks of the login form, the sealed request, the login session it was
// shown in (still the same user), then the user's decision.
func (s *Server) handleConsent(c *fiber.Ctx) error {
	formError := func(pe *protocol.Error, msg string) error {
		return s.errorPage(c, epAuthorize, fiber.StatusForbidden, pe, web.Error{Title: "Consent could not be recorded", Message: msg})
	}
	if err := checkSameOrigin(c); err != nil {
		return formError(protocol.ErrAccessDenied.WithDescription("cross-origin consent post refused: %v", err),
			"The consent form was posted from another site. Start again from the application.")
	}
	p, err := parseFormLoose(c)
	if err != nil {
		pe := toProtocol(err)
		return s.errorPage(c, epAuthorize, formStatus(pe), pe, web.Error{Title: "Invalid consent form", Message: pe.Description + "."})
	}
	var cr consentRequest
	if err := s.seal.Decode(sealConsent, p.Get("request"), &cr); err != nil {
		return formError(protocol.ErrInvalidRequest.WithDescription("the sealed consent request is invalid or expired: %v", err),
			fmt.Sprintf("The consent form expired (it is valid for %s) or was altered. Start again from the application.", formMaxAge))
	}
	req := cr.Req
	cookie := c.Cookies(cookieCSRF)
	if cookie == "" || subtle.ConstantTimeCompare([]byte(cookie), []byte(req.CSRF)) != 1 ||
		subtle.ConstantTimeCompare([]byte(p.Get("csrf_token")), []byte(req.CSRF)) != 1 {
		return formError(protocol.ErrAccessDenied.WithDescription("the consent form's CSRF token does not match the browser's CSRF cookie"),
			"The consent form could not be verified: your browser did not send the issuer's cookie, or the form belongs to another browser.")
	}
	cl := s.knownClient(c.UserContext(), req.ClientID)
	if cl == nil {
		return formError(protocol.ErrInvalidRequest.WithDescription("client %q is no longer registered", clip(req.ClientID, 64)),
			"The agent is no longer registered with this issuer.")
	}
	sess, u, err := s.currentSession(c)
	if err != nil {
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
	}
	if sess == nil || sess.ID != cr.SID || u.Subject != cr.Subject {
		return formError(protocol.ErrAccessDenied.WithDescription("the login session the consent form was shown in has ended or changed user"),
			"You signed out, or another user signed in, since the consent form was shown. Start again from the application.")
	}
	if why := s.clientDisabled(cl.ID); why != "" {
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID, refuseDisabled(why))
	}
	s.clearCookie(c, cookieCSRF)
	if p.Get("decision") != "allow" {
		// Audited by redirectError (action authorize, access_denied).
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID,
			protocol.ErrAccessDenied.WithDescription("the user denied %s %q's request", cl.Kind, cl.ID))
	}
	reason := "the user allowed the agent to act for them"
	if cl.Kind == "" {
		// A third-party application's consent is remembered (an agent's
		// is asked each time).
		reason = "the user allowed the third-party client; remembered"
		if err := s.rememberConsent(c.UserContext(), u.Subject, req); err != nil {
			return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
		}
	}
	s.audit(c, AuditRecord{Action: "consent", ClientID: cl.ID, Subject: u.Subject, Audience: tokenAudience(cl, req.Resource), Scope: req.Scope,
		Decision: DecisionAllow, Reason: reason})
	return s.issueCode(c, req, sess, u)
}
