package issuer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
	"github.com/bffgate/bffgate/issuer/storage/redis"
)

// throttled is the login throttle of these tests: 3 failures lock a
// username for 1m, doubling up to 4m; 20 failures lock an address.
func throttled(c *issuer.Config) {
	c.LoginThrottle = issuer.LoginThrottle{MaxFailures: 3, Window: 10 * time.Minute, Lockout: time.Minute, MaxLockout: 4 * time.Minute, MaxIPFailures: 20}
}

// loginPage opens the login form of a new authorization request.
func loginPage(t *testing.T, b *browser, fl *flow) page {
	t.Helper()
	p := b.get(fl.authURL())
	if p.status != http.StatusOK || !strings.Contains(p.body, `name="password"`) {
		t.Fatalf("GET /authorize: status %d, want the login form", p.status)
	}
	return p
}

// try posts username and password on the login form p.
func try(b *browser, p page, username, password string) page {
	b.e.t.Helper()
	return b.submit(p, url.Values{"username": {username}, "password": {password}})
}

// wantWrong checks the answer to a wrong password: the form again, 401,
// no lockout notice.
func wantWrong(t *testing.T, what string, p page) {
	t.Helper()
	if p.status != http.StatusUnauthorized || p.location != nil || !strings.Contains(p.body, "Wrong username or password.") || strings.Contains(p.body, "Too many") {
		t.Fatalf("%s: status %d location %v, want 401 and the form with the wrong-password message only\n%s", what, p.status, p.location, clipText(p.body, 1500))
	}
}

// wantLocked checks the answer of a locked login: the form again, 429,
// the wrong-password message plus the wait, and Retry-After in seconds.
func wantLocked(t *testing.T, what string, p page, wait time.Duration) {
	t.Helper()
	minutes := int((wait + time.Minute - 1) / time.Minute)
	unit := "minutes"
	if minutes == 1 {
		unit = "minute"
	}
	msg := fmt.Sprintf("Wrong username or password. Too many failed sign-in attempts: try again in %d %s.", minutes, unit)
	if p.status != http.StatusTooManyRequests || p.location != nil || !strings.Contains(p.body, msg) || !strings.Contains(p.body, `name="password"`) {
		t.Fatalf("%s: status %d location %v, want 429 and the form saying %q\n%s", what, p.status, p.location, msg, clipText(p.body, 1500))
	}
	if got, want := p.header.Get("Retry-After"), fmt.Sprint(int(wait/time.Second)); got != want {
		t.Fatalf("%s: Retry-After %q, want %q", what, got, want)
	}
}

func (e *env) counter(name string, labels ...string) float64 {
	e.t.Helper()
	v, _ := e.metric(name, labels...)
	return v
}

func (e *env) passwordChecks() float64 { return e.counter("bffgate_issuer_password_checks_total") }

