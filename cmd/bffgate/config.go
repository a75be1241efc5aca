package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/bffgate/bffgate/bff"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/bff/spa"
	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/upstream"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/trust"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
	sessioncookie "github.com/bffgate/bffgate/session/cookie"
	sessionredis "github.com/bffgate/bffgate/session/redis"
)

// Config is the bffgate configuration file. Every key can be overridden by
// an environment variable named BFFGATE_ plus the key's path in upper case
// with underscores: gateway.session.store is BFFGATE_GATEWAY_SESSION_STORE.
// Lists (clients, users, routes, keys) take YAML or JSON in the variable.
//
// Where a section has the shape of a package's own configuration it is
// that package's type (gateway.provider is bff.ProviderConfig,
// gateway.routes[] bff.Route, gateway.refresh tokens.Config, gateway.spa
// spa.Config and authz.Policy (SPA), gateway.forward_auth bff.ForwardAuth,
// issuer.clients[] issuer.Client, issuer.users[] issuer.User,
// issuer.login_throttle issuer.LoginThrottle, issuer.keys[] keys.FileKey):
// its yaml tags are the keys, its DefaultConfig the defaults and its
// Validate the rules, so a key added there is a key here. The other
// sections mirror package fields whose Go shape differs from the file's
// (issuer.tokens, gateway.session); their defaults are still read from the
// packages (defaultConfig), and the packages' errors are reported under
// these keys (issuerKey, gatewayKey).
type Config struct {
	DataDir         string    `yaml:"data_dir"`
	ShutdownTimeout Duration  `yaml:"shutdown_timeout"`
	Log             LogConfig `yaml:"log"`
	Redis           Redis     `yaml:"redis"`
	Issuer          Issuer    `yaml:"issuer"`
	Gateway         Gateway   `yaml:"gateway"`
	DemoAPI         DemoAPI   `yaml:"demo_api"`

	// zeroConfig is set when bffgate runs with no configuration file: the
	// demo user exists and the demo API is on only then.
	zeroConfig bool
	// src is where the values came from, for errors found after loading.
	src *source
	// topIssuerURL is gateway.provider.issuer_url as the file and the
	// environment gave it, before fill: set with gateway.frontends, it is
	// ambiguous.
	topIssuerURL string
	// rawFrontends is gateway.frontends as given, before fill: a reload
	// fills it again from the running configuration's other keys.
	rawFrontends []Frontend
	// frontendSecrets are the generated secrets of the frontends' clients
	// at the embedded issuer, by frontend name (buildIssuer).
	frontendSecrets map[string]string
}

type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // auto, text, json
	Access bool   `yaml:"access"` // one line per request
}

type Redis struct {
	URL           string   `yaml:"url"`
	Prefix        string   `yaml:"prefix"`
	SentinelAddrs []string `yaml:"sentinel_addrs"`
	MasterName    string   `yaml:"master_name"`
	// SentinelUsername and SentinelPassword authenticate to the sentinels
	// themselves (their requirepass, or an ACL user of theirs), which is
	// separate from the data nodes' credentials in the URL. The password is
	// a secret: errors and logs never show it.
	SentinelUsername string   `yaml:"sentinel_username"`
	SentinelPassword string   `yaml:"sentinel_password"`
	ClusterAddrs     []string `yaml:"cluster_addrs"`
	// DialTimeout, ReadTimeout and WriteTimeout bound every Redis call
	// (see redisBudget): a Redis that stops answering (frozen, or a host
	// gone without a reset) costs a request about this long, then 503,
	// rather than go-redis's defaults of 5 s per dial and 3 s per read,
	// retried.
	DialTimeout  Duration `yaml:"dial_timeout"`
	ReadTimeout  Duration `yaml:"read_timeout"`
	WriteTimeout Duration `yaml:"write_timeout"`
}

