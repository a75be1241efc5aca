// Package bench is bffgate's side-by-side load benchmark (issue 9): one
// run on one machine measures, with the same load generator, duration and
// connection count,
//
//	a. the upstream directly (the ceiling),
//	b. a bare reverse proxy on bffgate's HTTP stack (fiber + fasthttp),
//	c. bffgate with a logged-in session in encrypted cookies,
//	d. the same on the bbolt session store,
//	e. the same on Redis (when BFFGATE_TEST_REDIS_URL is set),
//	f. oauth2-proxy v7.8.1 with cookie sessions, PKCE and the access token
//	   sent upstream as Authorization: Bearer,
//
// in two rounds of alternating order, then a refresh scenario (5 s access
// tokens, refresh-token rotation, 256 connections), the login rate through
// the gateway and the embedded issuer, and (issue 8) two bffgate
// instances sharing Redis next to one on bbolt. It writes RESULTS.md.
//
// TestLoadBenchmark runs only with BFFGATE_BENCH=1 (`task bench`); the
// parsers it relies on are unit-tested in every `go test`.
//
// # Method
//
// The load generator is wrk (Debian's package): a C event loop that costs
// less CPU per request than any Go generator, which matters when the
// generator, the gateway and the upstream share two cores. A Lua script
// adds the session cookie and the anti-CSRF header and prints wrk's HDR
// latency percentiles as one JSON line (wrk's own text shows no p99.9).
// The upstream and the bare proxy are separate processes built from
// internal/upstream and internal/bareproxy, so that the CPU seconds read
// from /proc/PID/stat (utime+stime) are the measured process's alone.
// Peak RSS is VmHWM from /proc/PID/status, reset through
// /proc/PID/clear_refs before each run so that it is the peak under that
// load. bffgate is restarted after its login (same ports and data, the
// session kept by its store): the embedded issuer's argon2id password
// check allocates 64 MiB that Go returns to the system only minutes
// later, and a gateway in front of an external provider never hashes a
// password. Each bffgate target gets redis.url only when its store is
// Redis (with it, the cookie store also asks Redis on every request
// whether the session was ended elsewhere).
//
// With BFFGATE_BENCH_PROFILE=1, the gateways are also loaded once more
// under `perf record --all-user -g` and RESULTS.md shows where their CPU
// goes (issue 9: profile where a target is missed).
//
// Logins are driven without a browser: an HTTP client that follows
// redirects by hand, keeps cookies per host and port, reads the issuer's
// login form (hidden fields and CSRF token) and posts it.
//
// Cookies under load: wrk replays one Cookie header and cannot keep the
// cookies responses set (its Lua API sees only the last of repeated
// headers, and a cookie session spans two). Each throughput run therefore
// starts from the cookies a browser would hold: one request with the
// target's cookies first, whose Set-Cookie answers replace them. The
// gateways extend a session's idle deadline (and, for cookie sessions,
// re-issue the cookie) at most once a minute, so within a run of under a
// minute the cookies stay current. Row c0 shows the other extreme, a
// client that never stores a cookie: the login's cookie, due for a slide,
// replayed, so the cookie-store gateway re-seals it on every request.
//
// # Caveats
//
// Everything shares the machine: the ratios are the figures that hold,
// the absolute numbers move with the machine. bffgate runs its issuer in
// the same process as its gateway, so its CPU seconds include the issuer
// (idle under API load, busy in the refresh scenario). In the refresh
// scenario every request carries the cookie from the login: harmless for the server-side stores
// (the cookie holds only the session id), a worst case for cookie
// sessions (bffgate's grace window and oauth2-proxy's refresh see the
// rotated-away refresh token again and again).
package bench
