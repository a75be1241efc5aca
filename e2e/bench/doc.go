// Package bench is bffgate's side-by-side load benchmark (issues 9 and
// 20): one run on one machine measures, with the same load generator,
// duration and connection count,
//
//	a.  the upstream directly (the ceiling),
//	b.  a bare reverse proxy on bffgate's HTTP stack (fiber + fasthttp),
//	n.  Debian's nginx as a bare keep-alive reverse proxy (e2e/nginx:
//	    an upstream pool with keepalive, access log off, one worker per
//	    core),
//	c.  bffgate with a logged-in session in encrypted cookies,
//	d.  the same on the bbolt session store,
//	e.  the same on Redis (when BFFGATE_TEST_REDIS_URL is set),
//	cl, dl, el. the same three with the default configuration (the
//	    access log on; c, d and e have it off, as in issue 9),
//	f.  oauth2-proxy v7.8.1 with cookie sessions, PKCE and the access token
//	    sent upstream as Authorization: Bearer,
//
// in two rounds of alternating order, with POST rows (a 1 KB JSON body)
// through b, n, cl, dl and el in the same rounds; then the issuer's rows
// (i1 to i8: refresh grants, code exchanges, introspection of a live
// token and client_credentials per second, with ES256 and with RS256
// tokens, against the real binary running its issuer alone); peak memory
// at 256 connections for every store; a refresh scenario (5 s access
// tokens, refresh-token rotation, 256 connections); (issue 8) two bffgate
// instances sharing Redis next to one on bbolt, with each instance's CPU
// per request; the login rate through the gateway and the embedded
// issuer; and a soak: the default-configuration gateways side by side at a
// steady rate, their memory at the start and the end. It writes
// RESULTS.md, with the ratios against both bare proxies and the targets
// of issues 9 and 20 (reported, never asserted).
//
// # Running it
//
// TestLoadBenchmark runs only with BFFGATE_BENCH=1; the parsers it relies
// on are unit-tested in every `go test`. It needs wrk (apt-get install -y
// wrk) and nginx-light, and builds oauth2-proxy once (see
// OAuth2ProxyBinary). The full run, on a quiet machine (about 20 minutes,
// of which the soak is 10), writes e2e/bench/RESULTS.md:
//
//	BFFGATE_BENCH=1 BFFGATE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run TestLoadBenchmark -count=1 -timeout 60m -v ./e2e/bench/
//
// `go tool task bench` runs the Go benchmarks first, then the same (with
// the Redis rows when BFFGATE_TEST_REDIS_URL is set in the environment).
// The environment tunes it:
//
//	BFFGATE_BENCH_QUICK=1        2 s runs and a 20 s soak, to check that every row works; the
//	                             report goes to a temporary file (or BFFGATE_BENCH_OUT), never
//	                             over RESULTS.md
//	BFFGATE_BENCH_DURATION=10s   one run's length (default 10s; 2s when quick)
//	BFFGATE_BENCH_SOAK=10m       the soak's length (default 10m; 20s when quick; 0: no soak)
//	BFFGATE_BENCH_SOAK_RATE=1000 the soak's requests per second per gateway
//	BFFGATE_BENCH_PROFILE=1      perf summaries of the gateways' CPU in RESULTS.md
//	BFFGATE_BENCH_PROFILE=DIR    a perf profile of the bffgate process for every bffgate row
//	                             (DIR/get-KEY, post-KEY, issuer-KEY .perf.data and .txt)
//
// For example, a quick check of every row:
//
//	BFFGATE_BENCH=1 BFFGATE_BENCH_QUICK=1 BFFGATE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run TestLoadBenchmark -count=1 -timeout 30m -v ./e2e/bench/
//
// # Method
//
// The load generator is wrk (Debian's package): a C event loop that costs
// less CPU per request than any Go generator, which matters when the
// generator, the gateway and the upstream share two cores. A Lua script
// adds the session cookie and the anti-CSRF header (or, for the POST and
// issuer rows, the method, body, content type and client credentials) and
// prints wrk's HDR latency percentiles as one JSON line (wrk's own text
// shows no p99.9). Requests that cannot be replayed, the issuer's code
// exchanges (each code redeemed once) and refresh grants (each refresh
// token rotated by its use), come from internal/tokenload, a separate Go
// process on fasthttp's client, with codes asked for beforehand as a
// signed-in browser would. The soak's steady rate (wrk cannot hold one)
// comes from an open loop in the test process.
//
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
// The bffgate processes' output (the access log of the default
// configuration, hundreds of MB per run) goes to files (stack.Options.
// LogFile), emptied after each run: what a log file costs, with no copy
// through the test process.
//
// With BFFGATE_BENCH_PROFILE set, the gateways are also loaded once more
// under `perf record --all-user -g` and their CPU profile is kept (issue
// 9: profile where a target is missed).
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
// the absolute numbers move with the machine. The issuer's rows share it
// with their load generator too (32 connections), so they understate the
// issuer alone. bffgate runs its issuer in
// the same process as its gateway, so its CPU seconds include the issuer
// (idle under API load, busy in the refresh scenario). In the refresh
// scenario every request carries the cookie from the login: harmless for the server-side stores
// (the cookie holds only the session id), a worst case for cookie
// sessions (bffgate's grace window and oauth2-proxy's refresh see the
// rotated-away refresh token again and again).
package bench
