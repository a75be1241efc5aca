package bff

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/session"
)

// ForwardAuth configures the forward-auth decision endpoint,
// BasePath + "/auth": the endpoint nginx's auth_request, Traefik's
// forwardAuth, Caddy's forward_auth and Envoy's HTTP ext_authz ask whether
// a request they received may pass (oauth2-proxy's /oauth2/auth). Its yaml
// tags are the keys of gateway.forward_auth.
//
// The original request's method, URI and host are read from the headers
// those proxies send (X-Original-Method / X-Forwarded-Method,
// X-Original-URI / X-Forwarded-Uri, X-Forwarded-Host),
// or from the path under BasePath + "/auth/" (Envoy's path_prefix), only
// when the peer is one of the gateway's trusted proxies
// (gateway.trusted_proxies). From any other peer they are ignored and the
// decision is about the auth endpoint's own URI, which no rule covers: it
// denies.
type ForwardAuth struct {
	// Rules say who may reach which host and path prefix. The rule for a
	// request is the one with the longest prefix among those naming its
	// host, else among those naming no host. A request no rule covers is
	// denied (403).
	Rules []ForwardAuthRule `yaml:"rules"`
}

// ForwardAuthRule is one protected host and path prefix, who may reach it
// (the same allow and deny rules as gateway.routes[]), and what the
// answer tells the proxy about the user.
type ForwardAuthRule struct {
	// Host is the original request's host (X-Forwarded-Host), compared
	// without case; with no port it matches any port. Empty matches every
	// host.
	Host string `yaml:"host"`
	// Prefix is the path prefix the rule covers, e.g. "/app/" (which
	// covers /app too) or "/".
	Prefix string `yaml:"prefix"`
	// Rules (allow, deny, claims_from) say which signed-in users pass;
	// none means every signed-in user.
	Rules authz.Policy `yaml:",inline"`
	// Identity names the headers of the 200 answer that say who the user
	// is (the proxy copies them upstream: nginx auth_request_set, Traefik
	// authResponseHeaders, Caddy copy_headers). The assertion's audience is
	// the gateway's scheme, Host (or the public URL's host) and Prefix.
	Identity IdentityHeaders `yaml:"identity_headers"`
	// PassAccessToken adds "Authorization: Bearer <access token>" to the
	// 200 answer, refreshed first when it is due, for the proxy to send
	// upstream. Off by default: the token then leaves the gateway for the
	// proxy, which must not pass the auth answer's headers to the browser.
	PassAccessToken bool `yaml:"pass_access_token"`
}

// LoginURLHeader carries, on a forward-auth 401, the URL that signs the
// user in and returns to the original request: the proxy redirects the
// browser there (nginx: auth_request_set $login $upstream_http_x_bffgate_login_url).
const LoginURLHeader = "X-Bffgate-Login-Url"

// Headers a trusted proxy describes the original request with.
var (
	originalURIHeaders    = []string{"X-Original-URI", "X-Forwarded-Uri"}
	originalMethodHeaders = []string{"X-Original-Method", "X-Forwarded-Method"}
	forwardedHeaders      = append(append([]string{fiber.HeaderXForwardedHost}, originalURIHeaders...), originalMethodHeaders...)
)

// faAnswerHeaders are headers of the forward-auth answer an identity
// header may not take (managedHeaders are refused too).
var faAnswerHeaders = []string{"set-cookie", "cache-control", "content-type", "location", "www-authenticate", "x-bffgate-login-url"}

// faRule is a compiled forward-auth rule.
type faRule struct {
	ForwardAuthRule
	name   string // host + prefix, the metrics label and log value
	host   string // lower case, "" for any
	prefix string // without its trailing slash, "" for "/"
	rules  *authz.Decider
	id     *identity
}

// matches reports whether r covers path.
func (r *faRule) matches(path string) bool {
	return r.prefix == "" || path == r.prefix || strings.HasPrefix(path, r.prefix+"/")
}

// hostMatches reports whether the rule's host is host (host[:port]).
func (r *faRule) hostMatches(host string) bool {
	host = strings.ToLower(host)
	if r.host == host {
		return true
	}
	if strings.Contains(r.host, ":") {
		return false
	}
	h, _, err := net.SplitHostPort(host)
	return err == nil && h == r.host
}

