package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/bffgate/bffgate/issuer"
)

// Config is the bffgate configuration file. Every key can be overridden by
// an environment variable named BFFGATE_ plus the key's path in upper case
// with underscores: gateway.session.store is BFFGATE_GATEWAY_SESSION_STORE.
// Lists (clients, users, routes, keys) take YAML or JSON in the variable.
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
	Enabled         *bool          `yaml:"enabled"`
	Listen          string         `yaml:"listen"`
	URL             string         `yaml:"url"`
	Store           string         `yaml:"store"` // bbolt, redis
	LoginSessionTTL Duration       `yaml:"login_session_ttl"`
	Tokens          IssuerTokens   `yaml:"tokens"`
	Keys            []IssuerKey    `yaml:"keys"`
	Denylist        Denylist       `yaml:"denylist"`
	LoginThrottle   LoginThrottle  `yaml:"login_throttle"`
	TrustedProxies  []string       `yaml:"trusted_proxies"`
	Clients         []IssuerClient `yaml:"clients"`
	Users           []IssuerUser   `yaml:"users"`
}

type IssuerTokens struct {
	Format          string   `yaml:"format"` // signed, encrypted
	Alg             string   `yaml:"alg"`
	IDTokenAlg      string   `yaml:"id_token_alg"`
	Encryption      string   `yaml:"encryption"`
	AccessTTL       Duration `yaml:"access_ttl"`
	RefreshTTL      Duration `yaml:"refresh_ttl"`
	IDTokenTTL      Duration `yaml:"id_token_ttl"`
	CodeTTL         Duration `yaml:"code_ttl"`
	RefreshRotation *bool    `yaml:"refresh_rotation"`
}

type IssuerKey struct {
	Path string `yaml:"path"`
	Alg  string `yaml:"alg"`
	KID  string `yaml:"kid"`
}

type Denylist struct {
	CacheSize    int      `yaml:"cache_size"`
	PollInterval Duration `yaml:"poll_interval"`
	PurgeDelay   Duration `yaml:"purge_delay"`
}

// LoginThrottle is issuer.LoginThrottle: brute-force protection of the
// login form.
type LoginThrottle struct {
	Disable        bool     `yaml:"disable"`
	MaxFailures    int      `yaml:"max_failures"`
	Window         Duration `yaml:"window"`
	Lockout        Duration `yaml:"lockout"`
	MaxLockout     Duration `yaml:"max_lockout"`
	MaxIPFailures  int      `yaml:"max_ip_failures"`
	DisableIPLimit bool     `yaml:"disable_ip_limit"`
}

type IssuerClient struct {
	ID                     string   `yaml:"id"`
	Secret                 string   `yaml:"secret"`
	RedirectURIs           []string `yaml:"redirect_uris"`
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
	GrantTypes             []string `yaml:"grant_types"`
	Scopes                 []string `yaml:"scopes"`
	BackchannelLogoutURI   string   `yaml:"backchannel_logout_uri"`
	Audience               []string `yaml:"audience"`
}

type IssuerUser struct {
	Username     string         `yaml:"username"`
	PasswordHash string         `yaml:"password_hash"`
	Subject      string         `yaml:"subject"`
	Claims       map[string]any `yaml:"claims"`
}

type Gateway struct {
	Enabled            *bool          `yaml:"enabled"`
	Listen             string         `yaml:"listen"`
	PublicURL          string         `yaml:"public_url"`
	BasePath           string         `yaml:"base_path"`
	InsecureAllowHTTP  bool           `yaml:"insecure_allow_http"`
	Provider           Provider       `yaml:"provider"`
	Session            SessionConfig  `yaml:"session"`
	CSRF               CSRF           `yaml:"csrf"`
	AllowedOrigins     []string       `yaml:"allowed_origins"`
	TrustedProxies     []string       `yaml:"trusted_proxies"`
	Routes             []GatewayRoute `yaml:"routes"`
	Refresh            Refresh        `yaml:"refresh"`
	SPA                SPA            `yaml:"spa"`
	PostLogoutRedirect string         `yaml:"post_logout_redirect"`
}

