package bff

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/session"
)

// AuthMethod names how the callers of a route prove who they are.
type AuthMethod string

const (
	// AuthSession is the gateway's session cookie (browsers), checked
	// with the anti-CSRF rule.
	AuthSession AuthMethod = "session"
	// AuthBearer is an access token in the Authorization header
	// (RFC 6750 §2.1) from a non-browser caller: an agent, an MCP client,
	// a service. It must be for the route's resource (RFC 8707).
	AuthBearer AuthMethod = "bearer"
)

// RouteBearer are a route's bearer-token settings. Its yaml tags are keys
// of gateway.routes[] (inline).
type RouteBearer struct {
	// Auth lists what the route accepts: session (the default), bearer,
	// or both.
	Auth []AuthMethod `yaml:"auth"`
	// Resource is the route's resource identifier (RFC 8707 §2, RFC 9728
	// §2): a bearer token must carry it in aud. Default: public_url +
	// the prefix without its trailing slash (https://gw.example/mcp).
	Resource string `yaml:"resource"`
	// Scopes every bearer token must hold (all of them); a token lacking
	// one is 403 insufficient_scope naming them (RFC 6750 §3.1).
	Scopes []string `yaml:"scopes"`
	// ScopeImplies declares the resource's scope hierarchy: a broader
	// scope (the key) implies the narrower ones listed (and, in turn,
	// what they imply), so a token holding mcp:admin satisfies a call that
	// needs mcp:tools when scope_implies: {"mcp:admin": ["mcp:tools"]}
	// (MCP authorization 2026-07-28: servers account for scope
	// hierarchies). Scopes are otherwise compared exactly: a name alone
	// (mcp, mcp:tools) implies nothing.
	ScopeImplies map[string][]string `yaml:"scope_implies"`
	// Introspect asks the provider's introspection endpoint (RFC 7662)
	// about every bearer token, with the gateway's client credentials, so
	// that a revoked token is refused at once; opaque tokens need it.
	// Without it a JWT access token is checked locally (signature with
	// the provider's JWKS, iss, aud, exp) and stays valid until it
	// expires.
	Introspect bool `yaml:"introspect"`
}

func (b RouteBearer) accepts(m AuthMethod) bool {
	if len(b.Auth) == 0 {
		return m == AuthSession
	}
	return slices.Contains(b.Auth, m)
}

// checkBearer validates the bearer keys of routes[i].
func checkBearer(i int, r Route) []error {
	at := func(path string) string { return fmt.Sprintf("routes[%d].%s", i, path) }
	var errs []error
	b := r.Bearer
	seen := map[AuthMethod]bool{}
	for j, m := range b.Auth {
		switch m {
		case AuthSession, AuthBearer:
		default:
			errs = append(errs, ferr(at(fmt.Sprintf("auth[%d]", j)), "%q must be session or bearer", m))
		}
		if seen[m] {
			errs = append(errs, ferr(at(fmt.Sprintf("auth[%d]", j)), "%q is listed twice", m))
		}
		seen[m] = true
	}
	if b.Auth != nil && len(b.Auth) == 0 {
		errs = append(errs, ferr(at("auth"), "is empty: list session, bearer or both (leave it out for session)"))
	}
	if !b.accepts(AuthBearer) {
		if b.Resource != "" || len(b.Scopes) > 0 || b.Introspect || len(b.ScopeImplies) > 0 {
			errs = append(errs, ferr(at("auth"), "resource, scopes, scope_implies and introspect apply to bearer tokens: add bearer to auth"))
		}
		return errs
	}
	if b.Resource != "" {
		u, err := url.Parse(b.Resource)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" || strings.Contains(b.Resource, "#") || u.RawQuery != "" {
			errs = append(errs, ferr(at("resource"), "%q must be an absolute http(s) URI without a query or fragment (RFC 8707 section 2), e.g. https://gw.example.com/mcp", b.Resource))
		}
	}
	for j, s := range b.Scopes {
		if err := checkResourceScope(s); err != nil {
			errs = append(errs, ferr(at(fmt.Sprintf("scopes[%d]", j)), "%v", err))
		}
	}
	for _, k := range sortedKeys(b.ScopeImplies) {
		if err := checkResourceScope(k); err != nil {
			errs = append(errs, ferr(at("scope_implies"), "key %v", err))
		}
		if len(b.ScopeImplies[k]) == 0 {
			errs = append(errs, ferr(at("scope_implies."+k), "is empty: list the narrower scopes %q implies", k))
		}
		for j, s := range b.ScopeImplies[k] {
			if err := checkResourceScope(s); err != nil {
				errs = append(errs, ferr(at(fmt.Sprintf("scope_implies.%s[%d]", k, j)), "%v", err))
			}
		}
	}
	// The received token never goes upstream (MCP authorization, token
	// passthrough is forbidden; RFC 9700 §4.10 on audience restriction):
	// the route must say what goes instead.
	if (r.Policy == PolicyUser || r.Policy == PolicyUserOptional) && !r.Token.Exchange.enabled() {
		errs = append(errs, ferr(at("auth"), "bearer callers' tokens are never passed through: set token.exchange (a token exchanged for the upstream) or policy client (the gateway's own token) or none"))
	}
	return errs
}

