package main

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/bff"
	"github.com/bffgate/bffgate/issuer"
)

// Frontend is one entry of gateway.frontends: an SPA with its own match,
// provider and client, session cookie and store namespace, routes and
// forward-auth rules, served by the one gateway listener. The keys of
// gateway.session, csrf, refresh, allowed_origins, trusted_proxies and
// insecure_allow_http are the defaults every frontend inherits.
type Frontend struct {
	Name               string             `yaml:"name"`
	Match              FrontendMatch      `yaml:"match"`
	PublicURL          string             `yaml:"public_url"`
	BasePath           string             `yaml:"base_path"`
	Provider           bff.ProviderConfig `yaml:"provider"`
	Session            FrontendSession    `yaml:"session"`
	Routes             []bff.Route        `yaml:"routes"`
	SPA                SPA                `yaml:"spa"`
	ForwardAuth        bff.ForwardAuth    `yaml:"forward_auth"`
	PostLogoutRedirect string             `yaml:"post_logout_redirect"`
}

// FrontendMatch says which requests a frontend serves: any of Hosts (none:
// any host) and paths under PathPrefix (none: every path).
type FrontendMatch struct {
	Hosts      []string `yaml:"hosts"`
	PathPrefix string   `yaml:"path_prefix"`
}

// FrontendSession is a frontend's own session settings; unset ones are
// gateway.session's (cookie_name excepted: it defaults per frontend).
type FrontendSession struct {
	Store            string        `yaml:"store"`
	CookieName       string        `yaml:"cookie_name"`
	IdleTimeout      time.Duration `yaml:"idle_timeout"`
	AbsoluteLifetime time.Duration `yaml:"absolute_lifetime"`
	SameSite         string        `yaml:"same_site"`
}

// frontendClientPrefix starts the id of the client bffgate registers at
// the embedded issuer for a frontend: bffgate-<name>.
const frontendClientPrefix = embeddedClientID + "-"

// cloneFrontends copies a list of frontends deep enough for fill to
// change the copy alone.
func cloneFrontends(fs []Frontend) []Frontend {
	out := slices.Clone(fs)
	for i := range out {
		out[i].Routes = slices.Clone(out[i].Routes)
		out[i].Match.Hosts = slices.Clone(out[i].Match.Hosts)
		out[i].Provider.Scopes = slices.Clone(out[i].Provider.Scopes)
	}
	return out
}

// fillFrontends fills each frontend's defaults from gateway's keys.
func (c *Config) fillFrontends() {
	gw := &c.Gateway
	for i := range gw.Frontends {
		f := &gw.Frontends[i]
		f.PublicURL = strings.TrimRight(f.PublicURL, "/")
		if f.BasePath == "" {
			f.BasePath = gw.BasePath
		}
		s := &f.Session
		if s.Store == "" {
			s.Store = gw.Session.Store
		}
		if s.IdleTimeout == 0 {
			s.IdleTimeout = gw.Session.IdleTimeout
		}
		if s.AbsoluteLifetime == 0 {
			s.AbsoluteLifetime = gw.Session.AbsoluteLifetime
		}
		if s.SameSite == "" {
			s.SameSite = gw.Session.SameSite
		}
		if s.CookieName == "" && bff.ValidFrontendName(f.Name) {
			s.CookieName = bff.DefaultCookieName(f.Name, f.Match.PathPrefix)
		}
		if c.frontendEmbedded(*f) {
			if f.Provider.ClientID == "" && bff.ValidFrontendName(f.Name) {
				f.Provider.ClientID = frontendClientPrefix + f.Name
			}
			if len(f.Provider.Scopes) == 0 {
				f.Provider.Scopes = []string{"openid", "profile", "email", "offline_access", "groups", "roles"}
			}
		}
		if len(f.Provider.Scopes) == 0 {
			f.Provider.Scopes = bff.DefaultConfig().Provider.Scopes
		}
		for j := range f.Routes {
			if f.Routes[j].Policy == "" {
				f.Routes[j].Policy = bff.PolicyUser
			}
		}
	}
}

// frontendEmbedded reports whether frontend f signs in at the embedded
// issuer.
func (c *Config) frontendEmbedded(f Frontend) bool {
	return c.Issuer.Enabled != nil && *c.Issuer.Enabled && f.Provider.IssuerURL != "" &&
		strings.TrimRight(f.Provider.IssuerURL, "/") == c.Issuer.URL
}

// registersFrontendClient reports whether bffgate registers frontend f's
// client at the embedded issuer itself: f signs in there with the client
// id bffgate-<name> and no secret of its own.
func (c *Config) registersFrontendClient(f Frontend) bool {
	return c.frontendEmbedded(f) && f.Provider.ClientID == frontendClientPrefix+f.Name && f.Provider.ClientSecret == "" &&
		!slices.ContainsFunc(c.Issuer.Clients, func(cl issuer.Client) bool { return cl.ID == f.Provider.ClientID })
}

