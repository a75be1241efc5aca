package issuer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/web"
)

// Cookie names. The __Host- prefix pins them to this host, path / and
// Secure (RFC 6265bis §4.1.3.2). Browsers and Go's cookie jar treat
// loopback http as a secure origin, so they work in development too.
const (
	cookieSSO  = "__Host-bffgate-idp"
	cookieCSRF = "__Host-bffgate-csrf"
	// sealName is bound into the sealed authorization request's MAC, so a
	// sealed value of another purpose is refused.
	sealAuthz  = "bffgate-authz"
	sealLogout = "bffgate-logout"
)

// authRequest is a validated authorization request (RFC 6749 §4.1.1, OIDC
// Core §3.1.2.1). It is sealed into the login form's hidden field, so the
// login post carries exactly what was validated.
type authRequest struct {
	ClientID      string `json:"c"`
	RedirectURI   string `json:"r"`
	State         string `json:"s,omitempty"`
	Nonce         string `json:"n,omitempty"`
	Scope         string `json:"sc,omitempty"`
	CodeChallenge string `json:"cc"`
	LoginHint     string `json:"lh,omitempty"`
	// Resource is the RFC 8707 resource indicator, "" for none.
	Resource string `json:"rs,omitempty"`
	// PromptConsent (prompt=consent) shows a third-party client's consent
	// page even when the user's consent is remembered.
	PromptConsent bool `json:"pc,omitempty"`
	// CSRF is the double-submit token: the login post is accepted only
	// when the browser's CSRF cookie holds the same value.
	CSRF string `json:"x"`
}

