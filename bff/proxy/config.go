package proxy

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/upstream"
)

// Defaults filled in by New for zero Config and Route fields.
const (
	DefaultTimeout            = 30 * time.Second
	DefaultMaxConnsPerHost    = 512
	DefaultDialTimeout        = 5 * time.Second
	DefaultIdleConnTimeout    = upstream.DefaultIdleTimeout
	DefaultMaxRequestBodySize = 1 << 20
	DefaultMaxBodyBytes       = 10 << 20
)

// Route is one API prefix the gateway proxies to one upstream.
//
// The yaml tags are the keys of bffgate's gateway.routes[] entries: a
// field added here with a tag is a configuration key, nothing else to do
// in cmd/bffgate (document it in bffgate.example.yaml).
type Route struct {
	// Prefix is the path prefix the route serves, such as "/api/". It is
	// matched on a segment boundary: "/api/" (or "/api") matches "/api",
	// "/api/" and "/api/x", never "/apix".
	Prefix string `yaml:"prefix"`
	// Upstream is the absolute http or https URL requests go to. A base
	// path ("http://orders:8080/v1") is joined in front of the forwarded
	// path. The upstream address comes only from here, never from the
	// request.
	Upstream string `yaml:"upstream"`
	// StripPrefix removes Prefix from the path before it is joined to
	// the upstream's base path: "/api/orders" reaches "/v1/orders".
	StripPrefix bool `yaml:"strip_prefix"`
	// Timeout bounds the time from sending the request (including a
	// streamed request body) to receiving the upstream's response
	// headers; the body then streams without a deadline. Zero means
	// DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// AddHeaders are set on every upstream request (after the browser's
	// headers are filtered, so they override them).
	AddHeaders map[string]string `yaml:"add_headers"`
	// DropHeaders are removed from every upstream request.
	DropHeaders []string `yaml:"drop_headers"`
	// IdleTimeout closes this upstream's pooled connections once idle
	// this long; zero means Config.IdleConnTimeout. Keep it below the
	// upstream's own keep-alive timeout (Node's is 5 s). Routes to one
	// upstream share a pool, which takes the shortest of theirs.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// DropCookies names request cookies not forwarded to this upstream,
	// besides the gateway's own (Config.GatewayCookies), which never are.
	DropCookies []string `yaml:"drop_cookies"`
	// MaxBodyBytes is the largest request body the route accepts
	// (DefaultMaxBodyBytes, 10 MiB, when zero). A request whose
	// Content-Length is larger is answered 413 JSON before the upstream
	// is contacted; a chunked body is counted as it streams, and when the
	// count passes the limit the upstream request is aborted (the
	// upstream sees a truncated chunked body, never a complete request)
	// and the browser gets 413 JSON. The body is counted as it came:
	// compressed bodies are not decoded.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`

	// compiled is set on the copies a Proxy keeps (the ones Match
	// returns) and nil on a caller's Route.
	compiled *route
}

