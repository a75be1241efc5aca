package demoapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/obs"
)

// realm names the protection space in every Bearer challenge (RFC 6750 §3).
const realm = "demoapi"

// maxBody bounds request bodies: an item is a short title.
const maxBody = 16 << 10

const localsPrincipal = "demoapi.principal"

// API is the demo resource server. Build it with New; serve App.
type API struct {
	cfg      Config
	log      *slog.Logger
	verifier verifier
	items    *items
	obs      *obs.Obs
	app      *fiber.App

	verifications *prometheus.CounterVec
	itemsGauge    prometheus.Gauge
}

// New validates cfg and builds the API. It does not contact the issuer:
// discovery and the JWK set are fetched on the first request (and by
// /readyz), so the API can start before the issuer does. ctx is reserved
// for that first fetch and is not retained.
func New(ctx context.Context, cfg Config) (*API, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	_ = ctx // nothing is fetched here; kept so a future warm-up can honour it
	o, err := obs.New(obs.Config{
		Component:  "demoapi",
		Logger:     cfg.Logger,
		Registerer: cfg.Registerer,
		Gatherer:   cfg.Gatherer,
		AccessLog:  cfg.AccessLog,
	})
	if err != nil {
		return nil, fmt.Errorf("demoapi: metrics: %w", err)
	}
	a := &API{cfg: cfg, log: o.Logger(), items: newItems(cfg.Now), obs: o}
	disco := newDiscoverer(&a.cfg)
	switch cfg.Mode {
	case ModeIntrospect:
		a.verifier = &introspector{cfg: &a.cfg, disco: disco}
	default:
		a.verifier = &jwtVerifier{cfg: &a.cfg, disco: disco}
	}
	a.verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_demoapi_token_verifications_total",
		Help: "Bearer tokens checked by the demo API, by mode and result (ok, no_token, invalid, expired, insufficient_scope, unavailable).",
	}, []string{"mode", "result"})
	a.itemsGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "bffgate_demoapi_items",
		Help: "Items held in memory by the demo API, all users together.",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{a.verifications, a.itemsGauge} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("demoapi: metrics: %w", err)
			}
		}
	}
	if a.app, err = a.newApp(); err != nil {
		return nil, fmt.Errorf("demoapi: %w", err)
	}
	return a, nil
}

// App returns the fiber app serving the API, /healthz, /readyz and
// /metrics (when Config.Gatherer is set).
func (a *API) App() *fiber.App { return a.app }

// newApp builds the app through internal/edge, which every listener
// shares: framing checks, parse errors answered by kind, copied request
// values.
func (a *API) newApp() (*fiber.App, error) {
	app, err := edge.New(edge.Config{Obs: a.obs, Fiber: fiber.Config{
		AppName:               "bffgate demo API",
		DisableStartupMessage: true,
		BodyLimit:             maxBody,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		ErrorHandler:          a.errorHandler,
	}})
	if err != nil {
		return nil, err
	}
	a.obs.Mount(app, obs.Check{Name: "issuer", Fn: a.verifier.ready})
	api := app.Group("/api", a.authenticate)
	api.Get("/whoami", a.whoami)
	api.Use("/items", a.requireUser)
	api.Get("/items", a.listItems)
	api.Post("/items", a.addItem)
	api.Delete("/items/:id", a.deleteItem)
	return app, nil
}

// errorBody is the RFC 6750 §3 / RFC 6749 §5.2 error shape every failure
// of this API uses.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func sendError(c *fiber.Ctx, status int, code, desc string) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(status).JSON(errorBody{Error: code, Description: desc})
}

// errorHandler answers fiber's own errors (unknown route, wrong method,
// body too large) in the same JSON shape; anything else is a 500 whose
// cause goes to the log only.
func (a *API) errorHandler(c *fiber.Ctx, err error) error {
	var fe *fiber.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case fiber.StatusNotFound:
			return sendError(c, fe.Code, "not_found", "no such endpoint: this API serves /api/whoami and /api/items")
		case fiber.StatusMethodNotAllowed:
			return sendError(c, fe.Code, "method_not_allowed", "method not allowed on this endpoint")
		case fiber.StatusRequestEntityTooLarge:
			return sendError(c, fe.Code, "invalid_request", fmt.Sprintf("the request body is larger than %d bytes", maxBody))
		}
		if fe.Code < 500 {
			return sendError(c, fe.Code, "invalid_request", fe.Message)
		}
	}
	a.log.Error("demo API request failed", "request_id", obs.RequestID(c), "path", c.Path(), "err", err)
	return sendError(c, fiber.StatusInternalServerError, "server_error", "the demo API failed; see its log for request id "+obs.RequestID(c))
}

// challenge writes a 401 or 403 with the RFC 6750 §3 WWW-Authenticate
// header. code "" is the bare challenge for a request without a token
// (§3.1: no error attribute then).
func challenge(c *fiber.Ctx, status int, code, desc string) error {
	v := `Bearer realm="` + realm + `"`
	if code != "" {
		v += `, error="` + code + `"`
		if desc != "" {
			// §3: the description is a quoted-string of %x20-21 / %x23-5B /
			// %x5D-7E; ours are fixed ASCII texts without quotes or
			// backslashes.
			v += `, error_description="` + desc + `"`
		}
	}
	c.Set(fiber.HeaderWWWAuthenticate, v)
	if code == "" {
		return sendError(c, status, "unauthorized", "no bearer token: send Authorization: Bearer <access token>")
	}
	return sendError(c, status, code, desc)
}