// handleAuthorize is the authorization endpoint (RFC 6749 §4.1.1, OIDC
// Core §3.1.2), GET or POST (OIDC Core §3.1.2.1).
func (s *Server) handleAuthorize(c *fiber.Ctx) error {
	var (
		p   url.Values
		err error
	)
	if c.Method() == fiber.MethodPost {
		p, err = parseFormLoose(c)
	} else {
		p, err = decodeParams(string(c.Request().URI().QueryString()), "query string")
	}
	if err == nil && (len(p["client_id"]) > 1 || len(p["redirect_uri"]) > 1) {
		err = protocol.ErrInvalidRequest.WithDescription("client_id or redirect_uri is repeated")
	}
	if err != nil {
		pe := toProtocol(err)
		return s.errorPage(c, epAuthorize, formStatus(pe), pe, web.Error{
			Title: "Invalid authorization request", Message: pe.Description + ". Go back to the application and try again.",
		})
	}

	// Until the client and its redirect_uri are known good, errors are an
	// HTML page: redirecting to an unchecked URI would make the issuer an
	// open redirector (RFC 6749 §4.1.2.1, RFC 9700 §4.11).
	clientID := p.Get("client_id")
	cl, lerr := s.lookupClient(c.UserContext(), clientID)
	if lerr != nil && !errors.Is(lerr, errCIMD) {
		return s.errorPage(c, epAuthorize, fiber.StatusServiceUnavailable,
			protocol.ErrTemporarilyUnavailable.WithDescription("the client registrations cannot be read").WithCause(lerr),
			web.Error{Title: "Try again later", Message: "The sign-in service cannot read its client registrations right now. Try again in a moment."})
	}
	if lerr != nil {
		return s.errorPage(c, epAuthorize, fiber.StatusBadRequest,
			protocol.ErrInvalidClient.WithDescription("%s", cimdDescription(lerr)),
			web.Error{Title: "Unknown application", Message: "The application identifies itself by a client metadata document this issuer cannot use: " + cimdDescription(lerr) + "."})
	}
	if cl == nil {
		msg := "The application did not say who it is (client_id is missing)."
		if clientID != "" {
			msg = fmt.Sprintf("No application with client_id %q is registered with this issuer.", clip(clientID, 64))
		}
		return s.errorPage(c, epAuthorize, fiber.StatusBadRequest,
			protocol.ErrInvalidRequest.WithDescription("unknown client_id %q", clip(clientID, 64)),
			web.Error{Title: "Unknown application", Message: msg + " Check the client_id the application sends, or register the client in the issuer configuration."})
	}
	redirectURI := p.Get("redirect_uri")
	if redirectURI == "" {
		return s.errorPage(c, epAuthorize, fiber.StatusBadRequest,
			protocol.ErrInvalidRequest.WithDescription("client %q sent no redirect_uri", cl.ID),
			web.Error{Title: "Missing redirect URI", Message: fmt.Sprintf("The application %q sent no redirect_uri. OpenID Connect requires it (Core §3.1.2.1); the application must send one of its registered redirect URIs.", cl.ID),
				Mismatch: &web.RedirectMismatch{Registered: cl.RedirectURIs}})
	}
	if !redirectAllowed(cl.RedirectURIs, redirectURI) {
		return s.errorPage(c, epAuthorize, fiber.StatusBadRequest,
			protocol.ErrInvalidRequest.WithDescription("redirect_uri %q is not registered for client %q", clip(redirectURI, 256), cl.ID),
			web.Error{Title: "Redirect URI not registered", Message: fmt.Sprintf("The application %q asked to return to a redirect URI that is not registered for it.", cl.ID),
				Mismatch: redirectMismatch(redirectURI, cl.RedirectURIs)})
	}

	state := p.Get("state")
	fail := func(err error) error { return s.redirectError(c, redirectURI, state, cl.ID, err) }
	if len(p["state"]) > 1 {
		state = ""
	}
	if err := checkParams(p); err != nil {
		return fail(err)
	}
	if why := s.clientDisabled(cl.ID); why != "" {
		s.ag.metrics.refused.WithLabelValues(epAuthorize).Inc()
		return fail(refuseDisabled(why)) // audited by redirectError
	}
	req, prompt, maxAge, err := s.validateAuthRequest(cl, p)
	if err != nil {
		return fail(err)
	}

	sess, u, err := s.currentSession(c)
	if err != nil {
		return fail(err)
	}
	now := s.now()
	login := sess == nil || prompt["login"] || prompt["select_account"] ||
		(maxAge >= 0 && now.Sub(sess.AuthTime) > time.Duration(maxAge)*time.Second)
	if login && prompt["none"] {
		return fail(protocol.ErrLoginRequired.WithDescription("the user is not signed in at the issuer (or max_age requires a new sign-in), and prompt=none forbids showing the sign-in page"))
	}
	if !login {
		s.metrics.logins.WithLabelValues("sso").Inc()
		s.audit(c, AuditRecord{Action: "login", ClientID: cl.ID, Subject: u.Subject, Decision: DecisionAllow, Scope: req.Scope, Reason: "sso (an existing login session)"})
		return s.issueOrConsent(c, req, sess, u, prompt["none"])
	}
	return s.renderLogin(c, req, req.LoginHint, "", fiber.StatusOK)
}