// TestLoginLockout: three failures lock a username; while locked even the
// right password is refused without a hash being computed; the lockout
// ends on the injected clock, the next one is twice as long, and a
// success clears the count and the lockouts.
func TestLoginLockout(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		throttled(c)
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	b := e.browser()
	p := loginPage(t, b, fl)

	p = try(b, p, aliceUser, "wrong password 1")
	wantWrong(t, "first failure", p)
	// The count folds case: "Alice" counts against alice.
	p = try(b, p, "Alice", "wrong password 2")
	wantWrong(t, "second failure", p)
	checks := e.passwordChecks()
	if checks != 2 {
		t.Fatalf("%v password checks after two failures, want 2", checks)
	}
	p = try(b, p, aliceUser, "wrong password 3")
	wantLocked(t, "third failure", p, time.Minute)
	if got := e.counter("bffgate_issuer_login_lockouts_total", "scope", "username"); got != 1 {
		t.Fatalf("lockouts{scope=username} = %v, want 1", got)
	}

	// Locked: the right password is refused, and no hash is computed.
	checks = e.passwordChecks()
	p = try(b, p, aliceUser, alicePassword)
	wantLocked(t, "right password while locked", p, time.Minute)
	e.clock.Advance(30 * time.Second)
	p = try(b, p, aliceUser, alicePassword)
	wantLocked(t, "right password 30s into the lockout", p, 30*time.Second)
	if got := e.passwordChecks(); got != checks {
		t.Fatalf("%v password checks while locked, want none", got-checks)
	}
	if b.cookie(ssoCookie) != nil {
		t.Fatal("SSO cookie set while locked")
	}
	if got := e.counter("bffgate_issuer_login_refused_total", "scope", "username"); got != 2 {
		t.Fatalf("refused{scope=username} = %v, want 2", got)
	}
	if got := e.counter("bffgate_issuer_logins_total", "result", "locked"); got != 2 {
		t.Fatalf("logins{result=locked} = %v, want 2", got)
	}

	// The lockout ends; three more failures lock for twice as long.
	e.clock.Advance(30 * time.Second)
	p = try(b, p, aliceUser, "wrong password 4")
	wantWrong(t, "failure after the lockout", p)
	p = try(b, p, aliceUser, "wrong password 5")
	p = try(b, p, aliceUser, "wrong password 6")
	wantLocked(t, "second lockout", p, 2*time.Minute)

	// When it ends the right password logs in.
	e.clock.Advance(2 * time.Minute)
	p = try(b, p, aliceUser, alicePassword)
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("right password after the lockout: status %d location %v, want a code", p.status, p.location)
	}

	// The success cleared the count and the lockouts: two failures do
	// not lock, the third locks for the first lockout's 1m again.
	b2 := e.browser()
	p = loginPage(t, b2, fl)
	p = try(b2, p, aliceUser, "wrong password 7")
	wantWrong(t, "first failure after a success", p)
	p = try(b2, p, aliceUser, "wrong password 8")
	wantWrong(t, "second failure after a success", p)
	p = try(b2, p, aliceUser, "wrong password 9")
	wantLocked(t, "lockout after a success", p, time.Minute)

	// The lockout is logged with the username, never a password.
	out := logs.String()
	if !strings.Contains(out, `"msg":"login locked: too many failed logins"`) || !strings.Contains(out, `"scope":"username","username":"alice"`) {
		t.Errorf("no lockout line naming alice in the log:\n%s", clipText(out, 3000))
	}
	for i := range 10 {
		for _, pw := range []string{alicePassword, fmt.Sprintf("wrong password %d", i)} {
			if strings.Contains(out, pw) {
				t.Errorf("the log contains the password %q", pw)
			}
		}
	}
}

// hiddenValues matches what differs between two renderings of the login
// form for the same user: the sealed request and the CSRF token (random
// per rendering and per browser) and the echoed username.
var hiddenValues = regexp.MustCompile(`(<input type="hidden" name="[^"]+" value=")[^"]*(")|(name="username" value=")[^"]*(")`)

func normalise(body string) string { return hiddenValues.ReplaceAllString(body, "${1}${3}X${2}${4}") }

// TestLockedUnknownUser: a nonexistent username is counted and locked
// exactly like an existing one; the answers match in status, headers and
// body (hidden fields and echoed username aside), and neither computes a
// hash while locked.
func TestLockedUnknownUser(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: throttled})
	fl := newFlow(e.oauth2Config(e.provider(), webID))

	run := func(username string) []page {
		t.Helper()
		b := e.browser()
		p := loginPage(t, b, fl)
		var out []page
		for i := range 3 {
			p = try(b, p, username, fmt.Sprintf("wrong password %d", i))
			out = append(out, p)
		}
		checks := e.passwordChecks()
		p = try(b, p, username, alicePassword)
		if got := e.passwordChecks(); got != checks {
			t.Fatalf("%s: %v password checks while locked, want none", username, got-checks)
		}
		return append(out, p)
	}
	known, unknown := run(aliceUser), run("nobody-here")
	wantWrong(t, "unknown user, first failure", unknown[0])
	wantLocked(t, "unknown user, third failure", unknown[2], time.Minute)
	wantLocked(t, "unknown user, locked", unknown[3], time.Minute)
	names := []string{"first failure", "second failure", "third failure (lockout)", "locked"}
	for i := range known {
		k, u := known[i], unknown[i]
		if k.status != u.status {
			t.Errorf("%s: status %d for a known user, %d for an unknown one", names[i], k.status, u.status)
		}
		for _, h := range []string{"Retry-After", "Content-Type", "Cache-Control", "Content-Security-Policy"} {
			if k.header.Get(h) != u.header.Get(h) {
				t.Errorf("%s: %s %q for a known user, %q for an unknown one", names[i], h, k.header.Get(h), u.header.Get(h))
			}
		}
		if cookieNames(k) != cookieNames(u) {
			t.Errorf("%s: cookies %s for a known user, %s for an unknown one", names[i], cookieNames(k), cookieNames(u))
		}
		if nk, nu := normalise(k.body), normalise(u.body); nk != nu {
			t.Errorf("%s: the bodies differ beyond hidden fields and username:\nknown:   %s\nunknown: %s", names[i], clipText(nk, 3000), clipText(nu, 3000))
		}
	}
}