// frontendClients are the clients bffgate registers at the embedded issuer
// for frontends (registersFrontendClient), with the secrets buildIssuer
// read (a stand-in while validating).
func (c *Config) frontendClients() []issuer.Client {
	var out []issuer.Client
	for _, f := range c.Gateway.Frontends {
		if !c.registersFrontendClient(f) {
			continue
		}
		secret := c.frontendSecrets[f.Name]
		if secret == "" {
			secret = strings.Repeat("x", 43)
		}
		out = append(out, c.frontendClient(f, secret))
	}
	return out
}

// managedClientError reports err, from issuer.SetManagedClients over
// frontendClients, under the YAML key of the frontend whose client it
// names (its index in that list); any other error is returned as it is.
func (c *Config) managedClientError(err error) error {
	var fe *issuer.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	var i int
	if n, _ := fmt.Sscanf(fe.Path, "managed_clients[%d]", &i); n != 1 {
		return err
	}
	field := strings.TrimPrefix(fe.Path[strings.Index(fe.Path, "]")+1:], ".")
	k := 0
	for j, f := range c.Gateway.Frontends {
		if !c.registersFrontendClient(f) {
			continue
		}
		if k == i {
			msg := frontendLabel(f) + "'s client at the embedded issuer (" + f.Provider.ClientID + ")"
			if field != "" {
				msg += ", its " + field
			}
			return &KeyError{Key: fmt.Sprintf("gateway.frontends[%d]", j), Msg: msg + ": " + fe.Msg}
		}
		k++
	}
	return err
}

// frontendClient is frontend f's client at the embedded issuer: its
// callback, post-logout and back-channel logout URIs, made from its
// public_url, path_prefix and base_path.
func (c *Config) frontendClient(f Frontend, secret string) issuer.Client {
	base := f.PublicURL + f.Match.PathPrefix + f.BasePath
	post := f.PostLogoutRedirect
	if post == "" {
		post = f.Match.PathPrefix + "/"
	}
	return issuer.Client{
		ID:                         f.Provider.ClientID,
		Secret:                     secret,
		RedirectURIs:               []string{base + "/callback"},
		PostLogoutRedirectURIs:     []string{f.PublicURL + post},
		GrantTypes:                 []string{issuer.GrantAuthorizationCode, issuer.GrantRefreshToken, issuer.GrantClientCredentials},
		BackchannelLogoutURI:       base + "/backchannel-logout",
		Audience:                   []string{f.Provider.ClientID},
		InsecureAllowHTTPRedirects: c.Gateway.InsecureAllowHTTP,
		TokenExchange:              exchangePolicyOf(f.Routes),
		Resources:                  resourceURLs(resourcesOf(f.PublicURL, f.Routes)),
	}
}

// frontendConfig is the bff.Config of gateway.frontends[i]: the frontend's
// keys over the gateway's (gatewayConfig).
func (c *Config) frontendConfig(i int) bff.Config {
	f := c.Gateway.Frontends[i]
	b := c.gatewayConfig()
	b.Name = f.Name
	b.Index = i
	b.Hosts = slices.Clone(f.Match.Hosts)
	b.PathPrefix = f.Match.PathPrefix
	b.PublicURL = f.PublicURL
	b.BasePath = f.BasePath
	b.Provider = f.Provider
	b.Cookie.Name = f.Session.CookieName
	b.Cookie.SameSite = f.Session.SameSite
	b.IdleTimeout = f.Session.IdleTimeout
	b.AbsoluteLifetime = f.Session.AbsoluteLifetime
	b.Routes = slices.Clone(f.Routes)
	b.SPARules = f.SPA.Rules
	b.ForwardAuth = f.ForwardAuth
	b.PostLogoutRedirect = f.PostLogoutRedirect
	// No frontend's cookie goes upstream from another's routes.
	b.Proxy.GatewayCookies = c.frontendCookieNames()
	return b
}

// frontendCookieNames are every frontend's session cookie name (which
// prefix its chunks and flow cookies).
func (c *Config) frontendCookieNames() []string {
	var out []string
	for _, f := range c.Gateway.Frontends {
		// Default names are stripped by every frontend anyway: listing
		// them would make a reload that adds or removes a frontend
		// rebuild every other one (a kept gateway knows the names it was
		// told of).
		if n := f.Session.CookieName; n != "" && !bff.StrippedCookieName(n) && !slices.Contains(out, n) {
			out = append(out, f.Session.CookieName)
		}
	}
	return out
}

