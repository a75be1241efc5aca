package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/nginx"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
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
	// issuerConns is the issuer rows' connections, as the issuer's Go
	// benchmarks' 32 workers.
	issuerConns  = 32
	loginWorkers = 4
	// postBodySize is the POST rows' JSON body.
	postBodySize = 1024
)

// target is something wrk loads: one URL (or several, one wrk each, for
// instances behind a load balancer) and the processes whose CPU and
// memory are the target's.
type target struct {
	key, name string
	urls      []string
	cookies   []string
	pids      []int
	// gateway: the requests must reach the upstream with a bearer token
	// (checkMeasurement).
	gateway bool
}

type runner struct {
	t        *testing.T
	wrkBin   string
	script   string
	upstream *Proc
	dur      time.Duration
	// postBody is the file of the POST rows' 1 KB JSON body.
	postBody string
	// logs are the bffgate processes' output files (stack.Options.LogFile),
	// emptied after each run: with the access log on, a run writes
	// hundreds of MB.
	logs    []string
	logDir  string
	loadBin string // internal/tokenload
	gwBin   string
}

// settings are the run's knobs, from the environment (see doc.go).
type settings struct {
	dur      time.Duration // one run
	soak     time.Duration // the soak row, 0: none
	soakRate int           // requests per second per gateway in the soak
	quick    bool
	// profile is "" (none), "1" (perf summaries of the gateways in
	// RESULTS.md) or a directory (a perf profile of every bffgate row).
	profile string
}

func benchSettings(t *testing.T) settings {
	t.Helper()
	s := settings{dur: 10 * time.Second, soak: 10 * time.Minute, soakRate: 1000}
	if os.Getenv("BFFGATE_BENCH_QUICK") == "1" {
		s.quick, s.dur, s.soak = true, 2*time.Second, 20*time.Second
	}
	if v := os.Getenv("BFFGATE_BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			t.Fatalf("BFFGATE_BENCH_DURATION=%q: want a Go duration of at least 1s, such as 10s", v)
		}
		s.dur = d
	}
	if v := os.Getenv("BFFGATE_BENCH_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if v == "0" {
			d, err = 0, nil
		}
		if err != nil || (d != 0 && d < 10*time.Second) {
			t.Fatalf("BFFGATE_BENCH_SOAK=%q: want a Go duration of at least 10s (such as 10m), or 0 for no soak row", v)
		}
		s.soak = d
	}
	if v := os.Getenv("BFFGATE_BENCH_SOAK_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			t.Fatalf("BFFGATE_BENCH_SOAK_RATE=%q: want requests per second per gateway, 1 to 100000", v)
		}
		s.soakRate = n
	}
	s.profile = os.Getenv("BFFGATE_BENCH_PROFILE")
	if s.profile != "" && s.profile != "1" {
		dir, err := filepath.Abs(s.profile)
		mustf(t, err, "BFFGATE_BENCH_PROFILE=%q", s.profile)
		mustf(t, os.MkdirAll(dir, 0o755), "BFFGATE_BENCH_PROFILE: the directory %s", dir)
		s.profile = dir
	}
	return s
}

