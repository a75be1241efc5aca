package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/issuer"
)

const (
	benchUser     = "bench"
	benchPassword = "bench-password-1"
	// benchUserBcrypt has a bcrypt hash: the login rate with a cheaper
	// password check, to show the flow's own cost.
	benchUserBcrypt = "bench-bcrypt"
	apiPath         = "/api/items"
	conns           = 64
	refreshConns    = 256
	loginWorkers    = 4
)

// target is something wrk loads: one URL (or several, one wrk each, for
// instances behind a load balancer) and the processes whose CPU and
// memory are the target's.
type target struct {
	key, name string
	urls      []string
	cookies   []string
	pids      []int
}

type runner struct {
	t        *testing.T
	wrkBin   string
	script   string
	upstream *Proc
	dur      time.Duration
}

// TestLoadBenchmark is the side-by-side benchmark of issue 9 (see the
// package documentation). It runs only with BFFGATE_BENCH=1.
func TestLoadBenchmark(t *testing.T) {
	if os.Getenv("BFFGATE_BENCH") != "1" {
		t.Skip("load benchmark: set BFFGATE_BENCH=1 (or run `task bench`) to run it; it loads the machine for several minutes")
	}
	wrkBin, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("load benchmark: wrk not found: install it with `apt-get install -y wrk`")
	}
	dur := 10 * time.Second
	if s := os.Getenv("BFFGATE_BENCH_DURATION"); s != "" {
		dur, err = time.ParseDuration(s)
		if err != nil || dur < time.Second {
			t.Fatalf("BFFGATE_BENCH_DURATION=%q: want a Go duration of at least 1s, such as 10s", s)
		}
	}
	if dur >= time.Minute {
		t.Logf("runs of %s: the gateways slide a session's idle timeout once a minute, so within a run wrk replays a stale cookie and the cookie-store row includes re-issuing it (see loadMode)", dur)
	}
	redisURL := os.Getenv("BFFGATE_TEST_REDIS_URL")
	started := time.Now()
	load0 := loadAvg()

	bins := t.TempDir()
	upBin := GoBuild(t, "./e2e/bench/internal/upstream", bins)
	bareBin := GoBuild(t, "./e2e/bench/internal/bareproxy", bins)
	opBin := OAuth2ProxyBinary(t)
	gwBin := stack.Binary(t)

	scriptPath := filepath.Join(bins, "bench.lua")
	mustf(t, os.WriteFile(scriptPath, []byte(wrkScript), 0o644), "write the wrk script")

	up := StartListening(t, "upstream", upBin)
	bare := StartListening(t, "bareproxy", bareBin, "-upstream", up.URL)
	r := &runner{t: t, wrkBin: wrkBin, script: scriptPath, upstream: up, dur: dur}

	hash := must(issuer.HashPassword(benchPassword))(t)
	prefix := "bffgate-bench-" + randHex(6) + ":"
	if redisURL != "" {
		t.Cleanup(func() { deleteRedisPrefix(t, redisURL, prefix) })
	}

	// The gateways under test, each logged in once.
	opAddr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	opSecret := randHex(24)
	gateways := map[string]*stack.Stack{}
	gw := func(key, store string) (*stack.Stack, target) {
		p := configParams{
			Store: store, Upstream: up.URL, Hash: hash, AccessTTL: "5m",
			OAuth2ProxyAddr: opAddr, OAuth2ProxySecret: opSecret,
		}
		// Redis only where the store is Redis: with redis.url set, the
		// cookie store also checks Redis for sessions ended elsewhere
		// (back-channel logout) on every request.
		if store == "redis" {
			p.RedisURL, p.RedisPrefix = redisURL, prefix
		}
		cfg := benchConfig(p)
		s := stack.Start(t, stack.Options{ConfigYAML: cfg})
		gateways[key] = s
		return s, target{urls: []string{s.GatewayURL + apiPath}, cookies: []string{loginGateway(t, s)}}
	}
	targets := map[string]target{
		"a": {key: "a", name: "upstream direct", urls: []string{up.URL + apiPath}, cookies: []string{""}, pids: []int{up.Pid()}},
		"b": {key: "b", name: "bare proxy (fiber + fasthttp)", urls: []string{bare.URL + apiPath}, cookies: []string{""}, pids: []int{bare.Pid()}},
	}
	_, tc := gw("c", "cookie")
	tc.key, tc.name = "c", "bffgate, cookie store"
	targets["c"] = tc
	// The same gateway and session, driven by a client that ignores
	// Set-Cookie: the gateway's worst case (see wrkScript).
	tc0 := tc
	tc0.key, tc0.name = "c0", "bffgate, cookie store, client ignores Set-Cookie"
	targets["c0"] = tc0
	sBolt, td := gw("d", "bbolt")
	td.key, td.name = "d", "bffgate, bbolt store"
	targets["d"] = td
	order := []string{"a", "b", "c", "d"}
	if redisURL != "" {
		_, te := gw("e", "redis")
		te.key, te.name = "e", "bffgate, Redis store"
		targets["e"] = te
		order = append(order, "e")
	} else {
		t.Log("scenario e (Redis store) skipped: BFFGATE_TEST_REDIS_URL is not set")
	}
	op := StartOAuth2Proxy(t, OAuth2ProxyOptions{
		Bin: opBin, Addr: opAddr, IssuerURL: sBolt.IssuerURL, ClientID: "oauth2-proxy", ClientSecret: opSecret,
		UpstreamURL: up.URL,
	})
	targets["f"] = target{key: "f", name: "oauth2-proxy " + OAuth2ProxyVersion + ", cookie sessions", urls: []string{op.URL + apiPath},
		cookies: []string{loginOAuth2Proxy(t, op)}, pids: []int{op.Pid()}}
	order = append(order, "f")
	// Every login done (oauth2-proxy's too, at d's issuer), restart the
	// gateways: see restartGateway.
	for key, s := range gateways {
		tg := targets[key]
		tg.pids = []int{restartGateway(t, gwBin, s, tg.cookies[0])}
		targets[key] = tg
		if key == "c" {
			c0 := targets["c0"]
			c0.pids = tg.pids
			targets["c0"] = c0
		}
	}

	// Two rounds, the second in reverse order, so drift shows.
	rows := map[string]*Row{}
	for _, k := range order {
		rows[k] = &Row{Key: k, Name: targets[k].name}
	}
	rounds := [][]string{order, reversed(order)}
	for i, ro := range rounds {
		for _, k := range ro {
			m := r.measure(targets[k], conns, dur, browserLike)
			t.Logf("round %d %s. %s: %.0f req/s p50 %s p99 %s p99.9 %s cpu %.2fs rss %.1fMB (upstream saw %d, %d with a bearer)",
				i+1, k, targets[k].name, m.RPS, m.P50, m.P99, m.P999, m.CPU.Seconds(), float64(m.PeakRSS)/(1<<20), m.UpstreamTotal, m.UpstreamBearer)
			checkMeasurement(t, k, m)
			rows[k].Runs = append(rows[k].Runs, m)
		}
	}

	// Optional CPU profiles of the gateways under the same load, outside
	// the measured runs (perf costs the profiled process some CPU).
	profiles := map[string]string{}
	if os.Getenv("BFFGATE_BENCH_PROFILE") == "1" {
		for _, k := range []string{"c", "d", "e"} {
			if tg, ok := targets[k]; ok {
				profiles[k+". "+tg.name] = r.profile(tg, conns, dur)
			}
		}
	}

	// The refresh scenario: 5 s access tokens, rotation, 256 connections.
	refreshDur := max(dur, 11*time.Second) // at least two token lifetimes
	refresh := r.refreshScenario(gwBin, opBin, up, hash, refreshDur)

	// Issue 8: two gateway instances on Redis next to one on bbolt.
	var scale []Row
	if redisURL != "" {
		scale = r.scaleOut(gwBin, up, hash, redisURL, prefix, targets["d"])
	}

	// c0: the cookie-store gateway and its session again, driven by a
	// client that ignores Set-Cookie, with the login's cookie once its
	// idle deadline is due for a slide: the gateway re-issues the cookie
	// on every request. One run, after the scenarios above (by then the
	// slide is due; waitSlideDue makes sure).
	c0 := targets["c0"]
	waitSlideDue(t, c0.urls[0], c0.cookies[0])
	m0 := r.measure(c0, conns, dur, fixedCookie)
	checkMeasurement(t, "c0", m0)
	t.Logf("c0. %s: %.0f req/s p99 %s cpu %.2fs", c0.name, m0.RPS, m0.P99, m0.CPU.Seconds())
	rows["c0"] = &Row{Key: "c0", Name: c0.name, Runs: []Measurement{m0}}
	var table []Row
	for _, k := range order {
		table = append(table, *rows[k])
		if k == "c" {
			table = append(table, *rows["c0"])
		}
	}

	// The login rate through the gateway and the embedded issuer, last:
	// its password hashing leaves the process hundreds of MiB larger.
	login := r.loginRate(gwBin, up, hash, min(dur, 10*time.Second))

	res := report{
		Started: started, Duration: dur, RefreshDuration: refreshDur, Table: table, Refresh: refresh, Login: login,
		Scale: scale, Redis: redisURL != "", Profiles: profiles, LoadBefore: load0, LoadAfter: loadAvg(),
		History: string(must(os.ReadFile("HISTORY.md"))(t)),
		Versions: map[string]string{
			"go":           firstLine("go", "version"),
			"bffgate":      firstLine(gwBin, "version"),
			"oauth2-proxy": firstLine(opBin, "--version"),
			"wrk":          firstLine(wrkBin, "-v"),
			"kernel":       firstLine("uname", "-sr"),
		},
	}
	var b strings.Builder
	res.write(&b)
	mustf(t, os.WriteFile("RESULTS.md", []byte(b.String()), 0o644), "write RESULTS.md")
	t.Logf("wrote e2e/bench/RESULTS.md:\n%s", b.String())
}