// validateAuthRequest checks what follows a good client and redirect URI;
// its errors are redirected to the client.
func (s *Server) validateAuthRequest(cl *client, p url.Values) (authRequest, map[string]bool, int64, error) {
	req := authRequest{ClientID: cl.ID, RedirectURI: p.Get("redirect_uri"), State: p.Get("state"), Nonce: p.Get("nonce"), LoginHint: p.Get("login_hint")}
	bad := func(format string, args ...any) (authRequest, map[string]bool, int64, error) {
		return authRequest{}, nil, 0, protocol.ErrInvalidRequest.WithDescription(format, args...)
	}
	switch rt := p.Get("response_type"); rt {
	case "code":
	case "":
		return bad("response_type is missing; this issuer supports response_type=code")
	default:
		return authRequest{}, nil, 0, protocol.ErrUnsupportedResponseType.WithDescription("response_type %q is not supported; use response_type=code (the authorization code flow with PKCE)", clip(rt, 64))
	}
	if rm := p.Get("response_mode"); rm != "" && rm != "query" {
		return bad("response_mode %q is not supported; this issuer answers with response_mode=query", clip(rm, 64))
	}
	if !cl.hasGrant(GrantAuthorizationCode) {
		return authRequest{}, nil, 0, protocol.ErrUnauthorizedClient.WithDescription("client %q is not allowed the authorization_code grant", cl.ID)
	}
	if p.Has("request") || p.Has("request_uri") {
		code := "request_not_supported"
		if p.Has("request_uri") {
			code = "request_uri_not_supported"
		}
		return authRequest{}, nil, 0, (&protocol.Error{Code: code, Status: http.StatusBadRequest}).WithDescription("request objects are not supported; send the parameters in the URL")
	}
	switch m := p.Get("code_challenge_method"); {
	case p.Get("code_challenge") == "":
		return bad("code_challenge is missing; PKCE with code_challenge_method=S256 is required for every client (RFC 9700 §2.1.1)")
	case m == "" || m == protocol.PKCEMethodPlain:
		return bad("code_challenge_method %q is not allowed; use S256 (the plain method exposes the verifier)", orPlain(m))
	case m != protocol.PKCEMethodS256:
		return bad("code_challenge_method %q is not supported; use S256", clip(m, 32))
	}
	req.CodeChallenge = p.Get("code_challenge")
	if raw, err := base64.RawURLEncoding.DecodeString(req.CodeChallenge); err != nil || len(raw) != sha256.Size {
		return bad("code_challenge must be the base64url (no padding) SHA-256 of the code_verifier: 43 characters")
	}
	if len(req.State) > 2048 {
		return bad("state is longer than 2048 bytes")
	}
	if len(req.Nonce) > 512 {
		return bad("nonce is longer than 512 bytes")
	}
	if len(req.LoginHint) > 256 {
		req.LoginHint = ""
	}
	resource, err := s.requestedResource(cl, p)
	if err != nil {
		return authRequest{}, nil, 0, err
	}
	req.Resource = resource
	scope := p.Get("scope")
	if err := s.checkScopeFor(cl, scope, resource); err != nil {
		return authRequest{}, nil, 0, err
	}
	req.Scope = strings.Join(protocol.ParseScope(scope), " ")

	prompt := map[string]bool{}
	for _, v := range protocol.ParseScope(p.Get("prompt")) {
		switch v {
		case "none", "login", "consent", "select_account":
			prompt[v] = true
		default:
			return bad("prompt value %q is not supported (none, login, consent, select_account)", clip(v, 32))
		}
	}
	req.PromptConsent = prompt["consent"]
	if prompt["none"] && len(prompt) > 1 {
		return bad("prompt=none cannot be combined with other prompt values (OIDC Core §3.1.2.1)")
	}
	maxAge := int64(-1)
	if v := p.Get("max_age"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return bad("max_age must be a non-negative number of seconds")
		}
		maxAge = n
	}
	return req, prompt, maxAge, nil
}

func orPlain(m string) string {
	if m == "" {
		return "plain (the default when it is absent)"
	}
	return m
}

// currentSession returns the issuer login session named by the SSO cookie
// and its user, or nils when there is none, it expired, or its user is no
// longer configured.
func (s *Server) currentSession(c *fiber.Ctx) (*storage.LoginSession, *user, error) {
	secret := c.Cookies(cookieSSO)
	if !safeToken(secret) {
		return nil, nil, nil
	}
	ls, err := s.stores.authorize.LoginSession(c.UserContext(), sessionID(secret))
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrExpired):
		return nil, nil, nil
	case err != nil:
		return nil, nil, err
	}
	if !s.now().Before(ls.ExpiresAt) {
		return nil, nil, nil
	}
	u := s.bySubject[ls.Subject]
	if u == nil {
		return nil, nil, nil
	}
	return &ls, u, nil
}

