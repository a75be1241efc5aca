package issuer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
)

// DynamicRegistration configures dynamic client registration (RFC 7591)
// and its management protocol's read and delete (RFC 7592), for MCP
// clients that predate client ID metadata documents. Its yaml tags are
// the keys of issuer.registration.
//
// Only public clients are registered (token_endpoint_auth_method none,
// the code flow with PKCE, rotating refresh tokens), with https, loopback
// or private-use-scheme redirect URIs (the rules of configured public
// clients); their users always see the consent page, with a warning that
// the client named itself.
type DynamicRegistration struct {
	// Enabled serves the registration endpoint and announces it in the
	// metadata (registration_endpoint).
	Enabled bool `yaml:"enabled"`
	// InitialAccessToken, when set, must be sent as a bearer token to
	// register (RFC 7591 §3: an initial access token); empty leaves
	// registration open, as MCP clients expect.
	InitialAccessToken string `yaml:"initial_access_token"`
	// RateLimit is how many registrations one client address may make per
	// RateWindow (default 10 per hour), counted in the store, so every
	// instance shares the count; the address is the login throttle's
	// (Config.TrustedProxies).
	RateLimit  int           `yaml:"rate_limit"`
	RateWindow time.Duration `yaml:"rate_window"`
	// UnusedTTL is how long a registration lives without being used; each
	// authorization or token request moves it (default 30 days).
	UnusedTTL time.Duration `yaml:"unused_ttl"`
}

// Defaults of DynamicRegistration.
const (
	DefaultRegistrationRateLimit  = 10
	DefaultRegistrationRateWindow = time.Hour
	DefaultRegistrationUnusedTTL  = 30 * 24 * time.Hour
	// registrationTouchEvery bounds the writes a busy client causes: its
	// last use is recorded at most this often.
	registrationTouchEvery = time.Hour
	pathRegister           = "/register"
	epRegister             = "register"
	dynamicIDPrefix        = "dyn_"
)

// RFC 7591 §3.2.2 error codes.
var (
	errInvalidRedirectURI    = &protocol.Error{Code: "invalid_redirect_uri", Status: http.StatusBadRequest}
	errInvalidClientMetadata = &protocol.Error{Code: "invalid_client_metadata", Status: http.StatusBadRequest}
)

func (d DynamicRegistration) withDefaults() (DynamicRegistration, error) {
	if d.RateLimit == 0 {
		d.RateLimit = DefaultRegistrationRateLimit
	}
	if d.RateWindow == 0 {
		d.RateWindow = DefaultRegistrationRateWindow
	}
	if d.UnusedTTL == 0 {
		d.UnusedTTL = DefaultRegistrationUnusedTTL
	}
	switch {
	case d.RateLimit < 1:
		return d, &FieldError{Path: "registration.rate_limit", Msg: fmt.Sprintf("is %d; want at least 1", d.RateLimit)}
	case d.RateWindow < time.Second:
		return d, &FieldError{Path: "registration.rate_window", Msg: fmt.Sprintf("is %s; want at least 1s", d.RateWindow)}
	case d.UnusedTTL < time.Minute:
		return d, &FieldError{Path: "registration.unused_ttl", Msg: fmt.Sprintf("is %s; want at least 1m", d.UnusedTTL)}
	case d.InitialAccessToken != "" && len(d.InitialAccessToken) < 16:
		return d, &FieldError{Path: "registration.initial_access_token", Msg: "is shorter than 16 characters; use a long random value"}
	}
	return d, nil
}

func (s *Server) registrationEndpoint() string {
	if !s.cfg.Registration.Enabled {
		return ""
	}
	return s.endpoint(pathRegister)
}