// routeResource is r's resource identifier: Resource, or the public URL
// and the prefix without its trailing slash (https://gw.example/mcp; a
// route at / is https://gw.example/).
func routeResource(pub *url.URL, r Route) string {
	return r.ResourceURL(pub.String())
}

// ResourceURL is the resource identifier (RFC 8707) of a route that takes
// bearer tokens, given the gateway's public URL: Resource when set, else
// publicURL and the prefix without its trailing slash. A configuration
// loader registers it at the embedded issuer.
func (r Route) ResourceURL(publicURL string) string {
	if r.Bearer.Resource != "" {
		return r.Bearer.Resource
	}
	publicURL = strings.TrimSuffix(publicURL, "/")
	if p := normPrefix(r.Prefix); p != "/" {
		return publicURL + p
	}
	return publicURL + "/"
}

// AcceptsBearer reports whether the route takes bearer tokens.
func (r Route) AcceptsBearer() bool { return r.Bearer.accepts(AuthBearer) }

// BearerScopes lists the scopes the route's bearer tokens may need: the
// route's and its tools', as its protected resource metadata lists them.
func (r Route) BearerScopes() []string {
	out := slices.Clone(r.Bearer.Scopes)
	for _, k := range sortedKeys(r.MCP.Tools.Scopes) {
		for _, s := range r.MCP.Tools.Scopes[k] {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// resourcePath is the path under which a resource's metadata is
// published after prmPath: its path without a trailing slash.
func resourcePath(u *url.URL) string {
	return strings.TrimSuffix(u.EscapedPath(), "/")
}

// checkResources refuses two bearer routes with one resource path: one
// metadata URL would have to describe both.
func checkResources(pub *url.URL, routes []Route) []error {
	var errs []error
	seen := map[string]int{}
	for i, r := range routes {
		if !r.Bearer.accepts(AuthBearer) {
			continue
		}
		u, err := url.Parse(routeResource(pub, r))
		if err != nil {
			continue // reported by checkBearer
		}
		p := resourcePath(u)
		if j, dup := seen[p]; dup {
			errs = append(errs, ferr(fmt.Sprintf("routes[%d].resource", i), "%q has the path of routes[%d]'s resource; each bearer route needs its own, where its metadata is published (%s%s)", u.String(), j, prmPath, p))
		}
		seen[p] = i
	}
	return errs
}

// checkResourceScope reports a scope a route may not require or name in
// its hierarchy: not an RFC 6749 §3.3 scope-token, or offline_access,
// which asks the provider for a refresh token and is no resource's
// requirement (MCP authorization 2026-07-28: a protected resource names
// it neither in a challenge nor in its metadata).
func checkResourceScope(s string) error {
	switch {
	case !validScopeToken(s):
		return fmt.Errorf("%q is not a scope token (RFC 6749 section 3.3)", s)
	case s == scopeOfflineAccess:
		return fmt.Errorf("%q asks the provider for a refresh token; it is no resource's scope: remove it (MCP clients ask for it themselves when they want one)", s)
	}
	return nil
}

// scopeOfflineAccess is OpenID Connect's scope for a refresh token.
const scopeOfflineAccess = "offline_access"

// validScopeToken reports whether s is an RFC 6749 §3.3 scope-token.
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// bearerRoute is a route's compiled bearer settings.
type bearerRoute struct {
	prefix     string
	resource   string
	metadata   string // the RFC 9728 metadata URL
	scopes     []string
	implies    map[string][]string // the scope hierarchy, closed: each scope to all it implies
	introspect bool
	session    bool // the route accepts the session cookie too
	policy     Policy
	mcp        *mcpPolicy // nil: not an MCP route
}

// satisfies reports whether a token holding have may make a call that
// needs every scope of want: each is held, or implied by one held (the
// route's scope_implies).
func (b *bearerRoute) satisfies(have, want []string) bool {
	for _, s := range want {
		if !slices.Contains(have, s) && !slices.ContainsFunc(have, func(h string) bool { return slices.Contains(b.implies[h], s) }) {
			return false
		}
	}
	return true
}

// closeImplies returns the transitive closure of a scope hierarchy: each
// scope mapped to every scope it implies, directly or through others
// (cycles are harmless: a scope then implies itself too).
func closeImplies(direct map[string][]string) map[string][]string {
	if len(direct) == 0 {
		return nil
	}
	out := make(map[string][]string, len(direct))
	for k := range direct {
		var all []string
		todo := slices.Clone(direct[k])
		for len(todo) > 0 {
			s := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if slices.Contains(all, s) {
				continue
			}
			all = append(all, s)
			todo = append(todo, direct[s]...)
		}
		out[k] = all
	}
	return out
}

// withoutOfflineAccess is scopes without offline_access, which a
// protected resource names neither in a challenge nor in its metadata
// (a token that has it keeps it: the client asks for it again itself).
func withoutOfflineAccess(scopes []string) []string {
	return slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return s == scopeOfflineAccess })
}

// supportedScopes are the scopes of the route's metadata: the route's
// and its tools'.
func (b *bearerRoute) supportedScopes() []string {
	out := slices.Clone(b.scopes)
	if b.mcp != nil {
		for _, s := range b.mcp.allScopes() {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// bearerMeta is the discovery fields bearer verification reads.
type bearerMeta struct {
	JWKSURI              string   `json:"jwks_uri"`
	Introspection        string   `json:"introspection_endpoint"`
	IntrospectionMethods []string `json:"introspection_endpoint_auth_methods_supported"`
}

// bearerVerifier checks access tokens presented to bearer routes: JWT
// access tokens (RFC 9068) against the provider's keys, and, where a
// route asks, every token at the introspection endpoint (RFC 7662).
type bearerVerifier struct {
	// verified caches JWTs this verifier accepted (by a hash of the
	// token and the resource) until they expire: a signature check costs
	// more than the rest of a call. Introspected tokens are not cached
	// (a revocation is seen at once).
	verified verifiedCache

	issuer       string
	keys         *oidc.RemoteKeySet
	meta         bearerMeta
	clientID     string
	clientSecret string
	client       *http.Client
	now          func() time.Time
}

// bearerLeeway is the clock skew tolerated on exp and nbf.
const bearerLeeway = 30 * time.Second

// Errors of bearer verification: each is a 401 invalid_token for the
// caller, the reason in the log.
var (
	errTokenInvalid     = errors.New("invalid token")
	errTokenExpired     = errors.New("token expired")
	errTokenAudience    = errors.New("token not for this resource")
	errTokenUnavailable = errors.New("token verification unavailable")
)

// principal is a verified bearer token's caller.
type principal struct {
	Subject  string
	ClientID string
	Scopes   []string
	Claims   map[string]any
	Client   bool // a client_credentials token: no user
}

// verify checks raw for a route whose resource is resource.
func (v *bearerVerifier) verify(ctx context.Context, raw, resource string, introspect bool) (*principal, error) {
	if len(raw) > 16<<10 {
		return nil, fmt.Errorf("%w: token of %d bytes", errTokenInvalid, len(raw))
	}
	var p *principal
	if strings.Count(raw, ".") == 2 {
		key := sha256.Sum256([]byte(resource + "\x00" + raw))
		now := v.now()
		if p = v.verified.get(key, now); p == nil {
			var err error
			var exp time.Time
			if p, exp, err = v.verifyJWT(ctx, raw, resource); err != nil {
				return nil, err
			}
			v.verified.put(key, p, exp.Add(bearerLeeway), now)
		}
	} else if !introspect {
		return nil, fmt.Errorf("%w: not a JWT, and the route does not introspect (introspect: true reads opaque tokens)", errTokenInvalid)
	}
	if introspect {
		ip, err := v.introspect(ctx, raw, resource)
		if err != nil {
			return nil, err
		}
		if p == nil {
			p = ip
		}
	}
	return p, nil
}

// verifyJWT is RFC 9068 §4: typ at+jwt, the provider's signature, iss,
// aud holding the resource (RFC 8707), exp.
func (v *bearerVerifier) verifyJWT(ctx context.Context, raw, resource string) (*principal, time.Time, error) {
	head, _, _ := strings.Cut(raw, ".")
	hb, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: header is not base64url", errTokenInvalid)
	}
	var h struct {
		Typ string `json:"typ"`
	}
	if json.Unmarshal(hb, &h) != nil {
		return nil, time.Time{}, fmt.Errorf("%w: header is not JSON", errTokenInvalid)
	}
	if t := strings.TrimPrefix(strings.ToLower(h.Typ), "application/"); t != "at+jwt" {
		// An ID token signed by the same keys is no access token (RFC
		// 8725 §3.11).
		return nil, time.Time{}, fmt.Errorf("%w: header typ %q, want at+jwt", errTokenInvalid, h.Typ)
	}
	if v.keys == nil {
		return nil, time.Time{}, fmt.Errorf("%w: the provider's discovery names no jwks_uri", errTokenUnavailable)
	}
	// RemoteKeySet accepts asymmetric algorithms only (no none, no HMAC).
	payload, err := v.keys.VerifySignature(ctx, raw)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: signature: %v", errTokenInvalid, err)
	}
	var std jwt.Claims
	var extra struct {
		ClientID string          `json:"client_id"`
		Azp      string          `json:"azp"`
		Scope    json.RawMessage `json:"scope"`
		Scp      []string        `json:"scp"`
		Gty      string          `json:"gty"`
	}
	var all map[string]any
	if json.Unmarshal(payload, &std) != nil || json.Unmarshal(payload, &extra) != nil || json.Unmarshal(payload, &all) != nil {
		return nil, time.Time{}, fmt.Errorf("%w: claims are not a JSON object of the expected types", errTokenInvalid)
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, Time: v.now()}, bearerLeeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, time.Time{}, fmt.Errorf("%w: exp %s", errTokenExpired, std.Expiry.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return nil, time.Time{}, fmt.Errorf("%w: %v", errTokenInvalid, err)
	case std.Expiry == nil:
		return nil, time.Time{}, fmt.Errorf("%w: no exp claim", errTokenInvalid)
	case std.Subject == "":
		return nil, time.Time{}, fmt.Errorf("%w: no sub claim", errTokenInvalid)
	case !slices.Contains([]string(std.Audience), resource):
		return nil, time.Time{}, fmt.Errorf("%w: aud %q, want %q", errTokenAudience, []string(std.Audience), resource)
	}
	scopes, ok := scopeList(extra.Scope, extra.Scp)
	if !ok {
		return nil, time.Time{}, fmt.Errorf("%w: scope claim is neither a string nor a list", errTokenInvalid)
	}
	client := extra.ClientID
	if client == "" {
		client = extra.Azp
	}
	return &principal{Subject: std.Subject, ClientID: client, Scopes: scopes, Claims: all,
		Client: extra.Gty == "client_credentials" || extra.Gty == "client-credentials"}, std.Expiry.Time(), nil
}

// verifiedCache holds accepted JWTs until their exp. It is bounded: when
// full, expired entries go, and if none has, all of them.
type verifiedCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]verifiedEntry
}

