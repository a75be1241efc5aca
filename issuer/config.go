package issuer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/issuer/audit"
	"github.com/bffgate/bffgate/issuer/denylist"
	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/token"
	"github.com/bffgate/bffgate/issuer/trust"
)

// Grant types (RFC 6749 §4.1.3, §6, §4.4).
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
)

// Scopes the issuer knows (OpenID Connect Core §3.1.2.1, §5.4, §11).
const (
	ScopeOpenID        = "openid"
	ScopeProfile       = "profile"
	ScopeEmail         = "email"
	ScopeOfflineAccess = "offline_access"
	// ScopeGroups and ScopeRoles release the groups and roles claims
	// (not standard scopes, but the names Keycloak's client scopes,
	// Authentik and Zitadel use), for gateways authorizing by them.
	ScopeGroups = "groups"
	ScopeRoles  = "roles"
)

var supportedScopes = []string{ScopeOpenID, ScopeProfile, ScopeEmail, ScopeOfflineAccess, ScopeGroups, ScopeRoles}

// Client is a registered OAuth 2.0 client (RFC 6749 §2). Its yaml tags
// are the keys of bffgate's issuer.clients[] entries.
type Client struct {
	// ID is the client_id. Required, unique.
	ID string `yaml:"id"`
	// Secret authenticates a confidential client (client_secret_basic or
	// client_secret_post); empty makes it a public client (RFC 6749 §2.1),
	// which authenticates with none and must use PKCE like every client.
	Secret string `yaml:"secret"`
	// RedirectURIs are the exact redirect URIs accepted (RFC 9700 §2.1:
	// exact string matching). Required for the authorization_code grant.
	// Each is https, http on a loopback host (127.0.0.0/8, [::1],
	// localhost or a name under it), or, for a public client, a native app's private-use
	// scheme such as com.example.app:/callback (RFC 8252 §7.1).
	RedirectURIs []string `yaml:"redirect_uris"`
	// PostLogoutRedirectURIs are the exact URIs the end_session_endpoint
	// may redirect to (OpenID Connect RP-Initiated Logout §3): https, or
	// http on a loopback host.
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
	// InsecureAllowHTTPRedirects accepts plain-http redirect and
	// post-logout URIs on hosts that are not loopback, for development on
	// a LAN address. Off, such URIs are refused at start: the code would
	// cross the network in the clear (RFC 9700 §2.1.1).
	InsecureAllowHTTPRedirects bool `yaml:"-"`
	// GrantTypes the client may use; empty means authorization_code and
	// refresh_token. The client gets a refresh token from the code exchange
	// when it has refresh_token, whether or not it asked for offline_access
	// (as Keycloak and ForgeRock AM do).
	GrantTypes []string `yaml:"grant_types"`
	// Scopes the client may request; empty means all the issuer offers:
	// openid, profile, email, offline_access, groups and roles.
	Scopes []string `yaml:"scopes"`
	// BackchannelLogoutURI receives logout tokens when a login session in
	// which this client got tokens ends (OpenID Connect Back-Channel Logout
	// §2.2). Empty means no back-channel logout.
	BackchannelLogoutURI string `yaml:"backchannel_logout_uri"`
	// Audience is the aud of the client's access tokens (RFC 9068 §3: the
	// resource servers that accept them); empty means [ID].
	Audience []string `yaml:"audience"`

	// Kind is "" (an application), "agent" or "workload". Agents and
	// workloads authenticate without a static secret: with private_key_jwt
	// (JWKS, JWKSFile or JWKSURI) or, when ID is a SPIFFE ID, with a
	// JWT-SVID. A secret on one is refused at start. See agents.go.
	Kind string `yaml:"kind"`
	// JWKS, JWKSFile and JWKSURI give the client's public keys for
	// private_key_jwt (RFC 7523 §2.2, OpenID Connect Core §9): a JWK set
	// inline, in a file read at start, or at a URL fetched and cached per
	// its HTTP cache headers. At most one of the three; none with Secret.
	JWKS     map[string]any `yaml:"jwks"`
	JWKSFile string         `yaml:"jwks_file"`
	JWKSURI  string         `yaml:"jwks_uri"`
	// AssertionAlgs narrows the JWS algorithms of the client's assertions
	// (RFC 7591 token_endpoint_auth_signing_alg); empty means every
	// algorithm of AssertionAlgorithms.
	AssertionAlgs []string `yaml:"token_endpoint_auth_signing_algs"`
	// Disabled refuses the client's grants and every token it holds, as
	// `bffgate agents disable` does at run time.
	Disabled bool `yaml:"disabled"`
	// Resources narrows the issuer.resources the client may name with a
	// resource indicator (RFC 8707); empty means every one of them.
	Resources []string `yaml:"resources"`
	// ThirdParty shows the user the consent page for the client's
	// authorization requests, remembered per user, client and scopes
	// (consent.go). Clients identified by a metadata document or
	// registered dynamically always get it; configured ones are
	// first-party unless this is set.
	ThirdParty bool `yaml:"third_party"`
	// TokenExchange is the client's token exchange policy (RFC 8693);
	// the zero value allows none.
	TokenExchange TokenExchange `yaml:"token_exchange"`
}

