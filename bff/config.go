package bff

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/session"
)

// Policy says which token the gateway attaches to a proxied API call.
type Policy string

const (
	// PolicyUser requires a session and sends its access token (refreshed
	// when due). Without a session the route answers 401 JSON.
	PolicyUser Policy = "user"
	// PolicyUserOptional sends the session's access token when there is a
	// session and calls the upstream anonymously otherwise.
	PolicyUserOptional Policy = "user-optional"
	// PolicyClient sends the gateway's own client-credentials token
	// (RFC 6749 section 4.4), whoever the user is.
	PolicyClient Policy = "client"
	// PolicyNone sends no token; the route is still same-origin and still
	// requires the anti-CSRF header.
	PolicyNone Policy = "none"
)

// Route is one proxied API prefix and its token policy.
type Route struct {
	proxy.Route
	// Policy defaults to PolicyUser.
	Policy Policy
}

// ProviderConfig names the OpenID provider and the gateway's client there.
type ProviderConfig struct {
	// IssuerURL is the provider's issuer identifier; discovery reads
	// IssuerURL + "/.well-known/openid-configuration".
	IssuerURL    string
	ClientID     string
	ClientSecret string
	// Scopes requested at login; default openid profile email offline_access.
	// openid is always requested.
	Scopes []string
	// ExtraAuthParams are added to every authorization request (e.g.
	// audience, resource). They cannot override the protocol parameters.
	ExtraAuthParams map[string]string
	// UseUserinfo merges the userinfo endpoint's claims into the session's
	// claims at login (OIDC Core 5.3); its sub must match the ID token's.
	UseUserinfo bool
	// AllowedAlgs are the ID token signature algorithms accepted. Default:
	// the provider's advertised asymmetric algorithms, or RS256, RS384,
	// RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA when it
	// advertises none. "none" and HMAC algorithms are refused.
	AllowedAlgs []string
	// InsecureAllowMissingPKCE lets the gateway start against a provider
	// whose discovery document does not list S256 in
	// code_challenge_methods_supported. The gateway still sends PKCE.
	InsecureAllowMissingPKCE bool
	// HTTPClient is used for discovery, JWKS, token, userinfo and
	// revocation calls; nil means a client with a 10s timeout.
	HTTPClient *http.Client
}

// KeyPair is one securecookie key pair: Hash authenticates (HMAC-SHA256,
// at least 32 bytes), Block encrypts (AES, 16, 24 or 32 bytes).
type KeyPair struct {
	Hash, Block []byte
}

// CookieConfig shapes the gateway's cookies.
type CookieConfig struct {
	// Name of the session cookie; chunks are Name.1, Name.2, ... Default
	// "__Host-bff".
	Name string
	// SameSite is "Lax" (default) or "Strict". Strict breaks the first
	// request after following a link from another site (the cookie is not
	// sent), which is why Lax is the default.
	SameSite string
	// FlowKeys seal the per-login flow cookies. The first pair seals, all
	// open: put a new pair first to rotate keys.
	FlowKeys []KeyPair
	// MaxFlows is how many logins may be in progress at once in one
	// browser (tabs); past it the oldest flow cookies are deleted. Default 5.
	MaxFlows int
	// InsecureDevCookies drops the Secure flag and the __Host- prefix when
	// PublicURL is plain http on a host other than localhost, 127.0.0.1 or
	// [::1] (browsers refuse Secure cookies there). Development only; it
	// has no effect on https or loopback public URLs.
	InsecureDevCookies bool
}

// Config configures a Gateway. The zero value of every switch is the safe
// choice; New fills the defaults and names the field it refuses.
type Config struct {
	// PublicURL is the browser's origin, e.g. https://app.example.com. It
	// must be https unless its host is localhost, 127.0.0.1 or [::1], or
	// InsecureAllowHTTP is set. The redirect URI is PublicURL + BasePath +
	// "/callback".
	PublicURL string
	// InsecureAllowHTTP allows a plain-http PublicURL on other hosts.
	InsecureAllowHTTP bool
	// BasePath of the gateway endpoints; default "/bff".
	BasePath string

	Provider ProviderConfig
	// Store keeps the sessions (session/cookie, session/bolt, session/redis).
	Store  session.Store
	Cookie CookieConfig

	// IdleTimeout (sliding, default 30m) and AbsoluteLifetime (default 12h)
	// bound a session; the absolute end is never later than the refresh
	// token's expiry when the provider states it.
	IdleTimeout      time.Duration
	AbsoluteLifetime time.Duration

	// CSRFHeader and CSRFValue are the anti-CSRF header every API call and
	// gateway mutation must carry; default "X-CSRF: 1" (Duende BFF's).
	CSRFHeader, CSRFValue string
	// AllowedOrigins are origins (scheme://host[:port]) besides PublicURL's
	// that may call the gateway.
	AllowedOrigins []string

	// Routes are the proxied API prefixes.
	Routes []Route
	// Proxy configures the proxy engine; its Routes are filled from Routes
	// and its GatewayCookies from the cookie names.
	Proxy proxy.Config
	// Tokens configures the refresh manager (Skew, GraceWindow, Grace,
	// Locker, ClientScopes...). New fills OAuth2 and RevocationURL from
	// discovery, and HTTPClient, Logger, Registerer and Now from this
	// Config when they are unset.
	Tokens tokens.Config
	// SPA serves every path not matched by the gateway or the API routes
	// (bff/spa); nil answers 404 JSON.
	SPA fiber.Handler
	// BodyLimit is the largest request body the gateway accepts; default
	// 10 MiB. Bodies stream to the upstream (fiber StreamRequestBody).
	BodyLimit int

	// PostLogoutRedirect is the local path the provider sends the browser
	// back to after logout (post_logout_redirect_uri = PublicURL + it);
	// default "/".
	PostLogoutRedirect string

	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the gateway metrics (nil: none); Gatherer is what
	// /metrics serves (nil: no /metrics).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// AccessLog writes one line per request.
	AccessLog bool
}