type verifiedEntry struct {
	p     *principal
	until time.Time
}

const verifiedCacheMax = 10000

func (c *verifiedCache) get(key [sha256.Size]byte, now time.Time) *principal {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || !now.Before(e.until) {
		return nil
	}
	return e.p
}

func (c *verifiedCache) put(key [sha256.Size]byte, p *principal, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[sha256.Size]byte]verifiedEntry{}
	}
	if len(c.m) >= verifiedCacheMax {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= verifiedCacheMax {
			clear(c.m)
		}
	}
	c.m[key] = verifiedEntry{p: p, until: until}
}

func scopeList(scope json.RawMessage, scp []string) ([]string, bool) {
	if len(scope) == 0 || string(scope) == "null" {
		return scp, true
	}
	var s string
	if json.Unmarshal(scope, &s) == nil {
		return strings.Fields(s), true
	}
	var l []string
	if json.Unmarshal(scope, &l) == nil {
		return l, true
	}
	return nil, false
}

// introspect asks the provider about raw (RFC 7662 §2) and applies the
// resource server's own checks to the answer (§4): issuer, audience,
// expiry.
func (v *bearerVerifier) introspect(ctx context.Context, raw, resource string) (*principal, error) {
	if v.meta.Introspection == "" {
		return nil, fmt.Errorf("%w: the provider's discovery names no introspection_endpoint", errTokenUnavailable)
	}
	form := url.Values{"token": {raw}, "token_type_hint": {"access_token"}}
	basic := v.clientSecret != "" && (len(v.meta.IntrospectionMethods) == 0 || slices.Contains(v.meta.IntrospectionMethods, "client_secret_basic"))
	if !basic {
		form.Set("client_id", v.clientID)
		if v.clientSecret != "" {
			form.Set("client_secret", v.clientSecret)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.meta.Introspection, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errTokenUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(v.clientID), url.QueryEscape(v.clientSecret))
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", errTokenUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", errTokenUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: introspection answered %d (is the gateway's client allowed to introspect?)", errTokenUnavailable, resp.StatusCode)
	}
	var r struct {
		Active    bool            `json:"active"`
		Scope     string          `json:"scope"`
		ClientID  string          `json:"client_id"`
		TokenType string          `json:"token_type"`
		Exp       *float64        `json:"exp"`
		Nbf       *float64        `json:"nbf"`
		Sub       string          `json:"sub"`
		Aud       json.RawMessage `json:"aud"`
		Iss       string          `json:"iss"`
		Gty       string          `json:"gty"`
	}
	var all map[string]any
	if json.Unmarshal(body, &r) != nil || json.Unmarshal(body, &all) != nil {
		return nil, fmt.Errorf("%w: introspection answer is not JSON", errTokenUnavailable)
	}
	now := v.now()
	var aud jwt.Audience
	if len(r.Aud) > 0 && string(r.Aud) != "null" && json.Unmarshal(r.Aud, &aud) != nil {
		return nil, fmt.Errorf("%w: introspection aud is neither a string nor a list", errTokenInvalid)
	}
	switch {
	case !r.Active:
		return nil, fmt.Errorf("%w: introspection says active=false (expired, revoked or unknown)", errTokenInvalid)
	case r.TokenType == "refresh_token":
		return nil, fmt.Errorf("%w: a refresh token was sent as an access token", errTokenInvalid)
	case r.Iss != "" && r.Iss != v.issuer:
		return nil, fmt.Errorf("%w: introspection iss %q", errTokenInvalid, r.Iss)
	case !slices.Contains([]string(aud), resource):
		// RFC 8707: the token must name this resource; an answer that
		// states no aud cannot show it does.
		return nil, fmt.Errorf("%w: introspection aud %q, want %q", errTokenAudience, []string(aud), resource)
	case r.Exp != nil && now.After(time.Unix(int64(*r.Exp), 0).Add(bearerLeeway)):
		return nil, fmt.Errorf("%w: introspection exp is past", errTokenExpired)
	case r.Nbf != nil && now.Add(bearerLeeway).Before(time.Unix(int64(*r.Nbf), 0)):
		return nil, fmt.Errorf("%w: introspection nbf is in the future", errTokenInvalid)
	case r.Sub == "":
		return nil, fmt.Errorf("%w: introspection names no sub", errTokenInvalid)
	}
	return &principal{Subject: r.Sub, ClientID: r.ClientID, Scopes: strings.Fields(r.Scope), Claims: all,
		Client: r.Gty == "client_credentials" || r.Gty == "client-credentials"}, nil
}

// setupBearer compiles the routes' bearer settings and builds the
// verifier when one route accepts bearer tokens.
func (g *Gateway) setupBearer(ctx context.Context) error {
	g.bearers = map[string]*bearerRoute{}
	g.prm = map[string]*bearerRoute{}
	g.mcps = map[string]*mcpPolicy{}
	for _, r := range g.cfg.Routes {
		mp, err := compileMCP(r.MCP)
		if err != nil { // checked by fill: not reached
			return fmt.Errorf("bff: routes %s: %w", r.Prefix, err)
		}
		if mp != nil {
			g.mcps[normPrefix(r.Prefix)] = mp
		}
		if !r.Bearer.accepts(AuthBearer) {
			continue
		}
		res := routeResource(g.pub, r)
		u, _ := url.Parse(res) // checked by fill
		path := resourcePath(u)
		b := &bearerRoute{
			prefix: r.Prefix, resource: res, scopes: slices.Clone(r.Bearer.Scopes), introspect: r.Bearer.Introspect,
			implies: closeImplies(r.Bearer.ScopeImplies),
			session: r.Bearer.accepts(AuthSession), policy: r.Policy, mcp: mp,
			metadata: u.Scheme + "://" + u.Host + prmPath + path,
		}
		g.bearers[normPrefix(r.Prefix)] = b
		g.prm[path] = b
	}
	g.mcpCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_gateway_mcp_calls_total",
		Help: "MCP requests decided by the gateway on routes with an mcp policy, by route prefix, JSON-RPC method and decision (allowed, denied, insufficient_scope, invalid).",
	}, []string{"route", "method", "decision"})
	g.bearerAuth = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_gateway_bearer_auth_total",
		Help: "Bearer tokens presented to routes with auth bearer, by route prefix and result (accepted, missing, invalid, expired, wrong_audience, insufficient_scope, query_token, unavailable).",
	}, []string{"route", "result"})
	if g.cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{g.mcpCalls, g.bearerAuth} {
			if err := g.cfg.Registerer.Register(c); err != nil {
				return fmt.Errorf("bff: register metrics: %w", err)
			}
		}
	}
	if len(g.bearers) == 0 {
		return nil
	}
	v := &bearerVerifier{clientID: g.cfg.Provider.ClientID,
		clientSecret: g.cfg.Provider.ClientSecret, client: g.cfg.Provider.HTTPClient, now: g.now}
	var iss struct {
		Issuer string `json:"issuer"`
	}
	if err := g.provider.Claims(&iss); err != nil {
		return fmt.Errorf("bff: discovery document of %s: %w", g.cfg.Provider.IssuerURL, err)
	}
	v.issuer = iss.Issuer
	if err := g.provider.Claims(&v.meta); err != nil {
		return fmt.Errorf("bff: discovery document of %s: %w", g.cfg.Provider.IssuerURL, err)
	}
	if v.meta.JWKSURI != "" {
		v.keys = oidc.NewRemoteKeySet(oidc.ClientContext(context.WithoutCancel(ctx), g.cfg.Provider.HTTPClient), v.meta.JWKSURI)
	}
	for prefix, b := range g.bearers {
		if b.introspect && v.meta.Introspection == "" {
			return fmt.Errorf("bff: route %s has introspect: true, but the provider's discovery names no introspection_endpoint", prefix)
		}
	}
	g.bearer = v
	return nil
}