// TestLoadBenchmark is the side-by-side benchmark of issues 9 and 20 (see
// the package documentation). It runs only with BFFGATE_BENCH=1.
func TestLoadBenchmark(t *testing.T) {
	if os.Getenv("BFFGATE_BENCH") != "1" {
		t.Skip("load benchmark: set BFFGATE_BENCH=1 (or run `task bench`) to run it; it loads the machine for several minutes")
	}
	wrkBin, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("load benchmark: wrk not found: install it with `apt-get install -y wrk`")
	}
	if _, err := exec.LookPath(nginx.Path); err != nil {
		t.Fatalf("load benchmark: %s not found: install it with `%s`", nginx.Path, nginx.Install)
	}
	set := benchSettings(t)
	dur := set.dur
	if dur >= time.Minute {
		t.Logf("runs of %s: the gateways slide a session's idle timeout once a minute, so within a run wrk replays a stale cookie and the cookie-store row includes re-issuing it (see loadMode)", dur)
	}
	redisURL := os.Getenv("BFFGATE_TEST_REDIS_URL")
	started := time.Now()
	load0 := loadAvg()

	bins := t.TempDir()
	upBin := GoBuild(t, "./e2e/bench/internal/upstream", bins)
	bareBin := GoBuild(t, "./e2e/bench/internal/bareproxy", bins)
	loadBin := GoBuild(t, "./e2e/bench/internal/tokenload", bins)
	opBin := OAuth2ProxyBinary(t)
	gwBin := stack.Binary(t)

	scriptPath := filepath.Join(bins, "bench.lua")
	mustf(t, os.WriteFile(scriptPath, []byte(wrkScript), 0o644), "write the wrk script")
	bodyPath := filepath.Join(bins, "body.json")
	mustf(t, os.WriteFile(bodyPath, postBody(postBodySize), 0o644), "write the POST body")

	up := StartListening(t, "upstream", upBin)
	bare := StartListening(t, "bareproxy", bareBin, "-upstream", up.URL)
	ngx := startNginxProxy(t, up.URL)
	r := &runner{t: t, wrkBin: wrkBin, script: scriptPath, upstream: up, dur: dur, postBody: bodyPath,
		logDir: t.TempDir(), loadBin: loadBin, gwBin: gwBin}

	hash := must(issuer.HashPassword(benchPassword))(t)
	prefix := "bffgate-bench-" + randHex(6) + ":"
	if redisURL != "" {
		t.Cleanup(func() { deleteRedisPrefix(t, redisURL, prefix) })
	}

	// The gateways under test, each logged in once.
	opAddr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	opSecret := randHex(24)
	gateways := map[string]*stack.Stack{}
	gw := func(key, name, store string, accessLog bool) (*stack.Stack, target) {
		// The access token outlives the whole run (about 10 minutes
		// before c0, 20 with the soak): row c0 replays the login's
		// cookie, whose refresh token a refresh by row c would have
		// rotated away (reuse detection then revokes the grant: 401).
		// Refreshes are the refresh scenario's.
		p := configParams{
			Store: store, Upstream: up.URL, Hash: hash, AccessTTL: "1h",
			OAuth2ProxyAddr: opAddr, OAuth2ProxySecret: opSecret, AccessLog: accessLog,
		}
		// Redis only where the store is Redis: with redis.url set, the
		// cookie store also checks Redis for sessions ended elsewhere
		// (back-channel logout) on every request.
		if store == "redis" {
			p.RedisURL, p.RedisPrefix = redisURL, prefix+key+":"
		}
		s := r.startGateway(key, benchConfig(p))
		gateways[key] = s
		return s, target{key: key, name: name, urls: []string{s.GatewayURL + apiPath}, cookies: []string{loginGateway(t, s)}, gateway: true}
	}
	targets := map[string]target{
		"a": {key: "a", name: "upstream direct", urls: []string{up.URL + apiPath}, cookies: []string{""}, pids: []int{up.Pid()}},
		"b": {key: "b", name: "bare proxy (fiber + fasthttp)", urls: []string{bare.URL + apiPath}, cookies: []string{""}, pids: []int{bare.Pid()}},
		"n": {key: "n", name: fmt.Sprintf("bare proxy (nginx %s, keep-alive upstream, %d workers, access log off)", nginxVersion(), runtime.NumCPU()),
			urls: []string{ngx.URL + apiPath}, cookies: []string{""}, pids: must(ngx.Pids())(t)},
	}
	order := []string{"a", "b", "n"}
	stores := []struct{ key, name, store string }{{"c", "cookie store", "cookie"}, {"d", "bbolt store", "bbolt"}}
	if redisURL != "" {
		stores = append(stores, struct{ key, name, store string }{"e", "Redis store", "redis"})
	} else {
		t.Log("rows e and el (Redis store) skipped: BFFGATE_TEST_REDIS_URL is not set")
	}
	var sBolt *stack.Stack
	for _, st := range stores {
		s, tg := gw(st.key, "bffgate, "+st.name+", access log off", st.store, false)
		targets[st.key] = tg
		if st.key == "d" {
			sBolt = s
		}
		_, tl := gw(st.key+"l", "bffgate, "+st.name+", default configuration (access log on)", st.store, true)
		targets[st.key+"l"] = tl
	}
	for _, st := range stores {
		order = append(order, st.key)
	}
	for _, st := range stores {
		order = append(order, st.key+"l")
	}
	// The cookie-store gateway and its session again, driven by a client
	// that ignores Set-Cookie: the gateway's worst case (see wrkScript).
	tc0 := targets["c"]
	tc0.key, tc0.name = "c0", "bffgate, cookie store, access log off, client ignores Set-Cookie"
	op := StartOAuth2Proxy(t, OAuth2ProxyOptions{
		Bin: opBin, Addr: opAddr, IssuerURL: sBolt.IssuerURL, ClientID: "oauth2-proxy", ClientSecret: opSecret,
		UpstreamURL: up.URL,
	})
	targets["f"] = target{key: "f", name: "oauth2-proxy " + OAuth2ProxyVersion + ", cookie sessions", urls: []string{op.URL + apiPath},
		cookies: []string{loginOAuth2Proxy(t, op)}, pids: []int{op.Pid()}, gateway: true}
	order = append(order, "f")
	// Every login done (oauth2-proxy's too, at d's issuer), restart the
	// gateways: see restartGateway.
	for key, s := range gateways {
		tg := targets[key]
		tg.pids = []int{restartGateway(t, gwBin, s, tg.cookies[0])}
		targets[key] = tg
		if key == "c" {
			tc0.pids = tg.pids
		}
		if strings.HasSuffix(key, "l") {
			waitAccessLog(t, s)
		}
	}

	// Two rounds, the second in reverse order, so drift shows: GET for
	// every target, then POST with a 1 KB JSON body through the bare
	// proxies and the default-configuration gateways.
	postOrder := []string{"b", "n"}
	for _, st := range stores {
		postOrder = append(postOrder, st.key+"l")
	}
	type step struct {
		key  string
		post bool
	}
	var seq []step
	for _, k := range order {
		seq = append(seq, step{k, false})
	}
	for _, k := range postOrder {
		seq = append(seq, step{k, true})
	}
	rows, postRows := map[string]*Row{}, map[string]*Row{}
	for _, k := range order {
		rows[k] = &Row{Key: k, Name: targets[k].name}
	}
	for _, k := range postOrder {
		postRows[k] = &Row{Key: k, Name: targets[k].name}
	}
	for round := 1; round <= 2; round++ {
		for _, s := range seq {
			tg, mode, into, what := targets[s.key], browserLike, rows[s.key], "GET"
			if s.post {
				mode, into, what = r.postMode(), postRows[s.key], "POST"
			}
			m := r.measure(tg, conns, dur, mode)
			t.Logf("round %d %s %s. %s: %.0f req/s p50 %s p99 %s p99.9 %s cpu %.2fs rss %.1fMB (upstream saw %d, %d with a bearer, %d with a body)",
				round, what, s.key, tg.name, m.RPS, m.P50, m.P99, m.P999, m.CPU.Seconds(), float64(m.PeakRSS)/(1<<20), m.UpstreamTotal, m.UpstreamBearer, m.UpstreamBodies)
			checkMeasurement(t, tg, mode, m)
			into.Runs = append(into.Runs, m)
		}
		if round == 1 {
			slices.Reverse(seq)
		}
	}

	// The issuer's rows: its grants under load, against the real binary.
	issuerRows := r.issuerScenarios(hash, set.profile)

	// Optional CPU profiles of the gateways under the same load, outside
	// the measured runs (perf costs the profiled process some CPU).
	profiles := map[string]string{}
	switch set.profile {
	case "":
	case "1":
		for _, k := range []string{"c", "d", "e", "cl", "dl", "el"} {
			if tg, ok := targets[k]; ok {
				profiles[k+". "+tg.name] = r.perfReport(tg.pids[0], "", func() { r.measure(tg, conns, dur, browserLike) })
			}
		}
	default:
		for _, s := range seq {
			tg := targets[s.key]
			if !strings.HasPrefix(tg.name, "bffgate") {
				continue
			}
			mode, file := browserLike, "get-"+s.key
			if s.post {
				mode, file = r.postMode(), "post-"+s.key
			}
			r.perfReport(tg.pids[0], filepath.Join(set.profile, file), func() { r.measure(tg, conns, dur, mode) })
		}
	}

	// Peak memory at 256 connections, every store, default configuration.
	var mem []Row
	for _, st := range stores {
		tg := targets[st.key+"l"]
		m := r.measure(tg, refreshConns, dur, browserLike)
		checkMeasurement(t, tg, browserLike, m)
		t.Logf("256 connections %s: %.0f req/s, rss %.1fMB", tg.name, m.RPS, float64(m.PeakRSS)/(1<<20))
		mem = append(mem, Row{Key: tg.key, Name: tg.name, Runs: []Measurement{m}})
	}

	// The refresh scenario: 5 s access tokens, rotation, 256 connections.
	refreshDur := max(dur, 11*time.Second) // at least two token lifetimes
	refresh := r.refreshScenario(gwBin, opBin, up, hash, redisURL, prefix, refreshDur)

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
	waitSlideDue(t, tc0.urls[0], tc0.cookies[0])
	m0 := r.measure(tc0, conns, dur, fixedCookie)
	checkMeasurement(t, tc0, fixedCookie, m0)
	t.Logf("c0. %s: %.0f req/s p99 %s cpu %.2fs", tc0.name, m0.RPS, m0.P99, m0.CPU.Seconds())
	rows["c0"] = &Row{Key: "c0", Name: tc0.name, Runs: []Measurement{m0}}
	var table []Row
	for _, k := range order {
		table = append(table, *rows[k])
		if k == "c" {
			table = append(table, *rows["c0"])
		}
	}
	table = append(table, issuerRows...)
	var postTable []Row
	for _, k := range postOrder {
		postTable = append(postTable, *postRows[k])
	}

	// The login rate through the gateway and the embedded issuer: its
	// password hashing leaves the process hundreds of MiB larger.
	login := r.loginRate(gwBin, up, hash, min(dur, 10*time.Second))

	// The soak, last: the default-configuration gateways at a steady rate,
	// side by side, their memory at the start and the end. Each starts as
	// a fresh process (its session kept), so that its memory is the
	// soak's, not the 256-connection runs' before.
	var soak []soakResult
	if set.soak > 0 {
		var tgs []target
		for _, st := range stores {
			tg := targets[st.key+"l"]
			tg.pids = []int{restartGateway(t, gwBin, gateways[tg.key], tg.cookies[0])}
			tgs = append(tgs, tg)
		}
		soak = r.soak(tgs, set.soakRate, set.soak)
	}

	res := report{
		Started: started, Duration: dur, RefreshDuration: refreshDur, Table: table, Post: postTable, Memory: mem,
		Refresh: refresh, Login: login, Soak: soak, SoakDuration: set.soak, SoakRate: set.soakRate,
		Scale: scale, Redis: redisURL != "", Profiles: profiles, ProfileDir: profileDir(set.profile), Quick: set.quick,
		LoadBefore: load0, LoadAfter: loadAvg(),
		History: string(must(os.ReadFile("HISTORY.md"))(t)),
		Versions: map[string]string{
			"go":           firstLine("go", "version"),
			"bffgate":      firstLine(gwBin, "version"),
			"oauth2-proxy": firstLine(opBin, "--version"),
			"wrk":          firstLine(wrkBin, "-v"),
			"nginx":        firstLine(nginx.Path, "-v"),
			"kernel":       firstLine("uname", "-sr"),
		},
	}
	var b strings.Builder
	res.write(&b)
	out := "RESULTS.md"
	if set.quick {
		// A quick run validates the rows; it does not replace the figures.
		out = filepath.Join(t.TempDir(), "RESULTS.md")
		if v := os.Getenv("BFFGATE_BENCH_OUT"); v != "" {
			out = v
		}
	}
	mustf(t, os.WriteFile(out, []byte(b.String()), 0o644), "write %s", out)
	t.Logf("wrote %s:\n%s", out, b.String())
}

