package bff

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gofiber/fiber/v2"
	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/session"
)

// restartMarker prefixes the state of a login the gateway restarted
// because a callback found no flow cookie. If that login's callback finds
// none either, the browser is dropping the gateway's cookies, and the
// callback says so instead of looping.
const restartMarker = "r."

// passThroughParams are the authorization request parameters a login may
// carry through to the provider (OpenID Connect Core 3.1.2.1).
var passThroughParams = []string{"prompt", "login_hint", "acr_values", "max_age", "ui_locales"}

var promptValues = map[string]bool{"none": true, "login": true, "consent": true, "select_account": true, "create": true}

// checkAuthParam checks one pass-through parameter's value.
func checkAuthParam(name, v string) error {
	if len(v) > 512 {
		return errors.New(name + " is longer than 512 characters")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return errors.New(name + " contains a control character")
		}
	}
	switch name {
	case "prompt":
		for _, p := range strings.Fields(v) {
			if !promptValues[p] {
				return errors.New("prompt " + strconv.Quote(p) + " is not one of none, login, consent, select_account, create")
			}
		}
	case "max_age":
		if n, err := strconv.ParseUint(v, 10, 31); err != nil || n > 1<<30 {
			return errors.New("max_age must be a number of seconds")
		}
	}
	return nil
}

// login answers GET {base}/login: it starts an authorization code flow
// with PKCE S256 (RFC 7636), state and nonce, sealing them into a flow
// cookie of their own, and redirects to the provider.
func (g *Gateway) login(c *fiber.Ctx) error {
	ctx := c.UserContext()
	loginURL := g.base + "/login"
	ret, err := validReturnURL(c.Query("returnUrl"), g.base)
	if err != nil {
		g.loginFailed(c, "invalid_return_url", err)
		return g.failPage(c, newError(fiber.StatusBadRequest, "invalid_return_url", err.Error()),
			"This sign-in link is not valid", loginURL, "Sign in")
	}
	opts := []oauth2.AuthCodeOption{}
	for _, p := range passThroughParams {
		v := c.Query(p)
		if v == "" {
			continue
		}
		if err := checkAuthParam(p, v); err != nil {
			g.loginFailed(c, "invalid_request", err)
			return g.failPage(c, newError(fiber.StatusBadRequest, "invalid_request", err.Error()),
				"This sign-in link is not valid", loginURL, "Sign in")
		}
		opts = append(opts, oauth2.SetAuthURLParam(p, v))
	}
	for k, v := range g.cfg.Provider.ExtraAuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	st := &flowState{
		State:     randomToken(32),
		Verifier:  oauth2.GenerateVerifier(),
		Nonce:     randomToken(32),
		ReturnURL: ret,
		Created:   g.now().Unix(),
		Frontend:  g.cfg.Name,
	}
	if c.Query("restart") == "1" {
		st.State = restartMarker + st.State
	}
	if err := g.flows.start(c, st); err != nil {
		g.loginFailed(c, "flow_cookie", err)
		return g.failPage(c, newError(fiber.StatusInternalServerError, "server_error", "the gateway could not start the login; the error is in its log"),
			"Sign-in failed", loginURL, "Try again")
	}
	opts = append(opts, oauth2.S256ChallengeOption(st.Verifier), oidc.Nonce(st.Nonce))
	g.met.loginsStarted.Inc()
	g.log.LogAttrs(ctx, slog.LevelInfo, "login started", slog.String("request_id", obs.RequestID(c)), slog.String("return_url", ret))
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect(g.oauth.AuthCodeURL(st.State, opts...), fiber.StatusFound)
}

// loginFailed counts and logs a failed login; err never holds a secret.
func (g *Gateway) loginFailed(c *fiber.Ctx, reason string, err error) {
	g.met.loginsFailed.WithLabelValues(reason).Inc()
	attrs := []slog.Attr{slog.String("request_id", obs.RequestID(c)), slog.String("reason", reason)}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	g.log.LogAttrs(c.UserContext(), slog.LevelWarn, "login failed", attrs...)
}

