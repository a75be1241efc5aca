package bench

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/e2e/stack"
)

// The codes made for each second of a code-exchange run: above what the
// issuer redeems on two quiet cores, so that the run lasts its duration
// (it ends early, its rate still right, when they are used up).
const (
	codesPerSecondES256 = 4000.0
	codesPerSecondRS256 = 1000.0
)

const (
	issuerClient = "bench-app"
	// issuerRedirect is the client's redirect URI: never dialled, the
	// benchmark reads the code from the redirect.
	issuerRedirect = "http://127.0.0.1:9/cb"
)

// issuerBench is one bffgate process running its issuer alone (no
// gateway), with the default configuration but for the token algorithm,
// a confidential client and the benchmark's user, signed in once.
type issuerBench struct {
	r        *runner
	s        *stack.Stack
	pid      int
	alg      string
	auth     string // client_secret_basic
	verifier string
	sso      string // the issuer's login session cookie
	hc       *http.Client
}

// issuerScenarios measures the issuer's grants per second against the
// real binary, one issuer per token algorithm (ES256, and RS256: the
// default): refresh grants, code exchanges, introspection of a live
// token, client_credentials. wrk drives the requests that can be replayed
// (introspection, client_credentials); internal/tokenload, a separate
// process, those that cannot (each code redeemed once, each refresh token
// rotated by its use). With profile a directory, each row is loaded once
// more under perf, outside the measured run.
func (r *runner) issuerScenarios(hash, profile string) []Row {
	var rows []Row
	n := 0
	for _, alg := range []struct{ name, yaml string }{
		{"ES256", "  tokens: {alg: ES256, id_token_alg: ES256, code_ttl: 10m}\n"},
		{"RS256, the default", "  tokens: {code_ttl: 10m}\n"},
	} {
		ib := r.startIssuer(alg.name, alg.yaml, hash)
		for _, sc := range []struct {
			name    string
			prepare func() func() Measurement
		}{
			{"refresh grants", ib.refreshRun},
			{"code exchanges", ib.codeRun},
			{"introspection of a live token", ib.introspectRun},
			{"client_credentials grants", ib.clientCredentialsRun},
		} {
			n++
			key := fmt.Sprintf("i%d", n)
			name := fmt.Sprintf("issuer (%s tokens): %s", alg.name, sc.name)
			m := sc.prepare()()
			r.t.Logf("%s. %s: %.0f/s p50 %s p99 %s cpu %.2fs (%.1f µs each) rss %.1fMB, %d errors", key, name, m.RPS, m.P50, m.P99,
				m.CPU.Seconds(), float64(m.CPU.Microseconds())/float64(max(m.Requests, 1)), float64(m.PeakRSS)/(1<<20), m.StatusErrors+m.SocketErrors)
			if m.StatusErrors > 0 || m.SocketErrors > 0 {
				r.t.Errorf("issuer row %s: %d refused requests and %d socket errors under load", name, m.StatusErrors, m.SocketErrors)
			}
			rows = append(rows, Row{Key: key, Name: name, Runs: []Measurement{m}})
			if profile != "" && profile != "1" {
				run := sc.prepare()
				r.perfReport(ib.pid, filepath.Join(profile, "issuer-"+key), func() { run() })
			}
		}
		ib.s.Stop()
	}
	return rows
}