// forwardAuth is the compiled configuration of the endpoint.
type forwardAuth struct {
	rules   []*faRule
	trusted []netip.Prefix
}

// newForwardAuth compiles cfg (checked by Config.check: compiling cannot
// fail on the rules; the trusted proxies are parsed here).
func (g *Gateway) newForwardAuth() (*forwardAuth, error) {
	fa := &forwardAuth{}
	for i, s := range g.cfg.Proxy.TrustedProxies {
		p, err := parseTrustedProxy(s)
		if err != nil {
			return nil, fmt.Errorf("bff: trusted_proxies[%d]: %q is neither an IP nor a CIDR", i, s)
		}
		fa.trusted = append(fa.trusted, p)
	}
	for _, r := range g.cfg.ForwardAuth.Rules {
		d, err := authz.Compile(r.Rules)
		if err != nil {
			return nil, fmt.Errorf("bff: forward_auth rule %s%s: %w", r.Host, r.Prefix, err)
		}
		fr := &faRule{ForwardAuthRule: r, name: r.Host + r.Prefix, host: strings.ToLower(r.Host),
			prefix: strings.TrimSuffix(r.Prefix, "/"), rules: d}
		if !r.Identity.empty() {
			aud := g.pub.String() + r.Prefix
			if r.Host != "" {
				aud = g.pub.Scheme + "://" + r.Host + r.Prefix
			}
			fr.id = &identity{IdentityHeaders: r.Identity, aud: aud, source: r.Rules.ClaimsFrom, signer: g.signer}
		}
		fa.rules = append(fa.rules, fr)
	}
	return fa, nil
}

// parseTrustedProxy reads an IP or a CIDR.
func parseTrustedProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (fa *forwardAuth) trustedPeer(c *fiber.Ctx) bool {
	ip, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range fa.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// match returns the rule for host and path, or nil.
func (fa *forwardAuth) match(host, path string) *faRule {
	var best *faRule
	for _, r := range fa.rules {
		if r.host != "" && !r.hostMatches(host) || !r.matches(path) {
			continue
		}
		if best == nil || (r.host != "") != (best.host != "") && r.host != "" ||
			(r.host != "") == (best.host != "") && len(r.prefix) > len(best.prefix) ||
			// Of one prefix on host and host:port, the rule naming the
			// port is the more specific, whatever the order of the list.
			len(r.prefix) == len(best.prefix) && strings.Contains(r.host, ":") && !strings.Contains(best.host, ":") && best.host != "" {
			best = r
		}
	}
	return best
}

// original is the request a forward-auth call asks about.
type original struct {
	method, host string
	uri          string // path and query as the proxy sent them
	path         string // canonical path
}

// returnURL is the original request's path and query: where a login
// returns.
func (o original) returnURL() string { return o.uri }

// errConflict: a trusted proxy sent two different values for one fact.
var errConflict = errors.New("the proxy sent different values in two headers for the original request")

// readOriginal reads the original request from c: from a trusted proxy
// its headers (or, without them, the path under the auth endpoint, as
// Envoy's ext_authz path_prefix sends it); from anyone else the auth
// request itself.
func (g *Gateway) readOriginal(c *fiber.Ctx, trusted bool) (original, error) {
	o := original{method: c.Method(), host: string(c.Request().Host()), uri: string(c.Request().RequestURI())}
	if !trusted {
		return o, nil
	}
	one := func(names []string) (string, error) {
		v := ""
		for _, n := range names {
			got := c.Get(n)
			if got == "" {
				continue
			}
			if v != "" && got != v {
				return "", fmt.Errorf("%w: %s", errConflict, strings.Join(names, " and "))
			}
			v = got
		}
		return v, nil
	}
	uri, err := one(originalURIHeaders)
	if err != nil {
		return o, err
	}
	method, err := one(originalMethodHeaders)
	if err != nil {
		return o, err
	}
	host := ""
	if v := c.Get(fiber.HeaderXForwardedHost); v != "" {
		// A list (proxies chained): the first is the client's.
		v, _, _ = strings.Cut(v, ",")
		host = strings.TrimSpace(v)
	}
	if auth := g.base + "/auth/"; strings.HasPrefix(o.uri, auth) {
		// Envoy: path_prefix + the original path; method and Host are
		// the original request's own. A header saying otherwise is a
		// visitor's copy the proxy passed on (ext_authz forwards every
		// header allowed_headers lets through): it must not choose what
		// is decided.
		o.uri = o.uri[len(auth)-1:]
		switch {
		case uri != "" && uri != o.uri:
			return o, fmt.Errorf("%w: the path after %s and %s", errConflict, auth, strings.Join(originalURIHeaders, " or "))
		case method != "" && !strings.EqualFold(method, o.method):
			return o, fmt.Errorf("%w: the request's method and %s", errConflict, strings.Join(originalMethodHeaders, " or "))
		case host != "" && !strings.EqualFold(host, o.host):
			return o, fmt.Errorf("%w: the request's Host and %s", errConflict, fiber.HeaderXForwardedHost)
		}
		return o, nil
	}
	if uri != "" {
		o.uri = uri
	}
	if method != "" {
		o.method = strings.ToUpper(method)
	}
	if host != "" {
		o.host = host
	}
	// X-Forwarded-Proto is not read: the login URL and the assertion's
	// audience come from the public URL, whose scheme the browser uses.
	return o, nil
}

// sentForwarded reports whether c carries any header that describes an
// original request.
func sentForwarded(c *fiber.Ctx) bool {
	return slices.ContainsFunc(forwardedHeaders, func(h string) bool { return c.Get(h) != "" })
}

// parseOriginalURI reads a proxy's URI (origin-form, or absolute as some
// send it): its origin-form (path and query, where a login returns) and
// its path, checked and canonicalised as the API routes' are.
func parseOriginalURI(uri string) (requestURI, path string, err error) {
	if !strings.HasPrefix(uri, "/") {
		u, err := url.Parse(uri)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", "", errors.New("the original URI is neither a path nor an http(s) URL")
		}
		uri = u.RequestURI()
	}
	raw := uri
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	path, err = proxy.CanonicalPath([]byte(raw))
	return uri, path, err
}

