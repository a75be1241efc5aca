package forwardauth

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"

	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

// requireEnv turns a missing nginx, caddy or chromium from a skip into a
// failure.
const requireEnv = "BFFGATE_E2E_REQUIRE"

// need returns path when it is an executable, and skips (or, with
// BFFGATE_E2E_REQUIRE=1, fails) the test otherwise.
func need(t *testing.T, path, install string) string {
	t.Helper()
	if _, err := exec.LookPath(path); err != nil {
		why := fmt.Sprintf("%s is missing (%s): %v", path, install, err)
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("%s (%s=1, so this is a failure, not a skip)", why, requireEnv)
		}
		t.Skipf("%s; skipping (set %s=1 to make this a failure)", why, requireEnv)
	}
	return path
}

// The test users: alice may use the app and its admin pages, bob is not
// staff, carol is staff without an email address.
const (
	alice, alicePassword = "alice", "alice-password-0123"
	bob, bobPassword     = "bob", "bob-password-0123"
	carol, carolPassword = "carol", "carol-password-0123"
)

// recipe reads a file of testdata: a README recipe.
func recipe(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startBffgate runs the real bffgate with testdata/bffgate.yaml (the
// README's gateway section), the test users at the embedded issuer, and
// publicURL (the proxy's origin) as gateway.public_url, and env (more
// BFFGATE_* variables).
func startBffgate(t *testing.T, publicURL string, env ...string) *stack.Stack {
	t.Helper()
	hash := func(p string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	cfg := recipe(t, "bffgate.yaml") + fmt.Sprintf(`log: {level: info, access: false}
issuer:
  users:
    - username: %s
      password_hash: %q
      subject: user-alice
      claims: {name: Alice, email: alice@example.test, email_verified: true}
      groups: [staff, admins]
    - username: %s
      password_hash: %q
      subject: user-bob
      claims: {name: Bob, email: bob@example.test, email_verified: true}
      groups: [contractors]
    - username: %s
      password_hash: %q
      subject: user-carol
      claims: {name: Carol}
      groups: [staff]
`, alice, hash(alicePassword), bob, hash(bobPassword), carol, hash(carolPassword))
	return stack.Start(t, stack.Options{ConfigYAML: cfg, Env: append([]string{"BFFGATE_GATEWAY_PUBLIC_URL=" + publicURL}, env...)})
}

// seen is what the test app received: the identity headers, the
// Authorization header and the cookies' names.
type seen struct {
	Method        string `json:"method"`
	URI           string `json:"uri"`
	User          string `json:"user"`
	Email         string `json:"email"`
	Groups        string `json:"groups"`
	Assertion     string `json:"assertion"`
	Authorization string `json:"authorization"`
	// EmailHeaders counts the X-Auth-Request-Email lines (nginx sends
	// none for an empty value).
	EmailHeaders int `json:"email_headers"`
}

// app is the protected application: it answers every request with what
// it received, as JSON, and keeps a record.
type app struct {
	srv *httptest.Server
	// quiet keeps no record (a load run): it only counts the requests
	// outside /open/ that came without a user.
	quiet     atomic.Bool
	anonymous atomic.Int64
	mu        sync.Mutex
	reqs      []seen
}

func newApp(t *testing.T) *app {
	a := &app{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{Method: r.Method, URI: r.RequestURI,
			User: r.Header.Get("X-Auth-Request-User"), Email: r.Header.Get("X-Auth-Request-Email"),
			Groups: r.Header.Get("X-Auth-Request-Groups"), Assertion: r.Header.Get("X-Bffgate-Jwt-Assertion"),
			Authorization: r.Header.Get("Authorization"), EmailHeaders: len(r.Header.Values("X-Auth-Request-Email"))}
		if a.quiet.Load() {
			if s.User == "" && !strings.HasPrefix(r.URL.Path, "/open/") {
				a.anonymous.Add(1)
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		a.mu.Lock()
		a.reqs = append(a.reqs, s)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// denied is the number of requests a quiet app received without a user.
func (a *app) denied() int64 { return a.anonymous.Load() }

// addr is the app's host:port.
func (a *app) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// sawUser reports whether any request reached the app as sub.
func (a *app) sawUser(sub string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.reqs {
		if s.User == sub {
			return true
		}
	}
	return false
}

// count is the number of requests the app received.
func (a *app) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.reqs)
}

// client is a browser-like user agent: a cookie jar (which, as browsers
// do, sends __Host- cookies to loopback over http), redirects followed.
type client struct {
	t      *testing.T
	jar    *cookiejar.Jar
	follow *http.Client
	stay   *http.Client // does not follow redirects
}

func newClient(t *testing.T) *client {
	return newClientFrom(t, nil)
}

// newClientFrom is newClient whose connections leave from local (nil:
// the system's choice).
func newClientFrom(t *testing.T, local net.Addr) *client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: local}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 8}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, jar: jar,
		follow: &http.Client{Jar: jar, Transport: tr, Timeout: 20 * time.Second},
		stay: &http.Client{Jar: jar, Transport: tr, Timeout: 20 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// page is a response read in full.
type page struct {
	status int
	header http.Header
	body   string
	url    *url.URL // the final URL, after redirects
}

func (c *client) do(hc *http.Client, method, rawURL string, body io.Reader, hdr map[string]string) page {
	c.t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return page{status: resp.StatusCode, header: resp.Header, body: string(b), url: resp.Request.URL}
}

// get navigates to rawURL, following redirects.
func (c *client) get(rawURL string, hdr map[string]string) page {
	c.t.Helper()
	return c.do(c.follow, http.MethodGet, rawURL, nil, hdr)
}

// getOnce requests rawURL without following a redirect.
func (c *client) getOnce(rawURL string, hdr map[string]string) page {
	c.t.Helper()
	return c.do(c.stay, http.MethodGet, rawURL, nil, hdr)
}

// open navigates to rawURL and, when it lands on the issuer's login form,
// signs in as user and follows the redirects back; it returns the last
// page.
func (c *client) open(rawURL, user, password string) page {
	c.t.Helper()
	p := c.get(rawURL, nil)
	if p.status != http.StatusOK || !strings.Contains(p.body, `name="password"`) {
		c.t.Fatalf("GET %s: want the issuer's login form, got %d at %s: %.800s", rawURL, p.status, p.url, p.body)
	}
	action, fields := parseForm(c.t, p.body)
	au, err := p.url.Parse(action)
	if err != nil {
		c.t.Fatal(err)
	}
	fields.Set("username", user)
	fields.Set("password", password)
	return c.do(c.follow, http.MethodPost, au.String(), strings.NewReader(fields.Encode()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

// parseForm returns the first form's action and fields.
func parseForm(t *testing.T, body string) (string, url.Values) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var action string
	found := false
	fields := url.Values{}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			attr := func(k string) string {
				for _, a := range n.Attr {
					if a.Key == k {
						return a.Val
					}
				}
				return ""
			}
			switch n.Data {
			case "form":
				if !found {
					found, action = true, attr("action")
				}
			case "input", "button":
				if name := attr("name"); name != "" {
					fields.Add(name, attr("value"))
				}
			}
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch)
		}
	}
	walk(doc)
	if !found {
		t.Fatalf("no form in page: %.800s", body)
	}
	return action, fields
}

// seenBy decodes the app's answer.
func seenBy(t *testing.T, p page) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal([]byte(p.body), &s); err != nil {
		t.Fatalf("not the app's answer (%d at %s): %.800s", p.status, p.url, p.body)
	}
	return s
}

// verifyAssertion checks the gateway's identity assertion as an upstream
// would: ES256 against the JWKS at publicURL/bff/jwks, issuer publicURL,
// audience aud, within its lifetime. It returns the claims.
func verifyAssertion(t *testing.T, raw, publicURL, aud string) map[string]any {
	t.Helper()
	resp, err := testhttp.Client.Get(publicURL + "/bff/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("JWKS at %s/bff/jwks: %v", publicURL, err)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("assertion %q: %v", raw, err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("assertion kid %q not in the JWKS", tok.Headers[0].KeyID)
	}
	var std jwt.Claims
	var all map[string]any
	if err := tok.Claims(keys[0].Key, &std, &all); err != nil {
		t.Fatalf("assertion signature: %v", err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: publicURL, AnyAudience: jwt.Audience{aud}, Time: time.Now()}, 5*time.Second); err != nil {
		t.Fatalf("assertion claims (want iss %s, aud %s): %v", publicURL, aud, err)
	}
	return all
}

// accessTokenSubject reads the sub of the embedded issuer's JWT access
// token after checking its signature against the issuer's JWKS.
func accessTokenSubject(t *testing.T, issuerURL, raw string) string {
	t.Helper()
	resp, err := testhttp.Client.Get(issuerURL + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256, jose.EdDSA})
	if err != nil {
		t.Fatalf("access token: %v", err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("access token kid %q not in the issuer's JWKS", tok.Headers[0].KeyID)
	}
	var std jwt.Claims
	if err := tok.Claims(keys[0].Key, &std); err != nil {
		t.Fatalf("access token signature: %v", err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: issuerURL, Time: time.Now()}, 5*time.Second); err != nil {
		t.Fatalf("access token: %v", err)
	}
	return std.Subject
}

// waitPort waits until something accepts connections on addr.
func waitPort(t *testing.T, addr string, done <-chan struct{}, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("the proxy exited before listening on %s:\n%s", addr, logs())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after 15s:\n%s", addr, logs())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// proc is a proxy process run for a test.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncBuffer
}

func startProc(t *testing.T, name string, args []string, env []string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{}), out: &syncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if env != nil {
		p.cmd.Env = env
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitLog waits (up to 5 s: the process's output arrives through a pipe)
// for a log line of st holding every one of substrs.
func waitLog(st *stack.Stack, substrs ...string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if len(st.LogLines(substrs...)) > 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