// safeCode keeps a provider's error code printable in a page and a log.
func safeCode(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// callback answers GET {base}/callback (OpenID Connect Core 3.1.2.5): it
// checks the state against its flow cookie, exchanges the code with the
// PKCE verifier, verifies the ID token and its nonce, creates a session
// under a fresh identity and redirects to the flow's return URL.
func (g *Gateway) callback(c *fiber.Ctx) error {
	ctx := c.UserContext()
	loginURL := g.base + "/login"
	state := c.Query("state")
	if state == "" {
		g.loginFailed(c, "state_missing", nil)
		return g.failPage(c, newError(fiber.StatusBadRequest, "state_missing",
			"the sign-in response carries no state, so it cannot be matched to a sign-in started here; start again"),
			"Sign-in failed", loginURL, "Sign in again")
	}
	st, flowName, ok := g.flows.find(c, state)
	if !ok {
		expired := flowName != "" && c.Cookies(flowName) != ""
		if expired {
			g.jar.clear(c, flowName)
		}
		if !expired && g.flows.any(c) {
			// Other logins are in progress in this browser, but none
			// with this state: a forged or crossed response.
			g.loginFailed(c, "state_mismatch", nil)
			return g.failPage(c, newError(fiber.StatusBadRequest, "state_mismatch",
				"the sign-in response does not match any sign-in started in this browser; start again"),
				"Sign-in failed", loginURL, "Sign in again")
		}
		if strings.HasPrefix(state, restartMarker) {
			g.loginFailed(c, "flow_missing", errors.New("the flow cookie of a restarted login is missing too: the browser drops the gateway's cookies"))
			return g.failPage(c, newError(fiber.StatusBadRequest, "cookies_blocked",
				"the sign-in could not finish because this browser did not keep the gateway's cookies; allow cookies for this site and sign in again"),
				"Sign-in failed", loginURL, "Sign in again")
		}
		// An old tab, a bookmark, a login left open too long: the flow
		// is gone or expired. Start over.
		g.loginFailed(c, "flow_missing", nil)
		c.Set(fiber.HeaderCacheControl, "no-store")
		return c.Redirect(loginURL+"?restart=1", fiber.StatusFound)
	}
	g.jar.clear(c, flowName) // one use, whatever happens next
	again := loginURL + "?returnUrl=" + url.QueryEscape(st.ReturnURL)

	if perr := c.Query("error"); perr != "" {
		code := safeCode(perr)
		g.loginFailed(c, "provider_error", errors.New("provider answered "+code+": "+safeText(c.Query("error_description"))))
		msg := "the sign-in provider refused the sign-in (" + code + ")"
		switch code {
		case "access_denied":
			msg = "the sign-in was cancelled or refused at the provider"
		case "login_required", "interaction_required", "consent_required", "account_selection_required":
			msg = "the provider needs you to sign in interactively"
		}
		return g.failPage(c, newError(fiber.StatusBadRequest, code, msg+"; you can try again"), "Sign-in failed", again, "Try again")
	}
	// RFC 9207: when the response names its issuer, it must be ours (mix-up
	// defence); a provider that promises the parameter must send it.
	iss := c.Query("iss")
	if iss == "" && g.meta.IssParameter {
		g.loginFailed(c, "issuer_missing", errors.New("the provider promises the iss parameter (RFC 9207) but the response has none"))
		return g.failPage(c, newError(fiber.StatusBadRequest, "issuer_missing",
			"the sign-in response does not say which issuer sent it, although this site's provider always does; start the sign-in again"), "Sign-in failed", again, "Try again")
	}
	if iss != "" && subtle.ConstantTimeCompare([]byte(iss), []byte(g.cfg.Provider.IssuerURL)) != 1 {
		g.loginFailed(c, "issuer_mismatch", errors.New("iss parameter does not name the configured issuer"))
		return g.failPage(c, newError(fiber.StatusBadRequest, "issuer_mismatch",
			"the sign-in response comes from another issuer than this site's provider"), "Sign-in failed", again, "Try again")
	}
	code := c.Query("code")
	if code == "" {
		g.loginFailed(c, "invalid_request", errors.New("callback without code"))
		return g.failPage(c, newError(fiber.StatusBadRequest, "invalid_request",
			"the sign-in response carries no authorization code"), "Sign-in failed", again, "Try again")
	}

	hctx := context.WithValue(ctx, oauth2.HTTPClient, g.cfg.Provider.HTTPClient)
	tok, err := g.oauth.Exchange(hctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && providerUnavailable(re) {
			g.loginFailed(c, "provider_unavailable", errors.New("token endpoint answered "+strconv.Itoa(re.Response.StatusCode)+" "+safeCode(re.ErrorCode)+": "+safeText(re.ErrorDescription)))
			c.Set(fiber.HeaderRetryAfter, "5")
			return g.failPage(c, newError(fiber.StatusServiceUnavailable, "provider_unavailable",
				"the sign-in service is unavailable right now, so the sign-in could not finish; try again in a moment"),
				"Sign-in service unavailable", again, "Try again")
		}
		if re != nil {
			g.loginFailed(c, "exchange_failed", errors.New("token endpoint answered "+strconv.Itoa(re.Response.StatusCode)+" "+safeCode(re.ErrorCode)+": "+safeText(re.ErrorDescription)))
			return g.failPage(c, newError(fiber.StatusBadRequest, "exchange_failed",
				"the provider did not accept the sign-in's authorization code (it may have expired or been used already)"),
				"Sign-in failed", again, "Try again")
		}
		// Unreachable is unavailable too: the same 503 as a provider that
		// answers 5xx, and as the API's provider_unavailable.
		g.loginFailed(c, "provider_unavailable", err)
		c.Set(fiber.HeaderRetryAfter, "5")
		return g.failPage(c, newError(fiber.StatusServiceUnavailable, "provider_unavailable",
			"the sign-in provider could not be reached to finish the sign-in; try again shortly"), "Sign-in service unavailable", again, "Try again")
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		g.loginFailed(c, "id_token_invalid", errors.New("the token response has no id_token (is openid among the scopes?)"))
		return g.failPage(c, newError(fiber.StatusBadGateway, "id_token_missing",
			"the provider answered without an ID token"), "Sign-in failed", again, "Try again")
	}
	octx := oidc.ClientContext(ctx, g.cfg.Provider.HTTPClient)
	idt, err := g.verifier.Verify(octx, rawID)
	if err == nil && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		err = errors.New("nonce does not match the login's")
	}
	if err == nil && idt.AccessTokenHash != "" {
		err = idt.VerifyAccessToken(tok.AccessToken)
	}
	if err != nil {
		g.loginFailed(c, "id_token_invalid", err)
		return g.failPage(c, newError(fiber.StatusBadRequest, "id_token_invalid",
			"the provider's ID token did not pass verification"), "Sign-in failed", again, "Try again")
	}
	var claims map[string]json.RawMessage
	if err := idt.Claims(&claims); err != nil {
		g.loginFailed(c, "id_token_invalid", err)
		return g.failPage(c, newError(fiber.StatusBadRequest, "id_token_invalid",
			"the provider's ID token claims are not a JSON object"), "Sign-in failed", again, "Try again")
	}
	if g.cfg.Provider.UseUserinfo && g.provider.UserInfoEndpoint() != "" {
		ui, err := g.provider.UserInfo(octx, oauth2.StaticTokenSource(tok))
		if err == nil && ui.Subject != idt.Subject {
			err = errors.New("userinfo sub differs from the ID token's")
		}
		var uc map[string]json.RawMessage
		if err == nil {
			err = ui.Claims(&uc)
		}
		if err != nil {
			g.loginFailed(c, "userinfo_failed", err)
			return g.failPage(c, newError(fiber.StatusBadGateway, "userinfo_failed",
				"the provider's userinfo endpoint did not answer as expected"), "Sign-in failed", again, "Try again")
		}
		for k, v := range uc {
			if !protocolClaims[k] && k != "sub" && k != "sid" {
				claims[k] = v
			}
		}
	}
	var sid string
	if raw, ok := claims["sid"]; ok {
		_ = json.Unmarshal(raw, &sid)
	}
	if ss := c.Query("session_state"); ss != "" && len(ss) <= 512 {
		b, _ := json.Marshal(safeText(ss))
		claims[sessionStateKey] = b
	}
	claimsJSON, _ := json.Marshal(claims)

	now := g.now()
	abs := now.Add(g.cfg.AbsoluteLifetime)
	if rexp := refreshExpiry(tok, now); !rexp.IsZero() && rexp.Before(abs) {
		abs = rexp
	}
	s := &session.Session{
		Subject: idt.Subject, SID: sid, Issuer: idt.Issuer, Claims: claimsJSON,
		IDToken: rawID, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType,
		AccessExpiry: tokens.AccessExpiry(tok, now), Created: now, LastSeen: now, IdleTimeout: g.cfg.IdleTimeout, AbsoluteExpiry: abs,
		Frontend: g.cfg.Name,
	}
	// No fixation: a session the browser had before is ended, and the new
	// one gets a fresh identity from the store.
	if old := g.jar.readHandle(c); old != "" {
		_ = g.store.Delete(ctx, old)
	}
	handle, err := g.store.Create(ctx, s)
	if err != nil {
		switch {
		case errors.Is(err, session.ErrTooLarge):
			g.loginFailed(c, "session_too_large", err)
			return g.failPage(c, newError(fiber.StatusInternalServerError, "session_too_large",
				"the session is too large for the cookie session store (large tokens); the operator should use the bbolt or redis session store"),
				"Sign-in failed", again, "Try again")
		default:
			g.loginFailed(c, "session_store", err)
			return g.failPage(c, newError(fiber.StatusServiceUnavailable, "session_store_unavailable",
				"the session could not be saved; try again shortly"), "Sign-in failed", again, "Try again")
		}
	}
	if err := g.writeSession(c, handle, s); err != nil {
		_ = g.store.Delete(ctx, handle)
		g.loginFailed(c, "session_too_large", err)
		return g.failPage(c, asError(err), "Sign-in failed", again, "Try again")
	}
	g.met.loginsCompleted.Inc()
	g.met.sessionsCreated.Inc()
	g.log.LogAttrs(ctx, slog.LevelInfo, "login completed", slog.String("request_id", obs.RequestID(c)),
		slog.String("sub", s.Subject), slog.Bool("has_sid", sid != ""), slog.Bool("refresh_token", s.RefreshToken != ""),
		slog.Time("absolute_expiry", abs), slog.Int("cookie_bytes", len(handle)))
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect(st.ReturnURL, fiber.StatusFound)
}

