package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/bffgate/bffgate/bff"
	"github.com/bffgate/bffgate/bff/spa"
	"github.com/bffgate/bffgate/internal/upstream"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/token"
	"github.com/bffgate/bffgate/static"
)

// demoPasswordHash is issuer.HashPassword(demoPassword), computed once:
// the demo password is public (the banner prints it), and hashing it at
// every start (and every config check) would cost 64 MiB of argon2id.
const demoPasswordHash = "$argon2id$v=19$m=65536,t=3,p=4$+ls2TPbBTnDx8LLW5C1tkQ$+uJtJyaHr8paY7LZ+BJPwnUvyOiKa3P/ygn9o7GwhL0"

// issuerConfig is the issuer.Config the configuration describes, the
// gateway's own client (with clientSecret) and the demo user included;
// buildIssuer adds the runtime pieces (store, logger, metrics), validate
// checks it as it is.
func (c *Config) issuerConfig(clientSecret string) issuer.Config {
	is := c.Issuer
	icfg := issuer.DefaultConfig()
	icfg.Issuer = is.URL
	icfg.TokenFormat = token.Format(is.Tokens.Format)
	icfg.TokenAlg = is.Tokens.Alg
	icfg.IDTokenAlg = is.Tokens.IDTokenAlg
	if icfg.TokenFormat == token.FormatEncrypted {
		icfg.Encryption = is.Tokens.Encryption
	}
	icfg.RefreshTokenFormat = token.RefreshFormat(is.Tokens.RefreshFormat)
	icfg.AccessTokenTTL = is.Tokens.AccessTTL
	icfg.RefreshTokenTTL = is.Tokens.RefreshTTL
	icfg.CodeTTL = is.Tokens.CodeTTL
	icfg.IDTokenTTL = is.Tokens.IDTokenTTL
	icfg.LoginSessionTTL = is.LoginSessionTTL
	icfg.DisableRefreshRotation = is.Tokens.RefreshRotation != nil && !*is.Tokens.RefreshRotation
	icfg.DenylistCacheSize = is.Denylist.CacheSize
	icfg.DenylistPollInterval = is.Denylist.PollInterval
	icfg.PurgeDelay = is.Denylist.PurgeDelay
	icfg.TrustedProxies = is.TrustedProxies
	icfg.LoginThrottle = is.LoginThrottle
	icfg.KeyFiles = slices.Clone(is.Keys)
	icfg.Clients = slices.Clone(is.Clients)
	icfg.Users = slices.Clone(is.Users)
	icfg.SPIFFE = issuer.SPIFFE{TrustDomains: slices.Clone(is.SPIFFE.TrustDomains)}
	icfg.Audit = is.Audit
	icfg.TrustedIssuers = slices.Clone(is.TrustedIssuers)
	icfg.Resources = slices.Clone(is.Resources)
	gwResources := c.gatewayResources()
	for _, r := range gwResources {
		if !slices.ContainsFunc(icfg.Resources, func(x issuer.Resource) bool { return x.URL == r.URL }) {
			icfg.Resources = append(icfg.Resources, r)
		}
	}
	icfg.ClientMetadata = is.ClientMetadata
	icfg.ConsentTTL = is.ConsentTTL
	icfg.Registration = is.Registration
	icfg.ClientMetadata.AllowedDomains = slices.Clone(is.ClientMetadata.AllowedDomains)
	icfg.AccessLog = c.Log.Access
	if c.registersGatewayClient() {
		gw := c.Gateway
		base := gw.PublicURL + gw.BasePath
		audience := []string{embeddedClientID}
		if c.DemoAPI.Audience != "" && c.DemoAPI.Audience != embeddedClientID {
			audience = append(audience, c.DemoAPI.Audience)
		}
		icfg.Clients = append(icfg.Clients, issuer.Client{
			ID:                     embeddedClientID,
			Secret:                 clientSecret,
			RedirectURIs:           []string{base + "/callback"},
			PostLogoutRedirectURIs: []string{gw.PublicURL + gw.PostLogoutRedirect},
			GrantTypes:             []string{issuer.GrantAuthorizationCode, issuer.GrantRefreshToken, issuer.GrantClientCredentials},
			BackchannelLogoutURI:   base + "/backchannel-logout",
			Audience:               audience,
			// A plain-http public_url on a LAN host is allowed by the
			// gateway's insecure_allow_http; its callback then is too.
			InsecureAllowHTTPRedirects: gw.InsecureAllowHTTP,
			TokenExchange:              c.gatewayExchangePolicy(),
			// The resource server of its bearer routes: it may
			// introspect and exchange the tokens clients got for them.
			Resources: resourceURLs(gwResources),
		})
	}
	icfg.Clients = append(icfg.Clients, c.frontendClients()...)
	if c.zeroConfig {
		icfg.Users = append(icfg.Users, issuer.User{
			Username: demoUser, PasswordHash: demoPasswordHash, Subject: "demo-user-1",
			Claims: map[string]any{"name": "Demo User", "given_name": "Demo", "family_name": "User",
				"email": "demo@example.com", "email_verified": true},
		})
	}
	return icfg
}

