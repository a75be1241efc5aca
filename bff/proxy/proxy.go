package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// Proxy forwards requests to the configured upstreams. It is safe for
// concurrent use.
type Proxy struct {
	cfg     Config
	routes  []*route // longest prefix first
	trusted []netip.Prefix
	gwCook  [][]byte
	metrics *metrics
	log     *slog.Logger
	now     func() time.Time
	scratch sync.Pool // *[]byte
	// cookieScratch holds the upstream's Cookie header while it is built.
	cookieScratch sync.Pool // *[]byte
}

// New validates cfg and returns a Proxy. Upstream connections are opened
// on first use and pooled.
func New(cfg Config) (*Proxy, error) {
	cfg.fill()
	routes, trusted, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	cfg.Routes = nil
	cfg.GatewayCookies = append([]string(nil), cfg.GatewayCookies...)
	cfg.TrustedProxies = append([]string(nil), cfg.TrustedProxies...)
	p := &Proxy{
		cfg:     cfg,
		routes:  routes,
		trusted: trusted,
		log:     cfg.Logger,
		now:     cfg.Now,
	}
	p.scratch.New = func() any { b := make([]byte, 0, 512); return &b }
	p.cookieScratch.New = func() any { b := make([]byte, 0, 256); return &b }
	for _, n := range cfg.GatewayCookies {
		p.gwCook = append(p.gwCook, []byte(n))
	}
	if p.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}

	// One pool per upstream scheme and host, sized for the longest
	// timeout of the routes that share it.
	clients := map[string]*upstreamClient{}
	longest := map[string]time.Duration{}
	for _, rt := range routes {
		k := rt.scheme + "://" + rt.host
		longest[k] = max(longest[k], rt.Timeout)
	}
	for _, rt := range routes {
		k := rt.scheme + "://" + rt.host
		if clients[k] == nil {
			clients[k] = newUpstreamClient(&p.cfg, rt.scheme, rt.host, longest[k])
		}
		rt.client = clients[k]
		rt.owner = p
		rt.Route.compiled = rt
	}
	sort.SliceStable(p.routes, func(i, j int) bool { return len(p.routes[i].prefix) > len(p.routes[j].prefix) })
	return p, nil
}

// Routes returns copies of the configured routes, longest prefix first.
func (p *Proxy) Routes() []Route {
	out := make([]Route, len(p.routes))
	for i, rt := range p.routes {
		out[i] = rt.Route
		out[i].compiled = nil
	}
	return out
}

// Match returns the route whose prefix is the longest one containing
// path on a segment boundary ("/api" serves "/api" and "/api/x", not
// "/apix"). path is the raw request path (fiber's c.Path()); it is
// normalised first, and a path that cannot be normalised safely (see the
// package doc) matches nothing. The returned Route belongs to the Proxy:
// pass it to Forward and do not modify it.
func (p *Proxy) Match(path string) (*Route, bool) {
	bp := p.scratch.Get().(*[]byte)
	defer p.scratch.Put(bp)
	clean, ok := cleanPath([]byte(path), *bp)
	*bp = clean
	if !ok {
		return nil, false
	}
	if rt := p.match(clean); rt != nil {
		return &rt.Route, true
	}
	return nil, false
}

func (p *Proxy) match(clean []byte) *route {
	for _, rt := range p.routes {
		if matchPrefix(clean, rt.prefix) {
			return rt
		}
	}
	return nil
}

// Header names compared on the hot path.
var (
	hAuthorization   = []byte(fiber.HeaderAuthorization)
	hCookie          = []byte(fiber.HeaderCookie)
	hHost            = []byte(fiber.HeaderHost)
	hContentLength   = []byte(fiber.HeaderContentLength)
	hConnection      = []byte(fiber.HeaderConnection)
	hXForwardedFor   = []byte(fiber.HeaderXForwardedFor)
	hXForwardedProto = []byte(fiber.HeaderXForwardedProto)
	hXForwardedHost  = []byte(fiber.HeaderXForwardedHost)
	hXRealIP         = []byte("X-Real-Ip")
	hForwarded       = []byte("Forwarded")
	hSetCookie       = []byte(fiber.HeaderSetCookie)
	hWWWAuthenticate = []byte(fiber.HeaderWWWAuthenticate)
	hDate            = []byte(fiber.HeaderDate)
	bearerPrefix     = []byte("Bearer ")
)