type Issuer struct {
	Enabled         *bool                      `yaml:"enabled"`
	Listen          string                     `yaml:"listen"`
	URL             string                     `yaml:"url"`
	Store           string                     `yaml:"store"` // bbolt, redis
	LoginSessionTTL time.Duration              `yaml:"login_session_ttl"`
	Tokens          IssuerTokens               `yaml:"tokens"`
	Keys            []keys.FileKey             `yaml:"keys"`
	Denylist        Denylist                   `yaml:"denylist"`
	LoginThrottle   issuer.LoginThrottle       `yaml:"login_throttle"`
	TrustedProxies  []string                   `yaml:"trusted_proxies"`
	Clients         []issuer.Client            `yaml:"clients"`
	Users           []issuer.User              `yaml:"users"`
	SPIFFE          issuer.SPIFFE              `yaml:"spiffe"`
	TrustedIssuers  []trust.Issuer             `yaml:"trusted_issuers"`
	Audit           issuer.Audit               `yaml:"audit"`
	Resources       []issuer.Resource          `yaml:"resources"`
	ClientMetadata  issuer.ClientMetadata      `yaml:"client_metadata"`
	Registration    issuer.DynamicRegistration `yaml:"registration"`
	ConsentTTL      time.Duration              `yaml:"consent_ttl"`
}

// IssuerTokens is issuer.Config's token fields, grouped as the file groups
// them.
type IssuerTokens struct {
	Format          string        `yaml:"format"` // signed, encrypted
	Alg             string        `yaml:"alg"`
	IDTokenAlg      string        `yaml:"id_token_alg"`
	Encryption      string        `yaml:"encryption"`
	RefreshFormat   string        `yaml:"refresh_format"` // signed, sealed
	AccessTTL       time.Duration `yaml:"access_ttl"`
	RefreshTTL      time.Duration `yaml:"refresh_ttl"`
	IDTokenTTL      time.Duration `yaml:"id_token_ttl"`
	CodeTTL         time.Duration `yaml:"code_ttl"`
	RefreshRotation *bool         `yaml:"refresh_rotation"`
}

// Denylist is issuer.Config's denylist fields.
type Denylist struct {
	CacheSize    int           `yaml:"cache_size"`
	PollInterval time.Duration `yaml:"poll_interval"`
	PurgeDelay   time.Duration `yaml:"purge_delay"`
}

type Gateway struct {
	Enabled            *bool              `yaml:"enabled"`
	Listen             string             `yaml:"listen"`
	PublicURL          string             `yaml:"public_url"`
	BasePath           string             `yaml:"base_path"`
	InsecureAllowHTTP  bool               `yaml:"insecure_allow_http"`
	Provider           bff.ProviderConfig `yaml:"provider"`
	Session            SessionConfig      `yaml:"session"`
	CSRF               CSRF               `yaml:"csrf"`
	AllowedOrigins     []string           `yaml:"allowed_origins"`
	TrustedProxies     []string           `yaml:"trusted_proxies"`
	Routes             []bff.Route        `yaml:"routes"`
	Refresh            tokens.Config      `yaml:"refresh"`
	SPA                SPA                `yaml:"spa"`
	PostLogoutRedirect string             `yaml:"post_logout_redirect"`
	ForwardAuth        bff.ForwardAuth    `yaml:"forward_auth"`
	// Frontends, when set, are the SPAs this listener serves, each with
	// its own match, provider, cookies and routes (frontends.go); the
	// keys above are then their defaults.
	Frontends []Frontend `yaml:"frontends"`
}

// SessionConfig gathers the session's keys, which bff.Config (lifetimes,
// cookie) and the session stores (max size, sweeping) each hold a part of.
type SessionConfig struct {
	Store              string        `yaml:"store"` // cookie, bbolt, redis
	IdleTimeout        time.Duration `yaml:"idle_timeout"`
	AbsoluteLifetime   time.Duration `yaml:"absolute_lifetime"`
	CookieName         string        `yaml:"cookie_name"`
	SameSite           string        `yaml:"same_site"`
	CookieKeys         []CookieKey   `yaml:"cookie_keys"`
	MaxCookieBytes     int           `yaml:"max_cookie_bytes"`
	InsecureDevCookies bool          `yaml:"insecure_dev_cookies"`
	SweepInterval      time.Duration `yaml:"sweep_interval"`
	// RedisCache is the Redis store's near cache (session/redis owns its
	// defaults and meaning).
	RedisCache sessionredis.CacheConfig `yaml:"redis_cache"`
}

// CookieKey is one securecookie key pair, base64 (standard or URL) encoded.
type CookieKey struct {
	Hash  string `yaml:"hash"`
	Block string `yaml:"block"`
}

type CSRF struct {
	Header string `yaml:"header"`
	Value  string `yaml:"value"`
}

type DemoAPI struct {
	Enabled  *bool  `yaml:"enabled"`
	Listen   string `yaml:"listen"`
	Audience string `yaml:"audience"`
	Mode     string `yaml:"mode"` // auto, jwks, introspect
}

