package proxy

import "bytes"

// headerClass is what the proxy does with a request header that a client
// could send to pass for a proxy in front of the upstream or for a user
// some gateway authenticated.
type headerClass uint8

const (
	// passHeader: not one of those; forwarded (subject to the other
	// rules: hop-by-hop, underscores, the route's DropHeaders).
	passHeader headerClass = iota
	// chainHeader: rebuilt by the proxy (setForwarded), taking the
	// incoming value into account only from a trusted proxy.
	chainHeader
	// trustedHeader: forwarded as it came from a trusted proxy, dropped
	// from anyone else.
	trustedHeader
	// dropHeader: dropped from everyone, trusted proxies included. Every
	// identity header is here: the gateway is the one that
	// authenticates, and it says who the user is with the bearer token
	// only.
	dropHeader
)

// spoofableHeaders is the one list of forwarding, rewriting and identity
// headers the proxy does not pass through from the browser, with where
// each comes from. A name ending in "-" is a prefix. Matching is
// case-insensitive; the first entry that matches decides, so the
// specific names come before the prefixes that would cover them.
//
// Why: an upstream behind a proxy often believes these headers. A
// browser-set X-Forwarded-Host poisons the absolute URLs it builds
// (password-reset links, redirects); X-Original-URL makes Symfony and IIS
// route to a path the gateway never matched; True-Client-IP defeats IP
// allowlists and rate limits; X-Forwarded-User logs the request in as
// anyone on an upstream that also sits behind oauth2-proxy.
var spoofableHeaders = []struct {
	name  string
	class headerClass
}{
	// The client-address chain: RFC 7239 Forwarded, and the de facto
	// X-Forwarded-For (Squid). Appended to from trusted proxies,
	// replaced otherwise.
	{"Forwarded", chainHeader},
	{"X-Forwarded-For", chainHeader},
	// Set from Config.PublicURL (or, without one, the connection).
	{"X-Forwarded-Host", chainHeader},
	{"X-Forwarded-Proto", chainHeader},
	// nginx's realip module and proxy_set_header recipes.
	{"X-Real-Ip", trustedHeader},

	// Identity headers set by other gateways in front of an upstream.
	// oauth2-proxy (--pass-user-headers, --pass-access-token,
	// --set-xauthrequest) and nginx auth_request recipes:
	{"X-Forwarded-User", dropHeader},
	{"X-Forwarded-Email", dropHeader},
	{"X-Forwarded-Groups", dropHeader},
	{"X-Forwarded-Preferred-Username", dropHeader},
	{"X-Forwarded-Access-Token", dropHeader},
	{"X-Auth-Request-", dropHeader},
	// Kubernetes' authenticating-proxy headers (X-Remote-User,
	// X-Remote-Group, X-Remote-Extra-*), Apache's X-Remote-Addr:
	{"X-Remote-", dropHeader},
	// Authelia (Remote-User, Remote-Groups, Remote-Name, Remote-Email):
	{"Remote-", dropHeader},
	// Grafana's auth proxy default (X-WEBAUTH-USER):
	{"X-Webauth-", dropHeader},
	// Pomerium (X-Pomerium-Jwt-Assertion, X-Pomerium-Claim-*):
	{"X-Pomerium-", dropHeader},
	// Google Cloud IAP:
	{"X-Goog-Authenticated-User-", dropHeader},
	{"X-Goog-Iap-Jwt-Assertion", dropHeader},
	// AWS Application Load Balancer authentication:
	{"X-Amzn-Oidc-", dropHeader},
	// Azure App Service authentication (Easy Auth):
	{"X-Ms-Client-Principal", dropHeader},
	{"X-Ms-Client-Principal-", dropHeader},
	{"X-Ms-Token-", dropHeader},
	// Cloudflare Access:
	{"Cf-Access-", dropHeader},
	// authentik's proxy outpost:
	{"X-Authentik-", dropHeader},
	// Vouch Proxy:
	{"X-Vouch-", dropHeader},
	// Kong (consumer and credential headers, the OIDC plugins' token
	// headers) and lua-resty-openidc recipes:
	{"X-Consumer-", dropHeader},
	{"X-Credential-", dropHeader},
	{"X-Userinfo", dropHeader},
	{"X-Id-Token", dropHeader},
	{"X-Access-Token", dropHeader},

	// Every other X-Forwarded-* (Port, Prefix, Ssl, Server, Uri, Method,
	// Scheme, Protocol, ...: Spring, ASP.NET, Traefik, Apache mod_proxy,
	// Caddy) and the bare X-Forwarded: the gateway sets none of them, so
	// none can be believed.
	{"X-Forwarded-", dropHeader},
	{"X-Forwarded", dropHeader},
	// Request rewriting: IIS URL Rewrite and Symfony (X-Original-URL,
	// X-Rewrite-URL), nginx auth_request recipes (X-Original-URI),
	// ingress-nginx (X-Original-Forwarded-For), X-Original-Host, X-Host.
	{"X-Original-", dropHeader},
	{"X-Rewrite-Url", dropHeader},
	{"X-Host", dropHeader},
	// The scheme, as Microsoft's proxies (Front-End-Https) and others
	// (X-Url-Scheme) say it.
	{"Front-End-Https", dropHeader},
	{"X-Url-Scheme", dropHeader},
	// The client's address in other words: Akamai and Cloudflare
	// (True-Client-IP), Cloudflare (CF-Connecting-IP), Fastly
	// (Fastly-Client-IP), the X-Client-IP and X-Cluster-Client-IP of
	// load balancers, Envoy (X-Envoy-External-Address), Google
	// (X-ProxyUser-IP).
	{"True-Client-Ip", dropHeader},
	{"Cf-Connecting-Ip", dropHeader},
	{"Fastly-Client-Ip", dropHeader},
	{"X-Client-Ip", dropHeader},
	{"X-Cluster-Client-Ip", dropHeader},
	{"X-Envoy-External-Address", dropHeader},
	{"X-Proxyuser-Ip", dropHeader},
}