// User is an end user who can log in at the issuer. Its yaml tags are the
// keys of bffgate's issuer.users[] entries.
type User struct {
	// Username is what the user types. Required, unique.
	Username string `yaml:"username"`
	// PasswordHash is a bcrypt ($2a$/$2b$) hash or an argon2id PHC string
	// (HashPassword). Required.
	PasswordHash string `yaml:"password_hash"`
	// Subject is the sub claim; empty means Username.
	Subject string `yaml:"subject"`
	// Claims are the user's claims (name, email, email_verified, ...).
	// They are released by scope (OpenID Connect Core §5.4): profile's
	// claims with profile, email and email_verified with email, groups
	// and roles with the groups and roles scopes; claims of no scope go
	// with profile. preferred_username defaults to Username.
	Claims map[string]any `yaml:"claims"`
	// Groups and Roles are the user's groups and roles claims (lists of
	// strings), released with the groups and roles scopes in the ID
	// token, at userinfo and in JWT access tokens. Set them here or as
	// claims.groups / claims.roles, not both.
	Groups []string `yaml:"groups"`
	Roles  []string `yaml:"roles"`
}

// Config configures the issuer. The zero value of every optional field is
// its safe default.
type Config struct {
	// Issuer is the public issuer URL (the iss of every token and the base
	// of every endpoint), e.g. http://127.0.0.1:9090, without a trailing
	// slash (OpenID Connect Discovery §3). Required.
	Issuer string
	// Store keeps keys, codes, grants, the allowlist and the denylist.
	// Required.
	Store storage.Store
	// KeyFiles are key files imported at start (keys.FileKey).
	KeyFiles []keys.FileKey
	// TokenFormat is the format of access and refresh tokens: signed
	// (default) or encrypted (JWE dir, ForgeRock AM's client-side tokens).
	TokenFormat token.Format
	// TokenAlg signs access and refresh tokens (signed format): HS256 to
	// ES512. Default RS256.
	TokenAlg string
	// IDTokenAlg signs ID tokens and logout tokens: an RS, PS or ES alg.
	// Default RS256.
	IDTokenAlg string
	// Encryption is the JWE enc of the encrypted format: A128CBC-HS256
	// (default) or A256GCM. Only with TokenFormat encrypted.
	Encryption string
	// RefreshTokenFormat is the format of refresh tokens when TokenFormat
	// is signed: signed (default, ForgeRock AM's all-signed tokens) or
	// sealed (a JWE, dir + A256GCM, under a dir key the issuer keeps with
	// its other keys in the store: cheaper than a signature and opaque to
	// the client; see issuer/token). Refresh tokens of both formats are
	// accepted whatever it says, so switching it logs nobody out.
	RefreshTokenFormat token.RefreshFormat
	// Lifetimes: access token 5m, refresh token 24h (from its issuance;
	// each rotation issues one with a fresh lifetime), authorization code
	// 60s (RFC 6749 §4.1.2: at most 10 minutes), ID token 5m, issuer login
	// session 8h.
	AccessTokenTTL, RefreshTokenTTL, CodeTTL, IDTokenTTL, LoginSessionTTL time.Duration
	// LoginThrottle is the login form's brute-force protection; the zero
	// value is on with its defaults (see LoginThrottle).
	LoginThrottle LoginThrottle
	// TrustedProxies lists the reverse proxies and load balancers in front
	// of the issuer, as IPs (192.0.2.7) or CIDRs (10.0.0.0/8), the syntax
	// of the gateway's trusted_proxies. From a peer in the list the client
	// address (counted by LoginThrottle.MaxIPFailures and logged as
	// client_ip) is the right-most X-Forwarded-For entry that is not
	// itself a trusted proxy; from any other peer X-Forwarded-For is
	// ignored and the client is the peer. Each listed proxy must append
	// the address it received the request from to X-Forwarded-For (nginx's
	// $proxy_add_x_forwarded_for, HAProxy's option forwardfor, cloud load
	// balancers do), or the issuer counts what its client wrote there.
	// None by default: the client is always the TCP peer. A /0 is refused.
	TrustedProxies []string
	// DisableRefreshRotation keeps a refresh token valid across refreshes.
	// The zero value rotates: every refresh returns a new refresh token and
	// invalidates the old one, and a reuse of the old one revokes the grant
	// (RFC 9700 §4.14.2).
	DisableRefreshRotation bool
	// Clients and Users are the registered clients and end users.
	Clients []Client
	Users   []User
	// ManagedClients are the first set of the clients the embedding
	// program registers itself and replaces while the issuer runs
	// (Server.SetManagedClients: bffgate's frontends on a reload).
	ManagedClients []Client
	// SPIFFE lists the trust domains whose JWT-SVIDs authenticate clients
	// with a SPIFFE ID (spiffe.go).
	SPIFFE SPIFFE
	// Audit is the audit trail of the issuer's decisions (agentstate.go).
	Audit Audit
	// Resources are the protected resources (MCP servers, APIs) clients
	// may ask tokens for with a resource indicator (RFC 8707,
	// resources.go).
	Resources []Resource
	// ClientMetadata accepts https URLs as client ids (client ID metadata
	// documents, cimd.go).
	ClientMetadata ClientMetadata
	// Registration is dynamic client registration (RFC 7591, register.go).
	Registration DynamicRegistration
	// ConsentTTL is how long a user's consent to a third-party client is
	// remembered (default 90 days); a new scope or resource asks again.
	ConsentTTL time.Duration
	// TrustedIssuers are the other issuers whose JWTs token exchange
	// accepts as subject and actor tokens (the STS case, RFC 8693) and the
	// JWT bearer grant accepts as assertions (RFC 7523 §2.1, jwtbearer.go);
	// none by default. Their JWKS URLs are fetched with HTTPClient.
	TrustedIssuers []trust.Issuer
	// DenylistCacheSize (default 10000) bounds the in-memory denylist
	// cache; DenylistPollInterval (default 60s) is how often an instance
	// reads denylist changes made by others sharing the store; PurgeDelay
	// (default 1m) keeps a denylist entry that long past the expiry of the
	// token it names, to cover clock skew between instances.
	DenylistCacheSize    int
	DenylistPollInterval time.Duration
	// DenylistSubscriber, when set, pushes the revocations other
	// instances make into this instance's denylist cache as they happen
	// (the Redis store's pub/sub); the poll stays as the floor for a
	// missed message.
	DenylistSubscriber denylist.Subscriber `yaml:"-"`
	PurgeDelay         time.Duration
	// HTTPClient sends back-channel logout requests; nil means a client
	// with a 5s timeout.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the issuer's log lines; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the issuer's metrics; nil means none are kept.
	Registerer prometheus.Registerer
	// Gatherer is served at /metrics; nil means no /metrics route.
	Gatherer prometheus.Gatherer
	// AccessLog logs one line per request.
	AccessLog bool

	// trustedProxies is TrustedProxies parsed, filled by withDefaults.
	trustedProxies []netip.Prefix
}