// Duration is a time.Duration written as a Go duration string ("5m").
type Duration time.Duration

// UnmarshalYAML reads a duration; the configuration decoder parses
// durations itself, this is for other decoders.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n)
	*d = Duration(v)
	return err
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// defaultConfig is the configuration bffgate runs with before the file and
// the environment are applied. Every default a package has is read from
// that package, never written again here (grace_window once was 30s here
// and 10s in bff/tokens); what is left are cmd's own keys.
func defaultConfig() Config {
	yes := true
	is := issuer.DefaultConfig()
	gw := bff.DefaultConfig()
	provider := gw.Provider
	provider.ClientID = embeddedClientID
	// Unset: fill chooses bff's default, plus groups and roles with the
	// embedded issuer (a default list here would never read as unset).
	provider.Scopes = nil
	return Config{
		DataDir:         "./bffgate-data",
		ShutdownTimeout: Duration(15 * time.Second),
		Log:             LogConfig{Level: "info", Format: "auto", Access: true},
		Redis: Redis{Prefix: "bffgate:",
			DialTimeout: Duration(time.Second), ReadTimeout: Duration(time.Second), WriteTimeout: Duration(time.Second)},
		Issuer: Issuer{
			Listen:          "127.0.0.1:9090",
			Store:           "bbolt",
			LoginSessionTTL: is.LoginSessionTTL,
			Tokens: IssuerTokens{
				Format:          string(is.TokenFormat),
				Alg:             is.TokenAlg,
				IDTokenAlg:      is.IDTokenAlg,
				Encryption:      issuer.DefaultEncryption,
				RefreshFormat:   string(is.RefreshTokenFormat),
				AccessTTL:       is.AccessTokenTTL,
				RefreshTTL:      is.RefreshTokenTTL,
				IDTokenTTL:      is.IDTokenTTL,
				CodeTTL:         is.CodeTTL,
				RefreshRotation: &yes,
			},
			Denylist:       Denylist{CacheSize: is.DenylistCacheSize, PollInterval: is.DenylistPollInterval, PurgeDelay: is.PurgeDelay},
			LoginThrottle:  is.LoginThrottle,
			Audit:          is.Audit,
			ClientMetadata: is.ClientMetadata,
			ConsentTTL:     is.ConsentTTL,
			Registration:   is.Registration,
		},
		Gateway: Gateway{
			Listen:   "127.0.0.1:8080",
			BasePath: gw.BasePath,
			Provider: provider,
			Session: SessionConfig{
				Store:            "bbolt",
				IdleTimeout:      gw.IdleTimeout,
				AbsoluteLifetime: gw.AbsoluteLifetime,
				CookieName:       gw.Cookie.Name,
				SameSite:         strings.ToLower(gw.Cookie.SameSite),
				MaxCookieBytes:   sessioncookie.DefaultMaxSize,
				SweepInterval:    sessionbolt.DefaultSweepInterval,
				RedisCache:       sessionredis.CacheConfig{Entries: sessionredis.DefaultCacheEntries, MaxStaleness: sessionredis.DefaultMaxStaleness},
			},
			CSRF:               CSRF{Header: gw.CSRFHeader, Value: gw.CSRFValue},
			Refresh:            tokens.DefaultConfig(),
			SPA:                SPA{Config: spa.Config{DevIdleTimeout: upstream.DefaultIdleTimeout}},
			PostLogoutRedirect: gw.PostLogoutRedirect,
		},
		DemoAPI: DemoAPI{Listen: "127.0.0.1:9091", Audience: embeddedClientID, Mode: "auto"},
	}
}

// loadConfig reads the file at path (none when empty: the zero-config
// run), applies the environment, fills what follows from other keys, and
// validates. Every error is a *KeyError (joined when there are several)
// naming the key, the file and line or the variable, and what is allowed.
func loadConfig(path string, env []string) (*Config, error) {
	if path == "" {
		return parseConfig("", nil, env)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fileError(path, err)
	}
	return parseConfig(path, b, env)
}

// zeroConfigPostLogout is gateway.post_logout_redirect when no file is
// given.
const zeroConfigPostLogout = "/?signed_out=1"