// renderLogin shows the login form for req. The CSRF cookie is reused
// when the browser has one (several tabs signing in at once), else set.
func (s *Server) renderLogin(c *fiber.Ctx, req authRequest, username, errMsg string, status int) error {
	csrf := c.Cookies(cookieCSRF)
	if !safeToken(csrf) || len(csrf) != 43 {
		csrf = randomToken(32)
	}
	s.setCookie(c, cookieCSRF, csrf, formMaxAge)
	req.CSRF = csrf
	sealed, err := s.seal.Encode(sealAuthz, req)
	if err != nil {
		return fmt.Errorf("issuer: seal the authorization request: %w", err)
	}
	return s.html(c, status, func(w *strings.Builder) error {
		return s.pages.Login(w, web.Login{
			Action:     s.endpoint(pathLogin),
			Fields:     []web.Field{{Name: "request", Value: sealed}, {Name: "csrf_token", Value: csrf}},
			ClientName: req.ClientID,
			Scopes:     protocol.ParseScope(req.Scope),
			Username:   username,
			Error:      errMsg,
		})
	})
}

// crossOrigin implements the same checks as net/http's
// CrossOriginProtection (Sec-Fetch-Site, else Origin against Host) by
// running it on a minimal request, so that fiber handlers get them too.
var crossOrigin = http.NewCrossOriginProtection()

func checkSameOrigin(c *fiber.Ctx) error {
	h := http.Header{}
	if v := c.Get("Sec-Fetch-Site"); v != "" {
		h.Set("Sec-Fetch-Site", v)
	}
	if v := c.Get(fiber.HeaderOrigin); v != "" {
		h.Set(fiber.HeaderOrigin, v)
	}
	return crossOrigin.Check(&http.Request{Method: c.Method(), Host: string(c.Request().Host()), Header: h})
}