func profileDir(p string) string {
	if p == "1" {
		return ""
	}
	return p
}

// startGateway starts a bffgate process whose output goes to a file of
// the run's (the access log under load would otherwise fill the test's
// memory).
func (r *runner) startGateway(name, cfg string) *stack.Stack {
	log := filepath.Join(r.logDir, name+"-"+randHex(3)+".log")
	r.logs = append(r.logs, log)
	return stack.Start(r.t, stack.Options{ConfigYAML: cfg, LogFile: log})
}

// waitAccessLog makes sure a default-configuration gateway writes its
// access log (the rows that claim it), waiting out its buffer's flush.
func waitAccessLog(t *testing.T, s *stack.Stack) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.LogLines(`"path":"`+apiPath+`"`)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("bffgate with the default configuration wrote no access line for %s within 5s:\n%.2000s", apiPath, s.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// trimLogs empties the bffgate processes' output files: they write at the
// end (O_APPEND), wherever it is.
func (r *runner) trimLogs() {
	for _, p := range r.logs {
		if fi, err := os.Stat(p); err == nil && fi.Size() > 0 {
			_ = os.Truncate(p, 0)
		}
	}
}

// startNginxProxy runs Debian's nginx as a bare keep-alive reverse proxy
// to the upstream: an upstream pool with keepalive, HTTP/1.1 and no
// Connection header upstream, no access log, one worker per core, and
// keep-alive limits high enough that no connection is closed during a run
// (nginx closes a client connection after 1,000 requests by default,
// fiber never: the two bare proxies then do the same work).
func startNginxProxy(t *testing.T, upstreamURL string) *nginx.Server {
	t.Helper()
	port := stack.FreePort(t)
	site := fmt.Sprintf(`upstream bench_upstream {
    server %s;
    keepalive 128;
    keepalive_requests 1000000;
}
server {
    listen 127.0.0.1:%d;
    keepalive_requests 1000000;
    location / {
        proxy_pass http://bench_upstream;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Forwarded-For $remote_addr;
    }
}
`, strings.TrimPrefix(upstreamURL, "http://"), port)
	return nginx.Start(t, nginx.Config{Port: port, Site: site, Workers: runtime.NumCPU()})
}

// nginxVersion is the version nginx -v prints ("nginx version:
// nginx/1.22.1" → "1.22.1").
func nginxVersion() string {
	v := firstLine(nginx.Path, "-v")
	if _, after, ok := strings.Cut(v, "nginx/"); ok {
		return strings.Fields(after)[0]
	}
	return v
}

// postBody is a JSON document of n bytes: the POST rows' body.
func postBody(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < n-40; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":%d,"name":"item-%04d","done":false}`, i, i)
	}
	b.WriteString(`],"note":"`)
	for b.Len() < n-2 {
		b.WriteString("x")
	}
	b.WriteString(`"}`)
	return []byte(b.String())[:n]
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
	// method, bodyFile, contentType and authorization make the request
	// a POST with a body (empty: GET without one).
	method, bodyFile, contentType, authorization string
}