func cookieNames(p page) string {
	var names []string
	for _, c := range (&http.Response{Header: p.header}).Cookies() {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// TestAddressThrottle: failures from one address across usernames lock
// the address (password spraying), even for a user with no failures of
// her own; successes from the address do not count, and do not clear it.
func TestAddressThrottle(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.LoginThrottle = issuer.LoginThrottle{MaxFailures: 100, MaxIPFailures: 4, Lockout: time.Minute}
	}})
	fl := newFlow(e.oauth2Config(e.provider(), webID))

	// Five successful logins from the address: no failures, no lock.
	for i := range 5 {
		if p := e.browser().authorize(fl.authURL(), aliceUser, alicePassword); p.location == nil || p.location.Query().Get("code") == "" {
			t.Fatalf("login %d: status %d, want a code", i, p.status)
		}
	}
	b := e.browser()
	p := loginPage(t, b, fl)
	for i := range 3 {
		p = try(b, p, fmt.Sprintf("user-%d", i), "Winter2025!")
		wantWrong(t, fmt.Sprintf("spray %d", i), p)
	}
	p = try(b, p, "user-3", "Winter2025!")
	wantLocked(t, "fourth failure from the address", p, time.Minute)
	if got := e.counter("bffgate_issuer_login_lockouts_total", "scope", "address"); got != 1 {
		t.Fatalf("lockouts{scope=address} = %v, want 1", got)
	}

	// alice, from the locked address, with the right password.
	checks := e.passwordChecks()
	a := e.browser()
	p = try(a, loginPage(t, a, fl), aliceUser, alicePassword)
	wantLocked(t, "alice from the locked address", p, time.Minute)
	if got := e.passwordChecks(); got != checks {
		t.Fatalf("%v password checks while the address is locked, want none", got-checks)
	}
	if got := e.counter("bffgate_issuer_login_refused_total", "scope", "address"); got != 1 {
		t.Fatalf("refused{scope=address} = %v, want 1", got)
	}

	e.clock.Advance(time.Minute)
	p = try(a, p, aliceUser, alicePassword)
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("alice after the address lockout: status %d location %v, want a code", p.status, p.location)
	}
}

// TestThrottleOff: with Disable nothing is counted, and with
// DisableIPLimit only the address is not.
func TestThrottleOff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		lt       issuer.LoginThrottle
		username func(i int) string
	}{
		{"disable", issuer.LoginThrottle{Disable: true, MaxFailures: 2}, func(int) string { return aliceUser }},
		{"disable_ip_limit", issuer.LoginThrottle{DisableIPLimit: true, MaxIPFailures: 2}, func(i int) string { return fmt.Sprintf("user-%d", i) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, envOptions{cfg: func(c *issuer.Config) { c.LoginThrottle = tc.lt }})
			fl := newFlow(e.oauth2Config(e.provider(), webID))
			b := e.browser()
			p := loginPage(t, b, fl)
			for i := range 6 {
				p = try(b, p, tc.username(i), "wrong password")
				wantWrong(t, fmt.Sprintf("failure %d", i), p)
			}
			p = try(b, p, aliceUser, alicePassword)
			if p.location == nil || p.location.Query().Get("code") == "" {
				t.Fatalf("right password: status %d, want a code", p.status)
			}
			if got := e.passwordChecks(); got != 7 {
				t.Fatalf("%v password checks, want 7", got)
			}
		})
	}
}