// bearer extracts the token of an "Authorization: Bearer <token>" header
// (RFC 6750 §2.1). ok is false when there is no Bearer credential at all;
// malformed is true when there is one but it is not a b64token.
func bearer(h string) (token string, ok, malformed bool) {
	scheme, rest, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false, false
	}
	token = strings.TrimLeft(rest, " ")
	if token == "" || len(token) > 16<<10 {
		return "", true, true
	}
	for i := 0; i < len(token); i++ {
		b := token[i]
		// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
			b == '-' || b == '.' || b == '_' || b == '~' || b == '+' || b == '/' || b == '=') {
			return "", true, true
		}
	}
	return token, true, false
}

// authenticate verifies the bearer token and stores the Principal for the
// handlers. Every verification failure is a 401 invalid_token whose
// reason goes to the log, not to the client (go-oidc#327); only expiry is
// named, because it tells the caller to refresh.
func (a *API) authenticate(c *fiber.Ctx) error {
	if len(c.Request().URI().QueryArgs().Peek("access_token")) > 0 {
		// RFC 6750 §2.3 (URI query) leaks tokens into logs and history;
		// refused outright rather than ignored, so the mistake is seen.
		a.count("invalid")
		return challenge(c, fiber.StatusBadRequest, "invalid_request", "send the token in the Authorization header, not in the URL")
	}
	raw, ok, malformed := bearer(c.Get(fiber.HeaderAuthorization))
	if !ok {
		a.count("no_token")
		return challenge(c, fiber.StatusUnauthorized, "", "")
	}
	if malformed {
		a.count("invalid")
		a.log.Info("bearer token rejected", "request_id", obs.RequestID(c), "reason", "the Authorization header is not a b64token")
		return challenge(c, fiber.StatusUnauthorized, "invalid_token", "the access token is malformed")
	}
	p, err := a.verifier.verify(c.UserContext(), raw)
	switch {
	case err == nil:
	case errors.Is(err, ErrUnavailable):
		a.count("unavailable")
		a.log.Warn("cannot verify bearer token: the issuer is unreachable", "request_id", obs.RequestID(c), "err", err)
		c.Set(fiber.HeaderRetryAfter, "5")
		return sendError(c, fiber.StatusServiceUnavailable, "temporarily_unavailable", "the authorization server cannot be reached to check the token; retry shortly")
	case errors.Is(err, ErrExpired):
		a.count("expired")
		a.log.Info("bearer token rejected", "request_id", obs.RequestID(c), "reason", err.Error())
		return challenge(c, fiber.StatusUnauthorized, "invalid_token", "the access token expired")
	default:
		a.count("invalid")
		a.log.Info("bearer token rejected", "request_id", obs.RequestID(c), "reason", err.Error())
		return challenge(c, fiber.StatusUnauthorized, "invalid_token", "the access token is not valid for this API")
	}
	if a.cfg.RequiredScope != "" && !p.HasScope(a.cfg.RequiredScope) {
		a.count("insufficient_scope")
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="`+realm+`", error="insufficient_scope", scope="`+a.cfg.RequiredScope+`"`)
		return sendError(c, fiber.StatusForbidden, "insufficient_scope", "the access token lacks the scope "+a.cfg.RequiredScope)
	}
	a.count("ok")
	c.Locals(localsPrincipal, p)
	// Answers depend on the caller's token: never cached by anything shared.
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderVary, fiber.HeaderAuthorization)
	return c.Next()
}

func (a *API) count(result string) {
	a.verifications.WithLabelValues(a.cfg.Mode, result).Inc()
}

func principal(c *fiber.Ctx) *Principal {
	p, _ := c.Locals(localsPrincipal).(*Principal)
	return p
}

// Whoami is the body of GET /api/whoami: what the API saw in the token.
// The token itself is never echoed; the jti only as a hash prefix.
type Whoami struct {
	Subject   string     `json:"subject"`
	ClientID  string     `json:"client_id,omitempty"`
	Client    bool       `json:"client,omitempty"` // a client_credentials token: Subject is the client, no user
	Issuer    string     `json:"issuer,omitempty"`
	Audience  []string   `json:"audience"`
	Scopes    []string   `json:"scopes"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	ExpiresIn *int64     `json:"expires_in,omitempty"` // seconds, from the API's clock
	IssuedAt  *time.Time `json:"issued_at,omitempty"`
	// JTIHash is the first 16 hex digits of SHA-256(jti): enough to see
	// that a refresh brought a new token, useless for replay or denylist
	// probing.
	JTIHash string      `json:"jti_sha256,omitempty"`
	Token   TokenFormat `json:"token"`
}

// TokenFormat describes the access token's form.
type TokenFormat struct {
	// Format is "signed" (JWS), "encrypted" (JWE) or "opaque".
	Format string `json:"format"`
	Alg    string `json:"alg,omitempty"`
	Enc    string `json:"enc,omitempty"`
	Typ    string `json:"typ,omitempty"`
	// VerifiedBy is "jwks" (signature checked locally) or "introspection"
	// (RFC 7662, asked of the issuer).
	VerifiedBy string `json:"verified_by"`
}

func (a *API) whoami(c *fiber.Ctx) error {
	p := principal(c)
	w := Whoami{
		Subject:  p.Subject,
		ClientID: p.ClientID,
		Client:   p.Client,
		Issuer:   p.Issuer,
		Audience: nonNil(p.Audience),
		Scopes:   nonNil(p.Scopes),
		Token:    TokenFormat{Alg: p.Alg, Enc: p.Enc, Typ: p.TypHeader, VerifiedBy: "jwks"},
	}
	switch {
	case p.Encrypted():
		w.Token.Format = "encrypted"
	case p.Alg != "":
		w.Token.Format = "signed"
	default:
		w.Token.Format = "opaque"
	}
	if p.Format == FormatIntrospected {
		w.Token.VerifiedBy = "introspection"
	}
	if !p.ExpiresAt.IsZero() {
		exp := p.ExpiresAt.UTC()
		in := int64(exp.Sub(a.cfg.Now()) / time.Second)
		w.ExpiresAt, w.ExpiresIn = &exp, &in
	}
	if !p.IssuedAt.IsZero() {
		iat := p.IssuedAt.UTC()
		w.IssuedAt = &iat
	}
	if p.JTI != "" {
		sum := sha256.Sum256([]byte(p.JTI))
		w.JTIHash = hex.EncodeToString(sum[:8])
	}
	return c.JSON(w)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// itemList is the body of GET /api/items.
type itemList struct {
	Items []Item `json:"items"`
	Max   int    `json:"max_items"`
}

func (a *API) listItems(c *fiber.Ctx) error {
	return c.JSON(itemList{Items: a.items.list(principal(c).Subject), Max: MaxItemsPerSubject})
}

// newItem is the body of POST /api/items.
type newItem struct {
	Title string `json:"title"`
}

func (a *API) addItem(c *fiber.Ctx) error {
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != fiber.MIMEApplicationJSON {
		return sendError(c, fiber.StatusUnsupportedMediaType, "invalid_request", `send the item as JSON: Content-Type: application/json, body {"title":"..."}`)
	}
	body, err := edge.ReadBody(c, maxBody)
	if err != nil {
		var ee *edge.Error
		if errors.As(err, &ee) {
			return sendError(c, ee.Status, "invalid_request", ee.Description)
		}
		return err
	}
	var in newItem
	if err := strictJSON(body, &in); err != nil {
		return sendError(c, fiber.StatusBadRequest, "invalid_request", `the body must be a JSON object {"title":"..."}: `+err.Error())
	}
	it, err := a.items.add(principal(c).Subject, in.Title)
	switch {
	case err == nil:
	case errors.Is(err, ErrInvalidTitle):
		return sendError(c, fiber.StatusUnprocessableEntity, "invalid_title", strings.TrimPrefix(err.Error(), "demoapi: "))
	case errors.Is(err, ErrItemLimit):
		return sendError(c, fiber.StatusConflict, "item_limit", fmt.Sprintf("you already have %d items, the most this demo keeps; delete one first", MaxItemsPerSubject))
	case errors.Is(err, ErrStoreFull):
		a.log.Warn("demo API item store is full", "subjects", MaxSubjects)
		c.Set(fiber.HeaderRetryAfter, "60")
		return sendError(c, fiber.StatusServiceUnavailable, "store_full", "the demo API holds items for as many users as it can; try later")
	default:
		return err
	}
	a.itemsGauge.Inc()
	c.Location("/api/items/" + it.ID)
	return c.Status(fiber.StatusCreated).JSON(it)
}

func (a *API) deleteItem(c *fiber.Ctx) error {
	err := a.items.remove(principal(c).Subject, c.Params("id"))
	if errors.Is(err, ErrItemNotFound) {
		return sendError(c, fiber.StatusNotFound, "not_found", "you have no item with that id (deleted already?)")
	}
	if err != nil {
		return err
	}
	a.itemsGauge.Dec()
	return c.SendStatus(http.StatusNoContent)
}

// strictJSON decodes exactly one JSON object into v, refusing unknown
// fields and trailing data, so a typo ("titel") is an error, not an empty
// title.
func strictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// requireUser guards the per-user endpoints: a client_credentials token
// acts for no user, so its sub must never select a user's items (RFC 9068
// §5: a resource server must not take a client for a resource owner).
func (a *API) requireUser(c *fiber.Ctx) error {
	if principal(c).Client {
		a.log.Info("client token refused at a per-user endpoint", "request_id", obs.RequestID(c), "client_id", principal(c).ClientID)
		return sendError(c, fiber.StatusForbidden, "user_required",
			"items are kept per user, and this access token is a client_credentials token that acts for no user; call with a user's token (a route with policy user)")
	}
	return c.Next()
}