// Defaults filled in by New.
const (
	DefaultAccessTokenTTL       = 5 * time.Minute
	DefaultRefreshTokenTTL      = 24 * time.Hour
	DefaultCodeTTL              = 60 * time.Second
	DefaultIDTokenTTL           = 5 * time.Minute
	DefaultLoginSessionTTL      = 8 * time.Hour
	DefaultDenylistCacheSize    = 10000
	DefaultDenylistPollInterval = 60 * time.Second
	DefaultPurgeDelay           = time.Minute
	DefaultAlg                  = "RS256"
	DefaultEncryption           = "A128CBC-HS256"

	maxCodeTTL = 10 * time.Minute
)

// client is a validated Client.
type client struct {
	Client
	secretDigest []byte
	// authMethod is how the client authenticates at the token,
	// introspection and revocation endpoints (clientAuthMethod).
	authMethod string
	// keys verify its private_key_jwt assertions; assertionAlgs are the
	// algorithms they may use (private_key_jwt and spiffe_jwt).
	keys          keySource
	assertionAlgs []string
	// source is where the client comes from (clients.go); name is the
	// client_name of its metadata.
	source, name string
}

func (c *client) public() bool { return c.authMethod == authNone }

func (c *client) hasGrant(g string) bool { return slices.Contains(c.GrantTypes, g) }

// user is a validated User.
type user struct {
	User
	hash passwordHash
}

// FieldError is a configuration error at one field of Config. Path names
// the field in snake case (clients[0].redirect_uris[1], access_token_ttl,
// login_throttle.window); the yaml keys of Client, User and LoginThrottle
// are these names, so a configuration file reports it under its own key.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return "issuer." + e.Path + ": " + e.Msg }

// Field and Problem let a configuration loader report the error under its
// own key names without knowing this type.
func (e *FieldError) Field() string   { return e.Path }
func (e *FieldError) Problem() string { return e.Msg }