// loadMode is how wrk's script drives a run (see wrkScript).
type loadMode struct {
	// countStatus counts non-2xx responses (the refresh scenario's figure).
	countStatus bool
	// jar starts the run from the cookies a browser would hold: one
	// request with the target's cookies first, whose Set-Cookie answers
	// (a gateway sliding its idle timeout re-issues a stale cookie)
	// replace them, as a browser's cookie jar does. wrk itself cannot
	// keep cookies: its Lua API hands response() only the last of
	// repeated headers, and a cookie session spans two Set-Cookie
	// chunks. The gateways slide at most once a minute, so within a run
	// of under a minute the fresh cookies stay what a browser would send.
	jar bool
}

var (
	// browserLike is the throughput runs' mode, for every target alike.
	browserLike = loadMode{jar: true}
	// fixedCookie replays the login's cookies whatever the responses set.
	fixedCookie = loadMode{}
	// countingFixed is the refresh scenario's mode.
	countingFixed = loadMode{countStatus: true}
)

// measure runs wrk against tg (one wrk per URL, the connections and
// threads split between them) and reads the target's processes' CPU and
// peak memory around it.
func (r *runner) measure(tg target, c int, dur time.Duration, mode loadMode) Measurement {
	t := r.t
	t.Helper()
	for _, pid := range tg.pids {
		if err := ResetPeakRSS(pid); err != nil {
			t.Logf("%s: cannot reset the peak RSS of pid %d (%v); it is the process's lifetime peak", tg.name, pid, err)
		}
	}
	cpu0 := r.cpu(tg.pids)
	st0 := r.upstreamStats()
	n := len(tg.urls)
	cookies := slices.Clone(tg.cookies)
	if mode.jar {
		for i := range cookies {
			cookies[i] = browserCookies(t, tg.urls[i], cookies[i])
		}
	}
	outs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range tg.urls {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			threads := max(1, 2/n)
			args := []string{"-t", fmt.Sprint(threads), "-c", fmt.Sprint(c / n), "-d", fmt.Sprintf("%.0fs", dur.Seconds()),
				"--latency", "--timeout", "10s", "-s", r.script, tg.urls[i]}
			cmd := exec.Command(r.wrkBin, args...)
			cmd.Env = append(os.Environ(), "BENCH_COOKIE="+cookies[i])
			if mode.countStatus {
				cmd.Env = append(cmd.Env, "BENCH_COUNT_STATUS=1")
			}
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		}(i)
	}
	wg.Wait()
	cpu1 := r.cpu(tg.pids)
	st1 := r.upstreamStats()
	var m Measurement
	for i := range tg.urls {
		if errs[i] != nil {
			t.Fatalf("%s: wrk: %v\n%s", tg.name, errs[i], outs[i])
		}
		w, err := ParseWrk(outs[i])
		if err != nil {
			t.Fatalf("%s: %v\n%s", tg.name, err, outs[i])
		}
		if i == 0 {
			m.WrkResult = w
			continue
		}
		// Several instances: requests and rates add up; latencies are
		// the worse instance's (wrk cannot merge two histograms).
		m.Requests += w.Requests
		m.RPS += w.RPS
		m.SocketErrors += w.SocketErrors
		m.StatusErrors += w.StatusErrors
		if m.Non2xx >= 0 {
			m.Non2xx += w.Non2xx
		}
		m.P50, m.P90, m.P99 = max(m.P50, w.P50), max(m.P90, w.P90), max(m.P99, w.P99)
		m.P999, m.Max = max(m.P999, w.P999), max(m.Max, w.Max)
	}
	m.CPU = cpu1 - cpu0
	for _, pid := range tg.pids {
		if rss, err := ProcPeakRSS(pid); err == nil {
			m.PeakRSS = max(m.PeakRSS, rss)
		}
	}
	m.UpstreamTotal = st1.Total - st0.Total
	m.UpstreamBearer = st1.Bearer - st0.Bearer
	return m
}