// registrationResponse is the client information response (RFC 7591
// §3.2.1, RFC 7592 §3).
type registrationResponse struct {
	ClientID                string   `json:"client_id"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	Scope                   string   `json:"scope,omitempty"`
	RegistrationAccessToken string   `json:"registration_access_token,omitempty"`
	RegistrationClientURI   string   `json:"registration_client_uri"`
}

// registeredMetadata is what is stored of a registration's metadata.
type registeredMetadata struct {
	ClientName   string   `json:"client_name,omitempty"`
	ClientURI    string   `json:"client_uri,omitempty"`
	RedirectURIs []string `json:"redirect_uris"`
	GrantTypes   []string `json:"grant_types"`
	Scope        string   `json:"scope,omitempty"`
}

// registrationRequest is the RFC 7591 §2 metadata the issuer reads; other
// members are ignored (§2: "The authorization server MUST ignore any
// client metadata sent by the client that it does not understand").
type registrationRequest struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name"`
	ClientURI               string   `json:"client_uri"`
	Scope                   string   `json:"scope"`
	JWKS                    any      `json:"jwks"`
	JWKSURI                 string   `json:"jwks_uri"`
}

// handleRegister is the client registration endpoint (RFC 7591 §3).
func (s *Server) handleRegister(c *fiber.Ctx) error {
	fail := func(err error) error { return s.writeError(c, epRegister, err) }
	if tok := s.cfg.Registration.InitialAccessToken; tok != "" {
		got, ok := bearerHeader(c.Get(fiber.HeaderAuthorization))
		if !ok || subtle.ConstantTimeCompare(digest(got), digest(tok)) != 1 {
			return fail(protocol.ErrInvalidToken.WithDescription("registration requires the initial access token as a bearer token (RFC 7591 §3)"))
		}
	}
	if mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType)); err != nil || mt != fiber.MIMEApplicationJSON {
		return fail(protocol.ErrInvalidRequest.WithDescription("the registration request must be a JSON object with Content-Type application/json (RFC 7591 §3.1)"))
	}
	now := s.now()
	if err := s.registrationAllowed(c, now); err != nil {
		return fail(err)
	}
	body, err := formBody(c) // bounded, never inflated
	if err != nil {
		return fail(err)
	}
	var req registrationRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		return fail(errInvalidClientMetadata.WithDescription("the body is not a JSON object of client metadata"))
	}
	meta, err := s.checkRegistration(req)
	if err != nil {
		return fail(err)
	}
	raw, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("issuer: encode registration: %w", err)
	}
	id := dynamicIDPrefix + randomToken(18)
	token := randomToken(32)
	reg := storage.Registration{ClientID: id, Metadata: raw, TokenHash: digest(token), Created: now, LastUsed: now,
		ExpiresAt: now.Add(s.cfg.Registration.UnusedTTL)}
	if err := s.cfg.Store.CreateRegistration(c.UserContext(), reg); err != nil {
		return fail(protocol.ErrTemporarilyUnavailable.WithDescription("the registration could not be stored; retry later").WithCause(err))
	}
	s.mcp.registrations.WithLabelValues("registered").Inc()
	s.log.Info("client registered", "client_id", id, "client_name", clip(meta.ClientName, 64), "client_ip", s.clientIP(c),
		"redirect_uris", strings.Join(meta.RedirectURIs, " "))
	s.audit(c, AuditRecord{Action: "register", ClientID: id, Decision: DecisionAllow, Reason: "dynamic client registration (RFC 7591)"})
	resp := s.registrationResponse(id, meta, reg.Created)
	resp.RegistrationAccessToken = token
	noStore(c)
	return c.Status(fiber.StatusCreated).JSON(resp)
}

func (s *Server) registrationResponse(id string, m registeredMetadata, created time.Time) registrationResponse {
	return registrationResponse{
		ClientID: id, ClientIDIssuedAt: created.Unix(), ClientName: m.ClientName, ClientURI: m.ClientURI,
		RedirectURIs: m.RedirectURIs, GrantTypes: m.GrantTypes, ResponseTypes: []string{"code"}, TokenEndpointAuthMethod: authNone,
		Scope: m.Scope, RegistrationClientURI: s.endpoint(pathRegister + "/" + id),
	}
}