// Config configures a Proxy.
type Config struct {
	// Routes are the proxied prefixes. Prefixes must be distinct.
	Routes []Route

	// GatewayCookies are the names, or name prefixes, of the gateway's
	// own cookies (for example "__Host-bff", which covers the numbered
	// chunks "__Host-bff-1" too). They are never forwarded upstream, and
	// an upstream Set-Cookie for such a name never reaches the browser,
	// so that an upstream can neither read nor overwrite the session.
	GatewayCookies []string

	// TrustedProxies lists the CIDRs or IPs of reverse proxies in front
	// of the gateway whose X-Forwarded-For, X-Forwarded-Proto,
	// X-Forwarded-Host, X-Real-Ip and Forwarded headers are believed.
	// From any other peer these headers are replaced. None by default.
	TrustedProxies []string

	// PublicURL is the origin browsers use to reach the gateway (bff's
	// PublicURL). X-Forwarded-Host and X-Forwarded-Proto are set from it,
	// never from the request's Host header, which a client chooses. Empty
	// means from the request (the Host header and the connection), for a
	// proxy used without a public URL.
	PublicURL string

	// WebSocketOrigins are the origins (scheme://host[:port]) allowed to
	// open a WebSocket through the proxy. A handshake without an Origin,
	// or with another one, is refused with 403 before the upstream is
	// dialled. Empty means the request's own host (the same-host rule of
	// github.com/fasthttp/websocket). The gateway fills it with its
	// public origin and allowed_origins.
	WebSocketOrigins []string

	// MaxConnsPerHost caps the pooled connections to one upstream host
	// (DefaultMaxConnsPerHost when zero). A request that finds them all
	// busy waits for one up to its route's Timeout.
	MaxConnsPerHost int
	// DialTimeout bounds connecting to an upstream (DefaultDialTimeout).
	DialTimeout time.Duration
	// IdleConnTimeout closes pooled connections idle this long
	// (DefaultIdleConnTimeout), for routes without an IdleTimeout of
	// their own. Keep it below the upstreams' own keep-alive timeout
	// (Node's is 5s), or a request may race an upstream closing the
	// connection it was about to reuse; an idempotent request that loses
	// that race is sent once more on a new connection.
	IdleConnTimeout time.Duration
	// TLSClientConfig is used for https upstreams and wss tunnels; nil
	// means the system roots. The proxy clones it.
	TLSClientConfig *tls.Config

	// MaxRequestBodySize is the largest request body (of known length)
	// the proxy holds in memory; such bodies can be replayed once after
	// an upstream answers invalid_token. Larger bodies and bodies of
	// unknown length (chunked) stream to the upstream without being
	// buffered, and are never retried. DefaultMaxRequestBodySize when
	// zero. It is no upload limit: Route.MaxBodyBytes is.
	MaxRequestBodySize int

	// Logger receives upstream errors; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the proxy metrics; nil means none are kept.
	Registerer prometheus.Registerer
	// Now is the clock for durations; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns a Config with the defaults filled in and no
// routes.
func DefaultConfig() Config {
	return Config{
		MaxConnsPerHost:    DefaultMaxConnsPerHost,
		DialTimeout:        DefaultDialTimeout,
		IdleConnTimeout:    DefaultIdleConnTimeout,
		MaxRequestBodySize: DefaultMaxRequestBodySize,
	}
}

// route is a validated Route with what Forward needs precomputed.
type route struct {
	Route
	prefix   string // without trailing slash; "/" for the root route
	scheme   string
	host     string // host[:port] as sent in the Host header
	basePath string // without trailing slash; "" for none
	segments int    // segments in prefix: 0 for "/", 1 for "/api", ...
	client   *upstreamClient
	owner    *Proxy
	label    string // metrics label: the configured prefix

	addHeaders  [][2][]byte
	dropHeaders [][]byte
	dropCookies [][]byte
}

func (c *Config) fill() {
	if c.MaxConnsPerHost <= 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.IdleConnTimeout <= 0 {
		c.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if c.MaxRequestBodySize <= 0 {
		c.MaxRequestBodySize = DefaultMaxRequestBodySize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// validate checks the routes and returns them compiled, plus the parsed
// trusted proxy prefixes.
func (c *Config) validate() ([]*route, []netip.Prefix, error) {
	if len(c.Routes) == 0 {
		return nil, nil, fmt.Errorf("%w: routes: at least one route is required", ErrInvalidConfig)
	}
	seen := make(map[string]int, len(c.Routes))
	out := make([]*route, 0, len(c.Routes))
	for i, r := range c.Routes {
		field := func(name string) string { return fmt.Sprintf("routes[%d].%s", i, name) }
		if !strings.HasPrefix(r.Prefix, "/") {
			return nil, nil, fmt.Errorf("%w: %s: %q must start with \"/\"", ErrInvalidConfig, field("prefix"), r.Prefix)
		}
		if fwd, canon, err := parsePath([]byte(r.Prefix), nil, nil); err != nil || string(fwd) != r.Prefix || string(canon) != r.Prefix {
			return nil, nil, fmt.Errorf("%w: %s: %q is not a plain normalised path (no \"//\", \".\" or \"..\" segments, percent-encoding, \";\", backslashes or control characters)", ErrInvalidConfig, field("prefix"), r.Prefix)
		}
		norm := strings.TrimSuffix(r.Prefix, "/")
		if norm == "" {
			norm = "/"
		}
		if j, dup := seen[norm]; dup {
			return nil, nil, fmt.Errorf("%w: %s: %q duplicates routes[%d].prefix", ErrInvalidConfig, field("prefix"), r.Prefix, j)
		}
		seen[norm] = i

		u, err := url.Parse(r.Upstream)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, field("upstream"), err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, nil, fmt.Errorf("%w: %s: %q must be an absolute http or https URL", ErrInvalidConfig, field("upstream"), r.Upstream)
		}
		if u.Host == "" || u.Hostname() == "" {
			return nil, nil, fmt.Errorf("%w: %s: %q has no host", ErrInvalidConfig, field("upstream"), r.Upstream)
		}
		if u.User != nil {
			return nil, nil, fmt.Errorf("%w: %s: user info in the upstream URL is not supported (use addHeaders)", ErrInvalidConfig, field("upstream"))
		}
		if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
			return nil, nil, fmt.Errorf("%w: %s: %q must not carry a query or fragment", ErrInvalidConfig, field("upstream"), r.Upstream)
		}
		base := u.EscapedPath()
		if base != "" {
			if fwd, _, err := parsePath([]byte(base), nil, nil); err != nil || string(fwd) != base {
				return nil, nil, fmt.Errorf("%w: %s: base path %q is not normalised", ErrInvalidConfig, field("upstream"), base)
			}
		}
		if r.Timeout < 0 {
			return nil, nil, fmt.Errorf("%w: %s: must not be negative", ErrInvalidConfig, field("timeout"))
		}
		if r.Timeout == 0 {
			r.Timeout = DefaultTimeout
		}
		if r.IdleTimeout < 0 {
			return nil, nil, fmt.Errorf("%w: %s: must not be negative", ErrInvalidConfig, field("idle_timeout"))
		}
		if r.IdleTimeout == 0 {
			r.IdleTimeout = c.IdleConnTimeout
		}
		if r.MaxBodyBytes < 0 {
			return nil, nil, fmt.Errorf("%w: %s: must not be negative (zero means the default, 10 MiB)", ErrInvalidConfig, field("max_body_bytes"))
		}
		if r.MaxBodyBytes == 0 {
			r.MaxBodyBytes = DefaultMaxBodyBytes
		}
		r.compiled = nil
		cr := &route{
			Route:    r,
			label:    r.Prefix,
			prefix:   norm,
			scheme:   u.Scheme,
			host:     u.Host,
			basePath: strings.TrimSuffix(base, "/"),
		}
		if norm != "/" {
			cr.segments = strings.Count(norm, "/")
		}
		// Own copies, so that later changes to the caller's maps and
		// slices do not reach a running proxy.
		cr.AddHeaders = make(map[string]string, len(r.AddHeaders))
		for k, v := range r.AddHeaders {
			if !validHeaderName(k) {
				return nil, nil, fmt.Errorf("%w: %s: %q is not a valid header name", ErrInvalidConfig, field("addHeaders"), k)
			}
			if !validHeaderValue(v) {
				return nil, nil, fmt.Errorf("%w: %s: the value of %q has control characters", ErrInvalidConfig, field("addHeaders"), k)
			}
			if hopByHop(k) || strings.EqualFold(k, "Host") || strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Cookie") {
				return nil, nil, fmt.Errorf("%w: %s: %q is managed by the proxy and cannot be set", ErrInvalidConfig, field("addHeaders"), k)
			}
			cr.AddHeaders[k] = v
			cr.addHeaders = append(cr.addHeaders, [2][]byte{[]byte(k), []byte(v)})
		}
		cr.DropHeaders = append([]string(nil), r.DropHeaders...)
		for _, h := range r.DropHeaders {
			if !validHeaderName(h) {
				return nil, nil, fmt.Errorf("%w: %s: %q is not a valid header name", ErrInvalidConfig, field("dropHeaders"), h)
			}
			cr.dropHeaders = append(cr.dropHeaders, []byte(h))
		}
		cr.DropCookies = append([]string(nil), r.DropCookies...)
		for _, n := range r.DropCookies {
			if n == "" || !validHeaderName(n) {
				return nil, nil, fmt.Errorf("%w: %s: %q is not a valid cookie name", ErrInvalidConfig, field("dropCookies"), n)
			}
			cr.dropCookies = append(cr.dropCookies, []byte(n))
		}
		out = append(out, cr)
	}
	for i, n := range c.GatewayCookies {
		if n == "" || !validHeaderName(n) {
			return nil, nil, fmt.Errorf("%w: gatewayCookies[%d]: %q is not a valid cookie name", ErrInvalidConfig, i, n)
		}
	}
	var trusted []netip.Prefix
	for i, s := range c.TrustedProxies {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: trustedProxies[%d]: %q is neither an IP nor a CIDR", ErrInvalidConfig, i, s)
		}
		trusted = append(trusted, p)
	}
	return out, trusted, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validHeaderName reports whether s is an RFC 9110 §5.1 field name (a
// token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

// validHeaderValue refuses control characters (CR and LF above all: a
// header value must not smuggle another header).
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}