func (r *runner) cpu(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		d, err := ProcCPU(pid)
		mustf(r.t, err, "read the CPU time of pid %d", pid)
		sum += d
	}
	return sum
}

type upstreamStats struct{ Total, Bearer int64 }

func (r *runner) upstreamStats() upstreamStats {
	resp, err := http.Get(r.upstream.URL + "/__stats")
	mustf(r.t, err, "upstream stats")
	defer resp.Body.Close()
	var s upstreamStats
	mustf(r.t, json.NewDecoder(resp.Body).Decode(&struct {
		Total  *int64 `json:"total"`
		Bearer *int64 `json:"bearer"`
	}{&s.Total, &s.Bearer}), "upstream stats")
	return s
}

// checkMeasurement fails the benchmark when a run did not measure what it
// claims: errors, or gateway requests that reached the upstream without a
// token (a 302 to a login page would otherwise count as a fast success).
func checkMeasurement(t *testing.T, key string, m Measurement) {
	t.Helper()
	if m.SocketErrors > 0 || m.StatusErrors > 0 {
		t.Errorf("scenario %s: %d socket errors and %d responses >= 400 under load", key, m.SocketErrors, m.StatusErrors)
	}
	if key == "a" || key == "b" {
		return
	}
	if float64(m.UpstreamBearer) < 0.99*float64(m.Requests) {
		t.Errorf("scenario %s: wrk counted %d responses but the upstream saw only %d requests with a bearer token", key, m.Requests, m.UpstreamBearer)
	}
}