// registersGatewayClient reports whether the embedded issuer registers
// the gateway's own client: when the gateway logs in there, and for the
// demo API's introspection.
func (c *Config) registersGatewayClient() bool {
	return c.embeddedClient() || *c.DemoAPI.Enabled
}

// gatewayConfig is the bff.Config the configuration describes; buildGateway
// adds the runtime pieces (store, cookie keys, token stores, logger,
// metrics, SPA), validate checks it as it is.
func (c *Config) gatewayConfig() bff.Config {
	gw := c.Gateway
	b := bff.DefaultConfig()
	b.PublicURL = gw.PublicURL
	b.InsecureAllowHTTP = gw.InsecureAllowHTTP
	b.BasePath = gw.BasePath
	b.Provider = gw.Provider
	b.Cookie.Name = gw.Session.CookieName
	b.Cookie.SameSite = gw.Session.SameSite
	b.Cookie.InsecureDevCookies = gw.Session.InsecureDevCookies
	b.IdleTimeout = gw.Session.IdleTimeout
	b.AbsoluteLifetime = gw.Session.AbsoluteLifetime
	b.CSRFHeader, b.CSRFValue = gw.CSRF.Header, gw.CSRF.Value
	b.AllowedOrigins = gw.AllowedOrigins
	b.Routes = slices.Clone(gw.Routes)
	b.Proxy.TrustedProxies = gw.TrustedProxies
	b.Tokens = gw.Refresh
	b.PostLogoutRedirect = gw.PostLogoutRedirect
	b.SPARules = gw.SPA.Rules
	b.ForwardAuth = gw.ForwardAuth
	b.AccessLog = c.Log.Access
	return b
}

// spaConfig is the spa.Config of gateway.spa: the embedded demo SPA when
// neither dir nor dev_url is set.
func (c *Config) spaConfig() spa.Config {
	sc := c.Gateway.SPA.Config
	if sc.Dir == "" && sc.DevURL == "" {
		sc.FS = static.FS()
	}
	return sc
}

// checkSPA builds the SPA handler as serve will: that is what finds a
// gateway.spa.dir that does not exist or holds no index.html.
func (c *Config) checkSPA() []error {
	return checkSPAConfig("gateway.spa", SPA{Config: c.spaConfig()})
}

// checkSPAConfig builds the handler of the SPA at key (gateway.spa or
// gateway.frontends[i].spa).
func checkSPAConfig(key string, s SPA) []error {
	sc := s.Config
	if sc.DevIdleTimeout < 0 {
		return []error{&KeyError{Key: key + ".dev_idle_timeout", Msg: fmt.Sprintf("%s must not be negative: want zero (the default, %s) or a duration under the dev server's keep-alive timeout (Node's is 5s)", sc.DevIdleTimeout, upstream.DefaultIdleTimeout)}}
	}
	if _, err := spa.New(sc); err != nil {
		at, val := key+".dev_url", sc.DevURL
		if sc.DevURL == "" {
			at, val = key+".dir", sc.Dir
		}
		msg := err.Error()
		if _, serr := os.Stat(sc.Dir); sc.DevURL == "" && serr != nil {
			msg = unwrapPath(serr).Error()
		}
		// spa's errors name its Go fields; the user wrote a key.
		for _, p := range []string{"spa: Config.DevURL ", "spa: Config.Dir " + sc.Dir + " ", "spa: Config.Dir: ", "spa: "} {
			msg = strings.TrimPrefix(msg, p)
		}
		if sc.DevURL == "" {
			msg += "; want the build output directory (Vite's dist/) holding index.html"
		}
		return []error{&KeyError{Key: at, Msg: fmt.Sprintf("%q cannot be served: %s", val, msg)}}
	}
	return nil
}