// faDecision is one forward-auth decision, for the log line and metrics.
type faDecision struct {
	rule, sub, result, reason string
	dec                       authz.Decision
}

// forwardAuthHandler answers {base}/auth (any method, and any path under
// it for Envoy): 200 with the identity headers when the rule for the
// original request lets the session's user through, 401 with the login
// URL when there is no session (or, with ?login=redirect, a 302 to it for
// a browser's navigation: Traefik passes the answer to the browser), 403
// when the rule denies.
func (g *Gateway) forwardAuthHandler(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	trusted := g.fa.trustedPeer(c)
	if !trusted && sentForwarded(c) {
		g.log.LogAttrs(c.UserContext(), slog.LevelWarn, "forward auth: headers describing an original request came from a peer not in trusted_proxies; ignored",
			slog.String("request_id", obs.RequestID(c)), slog.String("peer", c.Context().RemoteIP().String()))
	}
	o, err := g.readOriginal(c, trusted)
	d := faDecision{rule: "none"}
	if err != nil {
		d.result, d.reason = "denied", "conflicting_headers"
		return g.faDeny(c, o, d, err)
	}
	if o.uri, o.path, err = parseOriginalURI(o.uri); err != nil {
		d.result, d.reason = "denied", "invalid_path"
		return g.faDeny(c, o, d, err)
	}
	bp := strings.ToLower(g.base)
	if lp := strings.ToLower(o.path); lp == bp || strings.HasPrefix(lp, bp+"/") {
		// The gateway's own endpoints are never a forward-auth target:
		// this is also where a request from an untrusted peer, decided
		// on the auth endpoint's own URI, ends.
		d.result, d.reason = "denied", "gateway_path"
		if !trusted {
			d.reason = "untrusted_peer"
		}
		return g.faDeny(c, o, d, nil)
	}
	r := g.fa.match(o.host, o.path)
	if r == nil {
		d.result, d.reason = "denied", "no_rule"
		return g.faDeny(c, o, d, nil)
	}
	d.rule = r.name

	handle, s, err := g.sessionOf(c)
	if err != nil {
		d.result, d.reason = "error", asError(err).Code
		g.faLog(c, o, d, err)
		return writeError(c, asError(err))
	}
	if s == nil {
		d.result = "unauthenticated"
		return g.faLogin(c, o, d, g.loginRequired())
	}
	d.sub = s.Subject
	if r.PassAccessToken || r.rules.Source() == authz.SourceAccessToken {
		// The token the proxy sends, or whose claims decide, must be one
		// the upstream still takes.
		if _, s, err = g.fresh(c, handle, s, false); err != nil {
			e := asError(err)
			if e.Status == fiber.StatusUnauthorized {
				d.result, d.reason = "unauthenticated", e.Code
				return g.faLogin(c, o, d, e)
			}
			d.result, d.reason = "error", e.Code
			g.faLog(c, o, d, err)
			return writeError(c, e)
		}
	}
	// One decode serves the rules and the identity headers: both read
	// the rule's claims_from.
	claims, cerr := g.claims.claims(r.Rules.ClaimsFrom, s)
	if r.rules != nil {
		if cerr != nil {
			g.log.LogAttrs(c.UserContext(), slog.LevelWarn, "authorization claims unreadable",
				slog.String("request_id", obs.RequestID(c)), slog.String("rule", r.name),
				slog.String("claims_from", string(r.rules.Source())), slog.String("sub", s.Subject), slog.Any("err", cerr))
		}
		d.dec = r.rules.Decide(authz.Input{Claims: claims, Method: o.method, Path: o.path, Host: o.host})
		if !d.dec.Allowed {
			d.result, d.reason = "denied", "rule"
			if d.dec.Err != nil {
				d.result = "error"
			}
			return g.faDeny(c, o, d, d.dec.Err)
		}
	}
	if r.id != nil {
		h, err := r.id.headersFrom(s, claims, g.now())
		if cerr != nil {
			err = cerr
		}
		if err != nil {
			d.result, d.reason = "error", "identity_unavailable"
			g.faLog(c, o, d, err)
			return writeError(c, newError(fiber.StatusBadGateway, "identity_unavailable",
				"the gateway could not build the identity headers for this rule; the error is in its log"))
		}
		// Every configured header is in the answer, empty when the claim
		// is missing: a proxy that copies named headers must find each
		// (Caddy 2.6 copies its placeholder's text for a missing one, and
		// later releases the browser's own copy); nginx sends no header
		// for an empty value.
		for _, n := range r.Identity.names() {
			if n[1] != "" {
				c.Set(n[1], "")
			}
		}
		for _, x := range h {
			c.Set(x.Name, x.Value)
		}
	}
	if r.PassAccessToken && s.AccessToken != "" {
		c.Set(fiber.HeaderAuthorization, "Bearer "+s.AccessToken)
	}
	d.result = "allowed"
	g.faLog(c, o, d, nil)
	return c.SendStatus(fiber.StatusOK)
}