// spoofable is spoofableHeaders as bytes, split into exact names and
// prefixes, in the list's order.
var spoofable = func() []spoofEntry {
	out := make([]spoofEntry, len(spoofableHeaders))
	for i, h := range spoofableHeaders {
		out[i] = spoofEntry{name: []byte(h.name), prefix: h.name[len(h.name)-1] == '-', class: h.class}
	}
	return out
}()

type spoofEntry struct {
	name   []byte
	prefix bool
	class  headerClass
}

// classify returns the class of a request header name.
func classify(k []byte) headerClass {
	if len(k) == 0 {
		return passHeader
	}
	// Every listed name starts with one of these letters: most headers
	// leave here.
	switch k[0] | 0x20 {
	case 'x', 'f', 'r', 'c', 't':
	default:
		return passHeader
	}
	for i := range spoofable {
		e := &spoofable[i]
		if e.prefix {
			if len(k) >= len(e.name) && bytes.EqualFold(k[:len(e.name)], e.name) {
				return e.class
			}
		} else if bytes.EqualFold(k, e.name) {
			return e.class
		}
	}
	return passHeader
}

// requestKind is what buildRequest does with a browser's request header,
// decided by its name alone (the Connection header's tokens and the
// route's DropHeaders are checked after).
type requestKind uint8

const (
	// reqPass: forwarded.
	reqPass requestKind = iota
	// reqCookie: filtered (keepCookies).
	reqCookie
	// reqConnection: read for the fields it names, never forwarded.
	reqConnection
	// reqDrop: never forwarded: hop-by-hop fields, Host, Authorization,
	// Content-Length, names with an underscore, and the chain and drop
	// classes of spoofableHeaders.
	reqDrop
	// reqTrusted: forwarded from a trusted proxy only.
	reqTrusted
)

// forwarded reports whether a field of kind k goes upstream as it came,
// from a peer that is a trusted proxy or not: the one decision both of
// buildRequest's header builders (copyHeaders, addHeaders) take. The
// Connection field's tokens and the route's DropHeaders may still hold
// it back (held).
func (k requestKind) forwarded(trusted bool) bool {
	return k == reqPass || k == reqTrusted && trusted
}

// held reports whether name, a field that would be forwarded, is named
// by a Connection field (its tokens in conn: hop-by-hop, RFC 9110
// §7.6.1) or by the route's DropHeaders.
func (rt *route) held(conn [][]byte, name []byte) bool {
	return containsFold(conn, name) || containsFold(rt.dropHeaders, name)
}