// handleLogin checks the login form (POST /login): the CSRF token, the
// sealed authorization request, the login throttle (LoginThrottle), then
// the username and password. Success starts (or renews) the issuer login
// session and answers the authorization request with a code.
func (s *Server) handleLogin(c *fiber.Ctx) error {
	formError := func(pe *protocol.Error, msg string) error {
		return s.errorPage(c, epLogin, fiber.StatusForbidden, pe, web.Error{Title: "Sign-in could not continue", Message: msg})
	}
	if err := checkSameOrigin(c); err != nil {
		return formError(protocol.ErrAccessDenied.WithDescription("cross-origin login post refused: %v", err),
			"The sign-in form was posted from another site. Start the sign-in again from the application.")
	}
	p, err := parseForm(c)
	if err != nil {
		pe := toProtocol(err)
		return s.errorPage(c, epLogin, formStatus(pe), pe, web.Error{Title: "Invalid sign-in request", Message: pe.Description + "."})
	}
	var req authRequest
	if err := s.seal.Decode(sealAuthz, p.Get("request"), &req); err != nil {
		return formError(protocol.ErrInvalidRequest.WithDescription("the sealed authorization request of the login form is invalid or expired: %v", err),
			fmt.Sprintf("The sign-in form expired (it is valid for %s) or was altered. Go back to the application and sign in again.", formMaxAge))
	}
	cookie := c.Cookies(cookieCSRF)
	if cookie == "" || subtle.ConstantTimeCompare([]byte(cookie), []byte(req.CSRF)) != 1 ||
		subtle.ConstantTimeCompare([]byte(p.Get("csrf_token")), []byte(req.CSRF)) != 1 {
		return formError(protocol.ErrAccessDenied.WithDescription("the login form's CSRF token does not match the browser's CSRF cookie"),
			"The sign-in form could not be verified: your browser did not send the issuer's cookie, or the form belongs to another browser. Allow cookies for this site and sign in again from the application.")
	}
	cl := s.knownClient(c.UserContext(), req.ClientID)
	if cl == nil || !redirectAllowed(cl.RedirectURIs, req.RedirectURI) {
		// The configuration changed since the form was shown.
		return formError(protocol.ErrInvalidRequest.WithDescription("client %q or its redirect_uri is no longer registered", clip(req.ClientID, 64)),
			"The application is no longer registered with this issuer, or its redirect URI changed. Start the sign-in again from the application.")
	}

	username, password := p.Get("username"), p.Get("password")
	ctx := c.UserContext()
	// The login throttle is asked first: a locked username or address is
	// refused before any hash is computed, so guessing costs the issuer
	// nothing while it lasts.
	tnow := s.now()
	throttle := s.throttleKeys(c, username)
	refused := func(l *loginLock, checked bool) error {
		s.metrics.logins.WithLabelValues("locked").Inc()
		s.metrics.refused.WithLabelValues(l.scope).Inc()
		s.log.LogAttrs(ctx, slog.LevelInfo, "login refused: locked",
			slog.String("scope", l.scope), slog.String("username", clip(username, 64)), slog.String("client_ip", s.clientIP(c)),
			slog.String("client_id", cl.ID), slog.Bool("password_checked", checked), slog.Time("locked_until", l.until),
			slog.String("request_id", obs.RequestID(c)))
		s.audit(c, AuditRecord{Action: "login", ClientID: cl.ID, Decision: DecisionDeny, Reason: "locked by the login throttle (" + l.scope + ")"})
		return s.refuseLocked(c, req, username, l, tnow)
	}
	if lock, err := s.throttleCheck(ctx, throttle, tnow); err != nil {
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
	} else if lock != nil {
		return refused(lock, false)
	}

	// Asked again by a check that queued for a hashing slot: guesses of
	// one burst all pass the check above before any of them fails.
	var lateLock *loginLock
	var lateErr error
	stillAllowed := func() bool {
		lateLock, lateErr = s.throttleCheck(ctx, throttle, s.now())
		return lateErr == nil && lateLock == nil
	}

	u := s.users[username]
	ok := false
	switch {
	case password == "":
		// Nothing was guessed: no hash to compute (for a known username
		// and an unknown one alike), nothing to count.
	case u != nil:
		var checked bool
		if ok, checked = u.hash.verifyAfterWait(password, stillAllowed); checked {
			s.metrics.passwordChecks.Inc()
		}
	case s.dummyHash != nil:
		if _, checked := s.dummyHash.verifyAfterWait(password+"\x00not-a-user", stillAllowed); checked { // same cost as a real check
			s.metrics.passwordChecks.Inc()
		}
	}
	switch {
	case lateErr != nil:
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID, lateErr)
	case lateLock != nil:
		return refused(lateLock, false)
	}
	if !ok {
		s.metrics.logins.WithLabelValues("failure").Inc()
		reason := "wrong password"
		switch {
		case u == nil:
			reason = "unknown username"
		case password == "":
			reason = "empty password"
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "login failed",
			slog.String("username", clip(username, 64)), slog.String("client_id", cl.ID), slog.String("reason", reason),
			slog.String("client_ip", s.clientIP(c)), slog.String("request_id", obs.RequestID(c)))
		s.audit(c, AuditRecord{Action: "login", ClientID: cl.ID, Decision: DecisionDeny, Reason: reason})
		if password != "" {
			lock, err := s.throttleFailure(c, throttle, username, tnow)
			if err != nil {
				return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
			}
			if lock != nil {
				return s.refuseLocked(c, req, username, lock, tnow)
			}
		}
		return s.renderLogin(c, req, clip(username, 256), msgWrongPassword, fiber.StatusUnauthorized)
	}
	if lock, err := s.throttleSuccess(ctx, throttle, tnow); err != nil {
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
	} else if lock != nil {
		return refused(lock, true)
	}

	now := s.now().Truncate(time.Second)
	old, _, err := s.currentSession(c)
	if err != nil {
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
	}
	secret := randomToken(32)
	sess := storage.LoginSession{ID: sessionID(secret), Subject: u.Subject, AuthTime: now, ExpiresAt: now.Add(s.cfg.LoginSessionTTL)}
	if old != nil {
		if old.Subject == u.Subject {
			// Re-authentication of the same user (prompt=login,
			// max_age): the session keeps its id, so its tokens stay
			// tied to it, with a new auth_time.
			secret, sess.ID = c.Cookies(cookieSSO), old.ID
			if err := s.stores.authorize.DeleteLoginSession(ctx, old.ID); err != nil {
				return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
			}
		} else {
			// Another user signs in on this browser: the previous
			// user's session ends, with its tokens.
			if err := s.endSession(ctx, old.ID, old.Subject, "another user signed in"); err != nil {
				return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
			}
		}
	}
	if err := s.stores.authorize.CreateLoginSession(ctx, sess); err != nil {
		return s.redirectError(c, req.RedirectURI, req.State, cl.ID, err)
	}
	s.setCookie(c, cookieSSO, secret, s.cfg.LoginSessionTTL)
	s.clearCookie(c, cookieCSRF)
	s.metrics.logins.WithLabelValues("success").Inc()
	s.log.LogAttrs(ctx, slog.LevelInfo, "login succeeded",
		slog.String("username", username), slog.String("sub", u.Subject), slog.String("client_id", cl.ID), slog.String("request_id", obs.RequestID(c)))
	s.audit(c, AuditRecord{Action: "login", ClientID: cl.ID, Subject: u.Subject, Decision: DecisionAllow, Scope: req.Scope, Reason: "password"})
	return s.issueOrConsent(c, req, &sess, u, false)
}