// TestEmptyPassword: an empty password computes no hash and is not
// counted.
func TestEmptyPassword(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: throttled})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	b := e.browser()
	p := loginPage(t, b, fl)
	for i := range 5 {
		p = try(b, p, aliceUser, "")
		wantWrong(t, fmt.Sprintf("empty password %d", i), p)
	}
	if got := e.passwordChecks(); got != 0 {
		t.Fatalf("%v password checks for empty passwords, want none", got)
	}
	p = try(b, p, aliceUser, alicePassword)
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("right password after empty ones: status %d, want a code", p.status)
	}
}

// TestThrottleSharedRedis: two instances on one Redis share the counters:
// failures on either add up, and a lockout started on one refuses the
// login on the other.
func TestThrottleSharedRedis(t *testing.T) {
	t.Parallel()
	client := redistest.Client(t)
	prefix := redistest.Prefix(t, client, "")
	newStore := func() *redis.Store {
		s, err := redis.New(client, redis.Config{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	clk := newClock()
	a := start(t, envOptions{cfg: throttled, clock: clk, store: newStore()})
	bInst := start(t, envOptions{cfg: throttled, clock: clk, store: newStore(), issuerURL: a.url})
	fl := newFlow(a.oauth2Config(a.provider(), webID))

	onA := a.browser()
	p := loginPage(t, onA, fl)
	p = try(onA, p, aliceUser, "wrong password 1")
	wantWrong(t, "first failure, on A", p)
	p = try(onA, p, aliceUser, "wrong password 2")
	wantWrong(t, "second failure, on A", p)

	onB := onA.forEnv(bInst)
	p = try(onB, p, aliceUser, "wrong password 3")
	wantLocked(t, "third failure, on B", p, time.Minute)

	checks := a.passwordChecks()
	p = try(onA, p, aliceUser, alicePassword)
	wantLocked(t, "right password on A while B's lockout lasts", p, time.Minute)
	if got := a.passwordChecks(); got != checks {
		t.Fatalf("%v password checks on A while locked, want none", got-checks)
	}
	if got := bInst.counter("bffgate_issuer_login_lockouts_total", "scope", "username"); got != 1 {
		t.Fatalf("lockouts on B = %v, want 1", got)
	}
	if got := a.counter("bffgate_issuer_login_refused_total", "scope", "username"); got != 1 {
		t.Fatalf("refused on A = %v, want 1", got)
	}

	clk.Advance(time.Minute)
	p = try(onB, p, aliceUser, alicePassword)
	if p.location == nil || p.location.Query().Get("code") == "" {
		t.Fatalf("right password on B after the lockout: status %d location %v, want a code", p.status, p.location)
	}
}

// TestLoginThrottleConfig: New names the login_throttle field at fault.
func TestLoginThrottleConfig(t *testing.T) {
	t.Parallel()
	db, err := datafile.Open(filepath.Join(t.TempDir(), "bffgate.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := bolt.New(db, bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lt   issuer.LoginThrottle
		want string
	}{
		{issuer.LoginThrottle{MaxFailures: -1}, "issuer.login_throttle.max_failures: is negative"},
		{issuer.LoginThrottle{MaxIPFailures: -5}, "issuer.login_throttle.max_ip_failures: is negative"},
		{issuer.LoginThrottle{Window: -time.Second}, "issuer.login_throttle.window: is negative"},
		{issuer.LoginThrottle{Window: 500 * time.Millisecond}, "issuer.login_throttle.window: is 500ms"},
		{issuer.LoginThrottle{Lockout: 2 * time.Hour}, "issuer.login_throttle.max_lockout: is 15m0s, shorter than lockout (2h0m0s)"},
		{issuer.LoginThrottle{MaxLockout: 10 * time.Second}, "issuer.login_throttle.max_lockout: is 10s, shorter than lockout (1m0s)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Issuer = "http://127.0.0.1:9"
			cfg.Store = store
			cfg.LoginThrottle = tc.lt
			_, err := issuer.New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestLockoutStopsAQueuedBurst: a burst of wrong guesses all pass the
// throttle before any fails; those queued for an argon2id slot are asked
// again once they get one, so after the lockout starts the rest hash
// nothing. At most MaxFailures checks plus those already running (one per
// slot, and one per slot handed on before its failure is counted) hash.
func TestLockoutStopsAQueuedBurst(t *testing.T) {
	t.Parallel()
	slots := runtime.NumCPU()
	if slots > 8 {
		t.Skipf("%d cores: a burst large enough to queue would hold %d argon2id hashes of 64 MiB at once", slots, slots)
	}
	h, err := issuer.HashPassword("argon password")
	if err != nil {
		t.Fatal(err)
	}
	const maxFailures = 2
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Users = append(c.Users, issuer.User{Username: "bob", PasswordHash: h})
		c.LoginThrottle = issuer.LoginThrottle{MaxFailures: maxFailures, Window: 10 * time.Minute, Lockout: time.Minute, MaxLockout: 4 * time.Minute, MaxIPFailures: 1000}
	}})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	burst := maxFailures + 2*slots + 4
	type attempt struct {
		b *browser
		p page
	}
	attempts := make([]attempt, burst)
	for i := range attempts {
		b := e.browser()
		attempts[i] = attempt{b, loginPage(t, b, fl)}
	}
	checks := e.passwordChecks()
	statuses := make([]int, burst)
	var wg sync.WaitGroup
	for i, a := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = try(a.b, a.p, "bob", fmt.Sprintf("wrong guess %d", i)).status
		}()
	}
	wg.Wait()
	hashed := e.passwordChecks() - checks
	if limit := float64(maxFailures + 2*slots); hashed > limit {
		t.Errorf("%v of %d queued guesses were hashed, want at most %v", hashed, burst, limit)
	}
	locked := 0
	for _, s := range statuses {
		switch s {
		case http.StatusTooManyRequests:
			locked++
		case http.StatusUnauthorized:
		default:
			t.Errorf("a guess answered %d, want 401 or 429", s)
		}
	}
	if locked < burst-int(hashed) {
		t.Errorf("%d guesses answered 429, want at least the %d that were not hashed", locked, burst-int(hashed))
	}
}

// behindProxy returns a browser whose requests carry X-Forwarded-For, one
// field line per element of xff, as a reverse proxy on 127.0.0.1 (the
// peer of every test request) would send them.
func behindProxy(e *env, xff ...string) *browser {
	b := e.browser()
	b.client.Transport = forwardedFor{base: b.client.Transport, xff: xff}
	return b
}

type forwardedFor struct {
	base http.RoundTripper
	xff  []string
}

func (f forwardedFor) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if len(f.xff) > 0 {
		req.Header["X-Forwarded-For"] = f.xff
	}
	return f.base.RoundTrip(req)
}

// logRecords parses the JSON log lines with message msg.
func logRecords(t *testing.T, out, msg string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for line := range strings.Lines(out) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		if r["msg"] == msg {
			recs = append(recs, r)
		}
	}
	return recs
}