// fieldProblem is what cmd needs of a package's configuration error: the
// field's path in the package's own names, and what is wrong. bff, the
// issuer and bff/tokens each have a FieldError with these methods.
type fieldProblem interface {
	error
	Field() string
	Problem() string
}

// issuerKeyNames maps issuer.Config's field names to the file's keys, where
// the file groups the flat Go fields (issuer.tokens, issuer.denylist).
var issuerKeyNames = map[string]string{
	"issuer":                 "url",
	"key_files":              "keys",
	"token_format":           "tokens.format",
	"token_alg":              "tokens.alg",
	"id_token_alg":           "tokens.id_token_alg",
	"encryption":             "tokens.encryption",
	"refresh_token_format":   "tokens.refresh_format",
	"access_token_ttl":       "tokens.access_ttl",
	"refresh_token_ttl":      "tokens.refresh_ttl",
	"code_ttl":               "tokens.code_ttl",
	"id_token_ttl":           "tokens.id_token_ttl",
	"denylist_cache_size":    "denylist.cache_size",
	"denylist_poll_interval": "denylist.poll_interval",
	"purge_delay":            "denylist.purge_delay",
}

// gatewayKeyNames maps bff.Config's field names to the file's keys under
// gateway, where the two differ (gateway.session gathers the cookie and the
// lifetimes; gateway.refresh is bff.Config.Tokens).
var gatewayKeyNames = map[string]string{
	"cookie.name":                 "session.cookie_name",
	"cookie.same_site":            "session.same_site",
	"cookie.insecure_dev_cookies": "session.insecure_dev_cookies",
	"idle_timeout":                "session.idle_timeout",
	"absolute_lifetime":           "session.absolute_lifetime",
	"csrf_header":                 "csrf.header",
	"csrf_value":                  "csrf.value",
	"tokens":                      "refresh",
	"proxy.trusted_proxies":       "trusted_proxies",
}

// issuerErrors puts the issuer's errors under their keys. An error in a
// client or user bffgate added itself (the gateway's client, the demo
// user) comes from the gateway's keys.
// embeddedClientPrefix starts the issuer's errors about the gateway's own
// client, reported under the key its URIs are made from.
const embeddedClientPrefix = "the gateway's client at the embedded issuer, made from gateway.public_url and gateway.base_path: "

func (c *Config) issuerErrors(err error) []error {
	return packageErrors(err, func(path string) (string, string) {
		if i, ok := listIndex(path, "clients"); ok && i >= len(c.Issuer.Clients) {
			// After the configured clients: the gateway's own, then the
			// frontends' (frontendClients), in their order.
			i -= len(c.Issuer.Clients)
			if c.registersGatewayClient() {
				if i == 0 {
					return "gateway.public_url", embeddedClientPrefix
				}
				i--
			}
			for j, f := range c.Gateway.Frontends {
				if !c.registersFrontendClient(f) {
					continue
				}
				if i == 0 {
					return fmt.Sprintf("gateway.frontends[%d].public_url", j), "the client " + f.Provider.ClientID + " bffgate registers at the embedded issuer for " + frontendLabel(f) + ", made from its public_url, match.path_prefix and base_path: "
				}
				i--
			}
		}
		for _, list := range []struct {
			name string
			n    int
		}{{"clients", len(c.Issuer.Clients)}, {"users", len(c.Issuer.Users)}} {
			if i, ok := listIndex(path, list.name); ok && i >= list.n {
				return "gateway.public_url", embeddedClientPrefix
			}
		}
		return "issuer." + rekey(path, issuerKeyNames), ""
	})
}

func (c *Config) gatewayErrors(err error) []error {
	return packageErrors(err, func(path string) (string, string) { return "gateway." + rekey(path, gatewayKeyNames), "" })
}

