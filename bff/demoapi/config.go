package demoapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Verification modes of Config.Mode.
const (
	// ModeJWKS verifies JWT access tokens locally with the issuer's JWK set
	// (RFC 9068).
	ModeJWKS = "jwks"
	// ModeIntrospect asks the issuer's introspection endpoint (RFC 7662).
	ModeIntrospect = "introspect"
)

// Defaults filled in by New.
const (
	DefaultLeeway   = 30 * time.Second
	DefaultCacheTTL = 5 * time.Second
	// MaxItemsPerSubject bounds each user's item list.
	MaxItemsPerSubject = 100
	// MaxSubjects bounds how many users hold items at once.
	MaxSubjects = 10000
	// MaxTitleLength is the longest item title, in characters.
	MaxTitleLength = 200
)

// Config configures the demo API. Issuer and Audience are required.
type Config struct {
	// Issuer is the issuer identifier; discovery is fetched from
	// Issuer+"/.well-known/openid-configuration" and the document's issuer
	// must equal it (OpenID Connect Discovery §4.3). Tokens' iss must equal
	// it exactly.
	Issuer string
	// Audience must be one of each access token's aud values (RFC 9068 §4):
	// the client id ("bffgate") or the audience the issuer is configured
	// to put in tokens for this API.
	Audience string
	// Mode is ModeJWKS (default, "" too) or ModeIntrospect.
	Mode string
	// IntrospectionClientID and IntrospectionClientSecret authenticate the
	// API at the introspection endpoint (RFC 7662 §2.1). Required when
	// Mode is ModeIntrospect.
	IntrospectionClientID     string
	IntrospectionClientSecret string
	// RequiredScope, when set, must be among every token's scopes, else the
	// API answers 403 insufficient_scope (RFC 6750 §3.1).
	RequiredScope string
	// Leeway is the clock skew allowed on exp, nbf and iat; 0 means
	// DefaultLeeway. At most 5 minutes.
	Leeway time.Duration
	// CacheTTL is how long a positive introspection answer is reused; 0
	// means DefaultCacheTTL, negative disables the cache.
	CacheTTL time.Duration
	// HTTPClient fetches discovery, the JWK set and introspection; nil means
	// a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives verification failures (reasons, never tokens); nil
	// means slog.Default().
	Logger *slog.Logger
	// Registerer receives the API's metrics; nil means none are kept.
	Registerer prometheus.Registerer
	// Gatherer is served on /metrics; nil means no /metrics route.
	Gatherer prometheus.Gatherer
	// AccessLog logs one line per request.
	AccessLog bool
}

// DefaultConfig returns a Config for the embedded issuer of `bffgate`
// (http://127.0.0.1:9090, audience "bffgate").
func DefaultConfig() Config {
	return Config{Issuer: "http://127.0.0.1:9090", Audience: "bffgate", Mode: ModeJWKS}
}

func (cfg *Config) fill() error {
	if cfg.Issuer == "" {
		return fmt.Errorf("demoapi: Config.Issuer is required")
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("demoapi: Config.Issuer %q must be an absolute http(s) URL without query or fragment", cfg.Issuer)
	}
	if cfg.Audience == "" {
		return fmt.Errorf("demoapi: Config.Audience is required (the aud every access token must carry)")
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeJWKS
	case ModeJWKS:
	case ModeIntrospect:
		if cfg.IntrospectionClientID == "" || cfg.IntrospectionClientSecret == "" {
			return fmt.Errorf("demoapi: Config.IntrospectionClientID and IntrospectionClientSecret are required in mode %q", ModeIntrospect)
		}
	default:
		return fmt.Errorf("demoapi: Config.Mode %q: want %q or %q", cfg.Mode, ModeJWKS, ModeIntrospect)
	}
	if strings.ContainsAny(cfg.RequiredScope, " \t\"\\") {
		return fmt.Errorf("demoapi: Config.RequiredScope %q must be one scope token (RFC 6749 §3.3)", cfg.RequiredScope)
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0 || cfg.Leeway > 5*time.Minute:
		return fmt.Errorf("demoapi: Config.Leeway %v must be between 0 and 5m", cfg.Leeway)
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheTTL > 5*time.Minute {
		return fmt.Errorf("demoapi: Config.CacheTTL %v is too long: a revoked token would stay valid that long (at most 5m)", cfg.CacheTTL)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}