// parseConfig is loadConfig on the file's bytes (b nil and path empty:
// no file).
func parseConfig(path string, b []byte, env []string) (*Config, error) {
	cfg := defaultConfig()
	src := &source{file: path, env: map[string]bool{}}
	if b == nil {
		cfg.zeroConfig = true
	} else {
		var root yaml.Node
		if err := yaml.Unmarshal(b, &root); err != nil {
			return nil, syntaxError(path, err)
		}
		src.root = &root
		d := &decoder{where: func(n *yaml.Node) string { return fmt.Sprintf("%s line %d", path, n.Line) }}
		d.decode(&root, reflect.ValueOf(&cfg).Elem(), "", 0)
		if len(d.errs) > 0 {
			return nil, errors.Join(d.errs...)
		}
	}
	if err := applyEnv(&cfg, env, src); err != nil {
		return nil, err
	}
	cfg.fill()
	if cfg.zeroConfig && cfg.embeddedClient() && !src.env["BFFGATE_GATEWAY_POST_LOGOUT_REDIRECT"] {
		// The demo SPA says "You have been signed out" when it lands on
		// ?signed_out. The embedded client's post-logout URI is made from
		// this value, so the two always match; an external provider keeps
		// the package default ("/"), the URI its users registered.
		cfg.Gateway.PostLogoutRedirect = zeroConfigPostLogout
	}
	if err := cfg.validate(); err != nil {
		return nil, src.locateAll(err)
	}
	cfg.src = src
	return &cfg, nil
}

// fileError says why the configuration file cannot be read.
func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: no such configuration file (--config or BFFGATE_CONFIG); bffgate.example.yaml shows every key, and bffgate without --config runs the zero-config local stack", path)
	}
	return fmt.Errorf("%s: cannot read the configuration file: %w", path, err)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// syntaxError rewrites a YAML syntax error as "FILE line N: what".
func syntaxError(path string, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s line %s: %s (not valid YAML)", path, m[1], msg[len(m[0]):])
	}
	return fmt.Errorf("%s: %s (not valid YAML)", path, strings.TrimPrefix(msg, "yaml: "))
}

const envPrefix = "BFFGATE_"

// applyEnv sets every key whose BFFGATE_ variable is present. The
// variable names are derived from the yaml tags, so every key has one.
func applyEnv(cfg *Config, env []string, src *source) error {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, envPrefix) {
			vars[k] = v
		}
	}
	if len(vars) == 0 {
		return nil
	}
	known := map[string]bool{"BFFGATE_CONFIG": true}
	var errs []error
	walkKeys(reflect.ValueOf(cfg).Elem(), "", func(key string, f reflect.Value) {
		name := envName(key)
		known[name] = true
		raw, ok := vars[name]
		if !ok {
			return
		}
		src.env[name] = true
		if f.Kind() == reflect.String {
			f.SetString(raw)
			return
		}
		// YAML (a superset of JSON) decodes every other kind, lists and
		// maps included, with the same rules as the file.
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(raw), &n); err != nil {
			errs = append(errs, &KeyError{Key: key, Where: name, Msg: fmt.Sprintf("%s (not valid YAML or JSON)", strings.TrimPrefix(err.Error(), "yaml: "))})
			return
		}
		d := &decoder{where: func(*yaml.Node) string { return name }}
		d.decode(&n, f, key, 0)
		errs = append(errs, d.errs...)
	})
	for name := range vars {
		if !known[name] && !strings.HasPrefix(name, "BFFGATE_TEST_") && !strings.HasPrefix(name, "BFFGATE_E2E_") && name != "BFFGATE_CHROMIUM" {
			errs = append(errs, fmt.Errorf("environment variable %s names no configuration key; see bffgate.example.yaml for the keys (gateway.listen is BFFGATE_GATEWAY_LISTEN)", name))
		}
	}
	return errors.Join(errs...)
}

// walkKeys calls fn for each configuration key under v with its key path:
// structs of keys are walked into, every other kind (lists of routes or
// clients included) is one key.
func walkKeys(v reflect.Value, path string, fn func(key string, f reflect.Value)) {
	for _, k := range keysOf(v.Type()) {
		key := k.name
		if path != "" {
			key = path + "." + k.name
		}
		f := v.FieldByIndex(k.index)
		if walked(f.Type()) {
			walkKeys(f, key, fn)
			continue
		}
		fn(key, f)
	}
}