type configParams struct {
	Store, Upstream, Hash, AccessTTL   string
	OAuth2ProxyAddr, OAuth2ProxySecret string
	RedisURL, RedisPrefix              string
	Extra                              string // more YAML under gateway: (indented two spaces)
	ExtraUsers                         string // more entries of issuer.users
	IssuerExtra                        string // more YAML under issuer:
	TopExtra                           string
}

// benchConfig is the bffgate configuration of the benchmark: one user,
// a client for oauth2-proxy, the /api/ route to the upstream, no demo
// API, the access log off (see StartOAuth2Proxy).
func benchConfig(p configParams) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log: {level: warn, format: json, access: false}\n")
	if p.RedisURL != "" {
		fmt.Fprintf(&b, "redis: {url: %q, prefix: %q}\n", p.RedisURL, p.RedisPrefix)
	}
	fmt.Fprintf(&b, "issuer:\n  tokens: {access_ttl: %s}\n", p.AccessTTL)
	b.WriteString(p.IssuerExtra)
	fmt.Fprintf(&b, `  clients:
  - id: oauth2-proxy
    secret: %q
    redirect_uris: ["http://%s/oauth2/callback"]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, profile, email, offline_access]
  users:
  - username: %s
    password_hash: %q
    subject: bench-user-1
    claims: {name: Bench User, email: bench@example.com, email_verified: true}
%sgateway:
  session: {store: %s}
  routes:
  - prefix: /api/
    upstream: %q
    policy: user
`, p.OAuth2ProxySecret, p.OAuth2ProxyAddr, benchUser, p.Hash, p.ExtraUsers, p.Store, p.Upstream)
	b.WriteString(p.Extra)
	b.WriteString("demo_api: {enabled: false}\n")
	b.WriteString(p.TopExtra)
	return b.String()
}

// loginGateway logs in to bffgate through its /bff/login and the issuer's
// form, checks the session reaches the API, and returns its cookie header.
func loginGateway(t testing.TB, s *stack.Stack) string {
	t.Helper()
	b := NewBrowser(nil)
	if _, err := b.Login(s.GatewayURL+"/bff/login?returnUrl=/", benchUser, benchPassword); err != nil {
		t.Fatalf("bffgate login: %v\n%s", err, s.Logs())
	}
	u := must(url.Parse(s.GatewayURL))(t)
	cookie := b.CookieHeader(u.Host)
	checkAPI(t, "bffgate", s.GatewayURL+apiPath, cookie)
	return cookie
}

// restartGateway restarts a logged-in bffgate process (same ports, same
// data, the session kept by its store), checks the session again and
// returns the new process id. The embedded issuer's argon2id password
// check allocates 64 MiB that the Go runtime returns to the system only
// minutes later; without the restart, the login would be most of the
// gateway's "peak RSS under load". A gateway in front of an external
// provider never hashes a password.
func restartGateway(t testing.TB, gwBin string, s *stack.Stack, cookie string) int {
	t.Helper()
	s.Restart()
	checkAPI(t, "bffgate after a restart", s.GatewayURL+apiPath, cookie)
	return gatewayPid(t, gwBin, s)
}

func loginOAuth2Proxy(t testing.TB, p *Proc) string {
	t.Helper()
	b := NewBrowser(nil)
	if _, err := b.Login(p.URL+apiPath, benchUser, benchPassword); err != nil {
		t.Fatalf("oauth2-proxy login: %v\n%s", err, p.Logs())
	}
	u := must(url.Parse(p.URL))(t)
	cookie := b.CookieHeader(u.Host)
	checkAPI(t, "oauth2-proxy", p.URL+apiPath, cookie)
	return cookie
}

// checkAPI calls the API once as wrk will, and wants a 200 from the
// upstream.
func checkAPI(t testing.TB, name, u, cookie string) {
	t.Helper()
	req := must(http.NewRequest(http.MethodGet, u, nil))(t)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("X-CSRF", "1")
	req.Header.Set("Accept", "application/json")
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp := must(c.Do(req))(t)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET %s with the session answered %d, want 200 from the upstream", name, u, resp.StatusCode)
	}
}

// browserCookies sends one API request with the cookie header and returns
// the header a browser would send next: the cookies the response set
// replace (or, expired, remove) those of the request.
func browserCookies(t testing.TB, u, header string) string {
	t.Helper()
	if header == "" {
		return ""
	}
	req := must(http.NewRequest(http.MethodGet, u, nil))(t)
	req.Header.Set("Cookie", header)
	req.Header.Set("X-CSRF", "1")
	req.Header.Set("Accept", "application/json")
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp := must(c.Do(req))(t)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s with the session answered %d, want 200 from the upstream", u, resp.StatusCode)
	}
	jar := must(http.ParseCookie(header))(t)
	for _, sc := range resp.Cookies() {
		i := slices.IndexFunc(jar, func(c *http.Cookie) bool { return c.Name == sc.Name })
		gone := sc.Value == "" || sc.MaxAge < 0 || (!sc.Expires.IsZero() && sc.Expires.Before(time.Now()))
		switch {
		case gone && i >= 0:
			jar = slices.Delete(jar, i, i+1)
		case gone:
		case i >= 0:
			jar[i].Value = sc.Value
		default:
			jar = append(jar, &http.Cookie{Name: sc.Name, Value: sc.Value})
		}
	}
	parts := make([]string, len(jar))
	for i, c := range jar {
		parts[i] = c.Name + "=" + c.Value
	}
	return strings.Join(parts, "; ")
}

