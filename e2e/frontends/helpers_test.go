package frontends

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/peers"
	"github.com/bffgate/bffgate/e2e/stack"
)

// testTimeout bounds each test's calls to the peers and the gateway.
const testTimeout = 3 * time.Minute

// testContext is a context that ends with the test (or after testTimeout).
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// The users of the embedded issuer (oidc-provider accepts any account).
var issuerUsers = map[string]string{
	"alice": "alice-password-0123",
	"carol": "carol-password-0123",
	"erin":  "erin-password-0123",
}

// frontend is one entry of gateway.frontends as the test writes it.
type frontend struct {
	Name string
	// Host is match.hosts' one entry; Prefix match.path_prefix.
	Host, Prefix string
	// Embedded: the provider is the embedded issuer, which registers the
	// client bffgate-<name> itself; otherwise oidc-provider with
	// ClientID and its secret.
	Embedded bool
	ClientID string
	// For the bad-input cases: an explicit session.cookie_name and
	// base_path, and no provider at all.
	CookieName, BasePath string
	NoProvider           bool
	// APITag is the X-Frontend value its route adds (default Name): a
	// reload that changes it changes the frontend.
	APITag string

	port int // the gateway's port
}

// origin is the frontend's public URL: http://host:port.
func (f frontend) origin() string { return fmt.Sprintf("http://%s:%d", f.Host, f.port) }

// url is an absolute URL of the frontend: its origin, prefix and path.
func (f frontend) url(path string) string { return f.origin() + f.Prefix + path }

// cookieName is the design's default session cookie name.
func (f frontend) cookieName() string {
	if f.Prefix == "" {
		return "__Host-bff-" + f.Name
	}
	return "__Secure-bff-" + f.Name
}

// clientID is the frontend's client at its provider.
func (f frontend) clientID() string {
	if f.Embedded {
		return "bffgate-" + f.Name
	}
	return f.ClientID
}

// clientSecret is the secret of an oidc-provider client.
func clientSecret(id string) string { return id + "-secret-0123456789abcdef" }

// providerClient is f's registration at oidc-provider.
func (f frontend) providerClient() peers.Client {
	return peers.Client{
		ID: f.ClientID, Secret: clientSecret(f.ClientID),
		RedirectURIs:           []string{f.url("/bff/callback")},
		PostLogoutRedirectURIs: []string{f.url("/")},
		BackchannelLogoutURI:   f.url("/bff/backchannel-logout"),
	}
}

// The four frontends of the tests, and the one a reload adds.
func fourFrontends(port int) []frontend {
	fs := []frontend{
		{Name: "a", Host: "localhost", Embedded: true},
		{Name: "b", Host: "b.localhost", ClientID: "fe-b"},
		{Name: "one", Host: "127.0.0.1", Prefix: "/one", Embedded: true},
		{Name: "two", Host: "127.0.0.1", Prefix: "/two", ClientID: "fe-two"},
	}
	for i := range fs {
		fs[i].port = port
	}
	return fs
}

func thirdFrontend(port int) frontend {
	return frontend{Name: "c", Host: "c.localhost", ClientID: "fe-c", port: port}
}

// env is one bffgate process with its frontends, oidc-provider, the
// echo API and the SPAs' directories.
type env struct {
	t       *testing.T
	p       *peers.Provider
	st      *stack.Stack
	up      *echo
	gwPort  int
	issuer  string // the embedded issuer's URL
	oidc    string // oidc-provider's issuer URL
	api     string // the echo API's URL
	spaRoot string
	store   string
	redis   string // the redis: section, "" for bbolt
	rdb     *goredis.Client
	rprefix string // the Redis key prefix of this test
	hashes  map[string]string
	fronts  []frontend
}

// byName returns the frontend called name.
func (e *env) byName(name string) frontend {
	for _, f := range e.fronts {
		if f.Name == name {
			return f
		}
	}
	e.t.Fatalf("no frontend %q", name)
	return frontend{}
}