var (
	// browserLike is the throughput runs' mode, for every target alike.
	browserLike = loadMode{jar: true}
	// fixedCookie replays the login's cookies whatever the responses set.
	fixedCookie = loadMode{}
	// countingFixed is the refresh scenario's mode.
	countingFixed = loadMode{countStatus: true}
)

// postMode is browserLike with the 1 KB JSON body POSTed.
func (r *runner) postMode() loadMode {
	m := browserLike
	m.method, m.bodyFile, m.contentType = http.MethodPost, r.postBody, "application/json"
	return m
}

// measure runs wrk against tg (one wrk per URL, the connections and
// threads split between them) and reads the target's processes' CPU and
// peak memory around it.
func (r *runner) measure(tg target, c int, dur time.Duration, mode loadMode) Measurement {
	t := r.t
	t.Helper()
	defer r.trimLogs()
	for _, pid := range tg.pids {
		if err := ResetPeakRSS(pid); err != nil {
			t.Logf("%s: cannot reset the peak RSS of pid %d (%v); it is the process's lifetime peak", tg.name, pid, err)
		}
	}
	n := len(tg.urls)
	cookies := slices.Clone(tg.cookies)
	if mode.jar {
		for i := range cookies {
			cookies[i] = browserCookies(t, tg.urls[i], cookies[i])
		}
	}
	cpu0 := r.cpuEach(tg.pids)
	st0 := r.upstreamStats()
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
			cmd.Env = append(os.Environ(), "BENCH_COOKIE="+cookies[i], "BENCH_METHOD="+mode.method, "BENCH_BODY_FILE="+mode.bodyFile,
				"BENCH_CONTENT_TYPE="+mode.contentType, "BENCH_AUTHORIZATION="+mode.authorization)
			if mode.countStatus {
				cmd.Env = append(cmd.Env, "BENCH_COUNT_STATUS=1")
			}
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		}(i)
	}
	wg.Wait()
	cpu1 := r.cpuEach(tg.pids)
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
		if n > 1 && len(tg.pids) == n {
			m.Parts = append(m.Parts, Part{Requests: w.Requests, RPS: w.RPS, CPU: cpu1[i] - cpu0[i]})
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
	for i := range tg.pids {
		m.CPU += cpu1[i] - cpu0[i]
	}
	m.PeakRSS = r.peakRSS(tg.pids)
	m.UpstreamTotal = st1.Total - st0.Total
	m.UpstreamBearer = st1.Bearer - st0.Bearer
	m.UpstreamBodies = st1.Bodies - st0.Bodies
	m.UpstreamBodyBytes = st1.BodyBytes - st0.BodyBytes
	return m
}

