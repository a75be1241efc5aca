package bff

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/bodylimit"
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

// Route is one proxied API prefix, its token policy and who may call it.
type Route struct {
	proxy.Route `yaml:",inline"`
	// Policy defaults to PolicyUser.
	Policy Policy `yaml:"policy"`
	// Rules (allow, deny, claims_from) say which signed-in users may call
	// the route (bff/authz); none means every user the token policy lets
	// through. They need a user: policy user or user-optional. A denied
	// call is 403 {"error":"forbidden"} (401 login_required for an
	// anonymous one on user-optional, since signing in may help).
	Rules authz.Policy `yaml:",inline"`
	// Identity names the headers that tell the upstream who the user is
	// (plain, and a signed assertion); none by default. They need policy
	// user or user-optional, and read claims from Rules.ClaimsFrom.
	Identity IdentityHeaders `yaml:"identity_headers"`
	// Token says which token goes upstream: the session's (default) or
	// one exchanged for the route's target (token.exchange, RFC 8693).
	Token RouteToken `yaml:"token"`
	// Bearer says whether the route takes bearer tokens from non-browser
	// callers (auth: [session, bearer]), for which resource and scopes
	// (bearer.go).
	Bearer RouteBearer `yaml:",inline"`
	// MCP, when set, makes the route the front of an MCP server: its
	// JSON-RPC requests are decided per method and tool (mcp.go).
	MCP MCPConfig `yaml:"mcp"`
}

// ProviderConfig names the OpenID provider and the gateway's client there.
// Its yaml tags are the keys of bffgate's gateway.provider.
type ProviderConfig struct {
	// IssuerURL is the provider's issuer identifier; discovery reads
	// IssuerURL + "/.well-known/openid-configuration".
	IssuerURL    string `yaml:"issuer_url"`
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret"`
	// Scopes requested at login; default openid profile email offline_access.
	// openid is always requested.
	Scopes []string `yaml:"scopes"`
	// ExtraAuthParams are added to every authorization request (e.g.
	// audience, resource). They cannot override the protocol parameters.
	ExtraAuthParams map[string]string `yaml:"extra_auth_params"`
	// UseUserinfo merges the userinfo endpoint's claims into the session's
	// claims at login (OIDC Core 5.3); its sub must match the ID token's.
	UseUserinfo bool `yaml:"use_userinfo"`
	// AllowedAlgs are the ID token signature algorithms accepted. Default:
	// the provider's advertised asymmetric algorithms, or RS256, RS384,
	// RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA when it
	// advertises none. "none" and HMAC algorithms are refused.
	AllowedAlgs []string `yaml:"allowed_algs"`
	// InsecureAllowMissingPKCE lets the gateway start against a provider
	// whose discovery document does not list S256 in
	// code_challenge_methods_supported. The gateway still sends PKCE.
	InsecureAllowMissingPKCE bool `yaml:"insecure_allow_missing_pkce"`
	// HTTPClient is used for discovery, JWKS, token, userinfo and
	// revocation calls; nil means a client with a 10s timeout.
	HTTPClient *http.Client `yaml:"-"`
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
	// BasePath of the gateway endpoints under PathPrefix; default "/bff"
	// (endpoints at PathPrefix + BasePath + "/login").
	BasePath string

	// Name names the frontend when one Host serves several (Host.Set):
	// 1 to 32 of a-z, 0-9 and -. It goes into the sealed session (a
	// session of one frontend is no session at another), the default
	// cookie name, the logs and the metrics. "" is the classic single
	// frontend, whose sessions carry no name.
	Name string
	// Index is the frontend's position in the configuration's list; it
	// only numbers the frontend in errors (frontends[1] (admin)).
	Index int
	// Hosts are the host names (no port) whose requests this frontend
	// serves; none: any host.
	Hosts []string
	// PathPrefix is the path (such as /admin, no trailing slash) under
	// which this frontend serves, on a segment boundary; "" is every path.
	// With one, the session cookie's Path is PathPrefix.
	PathPrefix string

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
	// AssertionKey signs the identity assertions of routes with
	// identity_headers.assertion (ES256: a P-256 key), published at
	// BasePath + "/jwks". nil generates one at New, which suits one
	// instance; several instances behind one URL need the same key.
	AssertionKey *ecdsa.PrivateKey
	// Proxy configures the proxy engine; its Routes are filled from Routes
	// and its GatewayCookies from the cookie names. With several frontends
	// on one host, list every other frontend's cookie name with a custom
	// name in Proxy.GatewayCookies, so that none is sent upstream.
	Proxy proxy.Config
	// Tokens configures the refresh manager (Skew, GraceWindow, Grace,
	// Locker, ClientScopes...). New fills OAuth2 and RevocationURL from
	// discovery, and HTTPClient, Logger, Registerer and Now from this
	// Config when they are unset.
	Tokens tokens.Config
	// SPA serves every path not matched by the gateway or the API routes
	// (bff/spa); nil answers 404 JSON.
	SPA fiber.Handler
	// SPARules (gateway.spa's allow, deny and claims_from) say which users
	// get the SPA at all (see guardSPA); none lets everyone load it. The
	// gateway's own endpoints stay reachable whatever they say.
	SPARules authz.Policy
	// ForwardAuth configures the forward-auth endpoint BasePath + "/auth"
	// for nginx, Traefik, Caddy and Envoy (see ForwardAuth). It believes
	// the original request's headers from Proxy.TrustedProxies only
	// (gateway.trusted_proxies).
	ForwardAuth ForwardAuth
	// BodyLimit is fiber's BodyLimit under StreamRequestBody: a body of
	// known length up to it is read in before the handler runs, a larger or
	// chunked one streams (default 10 MiB). It refuses nothing: the largest
	// body an API route accepts is its Route.MaxBodyBytes, and the
	// gateway's own endpoints read bounded bodies (internal/edge).
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

// withDefaults returns cfg with the zero fields that have a default set.
func (cfg Config) withDefaults() Config {
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
		cfg.Cookie.Name = DefaultCookieName(cfg.Name, cfg.PathPrefix)
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
		cfg.PostLogoutRedirect = strings.TrimSuffix(cfg.PathPrefix, "/") + d.PostLogoutRedirect
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = d.BodyLimit
	}
	cfg.Routes = slices.Clone(cfg.Routes)
	for i := range cfg.Routes {
		if cfg.Routes[i].Policy == "" {
			cfg.Routes[i].Policy = PolicyUser
		}
	}
	return cfg
}