// waitSlideDue waits until a request with cookie is answered with a new
// cookie (the session's idle deadline is due for extension), at most a
// little over the gateways' slide interval of one minute.
func waitSlideDue(t testing.TB, u, cookie string) {
	t.Helper()
	deadline := time.Now().Add(75 * time.Second)
	for {
		if browserCookies(t, u, cookie) != cookie {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cookie-store gateway never re-issued the login's cookie: its idle-timeout slide did not come due")
		}
		time.Sleep(2 * time.Second)
	}
}

func gatewayPid(t testing.TB, bin string, s *stack.Stack) int {
	t.Helper()
	u := must(url.Parse(s.GatewayURL))(t)
	return must(FindProcess(bin, "BFFGATE_GATEWAY_LISTEN=127.0.0.1:"+u.Port()))(t)
}

// profile loads tg as measure does while `perf record` samples its
// first process, and returns perf's report: user-space CPU by symbol.
func (r *runner) profile(tg target, c int, dur time.Duration) string {
	t := r.t
	perf, err := exec.LookPath("perf")
	if err != nil {
		return "perf not found: install linux-perf (Debian) to profile"
	}
	data := filepath.Join(t.TempDir(), "perf.data")
	rec := exec.Command(perf, "record", "--all-user", "-F", "499", "-g", "-p", fmt.Sprint(tg.pids[0]), "-o", data, "--", "sleep", fmt.Sprintf("%.0f", dur.Seconds()))
	var recOut logBuffer
	rec.Stdout, rec.Stderr = &recOut, &recOut
	if err := rec.Start(); err != nil {
		return "perf record: " + err.Error()
	}
	r.measure(tg, c, dur, browserLike)
	if err := rec.Wait(); err != nil {
		return fmt.Sprintf("perf record: %v: %s", err, recOut.String())
	}
	out, err := exec.Command(perf, "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "4").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("perf report: %v: %s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		// "  45.10%   0.20%  [.] symbol   -   -": keep the two
		// percentages and the symbol.
		f := strings.Fields(l)
		if len(f) >= 4 && !strings.HasPrefix(l, "#") && strings.HasSuffix(f[0], "%") {
			lines = append(lines, fmt.Sprintf("%8s %8s  %s", f[0], f[1], f[3]))
		}
	}
	return "children     self  symbol\n" + strings.Join(lines, "\n")
}

// refreshResult is one target's run in the refresh scenario.
type refreshResult struct {
	Name string
	M    Measurement
}

// refreshScenario: access tokens live 5 s, refresh tokens rotate, 256
// connections of one session. bffgate refreshes 1 s before expiry (skew);
// oauth2-proxy refreshes sessions older than 4 s (--cookie-refresh),
// what its documentation advises for a 5 s token.
func (r *runner) refreshScenario(gwBin, opBin string, up *Proc, hash string, dur time.Duration) []refreshResult {
	t := r.t
	opAddr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	opSecret := randHex(24)
	var out []refreshResult
	var issuerURL string
	for _, store := range []string{"bbolt", "cookie"} {
		s := stack.Start(t, stack.Options{ConfigYAML: benchConfig(configParams{
			Store: store, Upstream: up.URL, Hash: hash, AccessTTL: "5s",
			OAuth2ProxyAddr: opAddr, OAuth2ProxySecret: opSecret,
			Extra: "  refresh: {skew: 1s}\n",
		})})
		if issuerURL == "" {
			issuerURL = s.IssuerURL
		}
		cookie := loginGateway(t, s)
		tg := target{name: "bffgate, " + store + " store", urls: []string{s.GatewayURL + apiPath},
			cookies: []string{cookie}, pids: []int{restartGateway(t, gwBin, s, cookie)}}
		m := r.measure(tg, refreshConns, dur, countingFixed)
		t.Logf("refresh %s: %.0f req/s, %d non-2xx, %d socket errors, rss %.1fMB", tg.name, m.RPS, m.Non2xx, m.SocketErrors, float64(m.PeakRSS)/(1<<20))
		if m.Non2xx != 0 {
			t.Errorf("refresh scenario, %s: %d non-2xx responses, want 0", tg.name, m.Non2xx)
		}
		out = append(out, refreshResult{Name: tg.name, M: m})
	}
	op := StartOAuth2Proxy(t, OAuth2ProxyOptions{
		Bin: opBin, Addr: opAddr, IssuerURL: issuerURL, ClientID: "oauth2-proxy", ClientSecret: opSecret,
		UpstreamURL: up.URL, CookieRefresh: 4 * time.Second,
	})
	tg := target{name: "oauth2-proxy " + OAuth2ProxyVersion, urls: []string{op.URL + apiPath},
		cookies: []string{loginOAuth2Proxy(t, op)}, pids: []int{op.Pid()}}
	m := r.measure(tg, refreshConns, dur, countingFixed)
	t.Logf("refresh %s: %.0f req/s, %d non-2xx, %d socket errors", tg.name, m.RPS, m.Non2xx, m.SocketErrors)
	out = append(out, refreshResult{Name: tg.name, M: m})
	op.Stop()
	return out
}