// requestKindSlow decides a name's kind by comparing it with each list in
// turn. It is the definition; requestKindOf gives the same answer faster.
func requestKindSlow(k []byte) requestKind {
	switch {
	case bytes.EqualFold(k, hCookie):
		return reqCookie
	case bytes.EqualFold(k, hConnection):
		// Every Connection line names hop-by-hop fields, not only the
		// first that Peek returns.
		return reqConnection
	case bytes.IndexByte(k, '_') >= 0:
		// Underscores: CGI-style upstreams read X_Forwarded_For as
		// X-Forwarded-For, which a browser must not be able to set
		// (nginx drops these names by default too).
		return reqDrop
	case isHopByHop(k), bytes.EqualFold(k, hHost), bytes.EqualFold(k, hAuthorization),
		bytes.EqualFold(k, hContentLength):
		return reqDrop
	}
	switch classify(k) {
	case chainHeader, dropHeader:
		return reqDrop
	case trustedHeader:
		return reqTrusted
	}
	return reqPass
}

// listedKinds maps every name with a fixed kind (Cookie, Connection, the
// hop-by-hop fields, Host, Authorization, Content-Length and the exact
// names of spoofableHeaders), lower-cased, to its kind as
// requestKindSlow decides it.
var listedKinds = func() map[string]requestKind {
	m := map[string]requestKind{}
	add := func(name []byte) { m[string(bytes.ToLower(name))] = requestKindSlow(name) }
	for _, n := range [][]byte{hCookie, hConnection, hHost, hAuthorization, hContentLength} {
		add(n)
	}
	for _, n := range hopByHopNames {
		add(n)
	}
	for _, e := range spoofable {
		if !e.prefix {
			add(e.name)
		}
	}
	return m
}()

// maxListedName bounds the names requestKindOf decides through a
// lower-cased copy on the stack (and the bits of listedShapes); longer
// ones (no listed name is), and names that are not ASCII, take
// requestKindSlow.
const maxListedName = 63

// listedShapes has bit n of entry c set when a listed name is n bytes
// long and starts with c: most names a browser sends are ruled out
// without a map lookup.
var listedShapes = func() (shapes [256]uint64) {
	for name := range listedKinds {
		shapes[name[0]] |= 1 << len(name)
	}
	return shapes
}()

// spoofPrefix is a prefix of spoofableHeaders, lower-cased.
type spoofPrefix struct {
	lower string
	kind  requestKind
}

// prefixGroups are the prefixes of spoofableHeaders by their first
// letter (lower case), each group in the list's order, so that the first
// that matches decides, as in classify.
var prefixGroups = func() (groups [256][]spoofPrefix) {
	for _, e := range spoofable {
		if e.prefix {
			l := string(bytes.ToLower(e.name))
			groups[l[0]] = append(groups[l[0]], spoofPrefix{lower: l, kind: kindOfClass(e.class)})
		}
	}
	return groups
}()

func kindOfClass(c headerClass) requestKind {
	switch c {
	case chainHeader, dropHeader:
		return reqDrop
	case trustedHeader:
		return reqTrusted
	}
	return reqPass
}

// requestKindOf is requestKindSlow for the names a browser sends, with
// one map lookup at most instead of some twenty case-insensitive
// comparisons per header and a scan of spoofableHeaders for every name
// starting with x, f, r, c or t (BenchmarkHandler: the header loop of
// buildRequest). A name that is not listed can only be decided by an
// underscore or a prefix of spoofableHeaders, which are checked then, on
// the lower-cased copy.
func requestKindOf(k []byte) requestKind {
	n := len(k)
	if n == 0 || n > maxListedName {
		return requestKindSlow(k)
	}
	if c := asciiLower[k[0]]; listedShapes[c]&(1<<n) == 0 && len(prefixGroups[c]) == 0 {
		// Neither listed nor under a listed prefix (most names a browser
		// sends: Accept-*, Sec-*): only an underscore decides, or a byte
		// outside ASCII, which the definition folds as Unicode.
		for _, c := range k {
			switch {
			case c == '_':
				return reqDrop
			case c >= 0x80:
				return requestKindSlow(k)
			}
		}
		return reqPass
	}
	var buf [maxListedName]byte
	lower := buf[:n]
	if !lowerASCII(lower, k) {
		return requestKindSlow(k)
	}
	if listedShapes[lower[0]]&(1<<n) != 0 {
		if kind, ok := listedKinds[string(lower)]; ok {
			return kind
		}
	}
	if bytes.IndexByte(lower, '_') >= 0 {
		return reqDrop
	}
	for _, p := range prefixGroups[lower[0]] {
		if n >= len(p.lower) && string(lower[:len(p.lower)]) == p.lower {
			return p.kind
		}
	}
	return reqPass
}

