package bff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/web"
)

// tokenSource is what the gateway needs from the refresh manager
// (bff/tokens): fresh user tokens, the gateway's own client token, and
// revocation at logout.
type tokenSource interface {
	Fresh(ctx context.Context, store session.Store, handle string, s *session.Session, force bool) (*session.Session, string, error)
	ClientToken(ctx context.Context) (string, error)
	ForgetClientToken(token string)
	Revoke(ctx context.Context, refreshToken string) error
	Exchanged(ctx context.Context, s *session.Session, t tokens.ExchangeTarget) (string, error)
	ForgetExchanged(s *session.Session, t tokens.ExchangeTarget, token string)
	ForgetSession(s *session.Session)
	RefreshOnRefusal(s *session.Session) bool
}

// providerMeta holds the discovery fields go-oidc does not expose
// (OpenID Connect Discovery 1.0 section 3, RFC 8414, RP-Initiated Logout,
// RFC 7009, RFC 9207).
type providerMeta struct {
	CodeChallengeMethods []string `json:"code_challenge_methods_supported"`
	EndSession           string   `json:"end_session_endpoint"`
	Revocation           string   `json:"revocation_endpoint"`
	Algs                 []string `json:"id_token_signing_alg_values_supported"`
	IssParameter         bool     `json:"authorization_response_iss_parameter_supported"`
	BackchannelLogout    bool     `json:"backchannel_logout_supported"`
	GrantTypes           []string `json:"grant_types_supported"`
}

// Gateway is the BFF: its fiber app serves the gateway endpoints under
// BasePath, the proxied API routes, and the SPA.
type Gateway struct {
	cfg      Config
	pub      *url.URL
	log      *slog.Logger
	now      func() time.Time
	store    session.Store
	jar      cookieJar
	flows    *flowSealer
	csrf     *csrfGuard
	met      *metrics
	provider *oidc.Provider
	meta     providerMeta
	verifier *oidc.IDTokenVerifier
	oauth    *oauth2.Config
	tokens   tokenSource
	proxy    *proxy.Proxy
	routes   map[string]Policy // proxy route prefix -> policy
	// rules are the routes' compiled allow/deny rules by prefix; a route
	// without rules has none here.
	rules map[string]*authz.Decider
	// idents are the routes' identity headers by prefix; signer signs
	// their assertions.
	idents map[string]*identity
	// exchanges are the routes' token exchange targets by prefix; a
	// route sending the session's own token has none here.
	exchanges map[string]*tokens.ExchangeTarget
	signer    *assertionSigner
	// bearers are the routes that take bearer tokens, by prefix; prm
	// the same by the path of their resource (RFC 9728 metadata); mcps
	// the MCP routes' policies by prefix; bearer checks the tokens.
	bearers    map[string]*bearerRoute
	prm        map[string]*bearerRoute
	mcps       map[string]*mcpPolicy
	bearer     *bearerVerifier
	mcpCalls   *prometheus.CounterVec
	bearerAuth *prometheus.CounterVec
	// fa is the forward-auth endpoint's rules and trusted proxies;
	// spaRules guard the SPA (nil: none).
	fa       *forwardAuth
	spaRules *authz.Decider
	// claims caches decoded session claims for rules and identity
	// headers.
	claims *claimsCache
	replay *replayCache
	pages  *web.Pages
	// base is where the gateway endpoints start: PathPrefix + BasePath.
	base string
	// ep are the gateway endpoints' paths (BasePath + "/login", ...),
	// fixed strings for the request metrics' route label.
	ep endpointPaths
	// host is the gateway's own Host, built by New (nil from
	// NewGateway).
	host *Host
	// peers are the frontends of the Host serving this gateway that use
	// the same provider and client, itself included (Host.Set); nil
	// means this gateway alone.
	peers atomic.Pointer[[]*Gateway]
}

// sameClientStores are the session stores a back-channel logout received
// by this frontend reaches: those of the frontends with its provider's
// issuer and its client id.
func (g *Gateway) sameClientStores() []session.Store {
	out := []session.Store{g.store}
	if p := g.peers.Load(); p != nil {
		for _, o := range *p {
			if !slices.Contains(out, o.store) {
				out = append(out, o.store)
			}
		}
	}
	return out
}

// sameClient reports whether g and o sign in through the same provider
// and client.
func (g *Gateway) sameClient(o *Gateway) bool {
	return strings.TrimSuffix(g.cfg.Provider.IssuerURL, "/") == strings.TrimSuffix(o.cfg.Provider.IssuerURL, "/") &&
		g.cfg.Provider.ClientID == o.cfg.Provider.ClientID
}