// challenge sets the route's WWW-Authenticate (RFC 6750 §3, RFC 9728
// §5.1): where its metadata is, the scope to ask for, and an error code
// when a token was presented. A 401 names the route's own scopes, not
// its tools': a client asks for what the route needs, and for more when
// a tool asks (403 insufficient_scope), rather than for every privilege
// at once (MCP authorization, "Scope selection strategy").
func (b *bearerRoute) challenge(c *fiber.Ctx, code, desc string, scope []string) {
	var sb strings.Builder
	sb.WriteString(`Bearer resource_metadata="` + b.metadata + `"`)
	if len(scope) > 0 {
		sb.WriteString(`, scope="` + strings.Join(scope, " ") + `"`)
	}
	if code != "" {
		sb.WriteString(`, error="` + code + `"`)
	}
	if desc != "" {
		sb.WriteString(`, error_description="` + desc + `"`)
	}
	c.Set(fiber.HeaderWWWAuthenticate, sb.String())
}

// bearerToken returns the token of an Authorization: Bearer header, and
// whether the header was a bearer one at all.
func bearerToken(c *fiber.Ctx) (string, bool) {
	h := c.Request().Header.Peek(fiber.HeaderAuthorization)
	if len(h) < 7 || !strings.EqualFold(string(h[:7]), "bearer ") {
		return "", false
	}
	return strings.TrimSpace(string(h[7:])), true
}