// DefaultConfig returns a Config with every default filled in and no
// issuer URL, store, clients or users.
func DefaultConfig() Config {
	return Config{
		TokenFormat:          token.FormatSigned,
		RefreshTokenFormat:   token.RefreshSigned,
		TokenAlg:             DefaultAlg,
		IDTokenAlg:           DefaultAlg,
		AccessTokenTTL:       DefaultAccessTokenTTL,
		RefreshTokenTTL:      DefaultRefreshTokenTTL,
		CodeTTL:              DefaultCodeTTL,
		IDTokenTTL:           DefaultIDTokenTTL,
		LoginSessionTTL:      DefaultLoginSessionTTL,
		DenylistCacheSize:    DefaultDenylistCacheSize,
		DenylistPollInterval: DefaultDenylistPollInterval,
		PurgeDelay:           DefaultPurgeDelay,
		ConsentTTL:           DefaultConsentTTL,
		Audit:                Audit{MaxSize: audit.DefaultMaxSize},
		ClientMetadata: ClientMetadata{MaxSize: DefaultClientMetadataMaxSize, Timeout: DefaultClientMetadataTimeout,
			MaxCache: DefaultClientMetadataCache},
		Registration: DynamicRegistration{RateLimit: DefaultRegistrationRateLimit, RateWindow: DefaultRegistrationRateWindow,
			UnusedTTL: DefaultRegistrationUnusedTTL},
		LoginThrottle: LoginThrottle{
			MaxFailures: DefaultLoginMaxFailures, Window: DefaultLoginWindow, Lockout: DefaultLoginLockout,
			MaxLockout: DefaultLoginMaxLockout, MaxIPFailures: DefaultLoginMaxIPFailures,
		},
	}
}

// Validate checks cfg as New does, but for the Store (a runtime piece):
// a configuration loader can check a file without opening the state, and
// the two never disagree. The error is a *FieldError.
func (cfg Config) Validate() error {
	_, _, _, err := validate(cfg)
	return err
}

// withDefaults returns a copy of cfg with defaults filled in, validated.
// Errors are *FieldError naming the field: "issuer.clients[0].redirect_uris[1]: ...".
func withDefaults(cfg Config) (Config, map[string]*client, map[string]*user, error) {
	if cfg.Store == nil {
		return Config{}, nil, nil, &FieldError{Path: "store", Msg: "is required"}
	}
	return validate(cfg)
}

// clientFieldError reports err of fillClient or clientAuth under the
// client entry's path f (clients[0], managed_clients[1]).
func clientFieldError(f string, err error) *FieldError {
	var fe *fieldError
	if errors.As(err, &fe) {
		return &FieldError{Path: f + fe.field, Msg: fe.msg}
	}
	return &FieldError{Path: f, Msg: err.Error()}
}

