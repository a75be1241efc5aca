// Package bff is bffgate's Backend-for-Frontend gateway: the endpoints a
// browser SPA talks to so that it never holds an OAuth token.
//
// The gateway runs the OpenID Connect authorization code flow with PKCE
// (RFC 7636, S256 only), state and nonce against any provider it finds by
// discovery (OpenID Connect Discovery 1.0), keeps the tokens in a
// session.Store, and gives the browser only an opaque handle in HttpOnly
// cookies. It speaks Duende BFF's endpoints:
//
//	GET  /bff/login?returnUrl=/path   start a login (302 to the provider)
//	GET  /bff/callback                finish it (302 to returnUrl)
//	GET  /bff/user                    the session's claims (X-CSRF: 1)
//	GET  /bff/logout?sid=...          end the session (or POST with X-CSRF: 1)
//	POST /bff/backchannel-logout      OIDC Back-Channel Logout 1.0
//	GET  /bff/jwks                    the identity assertions' public key
//	*    /bff/auth                    forward auth for nginx, Caddy, Traefik, Envoy
//
// and proxies the SPA's API routes (same origin) through bff/proxy, with the
// session's access token (policy "user"), the token when there is one
// ("user-optional"), the gateway's own client-credentials token ("client")
// or none ("none"), refreshing tokens through bff/tokens. A route with
// token.exchange sends instead a token exchanged for it (RFC 8693) from
// the session's, never the session's own (RouteExchange).
//
// New discovers the provider once and fails with an error naming the
// issuer URL when it cannot (it does not retry: start the provider first).
// App serves the endpoints, the API routes, the SPA and, through
// internal/obs, /healthz, /readyz (Ready: the session store and the
// provider's discovery document) and /metrics.
//
// # Several frontends
//
// A Host (host.go) is the listener: one fiber app in front of one or more
// frontends, each a Gateway (NewGateway) with its own Config.Name, match
// (Config.Hosts, Config.PathPrefix), provider and client, cookie names and
// path, session store (a namespace of its own), routes and SPA. A request
// goes to the frontend whose hosts hold its Host header and whose path
// prefix is the longest holding its path (a table swapped atomically by
// Host.Set, which a reload calls); Gateway.serve then dispatches its
// endpoints under PathPrefix + BasePath itself. New is a Host serving one
// gateway, the classic single frontend (Name ""), whose cookies, store keys
// and metrics are those of the releases before frontends.
//
// Nothing of one frontend is accepted by another: the frontend's name is
// sealed into every session (session.Session.Frontend, checked on every
// read) and every login flow, cookie names differ (CheckFrontends), stores
// are namespaced, other frontends' cookies never go upstream, and a
// back-channel logout ends the sessions of the frontends with the
// verifying provider's issuer and client id only. The callback's RFC 9207
// check compares iss with the frontend's own provider (the mix-up
// defence between frontends).
//
// # Forward auth
//
// {base}/auth decides for a proxy in front of another app whether a
// request may pass (forwardauth.go): the original request is described by
// the proxy's headers, believed only from Config.Proxy.TrustedProxies; the
// rule for its host and path (Config.ForwardAuth) decides over the
// session's claims; the answer is 200 with identity headers, 401 with the
// login URL back to the original request, or 403. A request from any other
// peer is decided on the auth endpoint's own path, which no rule covers,
// and is denied. Config.SPARules decide in the same way who may load the
// SPA (spaguard.go).
//
// # Bearer routes and MCP servers
//
// A route with auth bearer (RouteBearer, bearer.go) takes access tokens
// from non-browser callers in the Authorization header: a JWT access
// token (RFC 9068) checked against the provider's JWKS, iss, exp and an
// aud holding the route's resource (RFC 8707), and with introspect the
// provider's introspection answer (RFC 7662) on every call. Its 401s
// carry the RFC 9728 challenge naming the route's protected resource
// metadata (prm.go), a token lacking a scope gets 403 insufficient_scope,
// a token in the query string 400. The caller's token never goes
// upstream: token.exchange trades it (as the subject token), policy
// client sends the gateway's own token, none nothing. The CSRF rule is a
// cookie session's only.
//
// A route with mcp (MCPConfig, mcp.go) fronts an MCP server (Streamable
// HTTP): each POSTed JSON-RPC message is read from the bounded body by
// exact member names (as a JavaScript server reads it), checked against
// the Mcp-Method and Mcp-Name headers, and decided by method and tool
// name; a denial is a JSON-RPC error (MCPDeniedCode) with the request's
// id, a tool needing more scope a 403 insufficient_scope (step-up).
// Answers, SSE included, stream through unchanged. One log line per tool
// call: client, user, tool, decision.
//
// # Sessions
//
// A session ends at the earlier of its idle deadline (IdleTimeout after
// the last use; /bff/user and API calls extend it, at most once per
// twentieth of the timeout to spare the store, and /bff/user?slide=false
// never) and its absolute deadline (AbsoluteLifetime after login, never
// later than the refresh token's expiry when the provider states it). A
// refresh the provider refuses ends the session (401 session_expired); a
// provider that cannot be reached leaves it alone (503).
//
// # Operations
//
// Metrics (on Config.Registerer): bffgate_gateway_logins_started_total,
// _logins_completed_total, _logins_failed_total{reason},
// _logouts_total, _backchannel_logouts_total{result} and
// _sessions_created_total, _bearer_auth_total{route,result} and
// _mcp_calls_total{route,method,decision}, besides obs's request metrics. Each event is
// also one structured log line carrying the request id, never a token,
// code or cookie value.
//
// # Security
//
// Login state (PKCE verifier, nonce, state, return URL) rides in one
// short-lived encrypted cookie per flow, named after a hash of the state, so
// that logins in several tabs complete independently; at most MaxFlows are
// kept so that cookies never grow into a 431. The return URL must be a local
// path, checked after repeated percent-decoding (open redirects are the
// classic BFF hole).
//
// Every API call and every gateway mutation must carry the anti-CSRF header
// (X-CSRF: 1 by default). A browser sends a custom header cross-origin only
// after a CORS preflight, which the gateway never grants, so the header
// proves a same-origin caller; requests the browser marks as cross-site
// (Sec-Fetch-Site, Origin) are refused as well.
//
// API routes answer 401 JSON, never a redirect, when there is no session: a
// fetch that follows a redirect to the provider fails on CORS and the SPA
// cannot tell why.
//
// Session cookies are HttpOnly, Secure, SameSite=Lax (or Strict), Path=/
// and carry the __Host- prefix (RFC 6265bis 4.1.3.2), so no subdomain can
// set or shadow them. A cookie that does not decode, fails authentication or
// names no live session counts as no session and is cleared; it is never a
// 500.
//
// Tokens, codes and cookie values never reach a log line, a URL or a
// response body.
package bff