// DefaultConfig returns a Config with every default filled in except the
// fields that have none (PublicURL, Provider, Store, Cookie.FlowKeys).
func DefaultConfig() Config {
	return Config{
		BasePath: "/bff",
		Provider: ProviderConfig{
			Scopes: []string{"openid", "profile", "email", "offline_access"},
		},
		Cookie: CookieConfig{
			Name:     "__Host-bff",
			SameSite: "Lax",
			MaxFlows: 5,
		},
		IdleTimeout:        30 * time.Minute,
		AbsoluteLifetime:   12 * time.Hour,
		CSRFHeader:         "X-CSRF",
		CSRFValue:          "1",
		PostLogoutRedirect: "/",
		BodyLimit:          10 << 20,
	}
}

// defaultAlgs are the ID token algorithms accepted when neither the
// configuration nor the provider names any: asymmetric only, since an
// HMAC-signed ID token would be keyed with the client secret.
var defaultAlgs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}

// fill copies cfg, fills defaults and validates it.
func (cfg Config) fill() (Config, *url.URL, error) {
	d := DefaultConfig()
	if cfg.BasePath == "" {
		cfg.BasePath = d.BasePath
	}
	if len(cfg.Provider.Scopes) == 0 {
		cfg.Provider.Scopes = d.Provider.Scopes
	}
	if !slices.Contains(cfg.Provider.Scopes, "openid") {
		cfg.Provider.Scopes = append([]string{"openid"}, cfg.Provider.Scopes...)
	}
	if cfg.Cookie.Name == "" {
		cfg.Cookie.Name = d.Cookie.Name
	}
	if cfg.Cookie.SameSite == "" {
		cfg.Cookie.SameSite = d.Cookie.SameSite
	}
	if cfg.Cookie.MaxFlows == 0 {
		cfg.Cookie.MaxFlows = d.Cookie.MaxFlows
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = d.IdleTimeout
	}
	if cfg.AbsoluteLifetime == 0 {
		cfg.AbsoluteLifetime = d.AbsoluteLifetime
	}
	if cfg.CSRFHeader == "" {
		cfg.CSRFHeader = d.CSRFHeader
	}
	if cfg.CSRFValue == "" {
		cfg.CSRFValue = d.CSRFValue
	}
	if cfg.PostLogoutRedirect == "" {
		cfg.PostLogoutRedirect = d.PostLogoutRedirect
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = d.BodyLimit
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Provider.HTTPClient == nil {
		cfg.Provider.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	cfg.Routes = slices.Clone(cfg.Routes)
	for i := range cfg.Routes {
		if cfg.Routes[i].Policy == "" {
			cfg.Routes[i].Policy = PolicyUser
		}
	}

	pub, err := validatePublicURL(cfg.PublicURL, cfg.InsecureAllowHTTP)
	if err != nil {
		return cfg, nil, err
	}
	if err := cfg.validate(); err != nil {
		return cfg, nil, err
	}
	return cfg, pub, nil
}

func validatePublicURL(raw string, allowHTTP bool) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("bff: PublicURL is required (the browser's origin, e.g. https://app.example.com)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("bff: PublicURL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("bff: PublicURL %q must be an origin: http(s)://host[:port]", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("bff: PublicURL %q must have no path: the gateway's __Host- cookies need the whole origin", raw)
	}
	u.Path = ""
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !allowHTTP {
		return nil, fmt.Errorf("bff: PublicURL %q is plain http on a non-loopback host: use https, or set InsecureAllowHTTP for development", raw)
	}
	return u, nil
}

// isLoopbackHost reports whether browsers treat host as a secure context
// over plain http (localhost, 127.0.0.0/8, [::1]).
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (cfg *Config) validate() error {
	if !strings.HasPrefix(cfg.BasePath, "/") || strings.HasSuffix(cfg.BasePath, "/") || strings.ContainsAny(cfg.BasePath, "?#*:\\ ") {
		return fmt.Errorf("bff: BasePath %q must start with / and not end with one (e.g. /bff)", cfg.BasePath)
	}
	p := cfg.Provider
	if p.IssuerURL == "" {
		return errors.New("bff: Provider.IssuerURL is required")
	}
	if u, err := url.Parse(p.IssuerURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("bff: Provider.IssuerURL %q must be an http(s) URL", p.IssuerURL)
	}
	if p.ClientID == "" {
		return errors.New("bff: Provider.ClientID is required")
	}
	for _, alg := range p.AllowedAlgs {
		if strings.EqualFold(alg, "none") || strings.HasPrefix(strings.ToUpper(alg), "HS") {
			return fmt.Errorf("bff: Provider.AllowedAlgs: %q is not accepted for ID tokens (asymmetric algorithms only)", alg)
		}
	}
	for k := range p.ExtraAuthParams {
		if reservedAuthParams[k] {
			return fmt.Errorf("bff: Provider.ExtraAuthParams: %q is set by the gateway and cannot be overridden", k)
		}
	}
	if cfg.Store == nil {
		return errors.New("bff: Store is required (session/cookie, session/bolt or session/redis)")
	}
	c := cfg.Cookie
	if !validCookieName(c.Name) {
		return fmt.Errorf("bff: Cookie.Name %q is not a valid cookie name", c.Name)
	}
	switch strings.ToLower(c.SameSite) {
	case "lax", "strict":
	default:
		return fmt.Errorf("bff: Cookie.SameSite %q must be Lax or Strict (None would send the session cross-site)", c.SameSite)
	}
	if len(c.FlowKeys) == 0 {
		return errors.New("bff: Cookie.FlowKeys is required: at least one hash/block key pair to seal login flow cookies")
	}
	for i, k := range c.FlowKeys {
		if len(k.Hash) < 32 {
			return fmt.Errorf("bff: Cookie.FlowKeys[%d].Hash has %d bytes; at least 32 random bytes are required", i, len(k.Hash))
		}
		switch len(k.Block) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("bff: Cookie.FlowKeys[%d].Block has %d bytes; it must be 16, 24 or 32 random bytes (AES)", i, len(k.Block))
		}
	}
	if c.MaxFlows < 1 || c.MaxFlows > 20 {
		return fmt.Errorf("bff: Cookie.MaxFlows %d must be between 1 and 20", c.MaxFlows)
	}
	if cfg.IdleTimeout < 0 {
		return errors.New("bff: IdleTimeout must not be negative")
	}
	if cfg.BodyLimit < 0 {
		return errors.New("bff: BodyLimit must not be negative")
	}
	if cfg.AbsoluteLifetime < 0 {
		return errors.New("bff: AbsoluteLifetime must not be negative")
	}
	if !validHeaderName(cfg.CSRFHeader) {
		return fmt.Errorf("bff: CSRFHeader %q is not a valid header name", cfg.CSRFHeader)
	}
	for i, o := range cfg.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			return fmt.Errorf("bff: AllowedOrigins[%d]: %w", i, err)
		}
	}
	if !strings.HasPrefix(cfg.PostLogoutRedirect, "/") || checkLocalPath(cfg.PostLogoutRedirect) != nil {
		return fmt.Errorf("bff: PostLogoutRedirect %q must be a local path such as /", cfg.PostLogoutRedirect)
	}
	seen := map[string]bool{}
	for i, r := range cfg.Routes {
		switch r.Policy {
		case PolicyUser, PolicyUserOptional, PolicyClient, PolicyNone:
		default:
			return fmt.Errorf("bff: Routes[%d].Policy %q must be user, user-optional, client or none", i, r.Policy)
		}
		prefix := strings.TrimSuffix(r.Prefix, "/")
		if !strings.HasPrefix(r.Prefix, "/") || prefix == "" {
			return fmt.Errorf("bff: Routes[%d].Prefix %q must start with / and name a path (e.g. /api/)", i, r.Prefix)
		}
		if strings.EqualFold(prefix, cfg.BasePath) || strings.HasPrefix(strings.ToLower(prefix)+"/", strings.ToLower(cfg.BasePath)+"/") {
			return fmt.Errorf("bff: Routes[%d].Prefix %q overlaps the gateway's BasePath %q", i, r.Prefix, cfg.BasePath)
		}
		if seen[strings.ToLower(prefix)] {
			return fmt.Errorf("bff: Routes[%d].Prefix %q is listed twice", i, r.Prefix)
		}
		seen[strings.ToLower(prefix)] = true
	}
	return nil
}

// reservedAuthParams are the authorization request parameters the gateway
// sets itself.
var reservedAuthParams = map[string]bool{
	"response_type": true, "client_id": true, "redirect_uri": true, "scope": true, "state": true,
	"nonce": true, "code_challenge": true, "code_challenge_method": true, "response_mode": true,
	"request": true, "request_uri": true,
}

func validCookieName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// normalizeOrigin parses an origin into scheme://host[:port] in lower case
// with default ports removed, the form browsers send in Origin.
func normalizeOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q is not an origin (scheme://host[:port])", s)
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return u.Scheme + "://" + host, nil
}
