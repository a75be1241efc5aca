// Package issuer is bffgate's embedded OAuth 2.0 authorization server and
// OpenID Connect provider: discovery, JWKS, the authorization endpoint with
// its login form and SSO session, the token endpoint (authorization_code
// with PKCE, refresh_token with rotation and reuse detection,
// client_credentials, token exchange of RFC 8693 with trusted external
// issuers in issuer/trust), userinfo, revocation (RFC 7009), introspection (RFC
// 7662) and RP-initiated logout with back-channel logout.
//
// Agents and workloads authenticate without secrets (private_key_jwt, and
// JWT-SVIDs for clients whose id is a SPIFFE ID), get tokens for
// themselves, for a user after a consent page naming them, or for the
// subject of a trusted issuer's assertion (the JWT bearer grant); an
// operator can disable one at run time, and every decision goes to a
// chained audit file (agents.go, assertion.go, spiffe.go, jwtbearer.go,
// consent.go, agentstate.go, package audit).
//
// As an MCP authorization server it serves RFC 8414 metadata
// (metadata.go), binds tokens to resources with RFC 8707 resource
// indicators (resources.go), accepts clients identified by a client ID
// metadata document (cimd.go) or registered dynamically (RFC 7591/7592,
// register.go), matches loopback redirect URIs on any port (redirect.go),
// and shows third-party clients a consent page remembered per user,
// client, resource and scopes (consent.go, clients.go).
//
// Access and refresh tokens are client-side tokens (ForgeRock AM's design):
// self-contained JWTs, signed or encrypted (issuer/token), made revocable by
// the store's denylist (access tokens, by jti and by grant) and allowlist
// (refresh tokens) (issuer/storage, issuer/denylist).
//
// # Security
//
// PKCE S256 is required of every client (RFC 9700 §2.1.1), redirect URIs
// match exactly, errors go to a redirect URI only once it is known to be
// registered (RFC 6749 §4.1.2.1), codes are single-use and a replay revokes
// what the first use minted, refresh tokens rotate and a reuse revokes the
// grant (RFC 9700 §4.14.2). No token, code, secret or password reaches a
// log line or an error description. The login form is protected against
// cross-site request forgery by a double-submit token bound into the sealed
// authorization request and by a Sec-Fetch-Site/Origin check.
//
// Password guessing is throttled (LoginThrottle): failed logins are counted
// per username and per client address in the store, shared by every
// instance, and a locked username or address is refused before any
// password hash is computed. Unknown usernames are counted and locked like
// known ones, and the answers for the two cannot be told apart.
//
// # Caveats
//
// A lockout is also a lever: anyone can lock a username for a while by
// failing to log in as it (bounded by LoginThrottle.MaxLockout), as with
// Keycloak's temporary lockout. Counters of unknown usernames take store
// space until their window ends; the per-address limit bounds how fast one
// client can add them. The client address is the TCP peer's unless the
// peer is listed in Config.TrustedProxies, then the right-most address in
// X-Forwarded-For that is not a trusted proxy: behind a reverse proxy,
// list it there (or set LoginThrottle.DisableIPLimit), or every client
// shares the proxy's address and its limit.
package issuer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/gorilla/securecookie"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/issuer/denylist"
	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/token"
	"github.com/bffgate/bffgate/issuer/trust"
	"github.com/bffgate/bffgate/web"
)

// Endpoint paths, relative to Config.Issuer.
const (
	pathDiscovery  = "/.well-known/openid-configuration"
	pathJWKS       = "/jwks"
	pathAuthorize  = "/authorize"
	pathLogin      = "/login"
	pathToken      = "/token"
	pathUserinfo   = "/userinfo"
	pathRevoke     = "/revoke"
	pathIntrospect = "/introspect"
	pathLogout     = "/logout"
)

