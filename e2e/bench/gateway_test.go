package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"github.com/bffgate/bffgate/e2e/stack"
)

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
	next, err := mergeCookies(header, resp.Cookies())
	mustf(t, err, "the cookies of %s", u)
	return next
}

// mergeCookies is the Cookie header a browser sends after an answer that
// set the cookies set to a request that sent header: they replace (or,
// expired, remove) those of the request.
func mergeCookies(header string, set []*http.Cookie) (string, error) {
	jar, err := http.ParseCookie(header)
	if err != nil {
		return "", err
	}
	for _, sc := range set {
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
	return strings.Join(parts, "; "), nil
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

// refreshResult is one target's run in the refresh scenario.
type refreshResult struct {
	Name string
	M    Measurement
}

// refreshScenario: access tokens live 5 s, refresh tokens rotate, 256
// connections of one session. bffgate refreshes 1 s before expiry (skew);
// oauth2-proxy refreshes sessions older than 4 s (--cookie-refresh),
// what its documentation advises for a 5 s token. bffgate on Redis too
// when redisURL is set (every store's peak memory at 256 connections).
func (r *runner) refreshScenario(gwBin, opBin string, up *Proc, hash, redisURL, prefix string, dur time.Duration) []refreshResult {
	t := r.t
	opAddr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	opSecret := randHex(24)
	var out []refreshResult
	var issuerURL string
	storeNames := []string{"bbolt", "cookie"}
	if redisURL != "" {
		storeNames = append(storeNames, "redis")
	}
	for _, store := range storeNames {
		p := configParams{
			Store: store, Upstream: up.URL, Hash: hash, AccessTTL: "5s",
			OAuth2ProxyAddr: opAddr, OAuth2ProxySecret: opSecret,
			Extra: "  refresh: {skew: 1s}\n",
		}
		if store == "redis" {
			p.RedisURL, p.RedisPrefix = redisURL, prefix+"refresh:"
		}
		s := r.startGateway("refresh-"+store, benchConfig(p))
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
	two := target{key: "2", gateway: true, name: "2 × bffgate on Redis", urls: []string{s1.GatewayURL + apiPath, s2.GatewayURL + apiPath},
		cookies: []string{cookie, cookie}, pids: []int{pid1, gatewayPid(t, gwBin, s2)}}
	one := bolt
	one.key, one.name = "1", "1 × bffgate on bbolt"
	rows := []Row{{Key: "1", Name: one.name}, {Key: "2", Name: two.name}}
	for i, tg := range []target{one, two} {
		m := r.measure(tg, conns, r.dur, browserLike)
		checkMeasurement(t, tg, browserLike, m)
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