type Provider struct {
	IssuerURL                string            `yaml:"issuer_url"`
	ClientID                 string            `yaml:"client_id"`
	ClientSecret             string            `yaml:"client_secret"`
	Scopes                   []string          `yaml:"scopes"`
	UseUserinfo              bool              `yaml:"use_userinfo"`
	ExtraAuthParams          map[string]string `yaml:"extra_auth_params"`
	AllowedAlgs              []string          `yaml:"allowed_algs"`
	InsecureAllowMissingPKCE bool              `yaml:"insecure_allow_missing_pkce"`
}

type SessionConfig struct {
	Store              string      `yaml:"store"` // cookie, bbolt, redis
	IdleTimeout        Duration    `yaml:"idle_timeout"`
	AbsoluteLifetime   Duration    `yaml:"absolute_lifetime"`
	CookieName         string      `yaml:"cookie_name"`
	SameSite           string      `yaml:"same_site"`
	CookieKeys         []CookieKey `yaml:"cookie_keys"`
	MaxCookieBytes     int         `yaml:"max_cookie_bytes"`
	InsecureDevCookies bool        `yaml:"insecure_dev_cookies"`
	SweepInterval      Duration    `yaml:"sweep_interval"`
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

type GatewayRoute struct {
	Prefix      string            `yaml:"prefix"`
	Upstream    string            `yaml:"upstream"`
	Policy      string            `yaml:"policy"` // user, user-optional, client, none
	StripPrefix bool              `yaml:"strip_prefix"`
	Timeout     Duration          `yaml:"timeout"`
	AddHeaders  map[string]string `yaml:"add_headers"`
	DropHeaders []string          `yaml:"drop_headers"`
	DropCookies []string          `yaml:"drop_cookies"`
}

type Refresh struct {
	Skew        Duration `yaml:"skew"`
	GraceWindow Duration `yaml:"grace_window"`
}

type SPA struct {
	Dir    string `yaml:"dir"`
	DevURL string `yaml:"dev_url"`
}

type DemoAPI struct {
	Enabled  *bool  `yaml:"enabled"`
	Listen   string `yaml:"listen"`
	Audience string `yaml:"audience"`
	Mode     string `yaml:"mode"` // auto, jwks, introspect
}

// Duration is a time.Duration written as a Go duration string ("5m").
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as \"30s\" or \"5m\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration: want a Go duration such as \"30s\", \"5m\" or \"12h\"", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// defaultConfig is the configuration bffgate runs with before the file and
// the environment are applied.
func defaultConfig() Config {
	yes := true
	return Config{
		DataDir:         "./bffgate-data",
		ShutdownTimeout: Duration(15 * time.Second),
		Log:             LogConfig{Level: "info", Format: "auto", Access: true},
		Redis: Redis{Prefix: "bffgate:",
			DialTimeout: Duration(time.Second), ReadTimeout: Duration(time.Second), WriteTimeout: Duration(time.Second)},
		Issuer: Issuer{
			Listen:          "127.0.0.1:9090",
			Store:           "bbolt",
			LoginSessionTTL: Duration(8 * time.Hour),
			Tokens: IssuerTokens{
				Format:          "signed",
				Alg:             "RS256",
				IDTokenAlg:      "RS256",
				Encryption:      "A128CBC-HS256",
				AccessTTL:       Duration(5 * time.Minute),
				RefreshTTL:      Duration(24 * time.Hour),
				IDTokenTTL:      Duration(5 * time.Minute),
				CodeTTL:         Duration(60 * time.Second),
				RefreshRotation: &yes,
			},
			Denylist: Denylist{CacheSize: 10000, PollInterval: Duration(60 * time.Second), PurgeDelay: Duration(time.Minute)},
			LoginThrottle: LoginThrottle{
				MaxFailures: issuer.DefaultLoginMaxFailures, Window: Duration(issuer.DefaultLoginWindow),
				Lockout: Duration(issuer.DefaultLoginLockout), MaxLockout: Duration(issuer.DefaultLoginMaxLockout),
				MaxIPFailures: issuer.DefaultLoginMaxIPFailures,
			},
		},
		Gateway: Gateway{
			Listen:   "127.0.0.1:8080",
			BasePath: "/bff",
			Provider: Provider{
				ClientID: "bffgate",
				Scopes:   []string{"openid", "profile", "email", "offline_access"},
			},
			Session: SessionConfig{
				Store:            "bbolt",
				IdleTimeout:      Duration(30 * time.Minute),
				AbsoluteLifetime: Duration(12 * time.Hour),
				CookieName:       "__Host-bff",
				SameSite:         "lax",
				MaxCookieBytes:   15200,
				SweepInterval:    Duration(5 * time.Minute),
			},
			CSRF:               CSRF{Header: "X-CSRF", Value: "1"},
			Refresh:            Refresh{Skew: Duration(30 * time.Second), GraceWindow: Duration(30 * time.Second)},
			PostLogoutRedirect: "/",
		},
		DemoAPI: DemoAPI{Listen: "127.0.0.1:9091", Audience: "bffgate", Mode: "auto"},
	}
}

// loadConfig reads the file at path (none when empty: the zero-config
// run), applies the environment, fills what follows from other keys, and
// validates. Errors name the key, the value and what is allowed.
func loadConfig(path string, env []string) (*Config, error) {
	cfg := defaultConfig()
	if path == "" {
		cfg.zeroConfig = true
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decodeStrict(b, &cfg); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, env); err != nil {
		return nil, err
	}
	cfg.fill()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// decodeStrict decodes YAML refusing unknown keys (a typo is an error, not
// a silently ignored setting).
func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return nameKeys(b, err)
	}
	return nil
}