func (r *runner) startIssuer(alg, tokensYAML, hash string) *issuerBench {
	t := r.t
	secret := randHex(24)
	cfg := fmt.Sprintf(`issuer:
%s  clients:
  - id: %s
    secret: %q
    redirect_uris: [%q]
    grant_types: [authorization_code, refresh_token, client_credentials]
    scopes: [openid, profile, email, offline_access]
  users:
  - username: %s
    password_hash: %q
    subject: bench-user-1
    claims: {name: Bench User, email: bench@example.com, email_verified: true}
gateway: {enabled: false}
demo_api: {enabled: false}
`, tokensYAML, issuerClient, secret, issuerRedirect, benchUser, hash)
	log := filepath.Join(r.logDir, "issuer-"+randHex(3)+".log")
	r.logs = append(r.logs, log)
	s := stack.Start(t, stack.Options{ConfigYAML: cfg, LogFile: log, NoGateway: true})
	ib := &issuerBench{r: r, s: s, alg: alg, verifier: oauth2.GenerateVerifier(),
		auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(issuerClient)+":"+url.QueryEscape(secret))),
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	b := NewBrowser(nil)
	loc, err := b.Authorize(ib.authURL(), issuerRedirect, benchUser, benchPassword)
	if err != nil {
		t.Fatalf("issuer (%s): %v\n%s", alg, err, s.Logs())
	}
	if loc.Query().Get("code") == "" {
		t.Fatalf("issuer (%s): the redirect after the login carries no code (error %q)", alg, loc.Query().Get("error"))
	}
	ib.sso = b.CookieHeader(strings.TrimPrefix(s.IssuerURL, "http://"))
	// Restarted after the login (its session kept in the data file), as
	// the gateways are: see restartGateway.
	s.Restart()
	ib.pid = gatewayPid(t, r.gwBin, s)
	return ib
}

func (ib *issuerBench) authURL() string {
	q := url.Values{
		"response_type": {"code"}, "client_id": {issuerClient}, "redirect_uri": {issuerRedirect},
		"scope": {"openid profile offline_access"}, "state": {"bench-state"}, "nonce": {"bench-nonce"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(ib.verifier)}, "code_challenge_method": {"S256"},
	}
	return ib.s.IssuerURL + "/authorize?" + q.Encode()
}

// codes asks for n codes as the signed-in browser would (the login
// session's cookie, no form), from a few goroutines.
func (ib *issuerBench) codes(n int) []string {
	t := ib.r.t
	out := make([]string, n)
	var next int
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	u := ib.authURL()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				code, err := ib.code(u)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				out[i] = code
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	mustf(t, firstErr, "issuer (%s): asking for codes", ib.alg)
	return out
}

func (ib *issuerBench) code(authURL string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, authURL, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Cookie", ib.sso)
	resp, err := ib.hc.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || loc.Query().Get("code") == "" {
		return "", fmt.Errorf("GET /authorize with the login session answered %d, want a redirect with a code (error %q)", resp.StatusCode, loc.Query().Get("error"))
	}
	return loc.Query().Get("code"), nil
}

// tokens is a token response's tokens (RFC 6749 §5.1).
type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// post sends a form to the issuer with the client's credentials and
// returns the answer's status and body.
func (ib *issuerBench) post(path, form string) (int, []byte) {
	t := ib.r.t
	req := must(http.NewRequest(http.MethodPost, ib.s.IssuerURL+path, strings.NewReader(form)))(t)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", ib.auth)
	resp, err := ib.hc.Do(req)
	mustf(t, err, "POST %s", path)
	defer resp.Body.Close()
	return resp.StatusCode, must(io.ReadAll(io.LimitReader(resp.Body, 1<<20)))(t)
}

// grants exchanges n fresh codes for tokens.
func (ib *issuerBench) grants(n int) []tokens {
	t := ib.r.t
	var out []tokens
	for _, code := range ib.codes(n) {
		status, body := ib.post("/token", ib.codeForm(code))
		var tk tokens
		if status != http.StatusOK || json.Unmarshal(body, &tk) != nil || tk.AccessToken == "" || tk.RefreshToken == "" {
			t.Fatalf("issuer (%s): code exchange answered %d, want access and refresh tokens (%d bytes)", ib.alg, status, len(body))
		}
		out = append(out, tk)
	}
	return out
}

func (ib *issuerBench) codeForm(code string) string {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {issuerRedirect}, "code_verifier": {ib.verifier}}.Encode()
}

// refreshRun: issuerConns grants, each rotated by one connection of
// tokenload for the run's duration.
func (ib *issuerBench) refreshRun() func() Measurement {
	var lines []string
	for _, g := range ib.grants(issuerConns) {
		lines = append(lines, g.RefreshToken)
	}
	items := ib.writeItems("refresh", lines)
	return func() Measurement { return ib.r.measureLoad(ib.pid, ib.tokenload("refresh", items, "")) }
}