// endpointPaths are the gateway endpoints' full paths.
type endpointPaths struct {
	login, callback, user, logout, backchannel, jwks, auth, authAny, base, prm, prmAny string
}

// New validates cfg, discovers the provider and builds the gateway with a
// Host of its own serving it alone (App), the request metrics registered
// with cfg.Registerer. The provider must answer discovery now: New does
// not retry (start the provider first); the error names the issuer URL.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	g, err := NewGateway(ctx, cfg)
	if err != nil {
		return nil, err
	}
	h, err := NewHost(HostConfig{Logger: g.cfg.Logger, Registerer: cfg.Registerer, Gatherer: cfg.Gatherer, AccessLog: cfg.AccessLog, BodyLimit: g.cfg.BodyLimit})
	if err != nil {
		return nil, err
	}
	if err := h.Set([]*Gateway{g}); err != nil {
		return nil, err
	}
	g.host = h
	return g, nil
}

// NewGateway is New without the Host: the frontend engine alone, for a
// Host serving several frontends (Host.Set). Its Registerer receives the
// gateway's own metrics; the request metrics are the Host's.
func NewGateway(ctx context.Context, cfg Config) (*Gateway, error) {
	cfg, pub, err := cfg.fill()
	if err != nil {
		return nil, err
	}
	if cfg.Name != "" {
		// Every line of this frontend's, its token manager's and its
		// proxy's included.
		cfg.Logger = cfg.Logger.With("frontend", cfg.Name)
	}
	g := &Gateway{cfg: cfg, pub: pub, log: cfg.Logger, now: cfg.Now, store: cfg.Store, base: cfg.endpointBase()}
	if g.pages, err = web.New(web.Config{}); err != nil {
		return nil, err
	}

	secure := true
	name := cfg.Cookie.Name
	if pub.Scheme == "http" && !isLoopbackHost(pub.Hostname()) {
		if !cfg.Cookie.InsecureDevCookies {
			return nil, fmt.Errorf("bff: PublicURL %q is plain http on a non-loopback host, where browsers drop Secure __Host- cookies: use https, or set Cookie.InsecureDevCookies for development", cfg.PublicURL)
		}
		secure = false
		name = strings.TrimPrefix(strings.TrimPrefix(name, "__Host-"), "__Secure-")
		g.log.Warn("insecure development cookies: the session cookie has no Secure flag and no __Host- prefix", "public_url", cfg.PublicURL, "cookie", name)
	}
	if secure && !strings.HasPrefix(name, "__Host-") && !(cfg.PathPrefix != "" && strings.HasPrefix(name, "__Secure-")) {
		g.log.Warn("the session cookie name has no __Host- prefix: a subdomain could set or shadow it", "cookie", name)
	}
	g.jar = newCookieJar(name, cfg.Cookie.SameSite, secure, cfg.PathPrefix)
	g.flows = newFlowSealer(cfg.Cookie.FlowKeys, g.jar, cfg.Cookie.MaxFlows, cfg.Now)
	g.flows.frontend = cfg.Name

	origins := map[string]bool{}
	o, _ := normalizeOrigin(pub.String())
	origins[o] = true
	wsOrigins := []string{o}
	for _, a := range cfg.AllowedOrigins {
		n, _ := normalizeOrigin(a)
		origins[n] = true
		wsOrigins = append(wsOrigins, n)
	}
	g.csrf = &csrfGuard{header: cfg.CSRFHeader, value: cfg.CSRFValue, origins: origins,
		reject: func(c *fiber.Ctx, reason string) error {
			g.log.LogAttrs(c.UserContext(), slog.LevelInfo, "request refused by the anti-CSRF rules",
				slog.String("request_id", obs.RequestID(c)), slog.String("path", c.Path()), slog.String("reason", reason))
			return writeError(c, csrfError(cfg.CSRFHeader, cfg.CSRFValue, reason))
		}}

	if g.met, err = newMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("bff: register metrics: %w", err)
	}

	if err := g.discover(ctx); err != nil {
		return nil, err
	}

	tcfg := cfg.Tokens
	tcfg.OAuth2 = g.oauth
	if tcfg.HTTPClient == nil {
		tcfg.HTTPClient = cfg.Provider.HTTPClient
	}
	if tcfg.RevocationURL == "" {
		tcfg.RevocationURL = g.meta.Revocation
	}
	if tcfg.Logger == nil {
		tcfg.Logger = cfg.Logger
	}
	if tcfg.Registerer == nil {
		tcfg.Registerer = cfg.Registerer
	}
	if tcfg.Now == nil {
		tcfg.Now = cfg.Now
	}
	tm, err := tokens.New(tcfg)
	if err != nil {
		return nil, fmt.Errorf("bff: Tokens: %w", err)
	}
	g.tokens = tm

	g.routes = map[string]Policy{}
	g.rules = map[string]*authz.Decider{}
	g.idents = map[string]*identity{}
	g.exchanges = map[string]*tokens.ExchangeTarget{}
	if g.signer, err = newAssertionSigner(cfg.AssertionKey, pub.String()); err != nil {
		return nil, err
	}
	if len(cfg.Routes) > 0 {
		pcfg := cfg.Proxy
		pcfg.Routes = nil
		for _, r := range cfg.Routes {
			pr := r.Route
			if !r.Identity.empty() {
				g.idents[normPrefix(r.Prefix)] = &identity{IdentityHeaders: r.Identity, aud: pub.String() + r.Prefix,
					source: r.Rules.ClaimsFrom, signer: g.signer}
				// Only the gateway sets them: the browser's copies go.
				pr.DropHeaders = slices.Clone(pr.DropHeaders)
				for _, n := range r.Identity.names() {
					if n[1] != "" {
						pr.DropHeaders = append(pr.DropHeaders, n[1])
					}
				}
			}
			pcfg.Routes = append(pcfg.Routes, pr)
			g.routes[normPrefix(r.Prefix)] = r.Policy
			if r.Token.Exchange.enabled() {
				g.exchanges[normPrefix(r.Prefix)] = r.Token.Exchange.target()
			}
			d, err := authz.Compile(r.Rules) // checked by fill: cannot fail
			if err != nil {
				return nil, fmt.Errorf("bff: routes %s: %w", r.Prefix, err)
			}
			if d != nil {
				g.rules[normPrefix(r.Prefix)] = d
			}
		}
		pcfg.GatewayCookies = append(slices.Clone(pcfg.GatewayCookies), name)
		if cfg.Name != "" {
			// Other frontends' cookies reach this one's paths too (a
			// cookie with Path=/ is sent under /admin): none goes
			// upstream. These prefixes cover every default name; a
			// custom one of another frontend comes in Proxy.GatewayCookies.
			pcfg.GatewayCookies = append(pcfg.GatewayCookies, frontendCookiePrefixes[:]...)
			if cfg.Cookie.InsecureDevCookies {
				// Every frontend inherits the switch; one on plain http
				// (a non-loopback host) drops the __Host- or __Secure-
				// prefix from its names (bff-admin): strip those forms
				// too.
				for _, n := range pcfg.GatewayCookies {
					if t := strings.TrimPrefix(strings.TrimPrefix(n, "__Host-"), "__Secure-"); t != n && t != "" && !slices.Contains(pcfg.GatewayCookies, t) {
						pcfg.GatewayCookies = append(pcfg.GatewayCookies, t)
					}
				}
			}
		}
		if pcfg.PublicURL == "" {
			pcfg.PublicURL = pub.String()
		}
		if len(pcfg.WebSocketOrigins) == 0 {
			pcfg.WebSocketOrigins = wsOrigins
		}
		if pcfg.Logger == nil {
			pcfg.Logger = cfg.Logger
		}
		if pcfg.Registerer == nil {
			pcfg.Registerer = cfg.Registerer
		}
		if pcfg.Now == nil {
			pcfg.Now = cfg.Now
		}
		if g.proxy, err = proxy.New(pcfg); err != nil {
			return nil, fmt.Errorf("bff: Proxy: %w", err)
		}
	}
	g.warnExchange()
	if err := g.setupBearer(ctx); err != nil {
		return nil, err
	}
	g.claims = newClaimsCache(10000)
	if g.fa, err = g.newForwardAuth(); err != nil {
		return nil, err
	}
	if g.spaRules, err = authz.Compile(cfg.SPARules); err != nil { // checked by fill
		return nil, fmt.Errorf("bff: spa: %w", err)
	}
	g.replay = newReplayCache(10000)
	bp := g.base
	g.ep = endpointPaths{login: bp + "/login", callback: bp + "/callback", user: bp + "/user", logout: bp + "/logout",
		backchannel: bp + "/backchannel-logout", jwks: bp + "/jwks", auth: bp + "/auth", authAny: bp + "/auth/*", base: bp,
		prm: prmPath, prmAny: prmPath + "/*"}
	g.log.Info("gateway ready", "public_url", pub.String(), "issuer", cfg.Provider.IssuerURL,
		"base_path", g.base, "routes", len(cfg.Routes), "end_session", g.meta.EndSession != "",
		"revocation", g.meta.Revocation != "")
	return g, nil
}