// validate is withDefaults without the Store.
func validate(cfg Config) (Config, map[string]*client, map[string]*user, error) {
	fail := func(field, format string, args ...any) (Config, map[string]*client, map[string]*user, error) {
		return Config{}, nil, nil, &FieldError{Path: field, Msg: fmt.Sprintf(format, args...)}
	}
	if err := validateIssuerURL(cfg.Issuer); err != nil {
		return fail("issuer", "%v", err)
	}
	switch cfg.TokenFormat {
	case "":
		cfg.TokenFormat = token.FormatSigned
	case token.FormatSigned, token.FormatEncrypted:
	default:
		return fail("token_format", "%q is not %q or %q", cfg.TokenFormat, token.FormatSigned, token.FormatEncrypted)
	}
	if cfg.TokenAlg == "" {
		cfg.TokenAlg = DefaultAlg
	}
	if !keys.IsSigningAlg(cfg.TokenAlg) {
		return fail("token_alg", "%q is not supported (supported: %s)", cfg.TokenAlg, strings.Join(keys.SigningAlgorithms(), ", "))
	}
	if cfg.IDTokenAlg == "" {
		cfg.IDTokenAlg = DefaultAlg
	}
	if !keys.IsAsymmetric(cfg.IDTokenAlg) {
		return fail("id_token_alg", "%q is not supported: ID tokens need an RS, PS or ES alg, which relying parties verify with the published JWK set", cfg.IDTokenAlg)
	}
	switch {
	case cfg.TokenFormat == token.FormatEncrypted && cfg.Encryption == "":
		cfg.Encryption = DefaultEncryption
	case cfg.TokenFormat == token.FormatEncrypted:
		if cfg.Encryption != "A128CBC-HS256" && cfg.Encryption != "A256GCM" {
			return fail("encryption", "%q is not supported (want A128CBC-HS256 or A256GCM)", cfg.Encryption)
		}
	case cfg.Encryption != "":
		return fail("encryption", "is set but token_format is %q; set token_format: encrypted, or remove encryption", cfg.TokenFormat)
	}
	switch cfg.RefreshTokenFormat {
	case "":
		cfg.RefreshTokenFormat = token.RefreshSigned
	case token.RefreshSigned:
	case token.RefreshSealed:
		if cfg.TokenFormat != token.FormatSigned {
			return fail("refresh_token_format", "%q needs token_format %q: with token_format %q every refresh token is already encrypted", cfg.RefreshTokenFormat, token.FormatSigned, cfg.TokenFormat)
		}
	default:
		return fail("refresh_token_format", "%q is not %q or %q", cfg.RefreshTokenFormat, token.RefreshSigned, token.RefreshSealed)
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"access_token_ttl", &cfg.AccessTokenTTL, DefaultAccessTokenTTL},
		{"refresh_token_ttl", &cfg.RefreshTokenTTL, DefaultRefreshTokenTTL},
		{"code_ttl", &cfg.CodeTTL, DefaultCodeTTL},
		{"id_token_ttl", &cfg.IDTokenTTL, DefaultIDTokenTTL},
		{"login_session_ttl", &cfg.LoginSessionTTL, DefaultLoginSessionTTL},
		{"denylist_poll_interval", &cfg.DenylistPollInterval, DefaultDenylistPollInterval},
		{"purge_delay", &cfg.PurgeDelay, DefaultPurgeDelay},
		{"consent_ttl", &cfg.ConsentTTL, DefaultConsentTTL},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			return fail(d.field, "is negative (%s)", *d.v)
		}
		if *d.v < time.Second && d.field != "denylist_poll_interval" && d.field != "purge_delay" {
			return fail(d.field, "is %s; it must be at least 1s (token times have a resolution of one second)", *d.v)
		}
	}
	if cfg.CodeTTL > maxCodeTTL {
		return fail("code_ttl", "is %s; RFC 6749 §4.1.2 recommends at most 10m, and a long-lived code widens the window for its theft", cfg.CodeTTL)
	}
	if cfg.DenylistCacheSize == 0 {
		cfg.DenylistCacheSize = DefaultDenylistCacheSize
	}
	if cfg.DenylistCacheSize < 0 {
		return fail("denylist_cache_size", "is negative (%d)", cfg.DenylistCacheSize)
	}
	lt, fe := cfg.LoginThrottle.withDefaults()
	if fe != nil {
		return fail(fe.field, "%s", fe.msg)
	}
	cfg.LoginThrottle = lt
	trusted, fe := parseTrustedProxies(cfg.TrustedProxies)
	if fe != nil {
		return fail(fe.field, "%s", fe.msg)
	}
	cfg.TrustedProxies, cfg.trustedProxies = slices.Clone(cfg.TrustedProxies), trusted
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	if len(cfg.Clients) == 0 && len(cfg.ManagedClients) == 0 {
		return fail("clients", "no client is registered; register at least one")
	}
	if _, err := newSPIFFEBundles(cfg.SPIFFE, cfg.HTTPClient, cfg.Logger); err != nil {
		return Config{}, nil, nil, err
	}
	if cfg.Audit.MaxSize == 0 {
		cfg.Audit.MaxSize = audit.DefaultMaxSize
	}
	if cfg.Audit.MaxSize < 4096 {
		return fail("audit.max_size", "is %d bytes; it must be at least 4096 (default %d)", cfg.Audit.MaxSize, audit.DefaultMaxSize)
	}
	rs, err := validateResources(cfg.Resources)
	if err != nil {
		return Config{}, nil, nil, err
	}
	cfg.Resources = rs
	if cfg.ClientMetadata, err = cfg.ClientMetadata.withDefaults(); err != nil {
		return Config{}, nil, nil, err
	}
	if cfg.Registration, err = cfg.Registration.withDefaults(); err != nil {
		return Config{}, nil, nil, err
	}
	clients := make(map[string]*client, len(cfg.Clients))
	cfg.Clients = slices.Clone(cfg.Clients)
	for i := range cfg.Clients {
		c := cfg.Clients[i]
		f := fmt.Sprintf("clients[%d]", i)
		if err := fillClient(&c); err != nil {
			return Config{}, nil, nil, clientFieldError(f, err)
		}
		if clients[c.ID] != nil {
			return fail(f+".id", "client %q is registered twice", c.ID)
		}
		c.Resources = slices.Clone(c.Resources)
		for j, r := range c.Resources {
			if !slices.ContainsFunc(rs, func(x Resource) bool { return x.URL == r }) {
				return fail(fmt.Sprintf("%s.resources[%d]", f, j), "%q is not listed in issuer.resources", r)
			}
		}
		cfg.Clients[i] = c
		cl := &client{Client: c, secretDigest: secretDigest(c.Secret)}
		if err := cfg.clientAuth(cl); err != nil {
			return Config{}, nil, nil, clientFieldError(f, err)
		}
		clients[c.ID] = cl
	}

	clientIndex := make(map[string]int, len(cfg.Clients))
	for i, c := range cfg.Clients {
		clientIndex[c.ID] = i
	}
	subjects := make(map[string]int, len(cfg.Users))
	users := make(map[string]*user, len(cfg.Users))
	cfg.Users = slices.Clone(cfg.Users)
	for i := range cfg.Users {
		u := cfg.Users[i]
		f := fmt.Sprintf("users[%d]", i)
		if u.Username == "" {
			return fail(f+".username", "is required")
		}
		if len(u.Username) > 256 || strings.ContainsAny(u.Username, "\x00\r\n") {
			return fail(f+".username", "must be at most 256 bytes without control characters")
		}
		if users[u.Username] != nil {
			return fail(f+".username", "user %q is listed twice", u.Username)
		}
		if u.PasswordHash == "" {
			return fail(f+".password_hash", "is required (make one with `bffgate users hash`)")
		}
		h, err := parsePasswordHash(u.PasswordHash)
		if err != nil {
			return fail(f+".password_hash", "%v", err)
		}
		if u.Subject == "" {
			u.Subject = u.Username
		}
		if len(u.Subject) > 255 {
			return fail(f+".subject", "is longer than 255 ASCII characters (OpenID Connect Core §2)")
		}
		// Client ids and user subjects are separate namespaces (see
		// ClientSubjectPrefix): a resource server keying data by sub must
		// never take a client for a user.
		field := f + ".subject"
		if cfg.Users[i].Subject == "" {
			field = f + ".username" // the subject defaults to it
		}
		if strings.HasPrefix(u.Subject, ClientSubjectPrefix) {
			return fail(field, "%q begins with %q, which the issuer reserves for the sub of client_credentials tokens; choose a subject without that prefix", u.Subject, ClientSubjectPrefix)
		}
		if j, ok := clientIndex[u.Subject]; ok {
			return fail(field, "%q is also the id of issuer.clients[%d]; a user's subject and a client id must differ, or a resource server could take one for the other: rename the client or set another subject for the user", u.Subject, j)
		}
		if j, ok := subjects[u.Subject]; ok {
			return fail(field, "%q is also the subject of issuer.users[%d]; subjects must be unique (set subject on one of them)", u.Subject, j)
		}
		subjects[u.Subject] = i
		claims := make(map[string]any, len(u.Claims)+1)
		for k, v := range u.Claims {
			if token.IsReserved(k) || k == "" {
				return fail(f+".claims."+k, "is a claim the issuer sets itself; remove it")
			}
			claims[k] = v
		}
		for _, l := range []struct {
			name string
			vals []string
		}{{"groups", u.Groups}, {"roles", u.Roles}} {
			if l.vals == nil {
				continue
			}
			if _, dup := claims[l.name]; dup {
				return fail(f+".claims."+l.name, "is also set as %s.%s; keep one of the two", f, l.name)
			}
			for j, v := range l.vals {
				if v == "" {
					return fail(fmt.Sprintf("%s.%s[%d]", f, l.name, j), "is empty")
				}
			}
			claims[l.name] = slices.Clone(l.vals)
		}
		if _, ok := claims["preferred_username"]; !ok {
			claims["preferred_username"] = u.Username
		}
		u.Claims = claims
		cfg.Users[i] = u
		users[u.Username] = &user{User: u, hash: h}
	}
	cfg.TrustedIssuers = slices.Clone(cfg.TrustedIssuers)
	for i, ti := range cfg.TrustedIssuers {
		if ti.Issuer == cfg.Issuer {
			return fail(fmt.Sprintf("trusted_issuers[%d].issuer", i), "is this issuer itself; its own tokens are checked as its own, not as a trusted issuer's")
		}
	}
	if _, err := newTrust(cfg, users, cfg.HTTPClient); err != nil {
		var fe *trust.FieldError
		if errors.As(err, &fe) {
			return fail(fe.Path, "%s", fe.Msg)
		}
		return fail("trusted_issuers", "%v", err)
	}
	return cfg, clients, users, nil
}