// faDeny answers 403 {"error":"forbidden"}: no detail for whoever sees
// the answer, everything in the log line.
func (g *Gateway) faDeny(c *fiber.Ctx, o original, d faDecision, err error) error {
	g.faLog(c, o, d, err)
	return writeError(c, errForbidden)
}

// faLogin answers a request without a (live) session: 401 e with the
// login URL that returns to the original request, in login_url and in
// LoginURLHeader; with ?login=redirect, a browser's navigation gets a 302
// to it instead.
func (g *Gateway) faLogin(c *fiber.Ctx, o original, d faDecision, e *Error) error {
	g.faLog(c, o, d, nil)
	login := loginURLFor(g.pub.String(), g.base, o.returnURL())
	c.Set(LoginURLHeader, login)
	if c.Query("login") == "redirect" && navigation(c) {
		return c.Redirect(login, fiber.StatusFound)
	}
	ec := *e
	ec.LoginURL = login
	return writeError(c, &ec)
}

// loginURLFor is the login URL on the public origin pub that returns to
// uri, the original request's path and query, when it passes the returnUrl
// rules (validReturnURL: a local path); to "/" otherwise.
func loginURLFor(pub, basePath, uri string) string {
	login := pub + basePath + "/login"
	if ret, err := validReturnURL(uri, basePath); err == nil && ret != "/" {
		login += "?returnUrl=" + url.QueryEscape(ret)
	}
	return login
}

// navigation reports whether the original request (whose headers the
// proxies copy onto the auth request) is a browser loading a page rather
// than a script's fetch, which gets the 401 JSON: Fetch Metadata's
// Sec-Fetch-Mode when the browser sends it, else an Accept naming HTML.
func navigation(c *fiber.Ctx) bool {
	if m := c.Get("Sec-Fetch-Mode"); m != "" {
		return strings.EqualFold(m, "navigate")
	}
	return strings.Contains(c.Get(fiber.HeaderAccept), "text/html")
}