// normPrefix is a route prefix without its trailing slash ("/" for root).
func normPrefix(p string) string {
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return "/"
	}
	return p
}

// discover reads the provider's discovery document and builds the OAuth2
// config and the ID token verifier.
func (g *Gateway) discover(ctx context.Context) error {
	pc := g.cfg.Provider
	cctx := oidc.ClientContext(ctx, pc.HTTPClient)
	p, err := oidc.NewProvider(cctx, pc.IssuerURL)
	if err != nil {
		return fmt.Errorf("bff: OpenID discovery at %s/.well-known/openid-configuration failed (is the provider running and Provider.IssuerURL exactly its issuer?): %w", strings.TrimSuffix(pc.IssuerURL, "/"), err)
	}
	if err := p.Claims(&g.meta); err != nil {
		return fmt.Errorf("bff: discovery document of %s: %w", pc.IssuerURL, err)
	}
	if !slices.Contains(g.meta.CodeChallengeMethods, "S256") {
		if !pc.InsecureAllowMissingPKCE {
			return fmt.Errorf("%w (issuer %s)", ErrMissingPKCE, pc.IssuerURL)
		}
		g.log.Warn("the provider does not advertise PKCE S256; continuing because Provider.InsecureAllowMissingPKCE is set", "issuer", pc.IssuerURL)
	}
	algs := pc.AllowedAlgs
	if len(algs) == 0 {
		for _, a := range g.meta.Algs {
			if slices.Contains(defaultAlgs, a) {
				algs = append(algs, a)
			}
		}
		if len(algs) == 0 {
			algs = defaultAlgs
		}
	}
	g.provider = p
	// Provider.Verifier fetches keys with the client from cctx (not its
	// cancellation), caching them and refetching on an unknown kid.
	g.verifier = p.Verifier(&oidc.Config{ClientID: pc.ClientID, SupportedSigningAlgs: algs, Now: g.now})
	g.oauth = &oauth2.Config{
		ClientID:     pc.ClientID,
		ClientSecret: pc.ClientSecret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  g.pub.String() + g.base + "/callback",
		Scopes:       slices.Clone(pc.Scopes),
	}
	return nil
}