// forwardBearer serves a call to a route that accepts bearer tokens. It
// reports false when the call is a session one for forward to serve (a
// route that accepts the cookie too, and the request has no bearer token
// but a session cookie).
func (g *Gateway) forwardBearer(c *fiber.Ctx, r *proxy.Route, b *bearerRoute) (bool, error) {
	ctx := c.UserContext()
	// RFC 6750 §2.3 allows a token in the URI; it lands in logs and
	// Referer headers, so bearer routes refuse it (RFC 9700 §4.3.2, MCP
	// authorization: tokens MUST NOT be in the query string).
	args := c.Request().URI().QueryArgs()
	if args.Has("access_token") {
		g.bearerAuth.WithLabelValues(b.prefix, "query_token").Inc()
		g.log.LogAttrs(ctx, slog.LevelInfo, "bearer token in the query string refused",
			slog.String("request_id", obs.RequestID(c)), slog.String("route", b.prefix))
		b.challenge(c, "invalid_request", "send the access token in the Authorization header, never in the URL", b.scopes)
		return true, writeError(c, newError(fiber.StatusBadRequest, "invalid_request",
			"the access token was sent in the query string, which this gateway refuses (it ends up in logs); send it as Authorization: Bearer"))
	}
	raw, isBearer := bearerToken(c)
	if !isBearer {
		if b.session && (g.jar.readHandle(c) != "" || b.policy == PolicyUserOptional) {
			return false, nil
		}
		g.bearerAuth.WithLabelValues(b.prefix, "missing").Inc()
		b.challenge(c, "", "", b.scopes)
		e := newError(fiber.StatusUnauthorized, "unauthorized",
			"this route needs an access token for "+b.resource+" (Authorization: Bearer); its metadata is at "+b.metadata)
		if b.session {
			e = g.loginRequired()
		}
		return true, writeError(c, e)
	}
	p, err := g.bearer.verify(ctx, raw, b.resource, b.introspect)
	if err != nil {
		result := "invalid"
		switch {
		case errors.Is(err, errTokenExpired):
			result = "expired"
		case errors.Is(err, errTokenAudience):
			result = "wrong_audience"
		case errors.Is(err, errTokenUnavailable):
			result = "unavailable"
		}
		g.bearerAuth.WithLabelValues(b.prefix, result).Inc()
		if result == "unavailable" {
			g.log.LogAttrs(ctx, slog.LevelWarn, "bearer token could not be verified: provider unavailable",
				slog.String("request_id", obs.RequestID(c)), slog.String("route", b.prefix), slog.Any("err", err))
			return true, writeError(c, newError(fiber.StatusServiceUnavailable, "provider_unavailable",
				"the gateway cannot reach the sign-in provider to check the access token; retry shortly"))
		}
		g.log.LogAttrs(ctx, slog.LevelInfo, "bearer token refused", slog.String("request_id", obs.RequestID(c)),
			slog.String("route", b.prefix), slog.String("result", result), slog.Any("err", err))
		b.challenge(c, "invalid_token", "the access token is invalid, expired, revoked or not for this resource", b.scopes)
		return true, writeError(c, newError(fiber.StatusUnauthorized, "invalid_token",
			"the access token is invalid, expired, revoked or not for "+b.resource+"; get a new one (its metadata is at "+b.metadata+")"))
	}
	if !b.satisfies(p.Scopes, b.scopes) {
		g.bearerAuth.WithLabelValues(b.prefix, "insufficient_scope").Inc()
		return true, g.insufficientScope(c, b, p, b.scopes, "")
	}
	if rules := g.rules[normPrefix(r.Prefix)]; rules != nil {
		if e := g.decide(c, r.Prefix, rules, p.Claims, p.Subject); e != nil {
			g.bearerAuth.WithLabelValues(b.prefix, "forbidden").Inc()
			return true, writeError(c, e)
		}
	}
	g.bearerAuth.WithLabelValues(b.prefix, "accepted").Inc()
	if b.mcp != nil {
		if done, err := g.checkMCP(c, r.Prefix, b, b.mcp, p, ""); done {
			return true, err
		}
	}
	var src proxy.TokenSource
	switch {
	case g.exchanges[normPrefix(r.Prefix)] != nil:
		src = &bearerExchange{g: g, c: c, b: b, p: p, raw: raw, t: g.exchanges[normPrefix(r.Prefix)]}
	case b.policy == PolicyClient:
		src = &clientTokens{g: g, c: c, route: r.Prefix}
	default: // PolicyNone (checkBearer refuses user policies without exchange)
		src = proxy.Bearer("")
	}
	if err := g.proxy.ForwardWith(c, r, src); err != nil {
		return true, writeError(c, asError(err))
	}
	return true, nil
}