// Request limits. The body limit covers the largest legitimate request (a
// login form post carrying the sealed authorization request); the header
// buffer covers an authorization request URL with a long state.
const (
	bodyLimit       = 64 << 10
	readBufferSize  = 16 << 10
	maxParamLen     = 4096
	formKeySecret   = "issuer/form-keys"
	formMaxAge      = 30 * time.Minute
	backchannelWait = 5 * time.Second
)

// Server is the embedded issuer. Build it with New, serve App, and run the
// background jobs with Run.
type Server struct {
	cfg Config
	log *slog.Logger
	// configured are issuer.clients (fixed at New); clients is them
	// plus the managed ones (SetManagedClients), swapped whole.
	configured   map[string]*client
	clients      atomic.Pointer[map[string]*client]
	users        map[string]*user
	bySubject    map[string]*user
	keys         *keys.Set
	codec        *token.Codec
	deny         *denylist.List
	trust        *trust.Set
	stores       stores
	purgeMetrics purgeMetrics
	pages        *web.Pages
	obs          *obs.Obs
	metrics      *metrics
	ag           *agentState
	mcp          *mcpState
	cimd         *cimdCache
	app          *fiber.App
	basePath     string
	// seal protects the hidden fields of the login and logout forms.
	seal *securecookie.SecureCookie
	// dummySecret is compared against when a client id is unknown, so
	// that the answer takes as long as for a wrong secret.
	dummySecret [32]byte
	// dummyHash is verified against when a username is unknown, so that
	// the answer takes as long as for a wrong password.
	dummyHash *passwordHash
}