// App returns the fiber app of the gateway's own Host (New); nil for a
// gateway made by NewGateway, which a Host serves.
func (g *Gateway) App() *fiber.App {
	if g.host == nil {
		return nil
	}
	return g.host.App()
}

// Name is the frontend's name ("" for the classic single frontend).
func (g *Gateway) Name() string { return g.cfg.Name }

// Run does the gateway's background work until ctx ends: it drops expired
// entries of the logout-token replay cache. It returns nil when ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.replay.purge(g.now())
		}
	}
}

// Ready reports whether the session store answers and the provider's
// discovery document can be fetched (/readyz).
func (g *Gateway) Ready(ctx context.Context) error {
	if err := g.store.Ping(ctx); err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	u := strings.TrimSuffix(g.cfg.Provider.IssuerURL, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := g.cfg.Provider.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("provider %s unreachable: %w", g.cfg.Provider.IssuerURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("provider %s: discovery answered %s", g.cfg.Provider.IssuerURL, resp.Status)
	}
	return nil
}

// Checks returns the readiness checks for obs.Mount.
func (g *Gateway) Checks() []obs.Check {
	return []obs.Check{{Name: "gateway", Fn: g.Ready}}
}

// serve answers one request the Host gave this frontend: a gateway
// endpoint under BasePath, a protected resource's metadata, else an API
// route or the SPA (api). Paths compare without case and with or without
// one trailing slash, as fiber's default routing did. GET endpoints answer
// HEAD too.
func (g *Gateway) serve(c *fiber.Ctx) error {
	p := c.Path()
	if rest, ok := cutBase(p, g.base); ok {
		return g.endpoint(c, rest)
	}
	if len(g.prm) > 0 && isGet(c.Method()) {
		if rest, ok := cutBase(p, prmPath); ok {
			if rest == "" || rest == "/" {
				obs.SetRoute(c, g.ep.prm)
			} else {
				obs.SetRoute(c, g.ep.prmAny)
			}
			return g.protectedResourceMetadata(c)
		}
	}
	return g.api(c)
}

// endpoint dispatches the gateway endpoints; rest is the path after
// BasePath ("" or starting with /).
func (g *Gateway) endpoint(c *fiber.Ctx, rest string) error {
	name := strings.TrimSuffix(rest, "/")
	m := c.Method()
	switch {
	case strings.EqualFold(name, "/login") && isGet(m):
		obs.SetRoute(c, g.ep.login)
		return g.login(c)
	case strings.EqualFold(name, "/callback") && isGet(m):
		obs.SetRoute(c, g.ep.callback)
		return g.callback(c)
	case strings.EqualFold(name, "/user") && isGet(m):
		obs.SetRoute(c, g.ep.user)
		if reason := g.csrf.check(c); reason != "" {
			return g.csrf.reject(c, reason)
		}
		return g.user(c)
	case strings.EqualFold(name, "/logout") && isGet(m):
		obs.SetRoute(c, g.ep.logout)
		return g.logout(c)
	case strings.EqualFold(name, "/logout") && m == fiber.MethodPost:
		obs.SetRoute(c, g.ep.logout)
		if reason := g.csrf.check(c); reason != "" {
			return g.csrf.reject(c, reason)
		}
		return g.logout(c)
	case strings.EqualFold(name, "/backchannel-logout") && m == fiber.MethodPost:
		obs.SetRoute(c, g.ep.backchannel)
		return g.backchannelLogout(c)
	case strings.EqualFold(name, "/jwks") && isGet(m):
		obs.SetRoute(c, g.ep.jwks)
		return g.jwks(c)
	// Any method: nginx's auth_request subrequest and Envoy's check keep
	// the original request's; Envoy appends the original path.
	case strings.EqualFold(name, "/auth"):
		obs.SetRoute(c, g.ep.auth)
		return g.forwardAuthHandler(c)
	case len(rest) > len("/auth/") && strings.EqualFold(rest[:len("/auth/")], "/auth/"):
		obs.SetRoute(c, g.ep.authAny)
		return g.forwardAuthHandler(c)
	}
	obs.SetRoute(c, g.ep.base)
	return writeError(c, newError(fiber.StatusNotFound, "not_found",
		"no gateway endpoint "+c.Method()+" "+c.Path()+"; the endpoints are login, callback, user, logout, backchannel-logout, jwks and auth under "+g.base))
}

func isGet(m string) bool { return m == fiber.MethodGet || m == fiber.MethodHead }

// cutBase returns the path after base when p is base or lies below it
// (compared without case), as "" or "/...".
func cutBase(p, base string) (string, bool) {
	if len(p) < len(base) || !strings.EqualFold(p[:len(base)], base) {
		return "", false
	}
	rest := p[len(base):]
	if rest != "" && rest[0] != '/' {
		return "", false
	}
	return rest, true
}

// spec is what CheckFrontends needs of the gateway.
func (g *Gateway) spec() FrontendSpec {
	s := FrontendSpec{Name: g.cfg.Name, Index: g.cfg.Index, Hosts: g.cfg.Hosts, PathPrefix: g.cfg.PathPrefix,
		BasePath: g.base, CookieName: g.jar.name}
	if g.pub != nil {
		s.PublicHost = PublicHost(g.pub)
	}
	for _, r := range g.cfg.Routes {
		s.Routes = append(s.Routes, r.Prefix)
	}
	return s
}

// describe is the frontend as a no_frontend error lists it.
func (g *Gateway) describe() string {
	name := g.cfg.Name
	if name == "" {
		name = "default"
	}
	hosts := "any host"
	if len(g.cfg.Hosts) > 0 {
		hosts = "host " + strings.Join(g.cfg.Hosts, ", ")
	}
	prefix := g.cfg.PathPrefix
	if prefix == "" {
		prefix = "/"
	}
	return name + " (" + hosts + ", path " + prefix + ")"
}

// errStore is a store failure other than "no session": 503, session kept.
var errStore = newError(fiber.StatusServiceUnavailable, "session_store_unavailable",
	"the session store cannot be reached; retry shortly")

func isUnavailable(err error) bool {
	return errors.Is(err, session.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