// registrationAllowed counts a registration of the client's address and
// refuses it past Registration.RateLimit per RateWindow (the login
// throttle's store-backed counters, under a key of their own).
func (s *Server) registrationAllowed(c *fiber.Ctx, now time.Time) error {
	key := "register\x00" + s.clientIP(c)
	sum := sha256.Sum256([]byte(key))
	k := "r:" + fmt.Sprintf("%x", sum[:16])
	rc := s.cfg.Registration
	st, err := s.cfg.Store.LoginFailures(c.UserContext(), k, now)
	if err != nil {
		return protocol.ErrTemporarilyUnavailable.WithDescription("the registration limit cannot be read; retry later").WithCause(err)
	}
	if st.Locked(now) {
		s.mcp.registrations.WithLabelValues("rate_limited").Inc()
		s.log.Warn("client registration refused: rate limit", "client_ip", s.clientIP(c), "until", st.LockedUntil)
		c.Set(fiber.HeaderRetryAfter, fmt.Sprint(int(st.LockedUntil.Sub(now).Seconds())+1))
		return (&protocol.Error{Code: "slow_down", Status: http.StatusTooManyRequests}).WithDescription(
			"this address registered %d clients within %s; retry later", rc.RateLimit, rc.RateWindow)
	}
	if _, err := s.cfg.Store.RecordLoginFailure(c.UserContext(), k, now, storage.LoginPolicy{
		MaxFailures: rc.RateLimit, Window: rc.RateWindow, Lockout: rc.RateWindow, MaxLockout: rc.RateWindow,
	}); err != nil {
		return protocol.ErrTemporarilyUnavailable.WithDescription("the registration limit cannot be recorded; retry later").WithCause(err)
	}
	return nil
}

// checkRegistration validates the metadata (RFC 7591 §2, §3.2.2).
func (s *Server) checkRegistration(req registrationRequest) (registeredMetadata, error) {
	bad := func(format string, args ...any) (registeredMetadata, error) {
		return registeredMetadata{}, errInvalidClientMetadata.WithDescription(format, args...)
	}
	switch {
	case req.TokenEndpointAuthMethod != "" && req.TokenEndpointAuthMethod != authNone:
		return bad("token_endpoint_auth_method %q is not offered; this issuer registers public clients (none) that use PKCE", clip(req.TokenEndpointAuthMethod, 64))
	case req.JWKS != nil || req.JWKSURI != "":
		return bad("jwks and jwks_uri are not accepted: registered clients are public")
	case len(req.RedirectURIs) == 0:
		return registeredMetadata{}, errInvalidRedirectURI.WithDescription("redirect_uris is required")
	case len(req.RedirectURIs) > 20:
		return registeredMetadata{}, errInvalidRedirectURI.WithDescription("at most 20 redirect_uris")
	case len(req.ClientName) > 200 || !printableUTF8(req.ClientName):
		return bad("client_name must be at most 200 bytes without control characters")
	case len(req.ClientURI) > 2048:
		return bad("client_uri is longer than 2048 bytes")
	}
	for i, u := range req.RedirectURIs {
		if err := validateRedirectURI(u, true, false); err != nil {
			return registeredMetadata{}, errInvalidRedirectURI.WithDescription("redirect_uris[%d]: %v", i, err)
		}
	}
	for _, rt := range req.ResponseTypes {
		if rt != "code" {
			return bad("response_types %q is not offered (code)", clip(rt, 64))
		}
	}
	grants := slices.Clone(req.GrantTypes)
	if len(grants) == 0 {
		grants = []string{GrantAuthorizationCode}
	}
	for _, g := range grants {
		if g != GrantAuthorizationCode && g != GrantRefreshToken {
			return bad("grant_types %q is not offered to registered clients (authorization_code, refresh_token)", clip(g, 64))
		}
	}
	if !slices.Contains(grants, GrantAuthorizationCode) {
		return bad("grant_types must include authorization_code")
	}
	if !slices.Contains(grants, GrantRefreshToken) {
		grants = append(grants, GrantRefreshToken)
	}
	if req.Scope != "" {
		if !protocol.ValidScope(req.Scope) {
			return bad("scope holds characters RFC 6749 §3.3 does not allow")
		}
		for _, sc := range protocol.ParseScope(req.Scope) {
			if !slices.Contains(supportedScopes, sc) && s.scopeOwner(sc) == "" {
				return bad("scope %q is not offered by this issuer", clip(sc, 64))
			}
		}
	}
	return registeredMetadata{ClientName: req.ClientName, ClientURI: req.ClientURI, RedirectURIs: slices.Clone(req.RedirectURIs),
		GrantTypes: grants, Scope: strings.Join(protocol.ParseScope(req.Scope), " ")}, nil
}