// peakRSS is the largest VmHWM among pids (for nginx, its largest
// process: each worker holds its own connections).
func (r *runner) peakRSS(pids []int) int64 {
	var peak int64
	for _, pid := range pids {
		if rss, err := ProcPeakRSS(pid); err == nil {
			peak = max(peak, rss)
		}
	}
	return peak
}

func (r *runner) cpuEach(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		d, err := ProcCPU(pid)
		mustf(r.t, err, "read the CPU time of pid %d", pid)
		out[i] = d
	}
	return out
}

type upstreamStats struct{ Total, Bearer, Bodies, BodyBytes int64 }

func (r *runner) upstreamStats() upstreamStats {
	resp, err := testhttp.Client.Get(r.upstream.URL + "/__stats")
	mustf(r.t, err, "upstream stats")
	defer resp.Body.Close()
	var s upstreamStats
	mustf(r.t, json.NewDecoder(resp.Body).Decode(&struct {
		Total     *int64 `json:"total"`
		Bearer    *int64 `json:"bearer"`
		Bodies    *int64 `json:"bodies"`
		BodyBytes *int64 `json:"body_bytes"`
	}{&s.Total, &s.Bearer, &s.Bodies, &s.BodyBytes}), "upstream stats")
	return s
}

// checkMeasurement fails the benchmark when a run did not measure what it
// claims: errors, gateway requests that reached the upstream without a
// token (a 302 to a login page would otherwise count as a fast success),
// or POSTs whose bodies did not reach it.
func checkMeasurement(t *testing.T, tg target, mode loadMode, m Measurement) {
	t.Helper()
	if m.SocketErrors > 0 || m.StatusErrors > 0 {
		t.Errorf("scenario %s: %d socket errors and %d responses >= 400 under load", tg.key, m.SocketErrors, m.StatusErrors)
	}
	if mode.bodyFile != "" && float64(m.UpstreamBodyBytes) < 0.99*float64(m.Requests)*postBodySize {
		t.Errorf("scenario %s, POST: wrk counted %d responses but the upstream saw %d bodies, %d bytes", tg.key, m.Requests, m.UpstreamBodies, m.UpstreamBodyBytes)
	}
	if tg.gateway && float64(m.UpstreamBearer) < 0.99*float64(m.Requests) {
		t.Errorf("scenario %s: wrk counted %d responses but the upstream saw only %d requests with a bearer token", tg.key, m.Requests, m.UpstreamBearer)
	}
}

type configParams struct {
	Store, Upstream, Hash, AccessTTL   string
	OAuth2ProxyAddr, OAuth2ProxySecret string
	RedisURL, RedisPrefix              string
	// AccessLog keeps the default log configuration (level info, JSON,
	// one access line per request); without it the log is off but for
	// warnings.
	AccessLog   bool
	Extra       string // more YAML under gateway: (indented two spaces)
	ExtraUsers  string // more entries of issuer.users
	IssuerExtra string // more YAML under issuer:
	TopExtra    string
}

// benchConfig is the bffgate configuration of the benchmark: one user,
// a client for oauth2-proxy, the /api/ route to the upstream, no demo
// API, the access log off unless p.AccessLog (see StartOAuth2Proxy).
func benchConfig(p configParams) string {
	var b strings.Builder
	if !p.AccessLog {
		fmt.Fprintf(&b, "log: {level: warn, format: json, access: false}\n")
	}
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