// insufficientScope answers 403 with the step-up challenge (RFC 6750
// §3.1, MCP authorization "Scope challenge handling"): the scope named
// is everything the call needs, the token's own scopes included, so that
// a client asking for exactly it loses nothing.
func (g *Gateway) insufficientScope(c *fiber.Ctx, b *bearerRoute, p *principal, need []string, tool string) error {
	scope := slices.Clone(p.Scopes)
	for _, s := range append(slices.Clone(b.scopes), need...) {
		if !slices.Contains(scope, s) {
			scope = append(scope, s)
		}
	}
	g.log.LogAttrs(c.UserContext(), slog.LevelInfo, "bearer token lacks a required scope", slog.String("request_id", obs.RequestID(c)),
		slog.String("route", b.prefix), slog.String("client_id", p.ClientID), slog.String("sub", p.Subject),
		slog.String("tool", clipLog(tool)), slog.Any("need", need))
	scope = withoutOfflineAccess(scope)
	b.challenge(c, "insufficient_scope", "the access token lacks a scope this call needs", scope)
	return writeError(c, newError(fiber.StatusForbidden, "insufficient_scope",
		"the access token lacks a scope this call needs; ask for: "+strings.Join(scope, " ")))
}

// decide runs a route's allow/deny rules over claims (a session's or a
// bearer token's) for the request in c. It returns errForbidden when they
// deny, after logging the route, the subject and the rule that denied.
func (g *Gateway) decide(c *fiber.Ctx, route string, d *authz.Decider, claims map[string]any, sub string) *Error {
	path, err := proxy.CanonicalPath(c.Request().URI().PathOriginal())
	if err != nil {
		// CheckPath ran before the route matched: not reached.
		return errForbidden
	}
	dec := d.Decide(authz.Input{Claims: claims, Method: c.Method(), Path: path, Host: string(c.Request().Host())})
	if dec.Allowed {
		g.met.decisions.WithLabelValues(route, "allowed").Inc()
		return nil
	}
	result := "denied"
	if dec.Err != nil {
		result = "error"
	}
	g.met.decisions.WithLabelValues(route, result).Inc()
	attrs := []slog.Attr{
		slog.String("request_id", obs.RequestID(c)), slog.String("route", route),
		slog.String("method", c.Method()), slog.String("sub", sub),
		slog.String("rule", dec.Rule), slog.String("condition", dec.Text),
	}
	if dec.Err != nil {
		attrs = append(attrs, slog.Any("err", dec.Err))
	}
	g.log.LogAttrs(c.UserContext(), slog.LevelInfo, "request forbidden by the route's rules", attrs...)
	return errForbidden
}