// loginResult is the login-rate scenario's figures.
type loginResult struct {
	Hash           string
	Workers        int
	Duration       time.Duration
	Logins, Errors int64
	P50, P99       time.Duration
	CPU            time.Duration
	PeakRSS        int64
	FirstErr       string
}

// loginRate runs full authorization-code logins (gateway /bff/login →
// issuer form → POST → /bff/callback → session cookie) from a few
// goroutines, each login with a fresh cookie jar (no SSO shortcut).
func (r *runner) loginRate(gwBin string, up *Proc, hash string, dur time.Duration) []loginResult {
	t := r.t
	bc, err := bcrypt.GenerateFromPassword([]byte(benchPassword), bcrypt.DefaultCost)
	mustf(t, err, "bcrypt")
	s := stack.Start(t, stack.Options{ConfigYAML: benchConfig(configParams{
		Store: "bbolt", Upstream: up.URL, Hash: hash, AccessTTL: "5m",
		OAuth2ProxyAddr: "127.0.0.1:1", OAuth2ProxySecret: randHex(24),
		ExtraUsers: fmt.Sprintf("  - username: %s\n    password_hash: %q\n", benchUserBcrypt, bc),
	})})
	var out []loginResult
	// bcrypt first: argon2id leaves the process hundreds of MiB larger,
	// which the peak RSS of a later run would count.
	for _, u := range []struct{ name, hash string }{{benchUserBcrypt, "bcrypt (cost 10)"}, {benchUser, "argon2id (m=64 MiB, t=3, p=4; `bffgate users hash`)"}} {
		res := r.loginRun(s, gwBin, u.name, dur)
		res.Hash = u.hash
		out = append(out, res)
	}
	return out
}

func (r *runner) loginRun(s *stack.Stack, gwBin, user string, dur time.Duration) loginResult {
	t := r.t
	pid := gatewayPid(t, gwBin, s)
	_ = ResetPeakRSS(pid)
	cpu0 := must(ProcCPU(pid))(t)
	u := must(url.Parse(s.GatewayURL))(t)
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * loginWorkers}
	defer tr.CloseIdleConnections()
	var ok, bad atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr string
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for range loginWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				b := NewBrowser(tr)
				_, err := b.Login(s.GatewayURL+"/bff/login?returnUrl=/", user, benchPassword)
				if err == nil && !strings.Contains(b.CookieHeader(u.Host), "__Host-bff") {
					err = fmt.Errorf("no __Host-bff cookie after the login")
				}
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					bad.Add(1)
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					ok.Add(1)
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := loginResult{Workers: loginWorkers, Duration: elapsed, Logins: ok.Load(), Errors: bad.Load(), FirstErr: firstErr}
	res.CPU = must(ProcCPU(pid))(t) - cpu0
	res.PeakRSS, _ = ProcPeakRSS(pid)
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50 = lat[len(lat)/2]
		res.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	t.Logf("login rate, %s: %d logins in %s (%.1f/s), %d errors %s", user, res.Logins, elapsed.Round(time.Millisecond), float64(res.Logins)/elapsed.Seconds(), res.Errors, firstErr)
	if res.Errors > 0 {
		t.Errorf("login rate: %d logins failed; first: %s", res.Errors, firstErr)
	}
	return res
}

// scaleOut (issue 8): two bffgate processes sharing sessions and issuer
// state in Redis, the second using the first's issuer (as instances
// behind one issuer URL would), one session logged in through the first
// and used on both, each loaded by its own wrk with half the connections;
// next to one instance on bbolt, measured right before.
func (r *runner) scaleOut(gwBin string, up *Proc, hash, redisURL, prefix string, bolt target) []Row {
	t := r.t
	sp := prefix + "scale:"
	keys := fmt.Sprintf("    cookie_keys: [{hash: %q, block: %q}]\n", randB64(64), randB64(32))
	params := configParams{
		Store: "redis", Upstream: up.URL, Hash: hash, AccessTTL: "5m",
		OAuth2ProxyAddr: "127.0.0.1:1", OAuth2ProxySecret: randHex(24),
		RedisURL: redisURL, RedisPrefix: sp,
		IssuerExtra: "  store: redis\n",
	}
	params.Extra = ""
	cfg := func(issuerURL string) string {
		p := params
		if issuerURL != "" {
			p.IssuerExtra += fmt.Sprintf("  url: %q\n", issuerURL)
		}
		c := benchConfig(p)
		return strings.Replace(c, "  session: {store: redis}\n", "  session:\n    store: redis\n"+keys, 1)
	}
	s1 := stack.Start(t, stack.Options{ConfigYAML: cfg("")})
	s2 := stack.Start(t, stack.Options{ConfigYAML: cfg(s1.IssuerURL)})
	cookie := loginGateway(t, s1)
	pid1 := restartGateway(t, gwBin, s1, cookie)
	checkAPI(t, "bffgate instance 2", s2.GatewayURL+apiPath, cookie)
	two := target{name: "2 × bffgate on Redis", urls: []string{s1.GatewayURL + apiPath, s2.GatewayURL + apiPath},
		cookies: []string{cookie, cookie}, pids: []int{pid1, gatewayPid(t, gwBin, s2)}}
	one := bolt
	one.name = "1 × bffgate on bbolt"
	rows := []Row{{Key: "1", Name: one.name}, {Key: "2", Name: two.name}}
	for i, tg := range []target{one, two} {
		m := r.measure(tg, conns, r.dur, browserLike)
		checkMeasurement(t, "scale-out", m)
		t.Logf("scale-out %s: %.0f req/s p99 %s cpu %.2fs", tg.name, m.RPS, m.P99, m.CPU.Seconds())
		rows[i].Runs = append(rows[i].Runs, m)
	}
	return rows
}