// TestTrustedProxyCountsEachClient: behind a trusted proxy the address
// limit counts each client X-Forwarded-For names, not the proxy: one
// client's failures lock that client (whatever it writes to the left of
// what the proxy appended), and another behind the same proxy logs in.
// IPv6 clients are counted by /64, as direct ones are.
func TestTrustedProxyCountsEachClient(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.LoginThrottle = issuer.LoginThrottle{MaxFailures: 100, MaxIPFailures: 3, Lockout: time.Minute}
		c.TrustedProxies = []string{"127.0.0.1/32"}
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	wantCode := func(what string, p page) {
		t.Helper()
		if p.location == nil || p.location.Query().Get("code") == "" {
			t.Fatalf("%s: status %d location %v, want a code", what, p.status, p.location)
		}
	}

	a := behindProxy(e, "198.51.100.7")
	p := loginPage(t, a, fl)
	for i := range 2 {
		p = try(a, p, fmt.Sprintf("user-%d", i), "Winter2025!")
		wantWrong(t, fmt.Sprintf("client A, spray %d", i), p)
	}
	p = try(a, p, "user-2", "Winter2025!")
	wantLocked(t, "client A, third failure", p, time.Minute)

	// Client B, behind the same proxy: its own address, not locked.
	wantCode("client B behind the same proxy", behindProxy(e, "203.0.113.9").authorize(fl.authURL(), aliceUser, alicePassword))
	// The proxy's own requests (no X-Forwarded-For) count against the
	// proxy's address, which A's failures did not touch.
	wantCode("the proxy itself", e.browser().authorize(fl.authURL(), aliceUser, alicePassword))

	// A, with the right password and a made-up address in front of the
	// one the proxy appended: still A, still locked.
	checks := e.passwordChecks()
	a2 := behindProxy(e, "192.0.2.200, 198.51.100.7")
	p = try(a2, loginPage(t, a2, fl), aliceUser, alicePassword)
	wantLocked(t, "client A with a spoofed entry", p, time.Minute)
	if got := e.passwordChecks(); got != checks {
		t.Fatalf("%v password checks while A is locked, want none", got-checks)
	}

	// IPv6: two addresses of one /64 share a counter, another /64 not.
	v6 := behindProxy(e, "2001:db8:1:2::1")
	p = loginPage(t, v6, fl)
	for i := range 2 {
		p = try(v6, p, fmt.Sprintf("v6-user-%d", i), "Winter2025!")
		wantWrong(t, fmt.Sprintf("2001:db8:1:2::1, failure %d", i), p)
	}
	v6b := behindProxy(e, "2001:db8:1:2::ffff")
	p = try(v6b, loginPage(t, v6b, fl), "v6-user-2", "Winter2025!")
	wantLocked(t, "2001:db8:1:2::ffff, the /64's third failure", p, time.Minute)
	wantCode("2001:db8:1:3::1, another /64", behindProxy(e, "2001:db8:1:3::1").authorize(fl.authURL(), aliceUser, alicePassword))

	// The lockout line names the client, not the proxy.
	var locked []string
	for _, r := range logRecords(t, logs.String(), "login locked: too many failed logins") {
		if r["scope"] == "address" {
			locked = append(locked, fmt.Sprint(r["client_ip"]))
		}
	}
	if want := []string{"198.51.100.7", "2001:db8:1:2::ffff"}; !slices.Equal(locked, want) {
		t.Errorf("address lockouts logged for %q, want %q", locked, want)
	}
}