// frontendKeyNames maps bff.Config's field names to a frontend's keys
// where they differ; inheritedKeys are bff.Config fields a frontend takes
// from gateway's keys, whose errors belong there.
var (
	frontendKeyNames = map[string]string{
		"cookie.name":       "session.cookie_name",
		"cookie.same_site":  "session.same_site",
		"idle_timeout":      "session.idle_timeout",
		"absolute_lifetime": "session.absolute_lifetime",
	}
	inheritedKeys = []string{"csrf_header", "csrf_value", "allowed_origins", "tokens", "proxy", "cookie.insecure_dev_cookies", "body_limit"}
)

// frontendErrors puts bff's errors about gateway.frontends[i] under its
// keys, naming the frontend; an error in an inherited value goes to the
// gateway key it came from.
func (c *Config) frontendErrors(i int, err error) []error {
	f := c.Gateway.Frontends[i]
	return packageErrors(err, func(path string) (string, string) {
		for _, k := range inheritedKeys {
			if path == k || strings.HasPrefix(path, k+".") || strings.HasPrefix(path, k+"[") {
				return "gateway." + rekey(path, gatewayKeyNames), ""
			}
		}
		return fmt.Sprintf("gateway.frontends[%d].", i) + rekey(path, frontendKeyNames), frontendLabel(f) + ": "
	})
}

func frontendLabel(f Frontend) string {
	if f.Name == "" {
		return "this frontend"
	}
	return "frontend " + f.Name
}

// frontendSpecs are what bff.CheckFrontends needs of gateway.frontends.
func (c *Config) frontendSpecs() []bff.FrontendSpec {
	var out []bff.FrontendSpec
	for i, f := range c.Gateway.Frontends {
		s := bff.FrontendSpec{Name: f.Name, Index: i, Hosts: f.Match.Hosts, PathPrefix: f.Match.PathPrefix,
			BasePath: f.Match.PathPrefix + f.BasePath, CookieName: f.Session.CookieName}
		for _, r := range f.Routes {
			s.Routes = append(s.Routes, r.Prefix)
		}
		if u, err := url.Parse(f.PublicURL); err == nil && u.Host != "" {
			s.PublicHost = bff.PublicHost(u)
		}
		out = append(out, s)
	}
	return out
}

// validateFrontends checks gateway.frontends: each frontend's own keys,
// bff's rules on the configuration it will run with, and the rules between
// frontends (bff.CheckFrontends), every error under its YAML key.
func (c *Config) validateFrontends() []error {
	gw := &c.Gateway
	var errs []error
	bad := func(key string, val any, want string) {
		errs = append(errs, &KeyError{Key: key, Msg: fmt.Sprintf("%s is not allowed: %s", quote(val), want)})
	}
	// With frontends the top-level provider, routes, spa and forward_auth
	// serve nobody: a file setting both is ambiguous.
	if c.topIssuerURL != "" {
		bad("gateway.provider.issuer_url", c.topIssuerURL, "gateway.frontends is set, and each frontend has its own provider: move it to gateway.frontends[].provider (ambiguous otherwise)")
	}
	if len(gw.Routes) > 0 {
		bad("gateway.routes", fmt.Sprintf("%d routes", len(gw.Routes)), "gateway.frontends is set, and each frontend has its own routes: move them to gateway.frontends[].routes (ambiguous otherwise)")
	}
	if gw.SPA.Dir != "" || gw.SPA.DevURL != "" || !gw.SPA.Rules.Empty() {
		bad("gateway.spa", "set", "gateway.frontends is set, and each frontend has its own spa: move it to gateway.frontends[].spa (ambiguous otherwise)")
	}
	// Not inherited: one name for every frontend would be refused
	// below as shared, so a file setting it means one of the frontends.
	if n := gw.Session.CookieName; n != defaultConfig().Gateway.Session.CookieName {
		bad("gateway.session.cookie_name", n, "gateway.frontends is set, and each frontend has its own session cookie (__Host-bff-<name>, or __Secure-bff-<name> under a path prefix): set gateway.frontends[].session.cookie_name")
	}
	if len(gw.ForwardAuth.Rules) > 0 {
		bad("gateway.forward_auth", "set", "gateway.frontends is set, and each frontend has its own forward_auth: move it to gateway.frontends[].forward_auth (ambiguous otherwise)")
	}
	for i, f := range gw.Frontends {
		key := fmt.Sprintf("gateway.frontends[%d]", i)
		label := frontendLabel(f)
		if f.Name == "" {
			bad(key+".name", "", "want the frontend's name: 1 to 32 of a-z, 0-9 and - (it goes into cookie names, metrics and logs)")
		}
		if f.Provider.IssuerURL == "" {
			errs = append(errs, &KeyError{Key: key + ".provider.issuer_url", Msg: label + ": is required: the frontend's OpenID provider (the embedded issuer's is " + c.Issuer.URL + ")"})
		} else if f.Provider.ClientID == "" && !c.frontendEmbedded(f) {
			// (At the embedded issuer a frontend without a name gets no
			// client of its own: its name's error says why.)
			errs = append(errs, &KeyError{Key: key + ".provider.client_id", Msg: label + ": is required: the frontend's client at " + f.Provider.IssuerURL + " (only at the embedded issuer does bffgate register one itself)"})
		}
		if f.Provider.ClientID == "" && f.Name != "" && !bff.ValidFrontendName(f.Name) {
			// bff's checks, which name it otherwise, need a client id: at
			// the embedded issuer an invalid name gets none.
			bad(key+".name", f.Name, "want the frontend's name: 1 to 32 of a-z, 0-9 and - (it goes into cookie names, metrics and logs)")
		}
		if f.PublicURL == "" {
			errs = append(errs, &KeyError{Key: key + ".public_url", Msg: label + ": is required: the browser's origin for this frontend, such as https://admin.example.com"})
		}
		if !slices.Contains([]string{"cookie", "bbolt", "redis"}, f.Session.Store) {
			bad(key+".session.store", f.Session.Store, "want one of cookie, bbolt, redis")
		}
		if n := f.Session.CookieName; n != "" && !gw.Session.InsecureDevCookies {
			switch {
			case f.Match.PathPrefix == "" && !strings.HasPrefix(n, "__Host-"):
				bad(key+".session.cookie_name", n, label+": want a name with the __Host- prefix (or set gateway.session.insecure_dev_cookies for plain-http development hosts)")
			case f.Match.PathPrefix != "" && !strings.HasPrefix(n, "__Secure-"):
				bad(key+".session.cookie_name", n, label+": its cookies carry Path="+f.Match.PathPrefix+", which a __Host- cookie may not: want a name with the __Secure- prefix")
			}
		}
		if f.SPA.Dir != "" && f.SPA.DevURL != "" {
			bad(key+".spa", "dir and dev_url", "want at most one of them")
		} else if f.SPA.Dir != "" || f.SPA.DevURL != "" {
			errs = append(errs, checkSPAConfig(key+".spa", f.SPA)...)
		}
		if f.PublicURL != "" && f.Provider.IssuerURL != "" && f.Provider.ClientID != "" {
			if err := c.frontendConfig(i).Validate(); err != nil {
				errs = append(errs, c.frontendErrors(i, err)...)
			}
		}
	}
	if err := bff.CheckFrontends(c.frontendSpecs()); err != nil {
		for _, e := range flatten(err) {
			var fe *bff.FrontendError
			if errors.As(e, &fe) {
				errs = append(errs, &KeyError{Key: "gateway." + fe.Path, Msg: strings.ReplaceAll(fe.Msg, "frontends[", "gateway.frontends[")})
			} else {
				errs = append(errs, e)
			}
		}
	}
	return dedupe(errs)
}