// responseKind is what writeResponse does with an upstream's response
// header, decided by its name alone (the response's Connection tokens
// are checked after).
type responseKind uint8

const (
	// respPass: passed to the browser.
	respPass responseKind = iota
	// respDrop: never passed: hop-by-hop fields, Content-Length (set
	// from the body) and Date (the gateway's own).
	respDrop
	// respSetCookie: passed unless it sets one of the gateway's cookies.
	respSetCookie
)

// responseKindSlow decides a response header's kind by comparisons. It
// is the definition; responseKindOf gives the same answer faster.
func responseKindSlow(k []byte) responseKind {
	switch {
	case isHopByHop(k), bytes.EqualFold(k, hContentLength), bytes.EqualFold(k, hDate):
		return respDrop
	case bytes.EqualFold(k, hSetCookie):
		return respSetCookie
	}
	return respPass
}

// listedResponseKinds maps the names responseKindSlow does not pass,
// lower-cased, to their kind.
var listedResponseKinds = func() map[string]responseKind {
	m := map[string]responseKind{}
	for _, n := range append([][]byte{hContentLength, hDate, hSetCookie}, hopByHopNames...) {
		m[string(bytes.ToLower(n))] = responseKindSlow(n)
	}
	return m
}()

// responseKindOf is responseKindSlow with one map lookup instead of a
// dozen case-insensitive comparisons per response header.
func responseKindOf(k []byte) responseKind {
	n := len(k)
	if n == 0 || n > maxListedName {
		return responseKindSlow(k)
	}
	var buf [maxListedName]byte
	lower := buf[:n]
	if !lowerASCII(lower, k) {
		return responseKindSlow(k)
	}
	if kind, ok := listedResponseKinds[string(lower)]; ok {
		return kind
	}
	return respPass
}

// asciiLower maps each byte to its ASCII lower case (others to
// themselves).
var asciiLower = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			t[i] += 'a' - 'A'
		}
	}
	return t
}()

// lowerASCII writes k in lower case to dst (as long as k) and reports
// whether k is ASCII. A name that is not cannot be decided by a lower-cased
// copy: bytes.EqualFold, which the definitions use, folds Unicode
// ("\u212a" is a K). fasthttp refuses such names before a handler runs;
// the fast decisions fall back on the definitions for them all the same.
func lowerASCII(dst, k []byte) bool {
	var high byte
	for i, c := range k {
		high |= c
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst[i] = c
	}
	return high < 0x80
}

// eachRawField calls fn with the name and value of each field of raw, a
// request's header block as fasthttp's server received and accepted it
// (RequestHeader.RawHeaders), in order, and reports true. It stops and
// reports false at a field folded over several lines (obsolete line
// folding, RFC 9112 §5.2), fn called for the fields before it only: the
// caller starts over and asks fasthttp for the fields.
//
// Written here because fasthttp's own in-order visit (AllInOrder)
// validates every byte of the block again, as its parser already did
// when the request was read: for a cookie session's 4 KB Cookie field
// that second pass was a sixth of the gateway's instructions per request
// (issue 20). The block was accepted by that parser, so this one only
// splits it: a line per LF (one CR before it dropped), the name before
// the first colon, the value after it with the spaces and tabs around
// it trimmed, as fasthttp's parser trims them. Names are as received (no
// case normalisation; every caller compares them without case).
func eachRawField(raw []byte, fn func(k, v []byte)) bool {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			break // the blank line that ends the block
		}
		if len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t') {
			return false // the next line continues this field
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) == 0 {
			continue // not a field; the parser refused such blocks
		}
		fn(k, trimSpace(v))
	}
	return true
}