// deleteRedisPrefix removes the keys this run wrote (never FLUSHDB: the
// Redis is shared).
func deleteRedisPrefix(t *testing.T, redisURL, prefix string) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Logf("redis cleanup: %v", err)
		return
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var n int
	for iter.Next(ctx) {
		if err := c.Del(ctx, iter.Val()).Err(); err == nil {
			n++
		}
	}
	if err := iter.Err(); err != nil {
		t.Logf("redis cleanup of %s*: %v", prefix, err)
	}
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// report is everything RESULTS.md shows.
type report struct {
	Started                   time.Time
	Duration, RefreshDuration time.Duration
	Table                     []Row
	Refresh                   []refreshResult
	Login                     []loginResult
	Scale                     []Row
	Redis                     bool
	Profiles                  map[string]string
	LoadBefore, LoadAfter     string
	Versions                  map[string]string
	// History is HISTORY.md, the hand-kept record of profile-driven fixes
	// and their before-and-after figures, appended to every RESULTS.md.
	History string
}

func (rep report) write(b *strings.Builder) {
	fmt.Fprintf(b, "# bffgate load benchmark results\n\n")
	fmt.Fprintf(b, "Written by `task bench` (e2e/bench, TestLoadBenchmark) on %s. Reproduce with `go tool task bench`\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(b, "(or `BFFGATE_BENCH=1 BFFGATE_BENCH_DURATION=%s go test -run TestLoadBenchmark -count=1 -timeout 30m -v ./e2e/bench/`;\n", rep.Duration)
	b.WriteString("add `BFFGATE_TEST_REDIS_URL=redis://127.0.0.1:6379/0` for the Redis rows). How it measures: see e2e/bench/doc.go.\n\n")
	fmt.Fprintf(b, "Machine: %d cores (%s), shared by the load generator, the upstream and the target. ", runtime.NumCPU(), cpuModel())
	fmt.Fprintf(b, "Load: wrk, 2 threads, %d connections, %s per run, keep-alive, `GET %s` with the session cookie and `X-CSRF: 1`; ", conns, rep.Duration, apiPath)
	b.WriteString("each run starts from the cookies a browser would hold, after one request whose Set-Cookie answers replace the login's (row c0, one run after the others: a client that ignores Set-Cookie and replays the login's cookies, whose slide is due, so the gateway re-issues them on every request); ")
	b.WriteString("the upstream answers a 93-byte JSON body. Two rounds, the second in reverse order.\n\n")
	fmt.Fprintf(b, "Load average (1, 5, 15 min) before the run: %s; after: %s. Above the core count, other work shared the machine: read the ratios and CPU per request rather than the absolute rates.\n\n", rep.LoadBefore, rep.LoadAfter)
	b.WriteString("Versions: ")
	for i, k := range sortedKeys(rep.Versions) {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(b, "%s: `%s`", k, rep.Versions[k])
	}
	b.WriteString(".\n\n## Throughput and latency\n\n")
	measured := map[string]bool{"a": true, "b": true, "c": true, "c0": true, "d": true, "e": true, "f": true}
	WriteTable(b, rep.Table, measured)
	b.WriteString("\nLatencies and peak RSS are the worse of the two rounds. CPU and peak RSS are the target process's own (for a, the upstream's; bffgate's include its idle embedded issuer); peak RSS is reset before each run, and bffgate is restarted after its login (its session kept) so that the issuer's argon2id check is not counted as gateway memory.\n\n")
	b.WriteString("Ratios of mean requests per second:\n\n| ratio | value |\n|---|---:|\n")
	for _, p := range [][2]string{{"b", "a"}, {"c", "b"}, {"c0", "b"}, {"d", "b"}, {"e", "b"}, {"c", "f"}, {"d", "f"}, {"e", "f"}, {"f", "a"}} {
		if v := Ratio(rep.Table, p[0], p[1]); v > 0 {
			fmt.Fprintf(b, "| %s/%s | %.2f |\n", p[0], p[1], v)
		}
	}
	b.WriteString("\nCPU per request relative to the bare proxy (the cost of the gateway's work, less sensitive to a noisy machine than req/s):\n\n| target | CPU µs/req ÷ b's |\n|---|---:|\n")
	var base float64
	for _, r := range rep.Table {
		if r.Key == "b" {
			base = r.cpuPerReq()
		}
	}
	for _, r := range rep.Table {
		if r.Key != "a" && r.Key != "b" && base > 0 {
			fmt.Fprintf(b, "| %s. %s | %.1f× |\n", r.Key, r.Name, r.cpuPerReq()/base)
		}
	}

	fmt.Fprintf(b, "\n## Refresh scenario\n\nAccess tokens live 5 s, refresh tokens rotate, %d connections of one session, %s. bffgate refreshes 1 s before expiry (`gateway.refresh.skew`); oauth2-proxy refreshes sessions older than 4 s (`--cookie-refresh=4s`). wrk never stores the cookies a response sets, so every request carries the login's cookie (see doc.go).\n\n", refreshConns, rep.RefreshDuration)
	b.WriteString("| target | req/s | non-2xx | socket errors | p50 ms | p99 ms | p99.9 ms | CPU s | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Refresh {
		m := r.M
		fmt.Fprintf(b, "| %s | %.0f | %d | %d | %s | %s | %s | %.2f | %s |\n", r.Name, m.RPS, m.Non2xx, m.SocketErrors,
			fmtMS(float64(m.P50)), fmtMS(float64(m.P99)), fmtMS(float64(m.P999)), m.CPU.Seconds(), fmtMB(float64(m.PeakRSS)))
	}

	fmt.Fprintf(b, "\n## Login rate\n\nFull authorization-code flow with PKCE (GET /bff/login → issuer /authorize → login form → POST → /bff/callback → code exchange → session cookie) through the gateway (bbolt store) and its embedded issuer, without a browser: %d goroutines, each login with fresh cookies (no SSO shortcut), for %s per password hash kind. The issuer's password check dominates; the bcrypt row shows the flow with a cheaper one.\n\n", loginWorkers, rep.Duration)
	b.WriteString("| user's password hash | logins | logins/s | errors | p50 ms | p99 ms | CPU s | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range rep.Login {
		fmt.Fprintf(b, "| %s | %d | %.1f | %d | %s | %s | %.2f | %s |\n", l.Hash, l.Logins, float64(l.Logins)/max(l.Duration.Seconds(), 1e-9), l.Errors,
			fmtMS(float64(l.P50)), fmtMS(float64(l.P99)), l.CPU.Seconds(), fmtMB(float64(l.PeakRSS)))
	}

	b.WriteString("\n## Scale-out (issue 8)\n\n")
	if len(rep.Scale) == 0 {
		b.WriteString("Not measured: BFFGATE_TEST_REDIS_URL was not set.\n")
	} else {
		fmt.Fprintf(b, "Two bffgate processes sharing sessions and issuer state in Redis (one session, logged in through the first, used on both; one wrk per instance with %d connections each), next to one instance on bbolt with %d connections, measured right before. Latencies of the pair are the worse instance's. On %d shared cores a second instance adds no CPU, so this shows the cost of sharing state, not a speed-up.\n\n", conns/2, conns, runtime.NumCPU())
		WriteTable(b, rep.Scale, map[string]bool{"1": true, "2": true})
	}

	if len(rep.Profiles) > 0 {
		b.WriteString("\n## CPU profiles (BFFGATE_BENCH_PROFILE=1)\n\n`perf record --all-user -g` (frame pointers) of the gateway process under the same load, outside the measured runs: user-space CPU by symbol, with its callees (children) and alone (self), entries of at least 4% with callees.\n")
		for _, k := range sortedKeys(rep.Profiles) {
			fmt.Fprintf(b, "\n### %s\n\n```\n%s\n```\n", k, rep.Profiles[k])
		}
	}

	b.WriteString("\n## Targets (issue 9)\n\n")
	var ts []Target
	ratioTarget := func(a, bk string, bar float64) {
		v := Ratio(rep.Table, a, bk)
		ts = append(ts, Target{Name: fmt.Sprintf("%s/%s ≥ %.1f", a, bk, bar), Value: fmt.Sprintf("%.2f", v), Met: v >= bar, Absent: v == 0})
	}
	ratioTarget("c", "b", 0.7)
	ratioTarget("d", "b", 0.7)
	ratioTarget("c", "f", 5)
	ratioTarget("d", "f", 5)
	for _, r := range rep.Refresh {
		if strings.HasPrefix(r.Name, "bffgate") {
			ts = append(ts, Target{Name: "zero non-2xx in the refresh scenario, " + r.Name, Value: fmt.Sprint(r.M.Non2xx), Met: r.M.Non2xx == 0})
			ts = append(ts, Target{Name: fmt.Sprintf("peak RSS < 100 MB at %d connections, %s", refreshConns, r.Name), Value: fmtMB(float64(r.M.PeakRSS)) + " MB", Met: r.M.PeakRSS > 0 && r.M.PeakRSS < 100<<20})
		}
	}
	WriteTargets(b, ts)
	if rep.History != "" {
		b.WriteString("\n")
		b.WriteString(strings.TrimSpace(rep.History))
		b.WriteString("\n")
	}
}