// providerUnavailable reports whether a token endpoint's error answer
// means the provider cannot serve now (RFC 6749 §5.2 has no such code, but
// providers answer 5xx, or 503 temporarily_unavailable as the embedded
// issuer does on a storage fault), rather than that the code was refused.
func providerUnavailable(re *oauth2.RetrieveError) bool {
	if re.Response != nil && re.Response.StatusCode >= 500 {
		return true
	}
	return re.ErrorCode == "temporarily_unavailable" || re.ErrorCode == "server_error"
}

// safeText keeps printable ASCII of s, at most 200 bytes, for a log line.
func safeText(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// refreshExpiry is when the refresh token expires, if the provider says:
// refresh_expires_in in the token response (Keycloak), or the exp claim of
// a JWT refresh token (the embedded issuer, ForgeRock AM). The JWT is not
// verified: it came straight from the token endpoint, and the value only
// shortens the session. Zero means unknown.
func refreshExpiry(tok *oauth2.Token, now time.Time) time.Time {
	switch v := tok.Extra("refresh_expires_in").(type) {
	case float64:
		if v > 0 {
			return now.Add(time.Duration(v) * time.Second)
		}
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			return now.Add(time.Duration(n) * time.Second)
		}
	}
	parts := strings.Split(tok.RefreshToken, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return time.Time{}
	}
	if n, err := c.Exp.Int64(); err == nil && n > 0 {
		return time.Unix(n, 0)
	}
	return time.Time{}
}