// issueCode stores an authorization code for req and redirects to the
// client with it (RFC 6749 §4.1.2), with state and iss (RFC 9207).
func (s *Server) issueCode(c *fiber.Ctx, req authRequest, sess *storage.LoginSession, u *user) error {
	now := s.now()
	code := randomToken(32)
	claims, err := json.Marshal(releasedClaims(u, req.Scope))
	if err != nil {
		return s.redirectError(c, req.RedirectURI, req.State, req.ClientID, fmt.Errorf("encode user claims: %w", err))
	}
	rec := storage.AuthCode{
		Hash: codeHash(code), ClientID: req.ClientID, RedirectURI: req.RedirectURI, Scope: req.Scope, Nonce: req.Nonce,
		CodeChallenge: req.CodeChallenge, CodeChallengeMethod: protocol.PKCEMethodS256,
		Subject: u.Subject, SID: sess.ID, AuthTime: sess.AuthTime, ExpiresAt: now.Add(s.cfg.CodeTTL), Claims: claims,
		Resource: req.Resource,
	}
	if err := s.stores.authorize.CreateCode(c.UserContext(), rec); err != nil {
		return s.redirectError(c, req.RedirectURI, req.State, req.ClientID, err)
	}
	q := url.Values{}
	q.Set("code", code)
	if req.State != "" {
		q.Set("state", req.State)
	}
	q.Set("iss", s.cfg.Issuer)
	return s.redirect(c, appendQuery(req.RedirectURI, q))
}

// sessionID is the id of the login session whose SSO cookie holds
// secret: its SHA-256. The id is also the sid claim every relying party
// sees; hashing keeps a relying party from turning a sid into the user's
// SSO cookie.
func sessionID(secret string) string { return codeHash(secret) }

// codeHash is the store key of a code: its SHA-256, base64url.
func codeHash(code string) string {
	sum := sha256.Sum256([]byte(code))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (s *Server) setCookie(c *fiber.Ctx, name, value string, ttl time.Duration) {
	c.Cookie(&fiber.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: int(ttl / time.Second), Expires: s.now().Add(ttl),
		Secure: true, HTTPOnly: true, SameSite: fiber.CookieSameSiteLaxMode,
	})
}

func (s *Server) clearCookie(c *fiber.Ctx, name string) {
	c.Cookie(&fiber.Cookie{
		Name: name, Value: "", Path: "/", MaxAge: -1, Expires: time.Unix(0, 0),
		Secure: true, HTTPOnly: true, SameSite: fiber.CookieSameSiteLaxMode,
	})
}