// codeRun: enough codes for the run's duration at the rate such an
// issuer reaches on two quiet cores (the run ends early when they are
// used up: the rate is the codes over the time they took).
func (ib *issuerBench) codeRun() func() Measurement {
	rate := codesPerSecondES256
	if !strings.HasPrefix(ib.alg, "ES") {
		rate = codesPerSecondRS256
	}
	n := min(max(int(rate*ib.r.dur.Seconds()), 500), 50000)
	t0 := time.Now()
	items := ib.writeItems("codes", ib.codes(n))
	ib.r.t.Logf("issuer (%s): %d codes made in %s", ib.alg, n, time.Since(t0).Round(time.Millisecond))
	form := url.Values{"redirect_uri": {issuerRedirect}, "code_verifier": {ib.verifier}}.Encode()
	return func() Measurement { return ib.r.measureLoad(ib.pid, ib.tokenload("code", items, form)) }
}

// introspectRun: wrk POSTs /introspect for one live access token.
func (ib *issuerBench) introspectRun() func() Measurement {
	t := ib.r.t
	g := ib.grants(1)[0]
	form := url.Values{"token": {g.AccessToken}}.Encode()
	status, body := ib.post("/introspect", form)
	var got struct {
		Active bool `json:"active"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &got) != nil || !got.Active {
		t.Fatalf("issuer (%s): /introspect of a live token answered %d, active %v", ib.alg, status, got.Active)
	}
	return ib.wrkRun("/introspect", form)
}

// clientCredentialsRun: wrk POSTs the client_credentials grant.
func (ib *issuerBench) clientCredentialsRun() func() Measurement {
	form := "grant_type=client_credentials"
	if status, body := ib.post("/token", form); status != http.StatusOK || !strings.Contains(string(body), `"access_token"`) {
		ib.r.t.Fatalf("issuer (%s): client_credentials answered %d, want a token", ib.alg, status)
	}
	return ib.wrkRun("/token", form)
}

func (ib *issuerBench) wrkRun(path, form string) func() Measurement {
	r := ib.r
	body := filepath.Join(r.t.TempDir(), "body")
	mustf(r.t, os.WriteFile(body, []byte(form), 0o600), "write the form")
	tg := target{key: "issuer", name: "issuer " + path, urls: []string{ib.s.IssuerURL + path}, cookies: []string{""}, pids: []int{ib.pid}}
	mode := loadMode{method: http.MethodPost, bodyFile: body, contentType: "application/x-www-form-urlencoded", authorization: ib.auth}
	return func() Measurement { return r.measure(tg, issuerConns, r.dur, mode) }
}

func (ib *issuerBench) writeItems(name string, lines []string) string {
	p := filepath.Join(ib.r.t.TempDir(), name)
	mustf(ib.r.t, os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600), "write %s", name)
	return p
}

func (ib *issuerBench) tokenload(mode, items, form string) []string {
	return []string{"-url", ib.s.IssuerURL + "/token", "-mode", mode, "-items", items, "-form", form,
		"-auth", ib.auth, "-conns", fmt.Sprint(issuerConns), "-duration", ib.r.dur.String()}
}

// measureLoad runs internal/tokenload with args and reads process pid's
// CPU and peak memory around it.
func (r *runner) measureLoad(pid int, args []string) Measurement {
	t := r.t
	defer r.trimLogs()
	_ = ResetPeakRSS(pid)
	cpu0 := must(ProcCPU(pid))(t)
	out, err := exec.Command(r.loadBin, args...).CombinedOutput()
	cpu1 := must(ProcCPU(pid))(t)
	if err != nil {
		t.Fatalf("tokenload: %v\n%s", err, out)
	}
	w, err := ParseLoad(string(out))
	mustf(t, err, "tokenload")
	if w.StatusErrors > 0 {
		t.Logf("tokenload: %s", strings.TrimSpace(string(out)))
	}
	m := Measurement{WrkResult: w, CPU: cpu1 - cpu0}
	m.PeakRSS, _ = ProcPeakRSS(pid)
	return m
}