// fill derives what the other keys imply: the issuer URL from its listen
// address, the gateway's provider from the embedded issuer, the demo API.
func (c *Config) fill() {
	c.topIssuerURL = c.Gateway.Provider.IssuerURL
	c.rawFrontends = cloneFrontends(c.Gateway.Frontends)
	frontends := len(c.Gateway.Frontends) > 0
	embedded := c.Gateway.Provider.IssuerURL == "" && !frontends
	if c.Issuer.URL == "" {
		c.Issuer.URL = "http://" + browsable(c.Issuer.Listen)
	}
	c.Issuer.URL = strings.TrimRight(c.Issuer.URL, "/")
	if c.Issuer.Enabled == nil {
		// With frontends: on when one of them signs in there.
		on := embedded || slices.ContainsFunc(c.Gateway.Frontends, func(f Frontend) bool {
			return strings.TrimRight(f.Provider.IssuerURL, "/") == c.Issuer.URL
		})
		c.Issuer.Enabled = &on
	}
	if c.Gateway.Enabled == nil {
		on := true
		c.Gateway.Enabled = &on
	}
	if c.DemoAPI.Enabled == nil {
		on := c.zeroConfig
		c.DemoAPI.Enabled = &on
	}
	if c.Gateway.PublicURL == "" {
		c.Gateway.PublicURL = "http://" + browsable(c.Gateway.Listen)
	}
	c.Gateway.PublicURL = strings.TrimRight(c.Gateway.PublicURL, "/")
	if embedded && *c.Issuer.Enabled {
		c.Gateway.Provider.IssuerURL = c.Issuer.URL
		if len(c.Gateway.Provider.Scopes) == 0 {
			// The embedded issuer releases the users' groups and roles
			// with these scopes, which routes' allow rules read.
			c.Gateway.Provider.Scopes = []string{"openid", "profile", "email", "offline_access", "groups", "roles"}
		}
	}
	if len(c.Gateway.Provider.Scopes) == 0 {
		c.Gateway.Provider.Scopes = bff.DefaultConfig().Provider.Scopes
	}
	c.fillFrontends()
	if len(c.Gateway.Routes) == 0 && *c.DemoAPI.Enabled && !frontends {
		c.Gateway.Routes = []bff.Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://" + browsable(c.DemoAPI.Listen)}, Policy: bff.PolicyUser}}
	}
	for i := range c.Gateway.Routes {
		if c.Gateway.Routes[i].Policy == "" {
			c.Gateway.Routes[i].Policy = bff.PolicyUser
		}
	}
}

// browsable turns a listen address into the host:port a browser (or a
// client on this machine) reaches it at: a listener on every interface
// (":48083", "0.0.0.0:8080", "[::]:8080") is reached on 127.0.0.1.
func browsable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// embeddedClient reports whether the gateway logs in against the embedded
// issuer with the client bffgate registers there itself.
func (c *Config) embeddedClient() bool {
	return *c.Issuer.Enabled && c.Gateway.Provider.IssuerURL == c.Issuer.URL && len(c.Gateway.Frontends) == 0
}