// startEnv starts oidc-provider (with the clients of every oidc-provider
// frontend of all, so that a reload may add one), the echo API and bffgate
// with the frontends fronts, on store (bbolt or redis).
func startEnv(t *testing.T, store string, fronts, all []frontend) *env {
	t.Helper()
	e := &env{
		t:       t,
		up:      newEcho(t),
		gwPort:  fronts[0].port,
		spaRoot: t.TempDir(),
		store:   store,
		hashes:  map[string]string{},
	}
	if store == "redis" {
		e.rdb, e.rprefix = sharedRedis(t)
		e.redis = fmt.Sprintf("redis: {url: %q, prefix: %q}\n", os.Getenv("BFFGATE_TEST_REDIS_URL"), e.rprefix)
	}
	e.hashUsers()
	var clients []peers.Client
	for _, f := range all {
		if !f.Embedded {
			clients = append(clients, f.providerClient())
			e.up.client = cmp.Or(e.up.client, f.ClientID)
		}
	}
	e.p = peers.StartProvider(t, peers.ProviderOptions{Clients: clients, AccessTokenTTL: 5 * time.Minute})
	e.up.provider = e.p
	e.oidc, e.api = e.p.Issuer, e.up.srv.URL
	for _, f := range all {
		e.writeSPA(f)
	}
	isPort := stack.FreePort(t)
	e.issuer = fmt.Sprintf("http://127.0.0.1:%d", isPort)
	e.fronts = fronts
	e.st = stack.Start(t, stack.Options{
		ConfigYAML:  e.yaml(fronts),
		GatewayPort: e.gwPort,
		IssuerPort:  isPort,
	})
	if e.st.IssuerURL != e.issuer {
		t.Fatalf("the stack's issuer is %s, want %s", e.st.IssuerURL, e.issuer)
	}
	return e
}

// hashUsers hashes the embedded issuer's users' passwords for the file
// (bcrypt at its lowest cost: the tests sign in often).
func (e *env) hashUsers() {
	e.t.Helper()
	for u, pw := range issuerUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			e.t.Fatal(err)
		}
		e.hashes[u] = string(h)
	}
}

// yaml is the configuration file with the frontends fronts.
func (e *env) yaml(fronts []frontend) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log: {level: info, format: json, access: true}\n%s", e.redis)
	fmt.Fprintf(&b, "issuer:\n  enabled: true\n  url: %s\n  users:\n", e.issuer)
	for _, u := range slices.Sorted(maps.Keys(issuerUsers)) {
		fmt.Fprintf(&b, "    - username: %s\n      password_hash: %q\n      subject: %s\n      claims: {name: %s}\n", u, e.hashes[u], u, "User "+u)
	}
	fmt.Fprintf(&b, "gateway:\n  session: {store: %s}\n  frontends:\n", e.store)
	for _, f := range fronts {
		fmt.Fprintf(&b, "    - name: %s\n", f.Name)
		fmt.Fprintf(&b, "      match: {hosts: [%q], path_prefix: %q}\n", f.Host, f.Prefix)
		fmt.Fprintf(&b, "      public_url: %s\n", f.origin())
		if f.CookieName != "" {
			fmt.Fprintf(&b, "      session: {cookie_name: %q}\n", f.CookieName)
		}
		if f.BasePath != "" {
			fmt.Fprintf(&b, "      base_path: %s\n", f.BasePath)
		}
		switch {
		case f.NoProvider:
		case f.Embedded:
			fmt.Fprintf(&b, "      provider: {issuer_url: %s}\n", e.issuer)
		default:
			fmt.Fprintf(&b, "      provider: {issuer_url: %s, client_id: %s, client_secret: %q, use_userinfo: true}\n",
				e.oidc, f.ClientID, clientSecret(f.ClientID))
		}
		fmt.Fprintf(&b, "      routes:\n        - {prefix: %s/api/, upstream: %s, policy: user, add_headers: {X-Frontend: %s}}\n",
			f.Prefix, e.api, cmp.Or(f.APITag, f.Name))
		fmt.Fprintf(&b, "      spa: {dir: %s}\n", filepath.Join(e.spaRoot, f.Name))
	}
	return b.String()
}

// reload writes the configuration with the frontends fronts and sends
// SIGHUP. The caller polls for the change it expects.
func (e *env) reload(fronts []frontend) {
	e.t.Helper()
	e.writeConfig(e.yaml(fronts))
	e.fronts = fronts
}

// writeConfig replaces the configuration file with text and sends SIGHUP.
func (e *env) writeConfig(text string) {
	e.t.Helper()
	// Written beside and renamed, so bffgate never reads half a file.
	tmp := e.st.ConfigFile + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.st.ConfigFile); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.Signal(syscall.SIGHUP); err != nil {
		e.t.Fatal(err)
	}
}