// New validates cfg (naming the field at fault), opens the key set
// (generating missing keys in the store) and builds the fiber app.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg, clients, users, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, configured: clients, users: users, bySubject: make(map[string]*user, len(users)), stores: storesOf(cfg.Store)}
	s.clients.Store(&clients)
	for _, u := range users {
		if other := s.bySubject[u.Subject]; other != nil {
			return nil, fmt.Errorf("issuer.users: users %q and %q have the same subject %q; subjects must be unique", other.Username, u.Username, u.Subject)
		}
		s.bySubject[u.Subject] = u
		if s.dummyHash == nil {
			h := u.hash
			s.dummyHash = &h
		}
	}
	// After the users: a managed client's id must be no user's subject.
	if err := s.SetManagedClients(cfg.ManagedClients); err != nil {
		return nil, err
	}
	if _, err := rand.Read(s.dummySecret[:]); err != nil {
		return nil, fmt.Errorf("issuer: read random: %w", err)
	}
	if u, err := url.Parse(cfg.Issuer); err == nil {
		s.basePath = strings.TrimRight(u.Path, "/")
	}

	algs := []string{cfg.IDTokenAlg}
	if cfg.TokenFormat == token.FormatSigned && cfg.TokenAlg != cfg.IDTokenAlg {
		algs = append(algs, cfg.TokenAlg)
	}
	kcfg := keys.Config{Store: cfg.Store, Algorithms: algs, Files: cfg.KeyFiles, Now: cfg.Now, Logger: cfg.Logger}
	switch {
	case cfg.TokenFormat == token.FormatEncrypted:
		kcfg.Encryption = cfg.Encryption
	case cfg.RefreshTokenFormat == token.RefreshSealed:
		kcfg.Encryption = token.SealEnc // the sealing key: a dir key, rotated as any other
	}
	if s.keys, err = keys.Open(ctx, kcfg); err != nil {
		return nil, fmt.Errorf("issuer: keys: %w", err)
	}
	tcfg := token.Config{Issuer: cfg.Issuer, Keys: s.keys, Format: cfg.TokenFormat, IDTokenAlg: cfg.IDTokenAlg, Now: cfg.Now}
	if cfg.TokenFormat == token.FormatSigned {
		tcfg.Alg = cfg.TokenAlg
		tcfg.RefreshFormat = cfg.RefreshTokenFormat
	}
	if s.codec, err = token.New(tcfg); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if s.deny, err = denylist.New(denylist.Config{
		Store: cfg.Store, CacheSize: cfg.DenylistCacheSize, PollInterval: cfg.DenylistPollInterval,
		Now: cfg.Now, Logger: cfg.Logger, Registerer: cfg.Registerer, Subscriber: cfg.DenylistSubscriber,
		OnClient: s.clientChanged,
	}); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if s.pages, err = web.New(web.Config{}); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if s.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("issuer: register metrics: %w", err)
	}
	if s.purgeMetrics, err = newPurgeMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("issuer: register metrics: %w", err)
	}
	if s.ag, err = s.newAgentState(ctx); err != nil {
		return nil, err
	}
	if err := s.newMCPState(); err != nil {
		return nil, err
	}
	if s.trust, err = newTrust(cfg, users, s.trustClient()); err != nil {
		return nil, fmt.Errorf("issuer.%w", err)
	}
	if s.obs, err = obs.New(obs.Config{Component: "issuer", Logger: cfg.Logger, Registerer: cfg.Registerer, Gatherer: cfg.Gatherer, AccessLog: cfg.AccessLog}); err != nil {
		return nil, fmt.Errorf("issuer: register request metrics: %w", err)
	}
	// The form keys live in the store so that every instance sharing it
	// accepts the forms another rendered, and a restart keeps open forms.
	fk, err := cfg.Store.Secret(ctx, formKeySecret, func() ([]byte, error) {
		b := make([]byte, 64+32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: read the form sealing keys from the store: %w", err)
	}
	if len(fk) != 96 {
		return nil, fmt.Errorf("issuer: the stored form sealing keys (%s) are %d bytes, want 96", formKeySecret, len(fk))
	}
	s.seal = securecookie.New(fk[:64], fk[64:]).MaxAge(int(formMaxAge / time.Second)).MaxLength(32 << 10)
	s.seal.SetSerializer(securecookie.JSONEncoder{})
	if s.app, err = s.buildApp(); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return s, nil
}

// App returns the fiber app serving every endpoint, plus /healthz, /readyz
// (the store's Ping) and /metrics (when a Gatherer is configured).
func (s *Server) App() *fiber.App { return s.app }

// Keys returns the issuer's key set.
func (s *Server) Keys() *keys.Set { return s.keys }

// Codec returns the issuer's token codec.
func (s *Server) Codec() *token.Codec { return s.codec }

// Run runs the background jobs until ctx is done: the denylist poll (which
// learns revocations made by other instances sharing the store), the purge
// of expired records every PurgeInterval (denylist entries, codes,
// allowlist records, grants, login sessions, throttle state), and a key
// reload at the poll interval (which picks up a rotation made by another
// instance). It returns nil when ctx ends.
func (s *Server) Run(ctx context.Context) error {
	done := make(chan struct{}, 3)
	go func() {
		defer func() { done <- struct{}{} }()
		s.deny.Run(ctx)
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		s.runPurge(ctx)
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		s.runClientStates(ctx)
	}()
	// Keys are reloaded every second (or poll interval, when shorter): a
	// read and a compare, rebuilt only on a change. A store that lost keys
	// this instance holds gets them back within that second (keys.Reload),
	// usually before another instance can restart on the empty store and
	// generate a key set of its own.
	t := time.NewTicker(min(s.cfg.DenylistPollInterval, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			<-done
			<-done
			return nil
		case <-t.C:
			if err := s.keys.Reload(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("key reload failed; the current keys stay in use", "err", err)
			}
		}
	}
}

func (s *Server) now() time.Time { return s.cfg.Now() }

func (s *Server) endpoint(path string) string { return s.cfg.Issuer + path }

// buildApp builds the app through internal/edge, which every listener
// shares: framing checks, parse errors answered by kind, copied request
// values.
func (s *Server) buildApp() (*fiber.App, error) {
	app, err := edge.New(edge.Config{Obs: s.obs, Fiber: fiber.Config{
		AppName:               "bffgate issuer",
		DisableStartupMessage: true,
		BodyLimit:             bodyLimit,
		ReadBufferSize:        readBufferSize,
		StrictRouting:         true,
		CaseSensitive:         true,
		ErrorHandler:          s.handleError,
	}})
	if err != nil {
		return nil, err
	}
	app.Use(recover.New(recover.Config{EnableStackTrace: false}))
	s.obs.Mount(app, obs.Check{Name: "store", Fn: s.cfg.Store.Ping})

	r := app.Group(s.basePath)
	if s.basePath == "" {
		r = app
	}
	r.Get(pathDiscovery, s.handleDiscovery)
	s.mountMetadata(app, r)
	r.Get(pathJWKS, s.handleJWKS)
	r.Get(pathAuthorize, s.handleAuthorize)
	r.Post(pathAuthorize, s.handleAuthorize)
	r.Post(pathLogin, s.handleLogin)
	r.Post(pathConsent, s.handleConsent)
	r.Post(pathToken, s.handleToken)
	r.Get(pathUserinfo, s.handleUserinfo)
	r.Post(pathUserinfo, s.handleUserinfo)
	r.Post(pathRevoke, s.handleRevoke)
	r.Post(pathIntrospect, s.handleIntrospect)
	r.Get(pathLogout, s.handleLogout)
	r.Post(pathLogout, s.handleLogout)
	return app, nil
}

// handleError answers what no handler did: an unknown path, a method an
// endpoint does not take, a panic turned into an error by recover. It
// answers in the §5.2 JSON form, so that a client always gets a parseable
// error.
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	status := fiber.StatusInternalServerError
	var fe *fiber.Error
	if errors.As(err, &fe) {
		status = fe.Code
	}
	noStore(c)
	switch {
	case status == fiber.StatusNotFound:
		return c.Status(status).JSON(errorBody{Error: "not_found", Description: "no endpoint at this path; the endpoints are listed at " + s.endpoint(pathDiscovery)})
	case status == fiber.StatusMethodNotAllowed:
		return c.Status(status).JSON(errorBody{Error: protocol.ErrInvalidRequest.Code, Description: "this endpoint does not accept the " + c.Method() + " method"})
	case status == fiber.StatusRequestEntityTooLarge:
		return c.Status(status).JSON(errorBody{Error: protocol.ErrInvalidRequest.Code, Description: fmt.Sprintf("the request body is larger than %d bytes", bodyLimit)})
	case status < 500:
		return c.Status(status).JSON(errorBody{Error: protocol.ErrInvalidRequest.Code, Description: fe.Message})
	}
	s.log.Error("request failed", "err", err, "path", c.Path(), "request_id", obs.RequestID(c))
	return c.Status(status).JSON(errorBody{Error: protocol.ErrServerError.Code, Description: "the issuer failed to handle the request; the request id is in the X-Request-Id header"})
}