// validate checks everything start-up checks, in one place: cmd's own keys
// here, then each package's Validate on the very configuration serve will
// hand it (issuerConfig, gatewayConfig), its errors put under their YAML
// keys. bffgate config check and bffgate serve both run it through
// loadConfig, so they cannot disagree.
func (c *Config) validate() error {
	var errs []error
	bad := func(key string, val any, want string) {
		errs = append(errs, &KeyError{Key: key, Msg: fmt.Sprintf("%s is not allowed: %s", quote(val), want)})
	}
	oneOf := func(key, val string, allowed ...string) {
		if !slices.Contains(allowed, val) {
			bad(key, val, "want one of "+strings.Join(allowed, ", "))
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, d.String(), "want a positive duration such as \"5m\"")
		}
	}
	listen := func(key, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad(key, addr, "want host:port, such as 127.0.0.1:8080 (or :8080 for every interface)")
		}
	}

	if c.DataDir == "" {
		bad("data_dir", "", "want a directory path")
	}
	positive("shutdown_timeout", c.ShutdownTimeout.D())
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "auto", "text", "json")
	errs = append(errs, c.validateRedis()...)

	if *c.Issuer.Enabled {
		is := &c.Issuer
		listen("issuer.listen", is.Listen)
		oneOf("issuer.store", is.Store, "bbolt", "redis")
		oneOf("issuer.tokens.format", is.Tokens.Format, "signed", "encrypted")
		for i, k := range is.Keys {
			key := fmt.Sprintf("issuer.keys[%d]", i)
			if k.Path == "" {
				bad(key+".path", "", "want the path of a PEM or JWK file")
			} else if _, err := os.Stat(k.Path); err != nil {
				errs = append(errs, &KeyError{Key: key + ".path", Msg: fmt.Sprintf("%q cannot be read: %v", k.Path, unwrapPath(err))})
			}
		}
		// The issuer's own rules, on the configuration serve builds
		// (clients, users, token algorithms and lifetimes, login
		// throttle, trusted proxies). The secret stands in for the one
		// generated at the first start, which is always valid.
		if err := c.issuerConfig(strings.Repeat("x", 43)).Validate(); err != nil {
			errs = append(errs, c.issuerErrors(err)...)
		}
	}

	if *c.Gateway.Enabled {
		g := &c.Gateway
		listen("gateway.listen", g.Listen)
		s := &g.Session
		oneOf("gateway.session.store", s.Store, "cookie", "bbolt", "redis")
		positive("gateway.session.sweep_interval", s.SweepInterval)
		if s.RedisCache.Entries < 0 {
			bad("gateway.session.redis_cache.entries", s.RedisCache.Entries, "want a number of sessions, or 0 for no near cache")
		}
		if d := s.RedisCache.MaxStaleness; d < sessionredis.MinMaxStaleness {
			bad("gateway.session.redis_cache.max_staleness", d.String(), "want at least "+sessionredis.MinMaxStaleness.String()+" (each instance publishes a probe every quarter of it)")
		}
		if !strings.HasPrefix(s.CookieName, "__Host-") && !s.InsecureDevCookies && len(g.Frontends) == 0 {
			bad("gateway.session.cookie_name", s.CookieName, "want a name with the __Host- prefix (or set gateway.session.insecure_dev_cookies for plain-http development hosts)")
		}
		if s.MaxCookieBytes < 3800 {
			bad("gateway.session.max_cookie_bytes", s.MaxCookieBytes, "want at least 3800 (one cookie)")
		}
		if _, err := cookieKeyPairs(s.CookieKeys); err != nil {
			errs = append(errs, err)
		}
		trustedProxies := func(key string, list []string) {
			for i, s := range list {
				k := fmt.Sprintf("%s[%d]", key, i)
				if strings.Contains(s, "/") {
					if _, err := netip.ParsePrefix(s); err != nil {
						bad(k, s, "want a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an IP")
					}
				} else if _, err := netip.ParseAddr(s); err != nil {
					bad(k, s, "want an IP such as 192.0.2.7 or a CIDR such as 10.0.0.0/8")
				}
			}
		}
		trustedProxies("gateway.trusted_proxies", g.TrustedProxies)
		switch {
		case len(g.Frontends) > 0:
			errs = append(errs, c.validateFrontends()...)
		default:
			if g.Provider.IssuerURL == "" {
				bad("gateway.provider.issuer_url", "", "the embedded issuer is disabled (issuer.enabled: false): want your OpenID provider's issuer URL")
			}
			if g.SPA.Dir != "" && g.SPA.DevURL != "" {
				bad("gateway.spa", "dir and dev_url", "want at most one of gateway.spa.dir and gateway.spa.dev_url")
			} else {
				errs = append(errs, c.checkSPA()...)
			}
			if err := c.gatewayConfig().Validate(); err != nil {
				errs = append(errs, c.gatewayErrors(err)...)
			}
		}
	}

	if *c.DemoAPI.Enabled {
		listen("demo_api.listen", c.DemoAPI.Listen)
		oneOf("demo_api.mode", c.DemoAPI.Mode, "auto", "jwks", "introspect")
		if !*c.Issuer.Enabled {
			bad("demo_api.enabled", true, "the demo API needs the embedded issuer (issuer.enabled)")
		}
	}
	if !*c.Issuer.Enabled && !*c.Gateway.Enabled {
		bad("issuer.enabled and gateway.enabled", false, "want at least one of them on")
	}
	return errors.Join(derivedOnce(errs)...)
}

// derivedOnce drops the errors the issuer raised about the gateway's own
// client (its redirect URIs are made from gateway.public_url) when the
// gateway already refused gateway.public_url itself: one cause, one line.
func derivedOnce(errs []error) []error {
	refused := false
	for _, e := range errs {
		if ke, ok := e.(*KeyError); ok && ke.Key == "gateway.public_url" && !strings.HasPrefix(ke.Msg, embeddedClientPrefix) {
			refused = true
		}
	}
	if !refused {
		return errs
	}
	return slices.DeleteFunc(errs, func(e error) bool {
		ke, ok := e.(*KeyError)
		return ok && ke.Key == "gateway.public_url" && strings.HasPrefix(ke.Msg, embeddedClientPrefix)
	})
}