// TestUntrustedPeerForwardedFor: from a peer not in TrustedProxies,
// X-Forwarded-For is ignored: a client that writes a new address into it
// on every attempt is still counted, and locked, by its own.
func TestUntrustedPeerForwardedFor(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.LoginThrottle = issuer.LoginThrottle{MaxFailures: 100, MaxIPFailures: 3, Lockout: time.Minute}
		c.TrustedProxies = []string{"10.0.0.0/8", "::1"} // not 127.0.0.1
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	for i := range 2 {
		b := behindProxy(e, fmt.Sprintf("198.51.100.%d", i+1))
		wantWrong(t, fmt.Sprintf("failure %d", i), try(b, loginPage(t, b, fl), fmt.Sprintf("user-%d", i), "Winter2025!"))
	}
	b := behindProxy(e, "198.51.100.3")
	wantLocked(t, "third failure", try(b, loginPage(t, b, fl), "user-2", "Winter2025!"), time.Minute)
	b = behindProxy(e, "203.0.113.9")
	wantLocked(t, "right password, yet another X-Forwarded-For", try(b, loginPage(t, b, fl), aliceUser, alicePassword), time.Minute)

	recs := logRecords(t, logs.String(), "login failed")
	if len(recs) != 3 {
		t.Fatalf("%d login failed lines, want 3", len(recs))
	}
	for _, r := range recs {
		if r["client_ip"] != "127.0.0.1" {
			t.Errorf("login failed for %v logged client_ip %v, want the peer 127.0.0.1", r["username"], r["client_ip"])
		}
	}
}