// discovery is the provider metadata (OpenID Connect Discovery 1.0 §3, RFC
// 8414 §2).
type discovery struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	UserinfoEndpoint                  string   `json:"userinfo_endpoint"`
	JWKSURI                           string   `json:"jwks_uri"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	IntrospectionEndpoint             string   `json:"introspection_endpoint"`
	EndSessionEndpoint                string   `json:"end_session_endpoint"`
	ScopesSupported                   []string `json:"scopes_supported"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	ResponseModesSupported            []string `json:"response_modes_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	SubjectTypesSupported             []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported  []string `json:"id_token_signing_alg_values_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	RevocationAuthMethodsSupported    []string `json:"revocation_endpoint_auth_methods_supported"`
	IntrospectionAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs      []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	RevocationAuthSigningAlgs         []string `json:"revocation_endpoint_auth_signing_alg_values_supported"`
	IntrospectionAuthSigningAlgs      []string `json:"introspection_endpoint_auth_signing_alg_values_supported"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
	ClaimsSupported                   []string `json:"claims_supported"`
	PromptValuesSupported             []string `json:"prompt_values_supported"`
	AccessTokenSigningAlgs            []string `json:"access_token_signing_alg_values_supported,omitempty"`
	AccessTokenEncryptionAlgs         []string `json:"access_token_encryption_alg_values_supported,omitempty"`
	AccessTokenEncryptionEncs         []string `json:"access_token_encryption_enc_values_supported,omitempty"`
	BackchannelLogoutSupported        bool     `json:"backchannel_logout_supported"`
	BackchannelLogoutSessionSupported bool     `json:"backchannel_logout_session_supported"`
	FrontchannelLogoutSupported       bool     `json:"frontchannel_logout_supported"`
	ClaimsParameterSupported          bool     `json:"claims_parameter_supported"`
	RequestParameterSupported         bool     `json:"request_parameter_supported"`
	RequestURIParameterSupported      bool     `json:"request_uri_parameter_supported"`
	AuthorizationResponseISSSupported bool     `json:"authorization_response_iss_parameter_supported"`
}

func (s *Server) discovery() discovery {
	d := discovery{
		Issuer:                            s.cfg.Issuer,
		AuthorizationEndpoint:             s.endpoint(pathAuthorize),
		TokenEndpoint:                     s.endpoint(pathToken),
		UserinfoEndpoint:                  s.endpoint(pathUserinfo),
		JWKSURI:                           s.endpoint(pathJWKS),
		RevocationEndpoint:                s.endpoint(pathRevoke),
		IntrospectionEndpoint:             s.endpoint(pathIntrospect),
		EndSessionEndpoint:                s.endpoint(pathLogout),
		ScopesSupported:                   s.scopesSupported(),
		ResponseTypesSupported:            []string{"code"},
		ResponseModesSupported:            []string{"query"},
		GrantTypesSupported:               []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials, GrantJWTBearer},
		SubjectTypesSupported:             []string{"public"},
		IDTokenSigningAlgValuesSupported:  []string{s.cfg.IDTokenAlg},
		TokenEndpointAuthMethodsSupported: []string{authBasic, authPost, authPrivateKeyJWT, authSPIFFEJWT, authNone},
		RevocationAuthMethodsSupported:    []string{authBasic, authPost, authPrivateKeyJWT, authSPIFFEJWT, authNone},
		IntrospectionAuthMethodsSupported: []string{authBasic, authPost, authPrivateKeyJWT, authSPIFFEJWT},
		TokenEndpointAuthSigningAlgs:      AssertionAlgorithms,
		RevocationAuthSigningAlgs:         AssertionAlgorithms,
		IntrospectionAuthSigningAlgs:      AssertionAlgorithms,
		CodeChallengeMethodsSupported:     []string{protocol.PKCEMethodS256},
		ClaimsSupported: []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "sid",
			"name", "given_name", "family_name", "preferred_username", "email", "email_verified"},
		PromptValuesSupported:             []string{"none", "login"},
		BackchannelLogoutSupported:        true,
		BackchannelLogoutSessionSupported: true,
		AuthorizationResponseISSSupported: true,
	}
	if s.exchangeEnabled() {
		d.GrantTypesSupported = append(d.GrantTypesSupported, GrantTokenExchange)
	}
	if s.cfg.TokenFormat == token.FormatEncrypted {
		d.AccessTokenEncryptionAlgs = []string{keys.AlgDir}
		d.AccessTokenEncryptionEncs = []string{s.codec.Encryption()}
	} else {
		d.AccessTokenSigningAlgs = []string{s.cfg.TokenAlg}
	}
	return d
}

func (s *Server) handleDiscovery(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
	return c.JSON(s.discovery())
}

// handleJWKS publishes the public keys (RFC 7517 §5). The max-age is short
// so that a rotated-in key reaches relying parties quickly; go-oidc also
// refetches when it meets an unknown kid.
func (s *Server) handleJWKS(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "public, max-age=60")
	c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
	c.Set(fiber.HeaderContentType, "application/jwk-set+json")
	b, err := json.Marshal(s.keys.PublicJWKS())
	if err != nil {
		return fmt.Errorf("issuer: encode JWK set: %w", err)
	}
	return c.Send(b)
}