// dedupe drops repeated errors (an inherited key's error comes once per
// frontend).
func dedupe(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if s := e.Error(); !seen[s] {
			seen[s] = true
			out = append(out, e)
		}
	}
	return out
}

// frontendSPA is a frontend's SPA handler: none without spa.dir or
// spa.dev_url. Under a path prefix the files of spa.dir are served
// without it (a Vite build with base: '/admin/' has its files at dist/),
// while a dev server gets the whole path (Vite's dev server serves under
// its base).
func frontendSPA(f Frontend, handler fiber.Handler) fiber.Handler {
	prefix := f.Match.PathPrefix
	if handler == nil || prefix == "" || f.SPA.DevURL != "" {
		return handler
	}
	return func(c *fiber.Ctx) error {
		p := strings.Clone(c.Path()) // setting the path reuses its buffer
		if len(p) >= len(prefix) && strings.EqualFold(p[:len(prefix)], prefix) {
			rest := p[len(prefix):]
			if rest == "" {
				rest = "/"
			}
			c.Path(rest)
			defer c.Path(p)
		}
		return handler(c)
	}
}

// replacingRegisterer registers a collector in place of one already
// registered with the same descriptors: a frontend rebuilt by a reload
// registers its gateway's metrics again, and the old gateway's go with it.
// Its counters start again from zero (Prometheus reads that as a reset).
type replacingRegisterer struct{ prometheus.Registerer }

func (r replacingRegisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		r.Registerer.Unregister(are.ExistingCollector)
		return r.Registerer.Register(c)
	}
	return err
}

func (r replacingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// frontendRegisterer is frontend name's registerer: its gateway's and its
// store's metrics carry the label frontend="<name>".
func frontendRegisterer(reg prometheus.Registerer, name string) prometheus.Registerer {
	// Replacing outside the wrapping: the registry reports the existing
	// collector unwrapped, and the wrapping registerer's Unregister wraps
	// it again to find it.
	return replacingRegisterer{prometheus.WrapRegistererWith(prometheus.Labels{"frontend": name}, reg)}
}