// releasedClaims returns the user claims a scope releases (OIDC Core §5.4):
// email and email_verified with email, groups with groups, roles with
// roles; every other configured claim (name, preferred_username, ...)
// with profile.
func releasedClaims(u *user, scope string) map[string]any {
	profile, email := protocol.HasScope(scope, ScopeProfile), protocol.HasScope(scope, ScopeEmail)
	out := map[string]any{}
	for k, v := range u.Claims {
		var released bool
		switch k {
		case "email", "email_verified":
			released = email
		case "groups":
			released = protocol.HasScope(scope, ScopeGroups)
		case "roles":
			released = protocol.HasScope(scope, ScopeRoles)
		default:
			released = profile
		}
		if released {
			out[k] = v
		}
	}
	return out
}

// redirectMismatch explains how requested differs from the closest
// registered URI: the most common setup mistake gets a precise answer.
func redirectMismatch(requested string, registered []string) *web.RedirectMismatch {
	m := &web.RedirectMismatch{Requested: requested, Registered: registered}
	ru, err := url.Parse(requested)
	if err != nil {
		m.Differences = []string{"the requested redirect_uri is not a valid URL"}
		return m
	}
	best, bestScore := []string(nil), -1
	for _, r := range registered {
		gu, err := url.Parse(r)
		if err != nil {
			continue
		}
		d := uriDifferences(ru, gu)
		if score := 10 - len(d); score > bestScore {
			best, bestScore = d, score
		}
	}
	m.Differences = best
	return m
}

func uriDifferences(req, reg *url.URL) []string {
	var d []string
	if req.Scheme != reg.Scheme {
		d = append(d, fmt.Sprintf("the scheme differs: %q requested, %q registered", req.Scheme, reg.Scheme))
	}
	if !strings.EqualFold(req.Hostname(), reg.Hostname()) {
		d = append(d, fmt.Sprintf("the host differs: %q requested, %q registered", req.Hostname(), reg.Hostname()))
	} else if req.Hostname() != reg.Hostname() {
		d = append(d, fmt.Sprintf("the host differs in letter case: %q requested, %q registered", req.Hostname(), reg.Hostname()))
	}
	if req.Port() != reg.Port() {
		d = append(d, fmt.Sprintf("the port differs: %s requested, %s registered", portOrDefault(req), portOrDefault(reg)))
	}
	switch rp, gp := req.EscapedPath(), reg.EscapedPath(); {
	case rp == gp:
	case rp+"/" == gp:
		d = append(d, fmt.Sprintf("the path differs by a trailing slash: the registered path ends with one and the requested does not (%q requested, %q registered)", rp, gp))
	case rp == gp+"/":
		d = append(d, fmt.Sprintf("the path differs by a trailing slash: the requested path ends with one and the registered does not (%q requested, %q registered)", rp, gp))
	default:
		d = append(d, fmt.Sprintf("the path differs: %q requested, %q registered", rp, gp))
	}
	if req.RawQuery != reg.RawQuery {
		d = append(d, fmt.Sprintf("the query differs: %q requested, %q registered", req.RawQuery, reg.RawQuery))
	}
	if req.User != nil {
		d = append(d, "the requested URI contains user information, which is never allowed")
	}
	if req.Fragment != "" {
		d = append(d, "the requested URI has a fragment, which RFC 6749 §3.1.2 forbids")
	}
	if len(d) == 0 {
		d = append(d, "the URIs differ in their encoding; register the exact string the application sends")
	}
	return d
}

func portOrDefault(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch u.Scheme {
	case "https":
		return "443 (the default)"
	case "http":
		return "80 (the default)"
	}
	return "(none)"
}

// bgContext detaches work that must finish after the client went away
// (revocations at logout) from the request's cancellation.
func bgContext(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