// spaPage is every frontend's SPA: who is signed in (from /bff/user), a
// login link (prompt=login: the user to sign in is chosen each time, not
// taken from the provider's single sign-on), the logout link /bff/user
// gives, and a button calling the frontend's API.
const spaPage = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>frontend {{NAME}}</title></head>
<body data-state="loading" data-prefix="{{PREFIX}}">
<h1 id="frontend">{{NAME}}</h1>
<p>Signed in: <span id="user"></span></p>
<p><a id="login" href="{{PREFIX}}/bff/login?prompt=login&amp;returnUrl={{PREFIX}}%2F">Log in</a>
<a id="logout" href="#" hidden>Log out</a></p>
<p><button id="call-api" type="button">Call the API</button></p>
<pre id="api" data-status=""></pre>
<script src="{{PREFIX}}/app.js"></script>
</body></html>
`

const spaScript = `const prefix = document.body.dataset.prefix;
const csrf = { 'X-CSRF': '1' };
async function load() {
  const r = await fetch(prefix + '/bff/user?slide=false', { headers: csrf });
  const user = document.getElementById('user');
  if (r.status !== 200) {
    user.textContent = 'anonymous';
    document.body.dataset.state = 'anonymous';
    return;
  }
  const claims = await r.json();
  const get = (t) => (claims.find((c) => c.type === t) || {}).value;
  user.textContent = get('sub');
  const logout = document.getElementById('logout');
  logout.href = get('bff:logout_url');
  logout.hidden = false;
  document.body.dataset.state = 'signed-in';
}
document.getElementById('call-api').addEventListener('click', async () => {
  const out = document.getElementById('api');
  out.textContent = '';
  out.dataset.status = '';
  const r = await fetch(prefix + '/api/whoami', { headers: csrf });
  out.textContent = await r.text();
  out.dataset.status = String(r.status);
});
load();
`

// writeSPA writes f's SPA directory.
func (e *env) writeSPA(f frontend) {
	e.t.Helper()
	dir := filepath.Join(e.spaRoot, f.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	page := strings.NewReplacer("{{NAME}}", f.Name, "{{PREFIX}}", f.Prefix).Replace(spaPage)
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(page), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.js"), []byte(spaScript), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// echoed is the echo API's answer: which frontend called (the header its
// route adds) and whose token it carried.
type echoed struct {
	Frontend string   `json:"frontend"`
	Path     string   `json:"path"`
	Sub      string   `json:"sub"`
	Aud      []string `json:"aud"`
	ClientID string   `json:"client_id"`
	Issuer   string   `json:"iss"`
	Cookies  []string `json:"cookies"`
}

// echo is the API behind every frontend's route.
type echo struct {
	srv      *httptest.Server
	provider *peers.Provider
	client   string // the client introspecting oidc-provider's tokens

	mu   sync.Mutex
	seen []echoed
}

func newEcho(t *testing.T) *echo {
	e := &echo{}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *echo) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_token","error_description":"no bearer token"}`)
		return
	}
	out := echoed{Frontend: r.Header.Get("X-Frontend"), Path: r.URL.Path}
	for _, c := range r.Cookies() {
		out.Cookies = append(out.Cookies, c.Name)
	}
	if parts := strings.Split(tok, "."); len(parts) == 3 {
		// The embedded issuer's JWT: the test reads its payload as is
		// (the gateway verified its session; this API only reports).
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		var claims map[string]any
		if err == nil {
			err = json.Unmarshal(payload, &claims)
		}
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"invalid_token","error_description":%q}`, "payload: "+err.Error())
			return
		}
		out.Sub, _ = claims["sub"].(string)
		out.Issuer, _ = claims["iss"].(string)
		out.ClientID, _ = claims["client_id"].(string)
		out.Aud = audience(claims["aud"])
	} else {
		// oidc-provider's opaque token: introspection (any of its
		// confidential clients may ask).
		in, err := e.provider.Introspect(r.Context(), e.client, clientSecret(e.client), tok)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, `{"error":"introspection_failed","error_description":%q}`, err.Error())
			return
		}
		if !in.Active {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_token","error_description":"oidc-provider says the token is not active"}`)
			return
		}
		out.Sub, out.ClientID, out.Issuer = in.Sub, in.ClientID, e.provider.Issuer
		out.Aud = audience(in.Raw["aud"])
	}
	e.mu.Lock()
	e.seen = append(e.seen, out)
	e.mu.Unlock()
	_ = json.NewEncoder(w).Encode(out)
}

// count is the number of requests the echo API answered with a token.
func (e *echo) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.seen)
}

func audience(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// sharedRedis returns a client of the machine's Redis
// (BFFGATE_TEST_REDIS_URL) and a key prefix of this test's own, whose keys
// are deleted at the end; it skips the test when the variable is unset.
func sharedRedis(t *testing.T) (rdb *goredis.Client, prefix string) {
	t.Helper()
	redisURL := os.Getenv("BFFGATE_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("BFFGATE_TEST_REDIS_URL is not set: set it to a Redis URL such as redis://127.0.0.1:6379/0 to run the frontends on Redis")
	}
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("BFFGATE_TEST_REDIS_URL: %v", err)
	}
	rdb = goredis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("BFFGATE_TEST_REDIS_URL is set but Redis does not answer: %v", err)
	}
	prefix = "e2e-frontends:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			rdb.Del(ctx, keys[:n]...)
			keys = keys[n:]
		}
	})
	return rdb, prefix
}

