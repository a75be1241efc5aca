package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/upstream"
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
	// bufs holds the buffers one forwarded request builds its upstream
	// request in (one pool round trip instead of one per buffer).
	bufs sync.Pool // *buffers
	// pubHost and pubProto are X-Forwarded-Host and -Proto from
	// Config.PublicURL; nil without one.
	pubHost, pubProto []byte
	// wsOrigins are the normalised Config.WebSocketOrigins; nil means
	// the same-host rule.
	wsOrigins map[string]bool
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
	cfg.WebSocketOrigins = append([]string(nil), cfg.WebSocketOrigins...)
	p := &Proxy{
		cfg:     cfg,
		routes:  routes,
		trusted: trusted,
		log:     cfg.Logger,
		now:     cfg.Now,
	}
	p.scratch.New = func() any { b := make([]byte, 0, 512); return &b }
	p.bufs.New = func() any { return new(buffers) }
	for _, n := range cfg.GatewayCookies {
		p.gwCook = append(p.gwCook, []byte(n))
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: publicURL: %q must be an absolute http or https URL", ErrInvalidConfig, cfg.PublicURL)
		}
		p.pubHost, p.pubProto = []byte(u.Host), []byte(u.Scheme)
	}
	for i, o := range cfg.WebSocketOrigins {
		n, ok := NormalizeOrigin(o)
		if !ok {
			return nil, fmt.Errorf("%w: webSocketOrigins[%d]: %q is not an origin (scheme://host[:port])", ErrInvalidConfig, i, o)
		}
		if p.wsOrigins == nil {
			p.wsOrigins = map[string]bool{}
		}
		p.wsOrigins[n] = true
	}
	if p.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}

	// One pool per upstream scheme and host, sized for the longest
	// timeout of the routes that share it, and keeping idle connections
	// for the shortest idle timeout among them (one server behind them).
	clients := map[string]*upstreamClient{}
	longest := map[string]time.Duration{}
	idle := map[string]time.Duration{}
	for _, rt := range routes {
		k := rt.scheme + "://" + rt.host
		longest[k] = max(longest[k], rt.Timeout)
		if d, ok := idle[k]; !ok || rt.IdleTimeout < d {
			idle[k] = rt.IdleTimeout
		}
	}
	for _, rt := range routes {
		k := rt.scheme + "://" + rt.host
		if clients[k] == nil {
			clients[k] = newUpstreamClient(&p.cfg, p.metrics, rt.scheme, rt.host, longest[k], idle[k])
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
// "/apix"). path is the raw request path (fiber's c.Path(), fasthttp's
// URI.PathOriginal); it is matched in its canonical form (decoded, path
// parameters removed: see CheckPath), and a path CheckPath refuses
// matches nothing. The returned Route belongs to the Proxy: pass it to
// Forward and do not modify it.
func (p *Proxy) Match(path string) (*Route, bool) {
	return p.MatchRaw([]byte(path))
}

// MatchRaw is Match for the raw path as bytes (fasthttp's
// URI.PathOriginal). It parses the path as CheckPath does, so a path it
// matches is one CheckPath accepts: a caller that matches first needs
// CheckPath only for the paths no route takes. raw is not kept.
func (p *Proxy) MatchRaw(raw []byte) (*Route, bool) {
	fb := p.scratch.Get().(*[]byte)
	defer p.scratch.Put(fb)
	cb := p.scratch.Get().(*[]byte)
	defer p.scratch.Put(cb)
	fwd, canon, err := parsePath(raw, *fb, *cb)
	*fb, *cb = fwd, canon
	if err != nil {
		return nil, false
	}
	if rt := p.match(canon); rt != nil {
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
	strHTTP11        = []byte("HTTP/1.1")
	hHost            = []byte(fiber.HeaderHost)
	hContentLength   = []byte(fiber.HeaderContentLength)
	hConnection      = []byte(fiber.HeaderConnection)
	hXForwardedFor   = []byte(fiber.HeaderXForwardedFor)
	hXForwardedProto = []byte(fiber.HeaderXForwardedProto)
	hXForwardedHost  = []byte(fiber.HeaderXForwardedHost)
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

// Forward is ForwardWith with a fixed access token ("" sends none) that
// is never renewed: an upstream's 401 passes through to the browser.
func (p *Proxy) Forward(c *fiber.Ctx, r *Route, bearer string) error {
	return p.ForwardWith(c, r, Bearer(bearer))
}

// ForwardWith sends the request in c to r's upstream with src's access
// token and writes the upstream's answer to c. r must come from this
// Proxy's Match.
//
// When the upstream answers 401 with a Bearer invalid_token challenge
// (RFC 6750 §3.1), ForwardWith asks src.Renew for a new token and sends
// the request once more with it, discarding the first answer: the
// browser sees the second answer only, or, when Renew has none better,
// the upstream's 401. Replay needs the request body a second time, so it
// happens only when the body is empty or was held in memory (a body of
// known length up to Config.MaxRequestBodySize); a request whose body
// streamed upstream is answered with the upstream's 401 as it came.
//
// It returns nil once a response is written: the upstream's, 400 JSON
// for a path the route refuses, or 502/504 JSON when the upstream failed
// (logged and counted here; the session is no concern of the proxy's).
// An error from src (its Token, or its Renew) is returned with nothing
// written, not even the upstream's headers: the caller writes its own
// answer. ErrUnknownRoute likewise.
//
// A WebSocket upgrade request is proxied as a WebSocket, with src's
// token and no renewal: the connection is handed over to a tunnel once
// ForwardWith returns.
func (p *Proxy) ForwardWith(c *fiber.Ctx, r *Route, src TokenSource) error {
	if r == nil || r.compiled == nil || r.compiled.owner != p {
		return ErrUnknownRoute
	}
	rt := r.compiled
	ctx := c.UserContext()
	bearer, err := src.Token(ctx)
	if err != nil {
		return err
	}
	ident := identity(src)
	if IsWebSocketUpgrade(c) {
		return p.forwardWebSocket(c, rt, bearer, ident)
	}
	start := p.now()

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	bufs := p.bufs.Get().(*buffers)
	defer p.bufs.Put(bufs)

	body, err := p.buildRequest(c, rt, bearer, ident, req, bufs)
	if err != nil {
		p.refuse(c, rt, err, start)
		return nil
	}

	resp, ok := p.send(c, rt, req, body, start)
	if !ok {
		return nil
	}
	if !body.streamed && resp.StatusCode() == fiber.StatusUnauthorized &&
		invalidTokenChallenge(resp.Header.PeekAll(fiber.HeaderWWWAuthenticate)) {
		p.metrics.observe(rt.label, fiber.StatusUnauthorized, p.now().Sub(start))
		next, err := src.Renew(ctx, bearer)
		if err != nil || next == "" || next == bearer {
			if err != nil {
				releaseResponse(resp)
				return err
			}
			// No better token: the upstream's 401 stands.
			p.writeResponse(c, rt, resp)
			return nil
		}
		// Replay with the renewed token. The first answer is dropped
		// whole; nothing of it was written to c.
		releaseResponse(resp)
		p.setBearer(req, next, &bufs.auth)
		setIdentity(req, identity(src))
		start = p.now()
		if resp, ok = p.send(c, rt, req, body, start); !ok {
			return nil
		}
	}
	status := resp.StatusCode()
	p.writeResponse(c, rt, resp)
	p.metrics.observe(rt.label, status, p.now().Sub(start))
	return nil
}

// send runs req against rt's upstream. On failure it writes the answer
// and reports false: 413 when a streamed body passed the route's limit
// (the upstream saw a chunked body cut off before its last chunk, and its
// connection closed: no complete request), 400 when reading the browser's
// side of the body failed (a malformed chunk, a client gone mid-upload:
// not the upstream's fault), 502 or 504 otherwise. On success the caller
// owns resp. A streamed body is sent once: HostClient.Do never retries a
// request whose body is a stream (it has been consumed).
func (p *Proxy) send(c *fiber.Ctx, rt *route, req *fasthttp.Request, body outgoingBody, start time.Time) (*fasthttp.Response, bool) {
	resp := fasthttp.AcquireResponse()
	if err := rt.client.hc.DoTimeout(req, resp, rt.Timeout); err != nil {
		fasthttp.ReleaseResponse(resp)
		switch {
		case body.limited != nil && body.limited.exceeded:
			p.refuse(c, rt, errBodyTooLarge, start)
		case body.limited != nil && body.limited.srcErr != nil:
			p.refuse(c, rt, &bodyError{body.limited.srcErr}, start)
		default:
			p.upstreamFailed(c, rt, err, start)
		}
		return nil, false
	}
	return resp, true
}

// releaseResponse drops an upstream answer that is not passed on: its
// body stream, if any, is closed (which gives the connection back or
// closes it) before the response returns to the pool.
func releaseResponse(resp *fasthttp.Response) {
	_ = resp.CloseBodyStream()
	fasthttp.ReleaseResponse(resp)
}

// setBearer sets the upstream request's Authorization to the bearer
// token tok, building the value in scratch.
func (p *Proxy) setBearer(req *fasthttp.Request, tok string, scratch *[]byte) {
	b := append((*scratch)[:0], bearerPrefix...)
	b = append(b, tok...)
	req.Header.SetCanonical(hAuthorization, b)
	*scratch = b
}

// buffers are the pooled buffers of one forwarded request (Proxy.bufs).
type buffers struct {
	path, canon []byte      // parsePath's: the path sent upstream, the canonical one
	url         []byte      // the upstream request's URL
	cookies     []byte      // the browser's cookies that go upstream
	fields      [][2][]byte // addHeaders': the fields that may pass, name and value
	peer        []byte      // the peer's address (setForwarded)
	auth        []byte      // the Authorization value (setBearer)
}

// outgoingBody says how buildRequest attached the request body.
type outgoingBody struct {
	// streamed: the body streams from the browser's connection, so the
	// request can be sent only once (neither fasthttp's retry on a
	// closed pooled connection nor an invalid_token replay).
	streamed bool
	// limited counts a streamed body against the route's MaxBodyBytes
	// and notes a failure reading it from the browser; nil for bodies in
	// memory.
	limited *limitedBody
}

// buildRequest fills req from the browser's request. It returns a
// *PathError for a refused path, errBodyTooLarge for a declared
// Content-Length over the route's MaxBodyBytes, and a *bodyError when a
// body it reads into memory breaks off; nothing has been sent then.
func (p *Proxy) buildRequest(c *fiber.Ctx, rt *route, bearer string, ident []Header, req *fasthttp.Request, bufs *buffers) (outgoingBody, error) {
	src := c.Request()
	uri := src.URI()

	// The path, checked and matched in its canonical form.
	fwd, canon, err := parsePath(uri.PathOriginal(), bufs.path, bufs.canon)
	bufs.path, bufs.canon = fwd, canon
	if err != nil {
		return outgoingBody{}, err
	}
	if !matchPrefix(canon, rt.prefix) {
		return outgoingBody{}, pathErr("it is not under the route's prefix " + rt.Prefix)
	}
	// The body's declared size, before anything is sent: fasthttp has
	// read at most a few KiB of it yet.
	cl := src.Header.ContentLength()
	if int64(cl) > rt.MaxBodyBytes || (!src.IsBodyStream() && int64(len(src.Body())) > rt.MaxBodyBytes) {
		return outgoingBody{}, errBodyTooLarge
	}

	// Headers.
	trusted := p.peerTrusted(c)
	if raw := src.Header.RawHeaders(); len(raw) > 0 && len(raw) <= maxCopiedHeaders {
		p.copyHeaders(src, rt, req, trusted, bufs)
	} else {
		p.addHeaders(src, rt, req, trusted, bufs)
	}

	// URL: configured scheme and host, the raw path checked and matched
	// in its canonical form, the raw query. After the headers, whose copy
	// brings the browser's request line.
	u := append(bufs.url[:0], rt.scheme...)
	u = append(u, "://"...)
	u = append(u, rt.host...)
	u = rt.upstreamPath(fwd, u)
	if q := uri.QueryString(); len(q) > 0 {
		u = append(u, '?')
		u = append(u, q...)
	}
	req.SetRequestURIBytes(u)
	bufs.url = u
	req.URI().DisablePathNormalizing = true

	for _, kv := range rt.addHeaders {
		req.Header.SetBytesKV(kv[0], kv[1])
	}
	if bearer != "" {
		p.setBearer(req, bearer, &bufs.auth)
	}
	setIdentity(req, ident)
	p.setForwarded(c, req, trusted, &bufs.peer)

	// Body, as it came: Content-Encoding and all, never decoded (fiber's
	// Ctx.Body would decompress it; fasthttp's Request.Body does not).
	// In memory when fiber holds it or it is small enough to read in
	// (then replayable), streamed otherwise.
	var out outgoingBody
	if src.IsBodyStream() {
		switch {
		case cl >= 0 && cl <= p.cfg.MaxRequestBodySize:
			// Read in through the edge's stream (errors by kind, the end
			// noted), and whole: fasthttp's Request.Body would turn a
			// read error into the body's text, and a browser that stops
			// short of Content-Length into a shorter body, sent upstream
			// as a complete request.
			if n, err := io.CopyN(req.BodyWriter(), edge.BodyStream(c), int64(cl)); err != nil {
				if err == io.EOF {
					err = fmt.Errorf("%w: %d of %d bytes", io.ErrUnexpectedEOF, n, cl)
				}
				return outgoingBody{}, &bodyError{err}
			}
		default:
			// Wrapped (which also hides the concrete type: fasthttp's
			// Request returns a *requestStream to its pool when it closes
			// its body stream, and this one belongs to the server's
			// request, which releases it itself). A chunked body (cl -1)
			// is counted as it streams; the server's stream of a declared
			// one stops at Content-Length, which is within the limit.
			out.limited = &limitedBody{r: edge.BodyStream(c), left: rt.MaxBodyBytes}
			req.SetBodyStream(out.limited, cl)
			out.streamed = true
		}
	} else if body := src.Body(); len(body) > 0 {
		req.SetBodyRaw(body)
	}
	return out, nil
}

// maxCopiedHeaders is the largest header block copyHeaders takes; a
// larger one (a cookie session's 4 KB and more) goes through addHeaders.
// A copy keeps the whole block twice in the pooled upstream request (the
// raw bytes and the parsed fields, the browser's cookies included) until
// the request is used again: 12 KB per request in flight with cookie
// sessions, which cost 8 to 12 MB of peak RSS at 256 connections.
const maxCopiedHeaders = 2 << 10

// copyHeaders fills req's headers from src's, the browser's request, for
// buildRequest: a copy of the parsed fields with what must not pass
// deleted. Copying the parsed fields costs a few memmoves; visiting the
// raw block again and adding each field one by one (addHeaders) cost a
// fifth of the gateway's own work per request (issue 20).
func (p *Proxy) copyHeaders(src *fasthttp.Request, rt *route, req *fasthttp.Request, trusted bool, bufs *buffers) {
	// Every decision is by name, so deleting a name removes each of its
	// lines.
	h := &req.Header
	src.Header.CopyTo(h)
	// The proxy's own request: HTTP/1.1 on a kept-alive connection (the
	// Connection fields go below), its Host the upstream's (Host is
	// dropped below, and the URL names the upstream), its framing set
	// from the body below: Content-Length and Transfer-Encoding are
	// dropped below like any hop-by-hop field, and the length the copy
	// keeps (-1 for chunked, -2 for none) is never written: fasthttp
	// writes the Content-Length field from its bytes only, and a body,
	// in memory or streamed, sets the length itself (TestForwardedRequestFraming).
	h.SetProtocolBytes(strHTTP11)
	// Cookies first, from every Cookie line, and out of the copy before
	// it is visited: VisitAll would parse them all into fasthttp's list
	// only for this to filter them.
	kept := bufs.cookies[:0]
	if lines := h.PeekAll(fiber.HeaderCookie); len(lines) > 0 {
		for _, v := range lines {
			kept = p.keepCookies(kept, rt, v)
		}
		h.DelBytes(hCookie)
	}
	// The copy is not changed while it is visited (the names are slices
	// of its fields): what to delete is gathered, and deleted after.
	// Every Connection line names hop-by-hop fields (RFC 9110 §7.6.1),
	// wherever it comes, so the names it lists are checked after the
	// visit too.
	var connBuf [8][]byte
	var delBuf, passBuf [24][]byte
	conn, del, pass := connBuf[:0], delBuf[:0], passBuf[:0]
	// Called directly, not through a function variable: the closure and
	// the arrays it appends to stay on the stack.
	h.VisitAll(func(k, v []byte) {
		kind := requestKindOf(k)
		if kind == reqConnection {
			conn = connectionTokens(v, conn)
		}
		if kind.forwarded(trusted) {
			pass = append(pass, k)
		} else {
			del = append(del, k)
		}
	})
	if repeated(pass) {
		// fasthttp deletes a field by moving the last one into its
		// place, which can swap the lines of a repeated field, whose
		// order is its meaning (RFC 9110 §5.3): such a request's fields
		// are added one by one instead, in order.
		h.Reset()
		p.addHeaders(src, rt, req, trusted, bufs)
		return
	}
	for _, k := range pass {
		if rt.held(conn, k) {
			del = append(del, k)
		}
	}
	for _, k := range del {
		h.DelBytes(k) // copies k before it changes the fields
	}
	if len(kept) > 0 {
		h.SetBytesKV(hCookie, kept)
	}
	bufs.cookies = kept
}

// repeated reports whether a name appears twice in names (without case).
// Names of one length often share their beginnings (Sec-Fetch-Site,
// Sec-Fetch-Mode, Sec-Fetch-Dest), so their last byte is compared first.
func repeated(names [][]byte) bool {
	for i, a := range names {
		for _, b := range names[:i] {
			if len(a) == len(b) && len(a) > 0 && a[len(a)-1]|0x20 == b[len(b)-1]|0x20 &&
				a[len(a)/2]|0x20 == b[len(b)/2]|0x20 && bytes.EqualFold(a, b) {
				return true
			}
		}
	}
	return false
}

// addHeaders fills req's headers from src's for buildRequest, field by
// field from the block as received (RawHeaders, split by eachRawField),
// not VisitAll: VisitAll parses every cookie into fasthttp's list and
// rebuilds the Cookie header from it, a 5 KB header with cookie sessions,
// only for this loop to filter it (see EachCookie). Nothing changes the
// browser's request headers before the proxy, so the raw block holds what
// VisitAll would show; a request that was built rather than parsed has
// none, and one with a folded field is left to fasthttp: both take
// VisitAll.
//
// The fields that may pass are gathered first and added after, so that
// the fields every Connection line names (RFC 9110 §7.6.1), wherever the
// line comes, are never added: nothing is deleted, since fasthttp deletes
// a field by moving the last one into its place, which would change the
// order of the lines of a repeated field (TestForwardedRequestFraming).
func (p *Proxy) addHeaders(src *fasthttp.Request, rt *route, req *fasthttp.Request, trusted bool, bufs *buffers) {
	req.Header.SetMethodBytes(src.Header.Method())
	var connBuf [8][]byte
	conn := connBuf[:0]
	kept := bufs.cookies[:0]
	fields := bufs.fields[:0]
	visit := func(k, v []byte) {
		switch kind := requestKindOf(k); {
		case kind == reqCookie:
			kept = p.keepCookies(kept, rt, v)
		case kind == reqConnection:
			conn = connectionTokens(v, conn)
		case kind.forwarded(trusted):
			fields = append(fields, [2][]byte{k, v})
		}
	}
	if raw := src.Header.RawHeaders(); len(raw) == 0 || !eachRawField(raw, visit) {
		conn, kept, fields = connBuf[:0], bufs.cookies[:0], bufs.fields[:0]
		src.Header.VisitAll(visit)
	}
	for _, f := range fields {
		if !rt.held(conn, f[0]) {
			req.Header.AddBytesKV(f[0], f[1])
		}
	}
	if len(kept) > 0 {
		req.Header.SetBytesKV(hCookie, kept)
	}
	bufs.cookies = kept
	clear(fields) // no slice of this request's bytes stays in the pool
	bufs.fields = fields[:0]
}

// identity returns src's identity headers, if it gives any.
func identity(src TokenSource) []Header {
	if is, ok := src.(IdentitySource); ok {
		return is.IdentityHeaders()
	}
	return nil
}

// setIdentity sets the identity headers on the upstream request,
// replacing any copy (the browser's were filtered out before). A value
// with control characters is not sent: it would split the header.
func setIdentity(req *fasthttp.Request, ident []Header) {
	for _, h := range ident {
		if validHeaderName(h.Name) && validHeaderValue(h.Value) {
			req.Header.Set(h.Name, h.Value)
		}
	}
}

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

// setForwarded sets X-Forwarded-For, Forwarded (from trusted proxies
// only), X-Forwarded-Proto and X-Forwarded-Host. From a trusted proxy the
// incoming client-address chain is kept and the peer appended to it
// (RFC 7239 §4); from anyone else the chain starts at the peer.
// X-Forwarded-Host and -Proto come from Config.PublicURL when it is set,
// so that no client picks the host an upstream builds its links with;
// without one, from a trusted proxy's headers or else the request.
// buildRequest deleted every incoming one, and the names are fasthttp's
// canonical form, so SetCanonical skips the normalising copy SetBytesKV
// makes of each name.
func (p *Proxy) setForwarded(c *fiber.Ctx, req *fasthttp.Request, trusted bool, pb *[]byte) {
	src := &c.Request().Header
	// The peer's address is built in a pooled buffer: fasthttp's
	// SetCanonical counts as keeping its value, so a stack array would
	// move to the heap on every request (it copies the bytes).
	peer := (*pb)[:0]
	ip, hasIP := peerAddr(c)
	if hasIP {
		peer = ip.AppendTo(peer)
		*pb = peer
	}
	var xff, fw []byte
	if trusted {
		// Only a trusted proxy's chain is kept: PeekAll walks every
		// header, which nobody else's request needs.
		xff = joinValues(src.PeekAll(fiber.HeaderXForwardedFor))
		fw = joinValues(src.PeekAll(fiber.HeaderForwarded))
	}
	if len(xff) > 0 {
		xff = append(xff, ", "...)
	}
	if len(xff) > 0 {
		req.Header.SetCanonical(hXForwardedFor, append(xff, peer...))
	} else {
		req.Header.SetCanonical(hXForwardedFor, peer)
	}
	if len(fw) > 0 {
		fw = append(fw, ", for="...)
		if hasIP && ip.Is6() {
			// RFC 7239 §6: an IPv6 node is quoted and bracketed.
			fw = append(append(append(fw, `"[`...), peer...), `]"`...)
		} else {
			fw = append(fw, peer...)
		}
		req.Header.SetCanonical(hForwarded, fw)
	}

	switch {
	case p.pubHost != nil:
		req.Header.SetCanonical(hXForwardedProto, p.pubProto)
		req.Header.SetCanonical(hXForwardedHost, p.pubHost)
	case trusted:
		if v := src.Peek(fiber.HeaderXForwardedProto); len(v) > 0 {
			req.Header.SetCanonical(hXForwardedProto, v)
		} else {
			req.Header.SetCanonical(hXForwardedProto, scheme(c))
		}
		if v := src.Peek(fiber.HeaderXForwardedHost); len(v) > 0 {
			req.Header.SetCanonical(hXForwardedHost, v)
		} else {
			req.Header.SetCanonical(hXForwardedHost, src.Host())
		}
	default:
		req.Header.SetCanonical(hXForwardedProto, scheme(c))
		req.Header.SetCanonical(hXForwardedHost, src.Host())
	}
}

// joinValues joins a header's lines with ", " into a new slice (nil for
// none).
func joinValues(lines [][]byte) []byte {
	if len(lines) == 0 {
		return nil
	}
	n := 0
	for _, l := range lines {
		n += len(l) + 2
	}
	out := make([]byte, 0, n+64)
	for i, l := range lines {
		if i > 0 {
			out = append(out, ", "...)
		}
		out = append(out, l...)
	}
	return out
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

// hasCTL reports whether b holds a control character (RFC 5234 CTL).
func hasCTL(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// keepCookies appends to dst the cookies of a raw Cookie header that the
// upstream may see: not the gateway's own, not the route's DropCookies.
func (p *Proxy) keepCookies(dst []byte, rt *route, header []byte) []byte {
	EachCookie(header, func(name, value []byte) bool {
		// A nameless pair ("=__Host-bff=x", "==__Host-bff", or
		// "__Host-bff" alone) goes upstream as its value, which reads
		// as a cookie named by what precedes '=': judge it by that name
		// (found by FuzzEachCookie).
		// A pair with a control character is no cookie (RFC 6265 §4.1.1
		// cookie-octets), and parsers disagree on it: net/http trims CR
		// and LF that this scanner keeps, so "\r__Host-bff" would read
		// upstream as the gateway's cookie. Such pairs are dropped.
		//
		// The name is judged first: the gateway's own cookies (a 4 KB
		// session and its chunks) are dropped whatever their bytes, so
		// scanning their values for control characters was wasted work
		// on every proxied request (BenchmarkHandler/cookie).
		seen := name
		if len(seen) == 0 {
			// What precedes '=' once the '='s and spaces it starts
			// with are gone: "==__Host-bff" goes upstream as
			// "=__Host-bff", another nameless pair whose value names
			// the gateway's cookie (found by FuzzEachCookie).
			seen, _, _ = bytes.Cut(bytes.TrimLeft(value, "= \t"), []byte("="))
			seen = trimSpace(seen)
		}
		if p.gatewayCookie(seen) || containsFold(rt.dropCookies, seen) {
			return true
		}
		if hasCTL(name) || hasCTL(value) {
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
		kind := responseKindOf(k)
		switch {
		case kind == respDrop, containsFold(conn, k):
			return
		case kind == respSetCookie:
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
	// Only a streamed body is read after DoTimeout returned, so only
	// then is the request's read deadline lifted (an answer read whole
	// keeps its connection's deadline until the next request sets one).
	clearReadDeadline(resp)
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

// upstreamFailed answers 502 or 504 JSON for a failed upstream call,
// naming what went wrong.
func (p *Proxy) upstreamFailed(c *fiber.Ctx, rt *route, err error, start time.Time) {
	kind := errorKind(err)
	status := fiber.StatusBadGateway
	code, desc := "upstream_unavailable", failureText(rt.Prefix, c.Method(), kind, err)
	if kind == "timeout" {
		status = fiber.StatusGatewayTimeout
		code = "upstream_timeout"
	}
	p.metrics.upstreamError(rt.label, kind)
	p.metrics.observe(rt.label, status, p.now().Sub(start))
	p.log.Warn("upstream request failed",
		slog.String("route", rt.Prefix), slog.String("upstream", rt.scheme+"://"+rt.host),
		slog.String("method", c.Method()), slog.String("kind", kind), slog.Any("err", err))
	writeJSONError(c, status, code, desc)
}

// failureText is the error_description of a failed upstream call: what
// happened, in the words of someone debugging the SPA.
func failureText(prefix, method, kind string, err error) string {
	api := "the API behind " + prefix
	var ce *upstream.ClosedError
	switch {
	case kind == "timeout":
		return api + " did not answer in time; try again later"
	case errors.As(err, &ce) && ce.Reused && !upstream.Idempotent([]byte(method)):
		return api + " closed an idle kept-alive connection as the gateway reused it, and a " + method +
			" is not sent twice (it is not idempotent); retry it. If this recurs, the API keeps idle connections for less than gateway.routes[].idle_timeout"
	case errors.As(err, &ce) && ce.Reused:
		return api + " closed an idle kept-alive connection as the gateway reused it, and a new connection failed too; try again later"
	case kind == "closed":
		return api + " closed the connection without answering; try again later"
	case kind == "connect":
		return api + " refused the connection or cannot be reached (is it running?); try again later"
	case kind == "pool_exhausted":
		return "every connection to " + api + " is busy; try again later"
	}
	return api + " sent an answer the gateway cannot read; try again later"
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
	var ce *upstream.ClosedError
	if errors.As(err, &ce) {
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