// TestForwardedClientAddress: the client address a trusted peer's
// X-Forwarded-For resolves to, read from the client_ip of the failed
// login's log line: the right-most entry that is not a trusted proxy,
// across several proxies and field lines; the left-most when all are
// trusted; at a malformed entry, the trusted hop to its right.
func TestForwardedClientAddress(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.LoginThrottle = issuer.LoginThrottle{MaxFailures: 100, MaxIPFailures: 1000}
		// An IP, an IPv4-mapped CIDR (it means 10.0.0.0/8) and an IPv6
		// CIDR.
		c.TrustedProxies = []string{"127.0.0.1", "::ffff:10.0.0.0/104", "2001:db8:ffff::/48"}
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	for i, tc := range []struct {
		name string
		xff  []string // field lines
		want string
	}{
		{"no header: the proxy", nil, "127.0.0.1"},
		{"one client", []string{"198.51.100.7"}, "198.51.100.7"},
		{"spoofed entry left of the client", []string{"192.0.2.1, 198.51.100.7"}, "198.51.100.7"},
		{"spoofed trusted address left of the client", []string{"10.0.0.9, 198.51.100.7"}, "198.51.100.7"},
		{"two more proxies", []string{"192.0.2.1, 198.51.100.7, 10.1.2.3, 10.0.0.2"}, "198.51.100.7"},
		{"all trusted: the left-most", []string{"10.0.0.5, 10.0.0.2"}, "10.0.0.5"},
		{"a proxy's own line after the client's", []string{"192.0.2.1", "198.51.100.7"}, "198.51.100.7"},
		{"lines and lists", []string{"192.0.2.1, 198.51.100.7", "10.0.0.3", "10.0.0.2"}, "198.51.100.7"},
		{"empty elements and spaces", []string{" ,198.51.100.7 , ,\t"}, "198.51.100.7"},
		{"malformed right-most: the peer", []string{"198.51.100.7, not-an-ip"}, "127.0.0.1"},
		{"malformed behind a proxy: that proxy", []string{"198.51.100.7, unknown, 10.0.0.2"}, "10.0.0.2"},
		{"unspecified address is malformed", []string{"198.51.100.7, 0.0.0.0"}, "127.0.0.1"},
		{"IPv4 with a port", []string{"198.51.100.7:4711"}, "198.51.100.7"},
		{"IPv4-mapped IPv6", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"IPv6", []string{"2001:db8:1::7"}, "2001:db8:1::7"},
		{"IPv6 with a port", []string{"[2001:db8:1::7]:4711"}, "2001:db8:1::7"},
		{"IPv6 behind an IPv6 proxy", []string{"2001:db8:1::7, 2001:db8:ffff::1"}, "2001:db8:1::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			username := fmt.Sprintf("case-%d", i)
			b := behindProxy(e, tc.xff...)
			wantWrong(t, tc.name, try(b, loginPage(t, b, fl), username, "wrong password"))
			var got []any
			for _, r := range logRecords(t, logs.String(), "login failed") {
				if r["username"] == username {
					got = append(got, r["client_ip"])
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("X-Forwarded-For %q: client_ip %v, want %q", tc.xff, got, tc.want)
			}
		})
	}
}

// TestTrustedProxiesConfig: New names the trusted_proxies entry at fault.
func TestTrustedProxiesConfig(t *testing.T) {
	t.Parallel()
	db, err := datafile.Open(filepath.Join(t.TempDir(), "bffgate.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := bolt.New(db, bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		proxies []string
		want    string
	}{
		{[]string{"10.0.0.0/8", "10.0.0.300"}, `issuer.trusted_proxies[1]: "10.0.0.300" is neither an IP nor a CIDR`},
		{[]string{"10.0.0.0/33"}, `issuer.trusted_proxies[0]: "10.0.0.0/33" is not a CIDR`},
		{[]string{"proxy.internal"}, `issuer.trusted_proxies[0]: "proxy.internal" is neither an IP nor a CIDR`},
		{[]string{""}, `issuer.trusted_proxies[0]: "" is neither an IP nor a CIDR`},
		{[]string{"0.0.0.0/0"}, `issuer.trusted_proxies[0]: "0.0.0.0/0" trusts every address`},
		{[]string{"127.0.0.1", "::/0"}, `issuer.trusted_proxies[1]: "::/0" trusts every address`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Issuer = "http://127.0.0.1:9"
			cfg.Store = store
			cfg.TrustedProxies = tc.proxies
			_, err := issuer.New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