// faLog counts a decision and writes its log line: rule, subject and
// result, never a token or a cookie.
func (g *Gateway) faLog(c *fiber.Ctx, o original, d faDecision, err error) {
	g.met.forwardAuth.WithLabelValues(d.rule, d.result).Inc()
	level := slog.LevelInfo
	if d.result == "error" {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("request_id", obs.RequestID(c)), slog.String("rule", d.rule), slog.String("result", d.result),
		slog.String("sub", d.sub), slog.String("method", o.method), slog.String("host", o.host), slog.String("path", o.path),
	}
	if d.reason != "" {
		attrs = append(attrs, slog.String("reason", d.reason))
	}
	if d.dec.Rule != "" {
		attrs = append(attrs, slog.String("authz_rule", d.dec.Rule))
		if d.dec.Text != "" {
			attrs = append(attrs, slog.String("condition", d.dec.Text))
		}
	}
	if err != nil {
		attrs = append(attrs, slog.Any("err", err))
	}
	g.log.LogAttrs(c.UserContext(), level, "forward auth decision", attrs...)
}

// checkForwardAuth validates gateway.forward_auth.
func (cfg *Config) checkForwardAuth() []error {
	var errs []error
	seen := map[string]int{}
	bp := strings.ToLower(cfg.endpointBase())
	for i, r := range cfg.ForwardAuth.Rules {
		key := fmt.Sprintf("forward_auth.rules[%d]", i)
		bad := func(k, format string, args ...any) { errs = append(errs, ferr(key+k, format, args...)) }
		if r.Host != "" {
			h := r.Host
			if strings.Contains(h, ":") {
				var port string
				var err error
				if h, port, err = net.SplitHostPort(r.Host); err != nil || !digits(port) {
					h = ""
				}
			}
			if h == "" || strings.ContainsAny(r.Host, "/?#@ *\\") {
				bad(".host", "%q must be a host name, optionally with a port (app.example.com, app.example.com:8443), without a scheme or a path", r.Host)
			}
		}
		p := strings.ToLower(strings.TrimSuffix(r.Prefix, "/"))
		switch {
		case !strings.HasPrefix(r.Prefix, "/") || strings.ContainsAny(r.Prefix, "?#%\\ *"):
			bad(".prefix", "%q must be a path starting with / (e.g. /app/, or / for everything)", r.Prefix)
		case p != "" && (p == bp || strings.HasPrefix(p, bp+"/")):
			bad(".prefix", "%q is under the gateway's base_path %q, whose endpoints forward auth never covers", r.Prefix, cfg.endpointBase())
		}
		k := strings.ToLower(r.Host) + " " + p
		if j, dup := seen[k]; dup {
			bad(".prefix", "%q on host %q is also forward_auth.rules[%d]", r.Prefix, r.Host, j)
		}
		seen[k] = i
		if _, err := authz.Compile(r.Rules); err != nil {
			for _, e := range unjoin(err) {
				var fe *authz.FieldError
				if errors.As(e, &fe) {
					errs = append(errs, ferr(key+"."+fe.Path, "%s", fe.Msg))
				} else {
					errs = append(errs, e)
				}
			}
		}
		if r.Rules.ClaimsFrom == authz.SourceUserinfo && !cfg.Provider.UseUserinfo {
			bad(".claims_from", "userinfo needs gateway.provider.use_userinfo: true (the session has no userinfo claims otherwise)")
		}
		errs = append(errs, checkIdentityHeaders(key+".identity_headers", r.Identity)...)
		for _, n := range r.Identity.names() {
			if slices.Contains(faAnswerHeaders, strings.ToLower(n[1])) {
				bad(".identity_headers."+n[0], "%q is a header of the answer itself; choose another name such as X-Auth-Request-User", n[1])
			}
		}
	}
	return errs
}

func digits(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, b := range []byte(s) {
		if b < '0' || b > '9' {
			return false
		}
	}
	return true
}

// sessionOf is what the SPA guard and forward auth need: the request's
// session, slid, or nil.
func (g *Gateway) sessionOf(c *fiber.Ctx) (string, *session.Session, error) {
	handle, s, err := g.current(c)
	if err != nil || s == nil {
		return handle, s, err
	}
	return g.slide(c, handle, s)
}