func (c *Config) validateRedis() []error {
	var errs []error
	bad := func(key string, val any, want string) {
		errs = append(errs, &KeyError{Key: key, Msg: fmt.Sprintf("%s is not allowed: %s", quote(val), want)})
	}
	usesRedis := (*c.Issuer.Enabled && c.Issuer.Store == "redis") || (*c.Gateway.Enabled && c.Gateway.Session.Store == "redis") ||
		(*c.Gateway.Enabled && slices.ContainsFunc(c.Gateway.Frontends, func(f Frontend) bool { return f.Session.Store == "redis" }))
	if usesRedis && c.Redis.URL == "" && len(c.Redis.ClusterAddrs) == 0 && len(c.Redis.SentinelAddrs) == 0 {
		bad("redis.url", "", "a store is set to redis: want a URL such as redis://127.0.0.1:6379/0 (or redis.cluster_addrs / redis.sentinel_addrs)")
	}
	for _, t := range []struct {
		key string
		d   Duration
	}{{"redis.dial_timeout", c.Redis.DialTimeout}, {"redis.read_timeout", c.Redis.ReadTimeout}, {"redis.write_timeout", c.Redis.WriteTimeout}} {
		if t.d <= 0 {
			bad(t.key, t.d.D().String(), "want a positive duration such as \"1s\"")
		}
	}
	if len(c.Redis.SentinelAddrs) > 0 && c.Redis.MasterName == "" {
		bad("redis.master_name", "", "redis.sentinel_addrs is set: want the sentinel master's name")
	}
	// Sentinel credentials without sentinels would be silently unused.
	if len(c.Redis.SentinelAddrs) == 0 {
		if c.Redis.SentinelUsername != "" {
			bad("redis.sentinel_username", c.Redis.SentinelUsername, "redis.sentinel_addrs is not set: the sentinel credentials are used only with sentinels")
		}
		if c.Redis.SentinelPassword != "" {
			bad("redis.sentinel_password", "(hidden)", "redis.sentinel_addrs is not set: the sentinel credentials are used only with sentinels")
		}
	} else if c.Redis.SentinelUsername != "" && c.Redis.SentinelPassword == "" {
		bad("redis.sentinel_password", "", "redis.sentinel_username is set: want that ACL user's password too")
	}
	if c.Redis.URL != "" {
		if u, err := url.Parse(c.Redis.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			bad("redis.url", redactURL(c.Redis.URL), "want redis://, rediss:// (TLS) or unix:// URL")
		} else if opts, err := goredis.ParseURL(c.Redis.URL); err != nil {
			// Not err itself: it may repeat the URL, password included.
			bad("redis.url", redactURL(c.Redis.URL), redisURLWant)
		} else if len(c.Redis.ClusterAddrs) > 0 && opts.DB != 0 {
			// go-redis's cluster client has no database option: a /N in the
			// URL would be dropped without a word.
			bad("redis.url", redactURL(c.Redis.URL), fmt.Sprintf("redis.cluster_addrs is set, and Redis Cluster has only database 0: drop the database number %d from the URL (or write /0)", opts.DB))
		}
	}
	// Every key bffgate writes starts with the prefix. A { or } in it could
	// form a hash tag, and Redis Cluster would then hash only the tag: all
	// sessions in one slot, on one shard. The issuer's store sets its own
	// tag after the prefix and refuses braces before it.
	if strings.ContainsAny(c.Redis.Prefix, "{}") {
		bad("redis.prefix", c.Redis.Prefix, "want a prefix without { or }: a brace could make a Redis Cluster hash tag and put every key in one slot (bffgate adds its own hash tags where it needs them)")
	}
	return errs
}

// unwrapPath drops the path an *fs.PathError repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var (
	asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
	signingAlgs    = append([]string{"HS256", "HS384", "HS512"}, asymmetricAlgs...)
)

func quote(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	default:
		return fmt.Sprintf("%v", v)
	}
}

// redisURLWant says what redis.url takes.
const redisURLWant = "want redis://[user:password@]host:port/db, rediss:// for TLS, or unix:///path?db=N"

// redactURL hides a password in a URL that is about to be shown.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