// packageErrors turns each fieldProblem err joins into a KeyError at the
// key key returns (with a prefix for the message); others pass unchanged.
func packageErrors(err error, key func(path string) (string, string)) []error {
	var out []error
	for _, e := range flatten(err) {
		var fp fieldProblem
		if !errors.As(e, &fp) {
			out = append(out, e)
			continue
		}
		k, prefix := key(fp.Field())
		out = append(out, &KeyError{Key: k, Msg: prefix + fp.Problem()})
	}
	return out
}

// rekey replaces the longest leading part of path (whole segments) that
// table maps.
func rekey(path string, table map[string]string) string {
	for end := len(path); end > 0; {
		if to, ok := table[path[:end]]; ok {
			return to + path[end:]
		}
		end = strings.LastIndexAny(path[:end], ".[")
	}
	return path
}

// listIndex reads i from a path "name[i]...".
func listIndex(path, name string) (int, bool) {
	rest, ok := strings.CutPrefix(path, name+"[")
	if !ok {
		return 0, false
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return 0, false
	}
	i, err := strconv.Atoi(rest[:end])
	return i, err == nil
}

// gatewayExchangePolicy is the token exchange policy of the gateway's own
// client at the embedded issuer: exactly the targets its routes'
// token.exchange name, impersonation when a route exchanges without the
// gateway as actor. No route exchanging: none.
// gatewayResources are the resources (RFC 8707) of the gateway's bearer
// routes, for the embedded issuer when the gateway uses it: each route's
// resource with the scopes its route and tools name (the issuer's own
// scopes, such as profile, stay the issuer's). An https resource, or
// http on a loopback host, as MCP clients require; others are left for
// issuer.resources.
func (c *Config) gatewayResources() []issuer.Resource {
	var out []issuer.Resource
	if c.embeddedClient() {
		out = resourcesOf(c.Gateway.PublicURL, c.Gateway.Routes)
	}
	for _, f := range c.Gateway.Frontends {
		if c.frontendEmbedded(f) {
			out = append(out, resourcesOf(f.PublicURL, f.Routes)...)
		}
	}
	return out
}

// resourcesOf are the resources of the bearer routes of a frontend at
// pub.
func resourcesOf(pub string, routes []bff.Route) []issuer.Resource {
	var out []issuer.Resource
	for _, r := range routes {
		if !r.AcceptsBearer() {
			continue
		}
		res := r.ResourceURL(pub)
		u, err := url.Parse(res)
		if err != nil || !(u.Scheme == "https" || u.Scheme == "http" && loopbackHost(u.Hostname())) {
			continue
		}
		var scopes []string
		for _, s := range r.BearerScopes() {
			switch s {
			case issuer.ScopeOpenID, issuer.ScopeProfile, issuer.ScopeEmail, issuer.ScopeOfflineAccess, issuer.ScopeGroups, issuer.ScopeRoles:
			default:
				scopes = append(scopes, s)
			}
		}
		out = append(out, issuer.Resource{URL: res, Name: "gateway route " + r.Prefix, Scopes: scopes})
	}
	return out
}

func resourceURLs(rs []issuer.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.URL)
	}
	return out
}

func (c *Config) gatewayExchangePolicy() issuer.TokenExchange {
	return exchangePolicyOf(c.Gateway.Routes)
}

// exchangePolicyOf is the token exchange policy a client needs for routes.
func exchangePolicyOf(routes []bff.Route) issuer.TokenExchange {
	var p issuer.TokenExchange
	for _, r := range routes {
		e := r.Token.Exchange
		if e.Audience == "" && e.Resource == "" {
			continue
		}
		p.Allowed = true
		if e.Audience != "" && !slices.Contains(p.Audiences, e.Audience) {
			p.Audiences = append(p.Audiences, e.Audience)
		}
		if e.Resource != "" && !slices.Contains(p.Resources, e.Resource) {
			p.Resources = append(p.Resources, e.Resource)
		}
		if e.Actor != bff.ActorGateway {
			p.Impersonation = true
		}
	}
	return p
}

// loopbackHost reports whether host is localhost or a loopback address.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