// handleRegistration is RFC 7592's client configuration endpoint: GET
// reads the registration, DELETE removes it; both with the registration
// access token. Updates (PUT) are not offered: a client registers anew.
func (s *Server) handleRegistration(c *fiber.Ctx) error {
	id := c.Params("id")
	ctx := c.UserContext()
	fail := func(err error) error { return s.writeError(c, epRegister, err) }
	token, ok := bearerHeader(c.Get(fiber.HeaderAuthorization))
	if !ok {
		return fail(protocol.ErrInvalidToken.WithDescription("send the registration access token as a bearer token (RFC 7592 §3)"))
	}
	reg, err := s.cfg.Store.Registration(ctx, id, s.now())
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrExpired), !strings.HasPrefix(id, dynamicIDPrefix):
		// RFC 7592 §3: an unknown client is a 401, like a wrong token, so
		// that ids cannot be probed.
		subtle.ConstantTimeCompare(digest(token), s.dummySecret[:])
		return fail(protocol.ErrInvalidToken.WithDescription("the registration access token is not valid for this client"))
	case err != nil:
		return fail(protocol.ErrTemporarilyUnavailable.WithDescription("the registration cannot be read; retry later").WithCause(err))
	}
	if subtle.ConstantTimeCompare(digest(token), reg.TokenHash) != 1 {
		return fail(protocol.ErrInvalidToken.WithDescription("the registration access token is not valid for this client"))
	}
	noStore(c)
	if c.Method() == fiber.MethodDelete {
		if err := s.cfg.Store.DeleteRegistration(ctx, id); err != nil {
			return fail(protocol.ErrTemporarilyUnavailable.WithDescription("the registration could not be deleted; retry later").WithCause(err))
		}
		s.mcp.registrations.WithLabelValues("deleted").Inc()
		s.log.Info("client registration deleted", "client_id", id)
		s.audit(c, AuditRecord{Action: "register", ClientID: id, Decision: DecisionAllow, Reason: "registration deleted (RFC 7592)"})
		return c.SendStatus(fiber.StatusNoContent)
	}
	var m registeredMetadata
	if err := json.Unmarshal(reg.Metadata, &m); err != nil {
		return fmt.Errorf("issuer: decode registration %s: %w", id, err)
	}
	return c.JSON(s.registrationResponse(id, m, reg.Created))
}

// registeredClient returns the dynamically registered client id, or nil
// when there is none (or it expired). A use moves its expiry, at most
// once per registrationTouchEvery.
func (s *Server) registeredClient(ctx context.Context, id string) (*client, error) {
	now := s.now()
	reg, err := s.cfg.Store.Registration(ctx, id, now)
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrExpired):
		return nil, nil
	case err != nil:
		return nil, err
	}
	var m registeredMetadata
	if err := json.Unmarshal(reg.Metadata, &m); err != nil {
		return nil, fmt.Errorf("issuer: decode registration %s: %w", id, err)
	}
	cl, err := publicClient(id, clientDocument{ClientID: id, ClientName: m.ClientName, RedirectURIs: m.RedirectURIs, GrantTypes: m.GrantTypes})
	if err != nil {
		return nil, fmt.Errorf("issuer: registration %s: %w", id, err)
	}
	cl.source = sourceDynamic
	if now.Sub(reg.LastUsed) >= registrationTouchEvery {
		if err := s.cfg.Store.TouchRegistration(bgContext(ctx), id, now, now.Add(s.cfg.Registration.UnusedTTL)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			s.log.Warn("could not record a registered client's use", "client_id", id, "err", err)
		}
	}
	return cl, nil
}

// bearerHeader reads an Authorization: Bearer value (RFC 6750 §2.1).
func bearerHeader(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || len(tok) > 4096 {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// digest is the SHA-256 of a secret, compared in constant time.
func digest(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// printableUTF8 reports whether s has no control characters.
func printableUTF8(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}
