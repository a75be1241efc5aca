package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/web"
)

// Endpoint names, the endpoint label of bffgate_issuer_errors_total.
const (
	epAuthorize  = "authorize"
	epLogin      = "login"
	epToken      = "token"
	epUserinfo   = "userinfo"
	epRevoke     = "revoke"
	epIntrospect = "introspect"
	epLogout     = "logout"
)

// errorBody is the JSON error response of RFC 6749 §5.2.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// MarshalJSON writes the body with its description passed through
// protocol.SafeDescription: every JSON error of the issuer, whoever built
// it, stays within the characters RFC 6749 §5.2 allows.
func (b errorBody) MarshalJSON() ([]byte, error) {
	type plain errorBody
	b.Description = protocol.SafeDescription(b.Description)
	return json.Marshal(plain(b))
}

// toProtocol maps err to a protocol error: a protocol.Error as is, an
// unreachable store to temporarily_unavailable, anything else to
// server_error (its cause goes to the log only).
func toProtocol(err error) *protocol.Error {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe != nil {
		return pe
	}
	if errors.Is(err, storage.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return protocol.ErrTemporarilyUnavailable.WithCause(err)
	}
	return protocol.ErrServerError.WithCause(err)
}

// writeError writes err as the RFC 6749 §5.2 JSON body with its status. It
// is the one place a token, revocation, introspection or userinfo error is
// written. invalid_client gets WWW-Authenticate: Basic (RFC 6749 §5.2);
// invalid_token a Bearer challenge (RFC 6750 §3).
func (s *Server) writeError(c *fiber.Ctx, endpoint string, err error) error {
	pe := toProtocol(err)
	s.logError(c, endpoint, pe, "")
	if endpoint == epUserinfo {
		s.audit(c, AuditRecord{Action: "userinfo", Decision: DecisionDeny, Reason: reasonOf(pe)})
	}
	status := pe.Status
	if status == 0 {
		status = fiber.StatusBadRequest
	}
	switch pe.Code {
	case protocol.ErrInvalidClient.Code:
		c.Set(fiber.HeaderWWWAuthenticate, `Basic realm="bffgate issuer", charset="UTF-8"`)
	case protocol.ErrInvalidToken.Code, protocol.ErrInsufficientScope.Code:
		c.Set(fiber.HeaderWWWAuthenticate, bearerChallenge(pe))
	}
	noStore(c)
	return c.Status(status).JSON(errorBody{Error: pe.Code, Description: pe.Description})
}

// bearerChallenge is the WWW-Authenticate value of RFC 6750 §3. A safe
// description has neither '"' nor '\\', so it is a valid quoted-string.
func bearerChallenge(pe *protocol.Error) string {
	return `Bearer realm="bffgate issuer", error="` + pe.Code + `", error_description="` + protocol.SafeDescription(pe.Description) + `"`
}

// redirectError sends err to the client's redirect_uri as query parameters
// (RFC 6749 §4.1.2.1): error, error_description, state, and iss (RFC 9207
// §2). It is the one place an authorization error redirect is written;
// call it only once redirectURI has been checked against the client.
func (s *Server) redirectError(c *fiber.Ctx, redirectURI, state, clientID string, err error) error {
	pe := toProtocol(err)
	s.logError(c, epAuthorize, pe, clientID)
	s.audit(c, AuditRecord{Action: "authorize", ClientID: clientID, Decision: DecisionDeny, Reason: reasonOf(pe)})
	q := url.Values{}
	q.Set("error", pe.Code)
	if pe.Description != "" {
		q.Set("error_description", protocol.SafeDescription(pe.Description))
	}
	if state != "" {
		q.Set("state", state)
	}
	q.Set("iss", s.cfg.Issuer)
	return s.redirect(c, appendQuery(redirectURI, q))
}

// redirect answers 303 to a POST (the browser follows with GET) and 302
// otherwise. Redirect targets are never cached.
func (s *Server) redirect(c *fiber.Ctx, to string) error {
	noStore(c)
	c.Set(fiber.HeaderLocation, to)
	status := fiber.StatusFound
	if c.Method() == fiber.MethodPost {
		status = fiber.StatusSeeOther
	}
	return c.SendStatus(status)
}

// appendQuery adds q to uri, keeping the query the URI already has (RFC
// 6749 §3.1.2: "MUST retain" it).
func appendQuery(uri string, q url.Values) string {
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + q.Encode()
}

// errorPage renders an HTML error page: for the errors that must not be
// redirected (an unknown client, an unregistered redirect_uri: RFC 6749
// §4.1.2.1 "MUST NOT automatically redirect"), and for a login form the
// issuer cannot continue.
func (s *Server) errorPage(c *fiber.Ctx, endpoint string, status int, pe *protocol.Error, d web.Error) error {
	s.logError(c, endpoint, pe, "")
	s.audit(c, AuditRecord{Action: endpoint, Decision: DecisionDeny, Reason: reasonOf(pe)})
	d.RequestID = obs.RequestID(c)
	return s.html(c, status, func(w *strings.Builder) error { return s.pages.Error(w, d) })
}

func (s *Server) html(c *fiber.Ctx, status int, render func(*strings.Builder) error) error {
	var b strings.Builder
	if err := render(&b); err != nil {
		s.log.Error("render page", "err", err)
		return c.Status(fiber.StatusInternalServerError).SendString("internal error")
	}
	noStore(c)
	c.Set(fiber.HeaderContentSecurityPolicy, s.pages.ContentSecurityPolicy())
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).SendString(b.String())
}

// logError counts and logs one error. Client mistakes log at Info with the
// description (which never holds a secret); server errors at Error with
// their cause.
func (s *Server) logError(c *fiber.Ctx, endpoint string, pe *protocol.Error, clientID string) {
	s.metrics.errors.WithLabelValues(endpoint, pe.Code).Inc()
	attrs := []slog.Attr{
		slog.String("endpoint", endpoint),
		slog.String("error", pe.Code),
		slog.String("description", pe.Description),
		slog.String("request_id", obs.RequestID(c)),
	}
	if clientID != "" {
		attrs = append(attrs, slog.String("client_id", clientID))
	}
	level := slog.LevelInfo
	if pe.Status >= 500 {
		level = slog.LevelError
	}
	if cause := pe.Cause(); cause != nil {
		attrs = append(attrs, slog.String("cause", cause.Error()))
	}
	s.log.LogAttrs(c.UserContext(), level, "oauth error", attrs...)
}

func noStore(c *fiber.Ctx) {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderPragma, "no-cache")
}
