// Package proxy is the gateway's reverse-proxy engine: it forwards a
// browser's API call to the one upstream its route names, with the
// access token the caller hands it, and streams the answer back. It knows
// nothing of sessions; package bff decides which token to attach and
// package tokens keeps it fresh.
//
// # Engine
//
// The proxy runs on fasthttp's HostClient rather than net/http's
// Transport behind fasthttpadaptor: the gateway already serves with
// fasthttp (fiber), and HostClient keeps a keep-alive pool per upstream
// and reuses request and response objects, so the per-request path does
// not convert between the two HTTP stacks or copy headers twice. That
// is what keeps the gateway near a bare proxy's throughput. Responses are
// read with StreamResponseBody and handed to fiber as a body stream, so
// large downloads and server-sent events pass through in 4 KiB pieces
// and are flushed chunk by chunk; request bodies that fiber streams
// (StreamRequestBody) are streamed upstream likewise.
//
// # What the upstream sees
//
//   - The path as the client sent it, with empty segments removed, joined
//     to the upstream's base path. Before anything is sent the raw path
//     is checked (CheckPath): a segment that is "." or ".." after
//     percent-decoding (repeated, up to four rounds), or before its first
//     ";" (Tomcat, Jetty and Spring read "..;" as ".."), an encoded slash
//     or backslash, control characters or malformed escapes are refused
//     with 400 JSON. Routes are matched on the canonical form of the path
//     (decoded, path parameters removed), which is how such upstreams
//     route it. The upstream's address comes only from the configuration.
//   - The browser's headers minus hop-by-hop fields (RFC 9110 §7.6.1:
//     Connection, the fields any Connection line names, Keep-Alive,
//     Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade) and
//     Proxy-Authorization; minus names with an underscore (CGI-style
//     upstreams read X_Forwarded_For as X-Forwarded-For); minus
//     the browser's Authorization (replaced by the caller's bearer token)
//     and the gateway's own cookies; minus the route's DropHeaders and
//     DropCookies; plus the route's AddHeaders.
//   - Minus every forwarding, rewriting and identity header another proxy
//     or gateway would set (spoofableHeaders in headers.go is the one
//     list: X-Forwarded-* of every kind, Forwarded, X-Original-URL,
//     True-Client-IP, X-Forwarded-User, X-Auth-Request-*, X-Remote-User,
//     ...). X-Forwarded-For starts at the peer; only from one of
//     Config.TrustedProxies is the incoming X-Forwarded-For and Forwarded
//     chain kept (the peer appended) and X-Real-Ip passed. Identity
//     headers are dropped from trusted proxies too. X-Forwarded-Host and
//     X-Forwarded-Proto come from Config.PublicURL, never from the Host
//     header.
//   - The body as it came, Content-Encoding and all (never decoded), up
//     to the route's MaxBodyBytes: a larger Content-Length is 413 JSON
//     before the upstream is contacted; a chunked body is counted as it
//     streams and the upstream request aborted past the limit.
//
// # What the browser sees
//
// The upstream's status, headers and body, minus hop-by-hop fields and
// any Set-Cookie for one of the gateway's cookie names. When the
// upstream cannot be reached the answer is 502 JSON
// {"error":"upstream_unavailable"}; when it does not answer within the
// route's Timeout, 504 {"error":"upstream_timeout"}.
//
// # Token renewal
//
// The proxy owns the retry after an upstream refuses the access token:
// ForwardWith takes a TokenSource (the current token and a Renew call),
// and on a 401 with a Bearer invalid_token challenge (RFC 6750 §3.1) it
// renews once and replays the request, dropping the first answer whole.
// When Renew fails, nothing of the upstream's answer has been written and
// the caller answers with its own error (its headers only). Replay sends
// the request body twice, so it happens only when the body is empty or
// held in memory (Config.MaxRequestBodySize); a streamed body's request
// gets the upstream's 401.
//
// # Connections
//
// Each upstream (scheme and host) has one keep-alive pool. Idle
// connections are closed after Route.IdleTimeout (Config.IdleConnTimeout,
// 4 s, by default), under the 5 s after which Node's http server closes
// them, so that a request is not sent into a connection the upstream is
// closing. One that still is (a shorter upstream timeout, a restart) and
// fails before the first byte of the answer is sent once more on a new
// connection when its method is idempotent (RFC 9110 §9.2.2) and its body
// is in memory, counted in bffgate_proxy_upstream_retries_total; any
// other request gets 502 JSON whose description names the cause. See
// internal/upstream.
//
// # Caveats
//
// Route.Timeout bounds the time to the upstream's response headers only:
// a body (a download, an event stream) then streams for as long as it
// lasts. WebSocket handshakes are checked against the Origin header
// (Config.WebSocketOrigins, or the request's own host without them; no
// Origin is refused) before the upstream is dialled; browsers send no
// custom header on a WebSocket handshake, so the caller's anti-CSRF
// header rule must not apply to them.
package proxy