var lineRef = regexp.MustCompile(`line (\d+)`)

// nameKeys rewrites the "line N" references of a YAML error into the key
// path at that line ("issuer.tokens.access_ttl (line 3)"), so the message
// names the key as well as the place.
func nameKeys(b []byte, err error) error {
	var root yaml.Node
	if yaml.Unmarshal(b, &root) != nil {
		return err
	}
	paths := map[string]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				line := strconv.Itoa(k.Line)
				if _, ok := paths[line]; !ok {
					paths[line] = p
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				line := strconv.Itoa(c.Line)
				if _, ok := paths[line]; !ok {
					paths[line] = p
				}
				walk(c, p)
			}
		}
	}
	walk(&root, "")
	msg := lineRef.ReplaceAllStringFunc(err.Error(), func(m string) string {
		if p, ok := paths[lineRef.FindStringSubmatch(m)[1]]; ok {
			return p + " (" + m + ")"
		}
		return m
	})
	return errors.New(strings.TrimPrefix(msg, "yaml: "))
}

const envPrefix = "BFFGATE_"

// applyEnv sets every field whose BFFGATE_ variable is present. The
// variable names are derived from the yaml tags, so every key has one.
func applyEnv(cfg *Config, env []string) error {
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
	err := walkEnv(reflect.ValueOf(cfg).Elem(), "", func(name, key string, f reflect.Value) error {
		known[name] = true
		raw, ok := vars[name]
		if !ok {
			return nil
		}
		if f.Kind() == reflect.String {
			f.SetString(raw)
			return nil
		}
		// YAML (a superset of JSON) decodes every other kind, lists and
		// maps included, with the same rules as the file.
		if err := yaml.Unmarshal([]byte(raw), f.Addr().Interface()); err != nil {
			return fmt.Errorf("config: %s (from %s): %q: %w", key, name, raw, yamlErr(err))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for name := range vars {
		if !known[name] && !strings.HasPrefix(name, "BFFGATE_TEST_") && !strings.HasPrefix(name, "BFFGATE_E2E_") && name != "BFFGATE_CHROMIUM" {
			return fmt.Errorf("config: environment variable %s names no configuration key; see bffgate.example.yaml for the keys (gateway.listen is BFFGATE_GATEWAY_LISTEN)", name)
		}
	}
	return nil
}

// walkEnv calls fn for each configurable field with its variable name and
// its key path. Structs are walked into; every other kind is a leaf.
func walkEnv(v reflect.Value, path string, fn func(name, key string, f reflect.Value) error) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || !sf.IsExported() {
			continue
		}
		key := tag
		if path != "" {
			key = path + "." + tag
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(Duration(0)) {
			if err := walkEnv(f, key, fn); err != nil {
				return err
			}
			continue
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if err := fn(name, key, f); err != nil {
			return err
		}
	}
	return nil
}

func yamlErr(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	return err
}

// fill derives what the other keys imply: the issuer URL from its listen
// address, the gateway's provider from the embedded issuer, the demo API.
func (c *Config) fill() {
	embedded := c.Gateway.Provider.IssuerURL == ""
	if c.Issuer.Enabled == nil {
		on := embedded
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
	if c.Issuer.URL == "" {
		c.Issuer.URL = "http://" + c.Issuer.Listen
	}
	c.Issuer.URL = strings.TrimRight(c.Issuer.URL, "/")
	if c.Gateway.PublicURL == "" {
		c.Gateway.PublicURL = "http://" + c.Gateway.Listen
	}
	c.Gateway.PublicURL = strings.TrimRight(c.Gateway.PublicURL, "/")
	if embedded && *c.Issuer.Enabled {
		c.Gateway.Provider.IssuerURL = c.Issuer.URL
	}
	if len(c.Gateway.Routes) == 0 && *c.DemoAPI.Enabled {
		c.Gateway.Routes = []GatewayRoute{{Prefix: "/api/", Upstream: "http://" + c.DemoAPI.Listen, Policy: "user"}}
	}
	for i := range c.Gateway.Routes {
		if c.Gateway.Routes[i].Policy == "" {
			c.Gateway.Routes[i].Policy = "user"
		}
	}
}

// embeddedClient reports whether the gateway logs in against the embedded
// issuer with the client bffgate registers there itself.
func (c *Config) embeddedClient() bool {
	return *c.Issuer.Enabled && c.Gateway.Provider.IssuerURL == c.Issuer.URL
}

func (c *Config) validate() error {
	var errs []error
	bad := func(key string, val any, want string) {
		errs = append(errs, fmt.Errorf("config: %s: %v is not allowed: %s", key, quote(val), want))
	}
	oneOf := func(key, val string, allowed ...string) {
		if !slices.Contains(allowed, val) {
			bad(key, val, "want one of "+strings.Join(allowed, ", "))
		}
	}
	positive := func(key string, d Duration) {
		if d <= 0 {
			bad(key, d.D().String(), "want a positive duration such as \"5m\"")
		}
	}
	listen := func(key, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, addr, "want host:port, such as 127.0.0.1:8080")
		}
	}
	// trustedProxies checks a trusted_proxies list the way issuer and
	// bff/proxy parse it: IPs or CIDRs. With allowAll false a /0 is
	// refused (issuer.trusted_proxies: trusting every address would let
	// any client choose the address the login throttle counts).
	trustedProxies := func(key string, list []string, allowAll bool) {
		for i, s := range list {
			k := fmt.Sprintf("%s[%d]", key, i)
			if strings.Contains(s, "/") {
				p, err := netip.ParsePrefix(s)
				switch {
				case err != nil:
					bad(k, s, "want a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an IP")
				case p.Bits() == 0 && !allowAll:
					bad(k, s, "it trusts every address, so any client could choose in X-Forwarded-For the address its failed logins count against: list your proxies' addresses (or set issuer.login_throttle.disable_ip_limit)")
				}
			} else if _, err := netip.ParseAddr(s); err != nil {
				bad(k, s, "want an IP such as 192.0.2.7 or a CIDR such as 10.0.0.0/8")
			}
		}
	}
	absURL := func(key, s string) {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key, s, "want an absolute http(s) URL")
		}
	}

	if c.DataDir == "" {
		bad("data_dir", "", "want a directory path")
	}
	positive("shutdown_timeout", c.ShutdownTimeout)
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "auto", "text", "json")

	usesRedis := (*c.Issuer.Enabled && c.Issuer.Store == "redis") || (*c.Gateway.Enabled && c.Gateway.Session.Store == "redis")
	if usesRedis && c.Redis.URL == "" && len(c.Redis.ClusterAddrs) == 0 && len(c.Redis.SentinelAddrs) == 0 {
		bad("redis.url", "", "a store is set to redis: want a URL such as redis://127.0.0.1:6379/0 (or redis.cluster_addrs / redis.sentinel_addrs)")
	}
	positive("redis.dial_timeout", c.Redis.DialTimeout)
	positive("redis.read_timeout", c.Redis.ReadTimeout)
	positive("redis.write_timeout", c.Redis.WriteTimeout)
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

	if *c.Issuer.Enabled {
		is := &c.Issuer
		listen("issuer.listen", is.Listen)
		absURL("issuer.url", is.URL)
		oneOf("issuer.store", is.Store, "bbolt", "redis")
		positive("issuer.login_session_ttl", is.LoginSessionTTL)
		oneOf("issuer.tokens.format", is.Tokens.Format, "signed", "encrypted")
		oneOf("issuer.tokens.alg", is.Tokens.Alg, signingAlgs...)
		oneOf("issuer.tokens.id_token_alg", is.Tokens.IDTokenAlg, asymmetricAlgs...)
		oneOf("issuer.tokens.encryption", is.Tokens.Encryption, "A128CBC-HS256", "A256GCM")
		positive("issuer.tokens.access_ttl", is.Tokens.AccessTTL)
		positive("issuer.tokens.refresh_ttl", is.Tokens.RefreshTTL)
		positive("issuer.tokens.id_token_ttl", is.Tokens.IDTokenTTL)
		positive("issuer.tokens.code_ttl", is.Tokens.CodeTTL)
		if is.Tokens.CodeTTL > Duration(10*time.Minute) {
			bad("issuer.tokens.code_ttl", is.Tokens.CodeTTL.D().String(), "want at most 10m (RFC 6749 §4.1.2: codes are short-lived)")
		}
		if is.Denylist.CacheSize < 1 {
			bad("issuer.denylist.cache_size", is.Denylist.CacheSize, "want a positive number of entries")
		}
		positive("issuer.denylist.poll_interval", is.Denylist.PollInterval)
		if is.Denylist.PurgeDelay < 0 {
			bad("issuer.denylist.purge_delay", is.Denylist.PurgeDelay.D().String(), "want zero or a positive duration")
		}
		if lt := is.LoginThrottle; !lt.Disable {
			if lt.MaxFailures < 1 {
				bad("issuer.login_throttle.max_failures", lt.MaxFailures, "want a positive number of failed logins (or disable: true)")
			}
			if lt.MaxIPFailures < 1 && !lt.DisableIPLimit {
				bad("issuer.login_throttle.max_ip_failures", lt.MaxIPFailures, "want a positive number of failed logins (or disable_ip_limit: true)")
			}
			for _, d := range []struct {
				key string
				v   Duration
			}{{"window", lt.Window}, {"lockout", lt.Lockout}, {"max_lockout", lt.MaxLockout}} {
				if d.v < Duration(time.Second) {
					bad("issuer.login_throttle."+d.key, d.v.D().String(), "want a duration of at least 1s")
				}
			}
			if lt.MaxLockout < lt.Lockout {
				bad("issuer.login_throttle.max_lockout", lt.MaxLockout.D().String(), "want at least issuer.login_throttle.lockout")
			}
		}
		trustedProxies("issuer.trusted_proxies", is.TrustedProxies, false)
		for i, k := range is.Keys {
			key := fmt.Sprintf("issuer.keys[%d]", i)
			if k.Path == "" {
				bad(key+".path", "", "want the path of a PEM or JWK file")
			}
			oneOf(key+".alg", k.Alg, append(slices.Clone(signingAlgs), "dir")...)
		}
		for i, cl := range is.Clients {
			key := fmt.Sprintf("issuer.clients[%d]", i)
			if cl.ID == "" {
				bad(key+".id", "", "want a client id")
			}
			for j, u := range cl.RedirectURIs {
				absURL(fmt.Sprintf("%s.redirect_uris[%d]", key, j), u)
			}
		}
		for i, u := range is.Users {
			key := fmt.Sprintf("issuer.users[%d]", i)
			if u.Username == "" {
				bad(key+".username", "", "want a username")
			}
			if !strings.HasPrefix(u.PasswordHash, "$argon2id$") && !strings.HasPrefix(u.PasswordHash, "$2a$") && !strings.HasPrefix(u.PasswordHash, "$2b$") && !strings.HasPrefix(u.PasswordHash, "$2y$") {
				bad(key+".password_hash", "(hidden)", "want a bcrypt ($2b$...) or argon2id ($argon2id$...) hash; make one with `bffgate users hash`")
			}
		}
	}

	if *c.Gateway.Enabled {
		g := &c.Gateway
		listen("gateway.listen", g.Listen)
		absURL("gateway.public_url", g.PublicURL)
		if !strings.HasPrefix(g.BasePath, "/") || strings.HasSuffix(g.BasePath, "/") {
			bad("gateway.base_path", g.BasePath, "want a path starting with / and not ending with /, such as /bff")
		}
		if g.Provider.IssuerURL == "" {
			bad("gateway.provider.issuer_url", "", "the embedded issuer is disabled: want your OpenID provider's issuer URL")
		} else {
			absURL("gateway.provider.issuer_url", g.Provider.IssuerURL)
		}
		if g.Provider.ClientID == "" {
			bad("gateway.provider.client_id", "", "want the gateway's client id at the provider")
		}
		if !slices.Contains(g.Provider.Scopes, "openid") {
			bad("gateway.provider.scopes", g.Provider.Scopes, "want a list that includes openid")
		}
		s := &g.Session
		oneOf("gateway.session.store", s.Store, "cookie", "bbolt", "redis")
		positive("gateway.session.idle_timeout", s.IdleTimeout)
		positive("gateway.session.absolute_lifetime", s.AbsoluteLifetime)
		positive("gateway.session.sweep_interval", s.SweepInterval)
		oneOf("gateway.session.same_site", strings.ToLower(s.SameSite), "lax", "strict")
		if !strings.HasPrefix(s.CookieName, "__Host-") && !s.InsecureDevCookies {
			bad("gateway.session.cookie_name", s.CookieName, "want a name with the __Host- prefix (or set gateway.session.insecure_dev_cookies for plain-http development hosts)")
		}
		if s.MaxCookieBytes < 3800 {
			bad("gateway.session.max_cookie_bytes", s.MaxCookieBytes, "want at least 3800 (one cookie)")
		}
		for i, k := range s.CookieKeys {
			if _, err := decodeKey(k.Hash); err != nil {
				bad(fmt.Sprintf("gateway.session.cookie_keys[%d].hash", i), "(hidden)", "want 32 or 64 random bytes, base64 encoded: "+err.Error())
			}
			if _, err := decodeKey(k.Block); err != nil {
				bad(fmt.Sprintf("gateway.session.cookie_keys[%d].block", i), "(hidden)", "want 16, 24 or 32 random bytes, base64 encoded: "+err.Error())
			}
		}
		trustedProxies("gateway.trusted_proxies", g.TrustedProxies, true)
		if g.CSRF.Header == "" || g.CSRF.Value == "" {
			bad("gateway.csrf", g.CSRF.Header+": "+g.CSRF.Value, "want a header name and value, such as X-CSRF: 1")
		}
		positive("gateway.refresh.skew", g.Refresh.Skew)
		positive("gateway.refresh.grace_window", g.Refresh.GraceWindow)
		for i, r := range g.Routes {
			key := fmt.Sprintf("gateway.routes[%d]", i)
			if !strings.HasPrefix(r.Prefix, "/") {
				bad(key+".prefix", r.Prefix, "want a path prefix starting with /, such as /api/")
			}
			absURL(key+".upstream", r.Upstream)
			oneOf(key+".policy", r.Policy, "user", "user-optional", "client", "none")
			if r.Timeout < 0 {
				bad(key+".timeout", r.Timeout.D().String(), "want zero (the default, 30s) or a positive duration")
			}
		}
		if g.SPA.Dir != "" && g.SPA.DevURL != "" {
			bad("gateway.spa", "dir and dev_url", "want at most one of gateway.spa.dir and gateway.spa.dev_url")
		}
		if g.SPA.DevURL != "" {
			absURL("gateway.spa.dev_url", g.SPA.DevURL)
		}
		if !strings.HasPrefix(g.PostLogoutRedirect, "/") || strings.HasPrefix(g.PostLogoutRedirect, "//") {
			bad("gateway.post_logout_redirect", g.PostLogoutRedirect, "want a local path such as /")
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
	return errors.Join(errs...)
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