// redisKeys counts the keys under the test's prefix + sub.
func (e *env) redisKeys(ctx context.Context, sub string) int {
	e.t.Helper()
	n := 0
	iter := e.rdb.Scan(ctx, 0, e.rprefix+sub+"*", 500).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		e.t.Fatalf("scan Redis: %v", err)
	}
	return n
}

// agent is a plain-HTTP user agent. It reaches every name under
// .localhost on 127.0.0.1 (as chromium does), keeps cookies in a jar, and
// never follows redirects by itself.
type agent struct {
	t *testing.T
	c *http.Client
}

func newAgent(t *testing.T) *agent {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if host == "localhost" || strings.HasSuffix(host, ".localhost") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &agent{t: t, c: &http.Client{
		Jar:       jar,
		Timeout:   20 * time.Second,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// response is an HTTP response read in full.
type response struct {
	Status int
	Header http.Header
	Body   []byte
	URL    *url.URL
}

// Location resolves the Location header against the request URL.
func (r response) Location() *url.URL {
	loc := r.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := r.URL.Parse(loc)
	if err != nil {
		return nil
	}
	return u
}

// errorCode is the error member of a JSON body ("" when there is none).
func (r response) errorCode() string {
	var body struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &body)
	return body.Error
}

func (r response) String() string {
	return fmt.Sprintf("%d %s %.400s", r.Status, r.Header.Get("Content-Type"), r.Body)
}

// do sends one request; header may be nil.
func (a *agent) do(ctx context.Context, method, rawURL string, body io.Reader, header http.Header) response {
	a.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		a.t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		a.t.Fatalf("%s %s: read body: %v", method, rawURL, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b, URL: req.URL}
}

// get sends a GET with the anti-CSRF header and header's fields.
func (a *agent) get(ctx context.Context, rawURL string, header http.Header) response {
	a.t.Helper()
	h := http.Header{"X-Csrf": {"1"}}
	for k, vs := range header {
		h[k] = vs
	}
	return a.do(ctx, http.MethodGet, rawURL, nil, h)
}

// withCookies is a header sending exactly the cookies given, by hand:
// the jar is bypassed (Go's jar, like curl, keeps Secure cookies from
// plain-http names other than loopback addresses).
func withCookies(cookies map[string]string) http.Header {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(cookies)) {
		parts = append(parts, n+"="+cookies[n])
	}
	return http.Header{"Cookie": {strings.Join(parts, "; ")}}
}

// issuerSignIn opens authURL (an authorization request to the embedded
// issuer), signs in at its HTML form as username, and returns the
// redirect that leaves the issuer (a client's redirect_uri with code,
// state and iss).
func (a *agent) issuerSignIn(ctx context.Context, authURL, username string) (*url.URL, error) {
	a.t.Helper()
	start, err := url.Parse(authURL)
	if err != nil {
		return nil, err
	}
	method, target := http.MethodGet, authURL
	var form url.Values
	for range 10 {
		var r response
		if method == http.MethodGet {
			r = a.do(ctx, method, target, nil, nil)
		} else {
			r = a.do(ctx, method, target, strings.NewReader(form.Encode()), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
		}
		switch {
		case r.Status/100 == 3:
			loc := r.Location()
			if loc == nil {
				return nil, fmt.Errorf("issuer sign-in: %d from %s without a usable Location", r.Status, r.URL.Path)
			}
			if loc.Host != start.Host {
				return loc, nil
			}
			method, target = http.MethodGet, loc.String()
		case r.Status == http.StatusOK && strings.Contains(string(r.Body), `name="password"`):
			f, err := issuerclient.ParseForm(string(r.Body))
			if err != nil {
				return nil, fmt.Errorf("issuer sign-in: login page at %s: %w", r.URL.Path, err)
			}
			action, err := r.URL.Parse(f.Action)
			if err != nil {
				return nil, fmt.Errorf("issuer sign-in: form action %q: %w", f.Action, err)
			}
			form = f.Fields
			form.Set("username", username)
			form.Set("password", issuerUsers[username])
			method, target = http.MethodPost, action.String()
		default:
			return nil, fmt.Errorf("issuer sign-in: %s %s answered %s", method, r.URL.Path, r)
		}
	}
	return nil, errors.New("issuer sign-in: more than 10 steps without leaving the issuer")
}

// eventually polls cond every 20 ms until it holds or limit passes, and
// reports whether it held. It waits for another process to act (a peer
// delivering a logout token, bffgate reloading its file).
func eventually(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