// bearerExchange is the proxy's TokenSource for a bearer caller on a
// route with token.exchange: the caller's token, verified, is the
// subject token (RFC 8693 §2.1) of an exchange for the upstream; the
// caller's token itself never goes upstream. Exchanged tokens are cached
// per caller token and target by bff/tokens.
type bearerExchange struct {
	g    *Gateway
	c    *fiber.Ctx
	b    *bearerRoute
	p    *principal
	raw  string
	t    *tokens.ExchangeTarget
	sent string
}

// session is the caller's token dressed as a session for the exchange
// cache: its key is a hash of the token, never the token.
func (t *bearerExchange) session() *session.Session {
	return &session.Session{ID: "bearer\x00" + t.raw, AccessToken: t.raw, Subject: t.p.Subject}
}

func (t *bearerExchange) Token(ctx context.Context) (string, error) {
	tok, err := t.g.tokens.Exchanged(ctx, t.session(), *t.t)
	if err != nil {
		var re *tokens.ExchangeRefusedError
		if errors.As(err, &re) && re.Code == "invalid_grant" {
			// The provider no longer honours the caller's token
			// (revoked since it was checked): the caller's 401.
			t.g.log.LogAttrs(ctx, slog.LevelInfo, "bearer token refused by the provider at the exchange",
				slog.String("request_id", obs.RequestID(t.c)), slog.String("route", t.b.prefix), slog.String("reason", re.Description))
			t.b.challenge(t.c, "invalid_token", "the access token is invalid, expired, revoked or not for this resource", t.b.scopes)
			return "", newError(fiber.StatusUnauthorized, "invalid_token", "the provider no longer accepts the access token; get a new one")
		}
		return "", t.g.exchangeError(t.c, t.b.prefix, t.t, t.p.Subject, err)
	}
	t.sent = tok
	return tok, nil
}

// Renew drops an exchanged token the upstream refused; the next call
// exchanges again. This call's 401 stands: the caller's token is what it
// is, and exchanging it again now would give the same answer.
func (t *bearerExchange) Renew(context.Context, string) (string, error) {
	t.g.tokens.ForgetExchanged(t.session(), *t.t, t.sent)
	return "", nil
}