// Validate checks the declarative part of cfg (everything but Store, the
// cookie keys and the runtime hooks), with the defaults New would fill.
// It returns every problem, each a *FieldError, joined: a configuration
// loader can check a file without building a gateway, and New runs the
// same checks, so the two never disagree.
func (cfg Config) Validate() error {
	c := cfg.withDefaults()
	_, err := c.check()
	return err
}

// fill copies cfg, fills defaults and validates it.
func (cfg Config) fill() (Config, *url.URL, error) {
	cfg = cfg.withDefaults()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Provider.HTTPClient == nil {
		cfg.Provider.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	// go-oidc reads discovery, key sets and userinfo whole: a provider
	// answering without end must not exhaust the gateway's memory.
	cfg.Provider.HTTPClient = bodylimit.Client(cfg.Provider.HTTPClient, MaxProviderResponse)
	pub, err := cfg.check()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.Store == nil {
		errs = append(errs, ferr("store", "is required (session/cookie, session/bolt or session/redis)"))
	}
	if len(cfg.Cookie.FlowKeys) == 0 {
		errs = append(errs, ferr("cookie.flow_keys", "is required: at least one hash/block key pair to seal login flow cookies"))
	}
	for i, k := range cfg.Cookie.FlowKeys {
		if len(k.Hash) < 32 {
			errs = append(errs, ferr(fmt.Sprintf("cookie.flow_keys[%d].hash", i), "has %d bytes; at least 32 random bytes are required", len(k.Hash)))
		}
		switch len(k.Block) {
		case 16, 24, 32:
		default:
			errs = append(errs, ferr(fmt.Sprintf("cookie.flow_keys[%d].block", i), "has %d bytes; it must be 16, 24 or 32 random bytes (AES)", len(k.Block)))
		}
	}
	if len(errs) > 0 {
		return cfg, nil, errors.Join(errs...)
	}
	return cfg, pub, nil
}

// FieldError is a configuration error at one field of Config. Path names
// the field in snake case, as a configuration file would: public_url,
// provider.issuer_url, cookie.same_site, routes[0].prefix,
// tokens.grace_window.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return "bff: " + e.Path + ": " + e.Msg }

// Field and Problem let a configuration loader report the error under its
// own key names without knowing this type.
func (e *FieldError) Field() string   { return e.Path }
func (e *FieldError) Problem() string { return e.Msg }

// MaxProviderResponse bounds every response body the gateway reads from
// its provider (discovery, JWKS, token, userinfo, introspection, token
// exchange): real ones are a few KiB.
const MaxProviderResponse = 1 << 20

func ferr(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

func validatePublicURL(raw string, allowHTTP bool) (*url.URL, error) {
	if raw == "" {
		return nil, ferr("public_url", "is required (the browser's origin, e.g. https://app.example.com)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, ferr("public_url", "%q is not a URL", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, ferr("public_url", "%q must be an origin: http(s)://host[:port]", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, ferr("public_url", "%q must have no path: the gateway's __Host- cookies need the whole origin", raw)
	}
	u.Path = ""
	if u.Hostname() == "" {
		return nil, ferr("public_url", "%q has no host name: want the origin the browser opens, such as http://127.0.0.1:8080", raw)
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !allowHTTP {
		return nil, ferr("public_url", "%q is plain http on a host other than localhost, so browsers would send the session cookie in clear: use https, or set insecure_allow_http for development", raw)
	}
	return u, nil
}

// DefaultCookieName is the session cookie's name when none is configured:
// __Host-bff for the classic frontend, __Host-bff-<name> for a named one,
// and __Secure-bff-<name> for one with a path prefix (its cookies carry
// Path=<prefix>, which a __Host- cookie may not).
func DefaultCookieName(name, pathPrefix string) string {
	switch {
	case name == "" && pathPrefix == "":
		return DefaultConfig().Cookie.Name
	case name == "":
		return "__Secure-bff"
	case pathPrefix != "":
		return "__Secure-bff-" + name
	}
	return "__Host-bff-" + name
}

// frontendCookiePrefixes are the name prefixes of every default cookie
// name (DefaultCookieName); a named frontend's proxy never forwards a
// cookie under them, whichever frontend it belongs to.
var frontendCookiePrefixes = [...]string{"__Host-bff", "__Secure-bff"}

// StrippedCookieName reports whether every named frontend's proxy keeps
// the cookie name from its upstreams without being told of it (all
// default names are): only other names need Proxy.GatewayCookies.
func StrippedCookieName(name string) bool {
	for _, p := range frontendCookiePrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// endpointBase is where the gateway endpoints start: PathPrefix +
// BasePath.
func (cfg *Config) endpointBase() string { return cfg.PathPrefix + cfg.BasePath }

// ValidFrontendName reports whether s can name a frontend: 1 to 32 of
// a-z, 0-9 and -.
func ValidFrontendName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
			return false
		}
	}
	return true
}

// validHostName accepts a DNS name or IP literal ([::1] for IPv6), no
// port.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		ip := net.ParseIP(h[1 : len(h)-1])
		return ip != nil && ip.To4() == nil
	}
	for i := 0; i < len(h); i++ {
		b := h[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == '_') {
			return false
		}
	}
	return true
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

// check validates the declarative fields and returns the parsed public
// URL. It collects every problem rather than stopping at the first.
func (cfg *Config) check() (*url.URL, error) {
	var errs []error
	bad := func(path, format string, args ...any) { errs = append(errs, ferr(path, format, args...)) }
	pub, err := validatePublicURL(cfg.PublicURL, cfg.InsecureAllowHTTP)
	if err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(cfg.BasePath, "/") || strings.HasSuffix(cfg.BasePath, "/") || strings.ContainsAny(cfg.BasePath, "?#*:\\ ") {
		bad("base_path", "%q must start with / and not end with one (e.g. /bff)", cfg.BasePath)
	}
	if cfg.Name != "" && !ValidFrontendName(cfg.Name) {
		bad("name", "%q must be 1 to 32 of a-z, 0-9 and - (it goes into cookie names and metrics)", cfg.Name)
	}
	if p := cfg.PathPrefix; p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") ||
		strings.ContainsAny(p, "?#*:%\\ ") || strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../")) {
		bad("match.path_prefix", "%q must be a path such as /admin: starting with /, without a trailing /, ., .., %%, ?, # or *", p)
	}
	for i, h := range cfg.Hosts {
		if !validHostName(h) {
			bad(fmt.Sprintf("match.hosts[%d]", i), "%q must be a host name such as admin.example.com, without scheme, port or path", h)
		}
	}
	base := cfg.endpointBase()
	p := cfg.Provider
	if p.IssuerURL == "" {
		bad("provider.issuer_url", "is required: your OpenID provider's issuer URL")
	} else if u, err := url.Parse(p.IssuerURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		bad("provider.issuer_url", "%q must be an http(s) URL such as https://id.example.com/realms/main", p.IssuerURL)
	} else if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !cfg.InsecureAllowHTTP {
		// RFC 9700 §2.6 / OpenID Connect Core §16.17: the token request
		// carries the client secret and the code, the answer the tokens.
		bad("provider.issuer_url", "%q is plain http on a host other than localhost: the client secret and the tokens would cross the network in clear; use https, or set insecure_allow_http for development", p.IssuerURL)
	}
	if p.ClientID == "" {
		bad("provider.client_id", "is required: the gateway's client id at the provider")
	}
	for i, alg := range p.AllowedAlgs {
		if strings.EqualFold(alg, "none") || strings.HasPrefix(strings.ToUpper(alg), "HS") {
			bad(fmt.Sprintf("provider.allowed_algs[%d]", i), "%q is not accepted for ID tokens (asymmetric algorithms only)", alg)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.ExtraAuthParams)) {
		if reservedAuthParams[k] {
			bad("provider.extra_auth_params."+k, "is set by the gateway and cannot be overridden")
		}
	}
	c := cfg.Cookie
	if !validCookieName(c.Name) {
		bad("cookie.name", "%q is not a valid cookie name (letters, digits, - and _, at most 64)", c.Name)
	} else if cfg.PathPrefix != "" && strings.HasPrefix(c.Name, "__Host-") {
		bad("cookie.name", "%q has the __Host- prefix, which browsers accept only with Path=/, but this frontend's cookies have Path=%s (its path_prefix): use a __Secure- name", c.Name, cfg.PathPrefix)
	}
	switch strings.ToLower(c.SameSite) {
	case "lax", "strict":
	default:
		bad("cookie.same_site", "%q must be lax or strict (none would send the session cross-site)", c.SameSite)
	}
	if c.MaxFlows < 1 || c.MaxFlows > 20 {
		bad("cookie.max_flows", "%d must be between 1 and 20", c.MaxFlows)
	}
	if cfg.IdleTimeout < 0 {
		bad("idle_timeout", "must not be negative")
	}
	if cfg.BodyLimit < 0 {
		bad("body_limit", "must not be negative")
	}
	if cfg.AbsoluteLifetime < 0 {
		bad("absolute_lifetime", "must not be negative")
	}
	if !validHeaderName(cfg.CSRFHeader) {
		bad("csrf_header", "%q is not a valid header name", cfg.CSRFHeader)
	}
	for i, o := range cfg.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			bad(fmt.Sprintf("allowed_origins[%d]", i), "%v", err)
		}
	}
	// A local path only: an absolute URL, // or a javascript: URI here
	// would make the gateway an open redirector after logout.
	if !strings.HasPrefix(cfg.PostLogoutRedirect, "/") || checkLocalPath(cfg.PostLogoutRedirect) != nil {
		bad("post_logout_redirect", "%q must be a local path such as /", cfg.PostLogoutRedirect)
	}
	seen := map[string]bool{}
	for i, r := range cfg.Routes {
		switch r.Policy {
		case PolicyUser, PolicyUserOptional, PolicyClient, PolicyNone:
		default:
			bad(fmt.Sprintf("routes[%d].policy", i), "%q must be user, user-optional, client or none", r.Policy)
		}
		prefix := strings.TrimSuffix(r.Prefix, "/")
		switch {
		case !strings.HasPrefix(r.Prefix, "/") || prefix == "":
			bad(fmt.Sprintf("routes[%d].prefix", i), "%q must start with / and name a path (e.g. /api/)", r.Prefix)
		case strings.EqualFold(prefix, base) || strings.HasPrefix(strings.ToLower(prefix)+"/", strings.ToLower(base)+"/"):
			bad(fmt.Sprintf("routes[%d].prefix", i), "%q overlaps the gateway's base_path %q", r.Prefix, base)
		case !underPrefix(prefix, cfg.PathPrefix):
			bad(fmt.Sprintf("routes[%d].prefix", i), "%q lies outside the frontend's path_prefix %q: routes are absolute paths under it (%s/api/)", r.Prefix, cfg.PathPrefix, cfg.PathPrefix)
		case seen[strings.ToLower(prefix)]:
			bad(fmt.Sprintf("routes[%d].prefix", i), "%q is listed twice", r.Prefix)
		}
		seen[strings.ToLower(prefix)] = true
		if u, err := url.Parse(r.Upstream); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(fmt.Sprintf("routes[%d].upstream", i), "%q must be an absolute http(s) URL such as http://api.internal:8080", r.Upstream)
		}
		if r.Timeout < 0 {
			bad(fmt.Sprintf("routes[%d].timeout", i), "must not be negative (zero means the default, %s)", proxy.DefaultTimeout)
		}
		if r.MaxBodyBytes < 0 {
			bad(fmt.Sprintf("routes[%d].max_body_bytes", i), "must not be negative: want zero (the default, %d: 10 MiB) or a positive number of bytes", proxy.DefaultMaxBodyBytes)
		}
		errs = append(errs, checkRules(i, r, cfg.Provider.UseUserinfo)...)
		errs = append(errs, checkIdentity(i, r)...)
		errs = append(errs, checkExchange(i, r)...)
		errs = append(errs, checkBearer(i, r)...)
		errs = append(errs, checkMCPConfig(i, r.MCP)...)
		if r.IdleTimeout < 0 {
			bad(fmt.Sprintf("routes[%d].idle_timeout", i), "must not be negative: want zero (the default, %s) or a duration under the upstream's keep-alive timeout", proxy.DefaultIdleConnTimeout)
		}
	}
	if pub != nil {
		errs = append(errs, checkResources(pub, cfg.Routes)...)
	}
	errs = append(errs, cfg.checkForwardAuth()...)
	errs = append(errs, cfg.checkSPARules()...)
	if err := cfg.Tokens.Validate(); err != nil {
		for _, e := range unjoin(err) {
			var fe *tokens.FieldError
			if errors.As(e, &fe) {
				bad("tokens."+fe.Path, "%s", fe.Msg)
			} else {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return pub, nil
}

// checkRules compiles a route's allow and deny rules, reporting each
// problem under routes[i].
func checkRules(i int, r Route, useUserinfo bool) []error {
	var errs []error
	at := func(path string) string { return fmt.Sprintf("routes[%d].%s", i, path) }
	if _, err := authz.Compile(r.Rules); err != nil {
		for _, e := range unjoin(err) {
			var fe *authz.FieldError
			if errors.As(e, &fe) {
				errs = append(errs, ferr(at(fe.Path), "%s", fe.Msg))
			} else {
				errs = append(errs, e)
			}
		}
	}
	if !r.Rules.Empty() && (r.Policy == PolicyClient || r.Policy == PolicyNone) {
		errs = append(errs, ferr(at("allow"), "allow and deny rules read the user's claims, but policy %s calls the upstream without a user: use policy user or user-optional", r.Policy))
	}
	if r.Rules.ClaimsFrom == authz.SourceUserinfo && !useUserinfo {
		errs = append(errs, ferr(at("claims_from"), "userinfo needs gateway.provider.use_userinfo: true (the session has no userinfo claims otherwise)"))
	}
	return errs
}

// unjoin lists the errors an errors.Join holds (err itself otherwise).
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
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

// normalizeOrigin is proxy.NormalizeOrigin with an error that names the
// value, for configuration and the CSRF guard.
func normalizeOrigin(s string) (string, error) {
	n, ok := proxy.NormalizeOrigin(s)
	if !ok {
		return "", fmt.Errorf("%q is not an origin (scheme://host[:port])", s)
	}
	return n, nil
}