// hopByHopNames are the connection-specific fields of RFC 9110 §7.6.1,
// plus Proxy-Authorization and Proxy-Authenticate, which are addressed
// to the gateway, never to the upstream or the browser.
var hopByHopNames = [][]byte{
	[]byte("Connection"), []byte("Proxy-Connection"), []byte("Keep-Alive"),
	[]byte("TE"), []byte("Trailer"), []byte("Transfer-Encoding"), []byte("Upgrade"),
	[]byte("Proxy-Authorization"), []byte("Proxy-Authenticate"),
}

func hopByHop(name string) bool { return isHopByHop([]byte(name)) }

func isHopByHop(name []byte) bool {
	for _, h := range hopByHopNames {
		if bytes.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// connectionTokens splits a Connection header value into the field names
// it lists (RFC 9110 §7.6.1), reusing dst.
func connectionTokens(v []byte, dst [][]byte) [][]byte {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var tok []byte
		if i < 0 {
			tok, v = v, nil
		} else {
			tok, v = v[:i], v[i+1:]
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 {
			dst = append(dst, tok)
		}
	}
	return dst
}

func containsFold(list [][]byte, name []byte) bool {
	for _, n := range list {
		if bytes.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// retryState remembers, between the two Forward calls of one request,
// that the first one answered ErrInvalidToken and what the response
// headers were before it wrote the upstream's 401.
type retryState struct {
	header fasthttp.ResponseHeader
}

const retryKey = "bffgate.proxy.retry"

// Forward sends the request in c to r's upstream with bearer as its
// access token ("" sends none) and writes the upstream's answer to c. r
// must come from this Proxy's Match.
//
// It returns nil once a response is written: the upstream's, or 502/504
// JSON when the upstream failed (logged and counted here; the session
// is no concern of the proxy's). It returns ErrInvalidToken, with the
// upstream's 401 written, when the caller may refresh the token and call
// Forward again (see ErrInvalidToken). Any other error means nothing
// was written.
//
// A WebSocket upgrade request is proxied as a WebSocket: the connection is
// handed over to a tunnel once Forward returns.
func (p *Proxy) Forward(c *fiber.Ctx, r *Route, bearer string) error {
	if r == nil || r.compiled == nil || r.compiled.owner != p {
		return ErrUnknownRoute
	}
	rt := r.compiled
	if websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
		return p.forwardWebSocket(c, rt, bearer)
	}
	start := p.now()

	// On the second attempt, undo what the first wrote.
	retry := p.discard(c)

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	bp := p.scratch.Get().(*[]byte)
	defer p.scratch.Put(bp)

	ok, replayable := p.buildRequest(c, rt, bearer, req, bp)
	if !ok {
		writeJSONError(c, fiber.StatusBadRequest, "invalid_path", "the request path is malformed or leaves the API route (dot segments, encoded slashes or control characters); fix the URL")
		return nil
	}

	resp := fasthttp.AcquireResponse()
	err := rt.client.hc.DoTimeout(req, resp, rt.Timeout)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		p.upstreamFailed(c, rt, err, start)
		return nil
	}
	clearReadDeadline(resp)

	status := resp.StatusCode()
	signal := status == fiber.StatusUnauthorized && replayable && retry == nil &&
		invalidTokenChallenge(resp.Header.PeekAll(fiber.HeaderWWWAuthenticate))
	if signal {
		st := &retryState{}
		c.Response().Header.CopyTo(&st.header)
		c.Locals(retryKey, st)
	}
	p.writeResponse(c, rt, resp)
	p.metrics.observe(rt.label, status, p.now().Sub(start))
	if signal {
		return ErrInvalidToken
	}
	return nil
}

// DiscardResponse restores c's response to what it was before the
// Forward that returned ErrInvalidToken (status, headers, no body), for a
// caller that answers with its own error instead of retrying, such as 401
// session_expired after a refused refresh. Without such a Forward it does
// nothing.
func (p *Proxy) DiscardResponse(c *fiber.Ctx) { p.discard(c) }

func (p *Proxy) discard(c *fiber.Ctx) *retryState {
	st, ok := c.Locals(retryKey).(*retryState)
	if !ok {
		return nil
	}
	st.header.CopyTo(&c.Response().Header)
	c.Response().ResetBody()
	return st
}

// buildRequest fills req from the browser's request. It reports false
// when the path is refused, and whether the body is held in memory (so
// that the request may be sent again).
func (p *Proxy) buildRequest(c *fiber.Ctx, rt *route, bearer string, req *fasthttp.Request, bp *[]byte) (ok, replayable bool) {
	src := c.Request()
	uri := src.URI()

	// URL: configured scheme and host, normalised path, raw query.
	clean, ok := cleanPath(uri.PathOriginal(), *bp)
	*bp = clean
	if !ok || !matchPrefix(clean, rt.prefix) {
		return false, false
	}
	ub := p.scratch.Get().(*[]byte)
	defer p.scratch.Put(ub)
	u := append((*ub)[:0], rt.scheme...)
	u = append(u, "://"...)
	u = append(u, rt.host...)
	u = rt.upstreamPath(clean, u)
	if q := uri.QueryString(); len(q) > 0 {
		u = append(u, '?')
		u = append(u, q...)
	}
	req.SetRequestURIBytes(u)
	*ub = u
	req.URI().DisablePathNormalizing = true
	req.Header.SetMethodBytes(src.Header.Method())

	// Headers.
	var connBuf [8][]byte
	conn := connectionTokens(src.Header.Peek(fiber.HeaderConnection), connBuf[:0])
	trusted := p.peerTrusted(c)
	// The headers as received (RawHeaders), not VisitAll: VisitAll parses
	// every cookie into fasthttp's list and rebuilds the Cookie header from
	// it, a 5 KB header with cookie sessions, only for this loop to filter
	// it (see EachCookie). Nothing changes the browser's request headers
	// before the proxy, so the raw block holds what VisitAll would show; a
	// request that was built rather than parsed has none, and takes
	// VisitAll.
	visit := src.Header.VisitAllInOrder
	if len(src.Header.RawHeaders()) == 0 {
		visit = src.Header.VisitAll
	}
	cookies := p.cookieScratch.Get().(*[]byte)
	defer p.cookieScratch.Put(cookies)
	kept := (*cookies)[:0]
	nconn := len(conn)
	visit(func(k, v []byte) {
		switch {
		case bytes.EqualFold(k, hCookie):
			kept = p.keepCookies(kept, rt, v)
			return
		case bytes.EqualFold(k, hConnection):
			// Every Connection line names hop-by-hop fields, not only
			// the first that Peek returns; fields named by a later line
			// but already copied are deleted after the loop.
			conn = connectionTokens(v, conn)
			return
		case bytes.IndexByte(k, '_') >= 0:
			// Underscores: CGI-style upstreams read X_Forwarded_For as
			// X-Forwarded-For, which a browser must not be able to set
			// (nginx drops these names by default too).
			return
		case isHopByHop(k), containsFold(conn, k),
			bytes.EqualFold(k, hHost), bytes.EqualFold(k, hAuthorization),
			bytes.EqualFold(k, hContentLength),
			bytes.EqualFold(k, hXForwardedFor),
			containsFold(rt.dropHeaders, k):
			return
		case bytes.EqualFold(k, hXForwardedProto), bytes.EqualFold(k, hXForwardedHost),
			bytes.EqualFold(k, hXRealIP), bytes.EqualFold(k, hForwarded):
			if !trusted {
				return
			}
		}
		req.Header.AddBytesKV(k, v)
	})
	for _, name := range conn[nconn:] {
		req.Header.DelBytes(name)
	}
	if len(kept) > 0 {
		req.Header.SetBytesKV(hCookie, kept)
	}
	*cookies = kept
	for _, kv := range rt.addHeaders {
		req.Header.SetBytesKV(kv[0], kv[1])
	}
	if bearer != "" {
		b := append((*ub)[:0], bearerPrefix...)
		b = append(b, bearer...)
		req.Header.SetBytesKV(hAuthorization, b)
		*ub = b
	}
	p.setForwarded(c, req, trusted)

	// Body: in memory when fiber holds it or it is small enough to read
	// in (then replayable), streamed otherwise.
	replayable = true
	if src.IsBodyStream() {
		if n := src.Header.ContentLength(); n >= 0 && n <= p.cfg.MaxRequestBodySize {
			req.SetBodyRaw(src.Body()) // Body reads the stream in
		} else {
			// Wrapped: fasthttp's Request returns a *requestStream to its
			// pool when it closes its body stream, and this one belongs
			// to the server's request, which releases it itself.
			req.SetBodyStream(borrowedStream{c.Context().RequestBodyStream()}, n)
			replayable = false
		}
	} else if body := src.Body(); len(body) > 0 {
		req.SetBodyRaw(body)
	}
	return true, replayable
}

// borrowedStream hides the concrete type of a reader the upstream request
// reads but does not own.
type borrowedStream struct{ io.Reader }

// peerTrusted reports whether the connection comes from a trusted proxy.
func (p *Proxy) peerTrusted(c *fiber.Ctx) bool {
	if len(p.trusted) == 0 {
		return false
	}
	ip, ok := peerAddr(c)
	if !ok {
		return false
	}
	for _, pr := range p.trusted {
		if pr.Contains(ip) {
			return true
		}
	}
	return false
}

func peerAddr(c *fiber.Ctx) (netip.Addr, bool) {
	if a, ok := c.Context().RemoteAddr().(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	}
	return netip.Addr{}, false
}

// setForwarded sets X-Forwarded-For, -Proto and -Host. From a trusted
// proxy the incoming values stand (the peer is appended to
// X-Forwarded-For); from anyone else they describe this connection.
func (p *Proxy) setForwarded(c *fiber.Ctx, req *fasthttp.Request, trusted bool) {
	src := &c.Request().Header
	var ipBuf [64]byte
	peer := ipBuf[:0]
	if ip, ok := peerAddr(c); ok {
		peer = ip.AppendTo(peer)
	}
	if trusted {
		if prev := src.Peek(fiber.HeaderXForwardedFor); len(prev) > 0 {
			xff := make([]byte, 0, len(prev)+2+len(peer))
			xff = append(xff, prev...)
			xff = append(xff, ", "...)
			xff = append(xff, peer...)
			req.Header.SetBytesKV(hXForwardedFor, xff)
		} else {
			req.Header.SetBytesKV(hXForwardedFor, peer)
		}
		if len(src.Peek(fiber.HeaderXForwardedProto)) == 0 {
			req.Header.SetBytesKV(hXForwardedProto, scheme(c))
		}
		if len(src.Peek(fiber.HeaderXForwardedHost)) == 0 {
			req.Header.SetBytesKV(hXForwardedHost, src.Host())
		}
		return
	}
	req.Header.SetBytesKV(hXForwardedFor, peer)
	req.Header.SetBytesKV(hXForwardedProto, scheme(c))
	req.Header.SetBytesKV(hXForwardedHost, src.Host())
}

var (
	schemeHTTP  = []byte("http")
	schemeHTTPS = []byte("https")
)

func scheme(c *fiber.Ctx) []byte {
	if c.Context().IsTLS() {
		return schemeHTTPS
	}
	return schemeHTTP
}

// keepCookies appends to dst the cookies of a raw Cookie header that the
// upstream may see: not the gateway's own, not the route's DropCookies.
func (p *Proxy) keepCookies(dst []byte, rt *route, header []byte) []byte {
	EachCookie(header, func(name, value []byte) bool {
		// A nameless pair ("=__Host-bff=x", or "__Host-bff" alone) goes
		// upstream as its value, which reads as a cookie named by what
		// precedes '=': judge it by that name (found by FuzzEachCookie).
		seen := name
		if len(seen) == 0 {
			seen, _, _ = bytes.Cut(value, []byte("="))
			seen = trimSpace(seen)
		}
		if p.gatewayCookie(seen) || containsFold(rt.dropCookies, seen) {
			return true
		}
		if len(dst) > 0 {
			dst = append(dst, "; "...)
		}
		if len(name) > 0 {
			dst = append(dst, name...)
			dst = append(dst, '=')
		}
		dst = append(dst, value...)
		return true
	})
	return dst
}

func (p *Proxy) gatewayCookie(name []byte) bool {
	for _, g := range p.gwCook {
		if bytes.HasPrefix(name, g) {
			return true
		}
	}
	return false
}

// writeResponse copies resp to c and hands its body over as a stream;
// resp is released when fiber has written (or dropped) the body.
func (p *Proxy) writeResponse(c *fiber.Ctx, rt *route, resp *fasthttp.Response) {
	dst := &c.Response().Header
	var connBuf [8][]byte
	conn := connectionTokens(resp.Header.Peek(fiber.HeaderConnection), connBuf[:0])
	c.Status(resp.StatusCode())
	resp.Header.VisitAll(func(k, v []byte) {
		switch {
		case isHopByHop(k), containsFold(conn, k),
			bytes.EqualFold(k, hContentLength), bytes.EqualFold(k, hDate):
			return
		case bytes.EqualFold(k, hSetCookie):
			name := v
			if i := bytes.IndexByte(name, '='); i >= 0 {
				name = name[:i]
			}
			if p.gatewayCookie(bytes.TrimSpace(name)) {
				return
			}
		}
		dst.AddBytesKV(k, v)
	})
	cl := resp.Header.ContentLength()
	if c.Request().Header.IsHead() {
		if cl >= 0 {
			dst.SetContentLength(cl)
		}
		fasthttp.ReleaseResponse(resp)
		return
	}
	if (cl >= 0 && cl <= maxBufferedBody) || !resp.IsBodyStream() {
		// Read whole already (see upstreamClient): copy it and give the
		// connection back now.
		c.Response().SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		return
	}
	if cl < 0 {
		cl = -1
	}
	c.Context().SetBodyStream(&upstreamBody{resp: resp, r: resp.BodyStream()}, cl)
}

// upstreamBody streams an upstream response body to fiber and returns
// the connection to the pool (or closes it) when fiber closes it.
type upstreamBody struct {
	resp *fasthttp.Response
	r    io.Reader
	once sync.Once
}

func (b *upstreamBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *upstreamBody) Close() error {
	var err error
	b.once.Do(func() {
		err = b.resp.CloseBodyStream()
		fasthttp.ReleaseResponse(b.resp)
	})
	return err
}

// invalidTokenChallenge reports whether one of the WWW-Authenticate
// values is a Bearer challenge with error="invalid_token" (RFC 6750
// §3.1).
func invalidTokenChallenge(values [][]byte) bool {
	for _, v := range values {
		v = bytes.TrimSpace(v)
		if len(v) < 7 || !bytes.EqualFold(v[:7], bearerPrefix[:7]) {
			continue
		}
		// The params are comma-separated auth-params; accept the token or
		// quoted form of the value.
		for _, param := range bytes.Split(v[7:], []byte(",")) {
			k, val, ok := bytes.Cut(bytes.TrimSpace(param), []byte("="))
			if !ok || !bytes.EqualFold(bytes.TrimSpace(k), []byte("error")) {
				continue
			}
			val = bytes.Trim(bytes.TrimSpace(val), `"`)
			if string(val) == "invalid_token" {
				return true
			}
		}
	}
	return false
}

// upstreamFailed answers 502 or 504 JSON for a failed upstream call.
func (p *Proxy) upstreamFailed(c *fiber.Ctx, rt *route, err error, start time.Time) {
	kind := errorKind(err)
	status := fiber.StatusBadGateway
	code, desc := "upstream_unavailable", "the API behind "+rt.Prefix+" could not be reached; try again later"
	if kind == "timeout" {
		status = fiber.StatusGatewayTimeout
		code, desc = "upstream_timeout", "the API behind "+rt.Prefix+" did not answer in time; try again later"
	}
	p.metrics.upstreamError(rt.label, kind)
	p.metrics.observe(rt.label, status, p.now().Sub(start))
	p.log.Warn("upstream request failed",
		slog.String("route", rt.Prefix), slog.String("upstream", rt.scheme+"://"+rt.host),
		slog.String("method", c.Method()), slog.String("kind", kind), slog.Any("err", err))
	writeJSONError(c, status, code, desc)
}

func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "pool_exhausted"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return "connect"
	}
	return "protocol"
}

// writeJSONError writes {"error": code, "error_description": desc}, the
// gateway's error shape, with Cache-Control: no-store.
func writeJSONError(c *fiber.Ctx, status int, code, desc string) {
	c.Response().ResetBody()
	c.Set(fiber.HeaderCacheControl, "no-store")
	_ = c.Status(status).JSON(fiber.Map{"error": code, "error_description": desc})
}

// CloseIdleConnections closes the pooled upstream connections that are
// idle, as at shutdown; requests in flight keep theirs.
func (p *Proxy) CloseIdleConnections() {
	seen := map[*upstreamClient]bool{}
	for _, rt := range p.routes {
		if !seen[rt.client] {
			seen[rt.client] = true
			rt.client.hc.CloseIdleConnections()
		}
	}
}