type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func ferr(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

func fillClient(c *Client) error {
	if c.ID == "" {
		return ferr(".id", "is required")
	}
	if len(c.ID) > 255 || !printableASCII(c.ID) || (strings.Contains(c.ID, ":") && !isSPIFFEID(c.ID)) {
		return ferr(".id", "must be 1 to 255 printable ASCII characters without ':' (it goes into Basic credentials), or a SPIFFE ID (spiffe://trust-domain/path)")
	}
	if err := checkClientCredentials(c); err != nil {
		return err
	}
	if c.Secret != "" && len(c.Secret) < 16 {
		return ferr(".secret", "is %d characters; use at least 16 random characters, or none for a public client", len(c.Secret))
	}
	c.GrantTypes = slices.Clone(c.GrantTypes)
	if len(c.GrantTypes) == 0 {
		c.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
	}
	for j, g := range c.GrantTypes {
		switch g {
		case GrantAuthorizationCode, GrantRefreshToken, GrantJWTBearer:
		case GrantClientCredentials:
			if !confidential(c) {
				return ferr(fmt.Sprintf(".grant_types[%d]", j), "client_credentials needs a confidential client (set a secret, a JWK set for private_key_jwt, or a SPIFFE ID as id)")
			}
		default:
			return ferr(fmt.Sprintf(".grant_types[%d]", j), "%q is not supported (authorization_code, refresh_token, client_credentials, %s)", g, GrantJWTBearer)
		}
	}
	c.Scopes = slices.Clone(c.Scopes)
	if len(c.Scopes) == 0 {
		c.Scopes = slices.Clone(supportedScopes)
	}
	for j, s := range c.Scopes {
		if !slices.Contains(supportedScopes, s) {
			return ferr(fmt.Sprintf(".scopes[%d]", j), "%q is not a scope of this issuer (%s)", s, strings.Join(supportedScopes, ", "))
		}
	}
	c.RedirectURIs = slices.Clone(c.RedirectURIs)
	if slices.Contains(c.GrantTypes, GrantAuthorizationCode) && len(c.RedirectURIs) == 0 {
		return ferr(".redirect_uris", "the authorization_code grant needs at least one redirect URI")
	}
	for j, u := range c.RedirectURIs {
		if err := validateRedirectURI(u, !confidential(c), c.InsecureAllowHTTPRedirects); err != nil {
			return ferr(fmt.Sprintf(".redirect_uris[%d]", j), "%v", err)
		}
	}
	c.PostLogoutRedirectURIs = slices.Clone(c.PostLogoutRedirectURIs)
	for j, u := range c.PostLogoutRedirectURIs {
		if err := validatePostLogoutURI(u, c.InsecureAllowHTTPRedirects); err != nil {
			return ferr(fmt.Sprintf(".post_logout_redirect_uris[%d]", j), "%v", err)
		}
	}
	if c.BackchannelLogoutURI != "" {
		if err := validateClientURI(c.BackchannelLogoutURI); err != nil {
			return ferr(".backchannel_logout_uri", "%v", err)
		}
		if u, _ := url.Parse(c.BackchannelLogoutURI); u.Scheme != "http" && u.Scheme != "https" {
			return ferr(".backchannel_logout_uri", "must be an http or https URL")
		}
	}
	c.Audience = slices.Clone(c.Audience)
	if len(c.Audience) == 0 {
		c.Audience = []string{c.ID}
	}
	for j, a := range c.Audience {
		if a == "" {
			return ferr(fmt.Sprintf(".audience[%d]", j), "is empty")
		}
	}
	return validateExchange(c)
}

func validateIssuerURL(s string) error {
	if s == "" {
		return errors.New("is required (the public URL of the issuer, e.g. http://127.0.0.1:9090)")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("is not a URL: %v", err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q must be an https (or, for development, http) URL", s)
	case u.Host == "":
		return fmt.Errorf("%q has no host", s)
	case u.RawQuery != "" || u.Fragment != "" || strings.Contains(s, "#") || strings.Contains(s, "?"):
		return fmt.Errorf("%q must have no query or fragment (OpenID Connect Discovery §3)", s)
	case strings.HasSuffix(s, "/"):
		return fmt.Errorf("%q must not end with a slash (the iss claim is compared as a string); use %q", s, strings.TrimRight(s, "/"))
	case u.User != nil:
		return fmt.Errorf("%q must not contain user information", s)
	}
	return nil
}

// validateRedirectURI checks a registered redirect URI beyond
// validateClientURI (RFC 9700 §2.1, §4.1; RFC 8252 §7, §8.4):
//
//   - https: always.
//   - http: only on a loopback host (127.0.0.0/8, [::1], localhost and names under it), where
//     the code does not cross a network (RFC 8252 §7.3, RFC 9700 §2.1.1);
//     insecureHTTP (Client.InsecureAllowHTTPRedirects) lifts this for
//     development.
//   - a private-use scheme of a native app (RFC 8252 §7.1, e.g.
//     com.example.app:/cb): only for a public client, since a native app
//     cannot keep a secret (RFC 8252 §8.4), and only a reverse-domain
//     scheme (with a '.'), which is what §7.1 has apps use and what keeps
//     it apart from the schemes a browser interprets itself.
//   - never javascript:, data:, file: and the other schemes a browser runs
//     or reads locally (see browserSchemes).
func validateRedirectURI(s string, public, insecureHTTP bool) error {
	if err := validateClientURI(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme == "https":
		return nil
	case scheme == "http":
		if isLoopbackHost(u.Hostname()) || insecureHTTP {
			return nil
		}
		return fmt.Errorf("%q is plain http on a host that is not loopback: the authorization code would cross the network unencrypted (RFC 9700 section 2.1.1); use https, or http://127.0.0.1, http://[::1] or http://localhost for a local app", s)
	case browserSchemes[scheme]:
		return fmt.Errorf("%q has the scheme %s:, which a browser executes or reads locally; a redirect URI must be https, http on loopback, or a native app's private-use scheme", s, scheme)
	case !strings.Contains(scheme, "."):
		return fmt.Errorf("%q has the scheme %s:; a native app's private-use scheme must be a reverse domain name it controls, e.g. com.example.app:/callback (RFC 8252 section 7.1); otherwise use https", s, scheme)
	case !public:
		return fmt.Errorf("%q is a private-use URI scheme, which is for native apps; a native app cannot keep a client secret (RFC 8252 section 8.4): register it on a public client (no secret), or use an https redirect URI", s)
	}
	return nil
}

// validatePostLogoutURI checks a registered post-logout redirect URI: the
// rules of validateClientURI, and only https, or http on a loopback host
// (unless insecureHTTP). The end_session_endpoint redirects the browser
// there with no code; a javascript: or data: target would run in the
// issuer's origin context, a plain-http one is open to rewriting.
func validatePostLogoutURI(s string, insecureHTTP bool) error {
	if err := validateClientURI(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) || insecureHTTP {
			return nil
		}
		return fmt.Errorf("%q is plain http on a host that is not loopback; use https, or http://127.0.0.1, http://[::1] or http://localhost for a local app", s)
	}
	return fmt.Errorf("%q has the scheme %s:; a post-logout redirect URI must be https (or http on loopback)", s, u.Scheme)
}

// browserSchemes are URI schemes a browser runs, reads locally or renders
// itself: never a redirect target.
var browserSchemes = map[string]bool{
	"javascript": true, "vbscript": true, "data": true, "file": true, "blob": true,
	"about": true, "filesystem": true, "view-source": true,
}

// isLoopbackHost reports whether host is a loopback name or address:
// localhost or a name under .localhost, 127.0.0.0/8 or ::1 (RFC 8252
// §7.3; RFC 6761 §6.3 reserves localhost and every name under it for
// loopback, and browsers resolve and treat them so, which is what lets
// several local apps of one machine, such as the gateway's frontends at
// http://admin.localhost:8080, have an origin each). host is
// url.URL.Hostname(): without brackets or port. The gateway's own test
// (bff isLoopbackHost) is the same.
func isLoopbackHost(host string) bool {
	if l := strings.ToLower(host); l == "localhost" || (strings.HasSuffix(l, ".localhost") && len(l) > len(".localhost")) {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// validateClientURI checks what every registered client URI must be:
// absolute, no fragment (RFC 6749 §3.1.2), a host when http(s), no user
// information, no wildcard.
func validateClientURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if !u.IsAbs() {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("%q has a fragment, which RFC 6749 §3.1.2 forbids", s)
	}
	if (u.Scheme == "http" || u.Scheme == "https") && u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("%q contains user information (user@ or user:password@); remove it", s)
	}
	if strings.ContainsAny(s, "*") {
		return fmt.Errorf("%q contains a wildcard; redirect URIs match exactly (RFC 9700 §2.1)", s)
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// scopeAllowed checks a requested scope against the client's list.
func (c *client) checkScope(scope string) error {
	if !protocol.ValidScope(scope) {
		return protocol.ErrInvalidScope.WithDescription("the scope parameter holds characters RFC 6749 §3.3 does not allow")
	}
	for _, s := range protocol.ParseScope(scope) {
		if !slices.Contains(supportedScopes, s) {
			return protocol.ErrInvalidScope.WithDescription("scope %q is unknown; this issuer offers %s", clip(s, 64), strings.Join(supportedScopes, ", "))
		}
		if !slices.Contains(c.Scopes, s) {
			return protocol.ErrInvalidScope.WithDescription("client %q may not request scope %q (allowed: %s)", c.ID, s, strings.Join(c.Scopes, ", "))
		}
	}
	return nil
}

// clip shortens client input quoted in descriptions and logs.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
