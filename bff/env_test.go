package bff

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	bbolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
	issuerbolt "github.com/bffgate/bffgate/issuer/storage/bolt"
	"github.com/bffgate/bffgate/session"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
)

const (
	testClientID     = "bff"
	testClientSecret = "bff-secret-0123456789abcdef0123"
	alicePassword    = "correct horse battery staple"
	bobPassword      = "tr0ub4dor&3 but longer"
)

var testHash = sync.OnceValue(func() map[string]string {
	out := map[string]string{}
	for _, p := range []string{alicePassword, bobPassword} {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		out[p] = string(h)
	}
	return out
})

// clock is the injected clock every component of a test shares.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// storeKind names a session store the tests run against.
type storeKind string

const (
	kindCookie storeKind = "cookie"
	kindBolt   storeKind = "bolt"
)

var storeKinds = []storeKind{kindCookie, kindBolt}

// env is one issuer, one upstream and one gateway on loopback listeners.
type env struct {
	t          testing.TB
	clock      *clock
	kind       storeKind
	db         *bbolt.DB
	issuer     string
	iss        *issuer.Server
	store      session.Store
	gw         *Gateway
	gwURL      string
	upstream   *upstream
	reg        *prometheus.Registry
	bclRec     *bclRecorder
	stopIssuer func()
	issuerReg  *prometheus.Registry
	cookieKeys [][]byte
}

// envOptions tune newEnv.
type envOptions struct {
	gateway func(*Config)
	issuer  func(*issuer.Config)
	// cookieKeys are the cookie store's key pairs (hash, block, ...).
	cookieKeys [][]byte
	// beforeGateway runs once the issuer serves, before the gateway is
	// configured (an upstream that needs the issuer's URL).
	beforeGateway func(*env)
}

func randomKey(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func newEnv(t testing.TB, kind storeKind, o envOptions) *env {
	t.Helper()
	e := &env{t: t, clock: newClock(), kind: kind, reg: prometheus.NewRegistry(), issuerReg: prometheus.NewRegistry()}
	var err error
	if e.db, err = datafile.Open(filepath.Join(t.TempDir(), "bffgate.db"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.db.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	gwLn := listen(t)
	e.gwURL = "http://" + gwLn.Addr().String()
	e.bclRec = newBCLRecorder(t, e.gwURL+"/bff/backchannel-logout")

	// The issuer.
	isLn := listen(t)
	e.issuer = "http://" + isLn.Addr().String()
	istore, err := issuerbolt.New(e.db, issuerbolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	icfg := issuer.Config{
		Issuer: e.issuer,
		Store:  istore,
		Clients: []issuer.Client{{
			ID: testClientID, Secret: testClientSecret,
			RedirectURIs:           []string{e.gwURL + "/bff/callback"},
			PostLogoutRedirectURIs: []string{e.gwURL + "/"},
			GrantTypes:             []string{issuer.GrantAuthorizationCode, issuer.GrantRefreshToken, issuer.GrantClientCredentials},
			BackchannelLogoutURI:   e.bclRec.srv.URL,
			Audience:               []string{"demo-api"},
		}},
		Users: []issuer.User{
			{Username: "alice", PasswordHash: testHash()[alicePassword], Subject: "user-alice",
				Claims: map[string]any{"name": "Alice Example", "email": "alice@example.test", "email_verified": true, "groups": []any{"admin", "dev"}}},
			{Username: "bob", PasswordHash: testHash()[bobPassword], Subject: "user-bob",
				Claims: map[string]any{"name": "Bob Example", "email": "bob@example.test"}},
		},
		Now:        e.clock.Now,
		Logger:     quietLogger(),
		HTTPClient: &http.Client{Transport: testhttp.Transport(), Timeout: 5 * time.Second},
		Registerer: e.issuerReg,
	}
	if o.issuer != nil {
		o.issuer(&icfg)
	}
	if e.iss, err = issuer.New(ctx, icfg); err != nil {
		t.Fatalf("issuer.New: %v", err)
	}
	e.stopIssuer = serve(t, e.iss.App().Listener, isLn, e.iss.App().ShutdownWithTimeout)
	go e.iss.Run(ctx)

	e.upstream = newUpstream(t, e.issuer, e.clock)

	e.cookieKeys = o.cookieKeys
	if e.cookieKeys == nil {
		e.cookieKeys = [][]byte{randomKey(32), randomKey(32)}
	}
	e.store = e.newStore(e.cookieKeys)

	if o.beforeGateway != nil {
		o.beforeGateway(e)
	}
	cfg := e.gatewayConfig()
	if o.gateway != nil {
		o.gateway(&cfg)
	}
	if e.gw, err = New(ctx, cfg); err != nil {
		t.Fatalf("bff.New: %v", err)
	}
	serve(t, e.gw.App().Listener, gwLn, e.gw.App().ShutdownWithTimeout)
	go e.gw.Run(ctx)
	return e
}

// gatewayConfig is the gateway configuration of the fixture.
func (e *env) gatewayConfig() Config {
	return Config{
		PublicURL: e.gwURL,
		Provider: ProviderConfig{
			IssuerURL: e.issuer, ClientID: testClientID, ClientSecret: testClientSecret,
			HTTPClient: &http.Client{Transport: testhttp.Transport(), Timeout: 5 * time.Second},
		},
		Store:  e.store,
		Cookie: CookieConfig{FlowKeys: []KeyPair{{Hash: randomKey(32), Block: randomKey(32)}}},
		Routes: []Route{
			{Route: proxy.Route{Prefix: "/api/", Upstream: e.upstream.srv.URL}, Policy: PolicyUser},
			{Route: proxy.Route{Prefix: "/opt/", Upstream: e.upstream.srv.URL}, Policy: PolicyUserOptional},
			{Route: proxy.Route{Prefix: "/svc/", Upstream: e.upstream.srv.URL}, Policy: PolicyClient},
			{Route: proxy.Route{Prefix: "/pub/", Upstream: e.upstream.srv.URL}, Policy: PolicyNone},
		},
		SPA: func(c *fiber.Ctx) error {
			return c.SendString("spa " + c.Path())
		},
		Now:        e.clock.Now,
		Logger:     quietLogger(),
		Registerer: e.reg,
		Gatherer:   e.reg,
	}
}

// newStore opens a session store of e's kind; keys are the cookie store's.
func (e *env) newStore(keys [][]byte) session.Store {
	e.t.Helper()
	switch e.kind {
	case kindBolt:
		s, err := sessionbolt.New(e.db, sessionbolt.Config{Now: e.clock.Now, Logger: quietLogger()})
		if err != nil {
			e.t.Fatal(err)
		}
		return s
	default:
		return newCookieStore(e, keys)
	}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serve runs an app on ln until the test ends or stop is called.
func serve(t testing.TB, run func(net.Listener) error, ln net.Listener, shutdown func(time.Duration) error) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = run(ln)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = shutdown(5 * time.Second)
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// upstream is the API the gateway proxies to. It verifies every bearer
// token against the issuer's JWKS and answers what it saw.
type upstream struct {
	srv      *httptest.Server
	verifier *oidc.IDTokenVerifier
	mu       sync.Mutex
	seen     []seenRequest
	reject   int
}

// rejectNext makes the next n requests answer 401 invalid_token.
func (u *upstream) rejectNext(n int) {
	u.mu.Lock()
	u.reject = n
	u.mu.Unlock()
}

type seenRequest struct {
	Path, Sub, ClientID, Cookie, Auth string
	Bearer                            bool
}

func newUpstream(t testing.TB, issuerURL string, clk *clock) *upstream {
	u := &upstream{}
	ks := oidc.NewRemoteKeySet(context.Background(), issuerURL+"/jwks")
	u.verifier = oidc.NewVerifier(issuerURL, ks, &oidc.Config{SkipClientIDCheck: true, Now: clk.Now,
		SupportedSigningAlgs: []string{"RS256", "ES256", "PS256"}})
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sr := seenRequest{Path: r.URL.Path, Cookie: r.Header.Get("Cookie"), Auth: r.Header.Get("Authorization")}
		u.mu.Lock()
		reject := u.reject > 0
		if reject {
			u.reject--
		}
		u.mu.Unlock()
		if reject {
			// Headers of the upstream's own, none of which may reach a
			// gateway answer that replaces this one.
			w.Header().Set("X-Upstream-Trace", "trace-1")
			w.Header().Set("Cache-Control", "public, max-age=600")
			w.Header().Set("Vary", "X-Upstream")
			w.Header().Add("Set-Cookie", "upstream_pref=1; Path=/")
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
			return
		}
		if tok, ok := strings.CutPrefix(sr.Auth, "Bearer "); ok {
			idt, err := u.verifier.Verify(r.Context(), tok)
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
				return
			}
			var cl struct {
				ClientID string `json:"client_id"`
			}
			_ = idt.Claims(&cl)
			sr.Bearer, sr.Sub, sr.ClientID = true, idt.Subject, cl.ClientID
		}
		u.mu.Lock()
		u.seen = append(u.seen, sr)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(sr)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// bclRecorder stands between the issuer and the gateway's back-channel
// logout endpoint, keeping every logout token it forwards.
type bclRecorder struct {
	srv    *httptest.Server
	mu     sync.Mutex
	tokens []string
}

func newBCLRecorder(t testing.TB, target string) *bclRecorder {
	b := &bclRecorder{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		b.mu.Lock()
		b.tokens = append(b.tokens, r.PostForm.Get("logout_token"))
		b.mu.Unlock()
		resp, err := testhttp.Client.PostForm(target, r.PostForm)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *bclRecorder) last() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.tokens) == 0 {
		return ""
	}
	return b.tokens[len(b.tokens)-1]
}

// browser is a user agent with its own cookie jar. It follows redirects
// (login through the issuer) unless noFollow is set.
type browser struct {
	e      *env
	jar    *cookiejar.Jar
	client *http.Client
	tr     *http.Transport
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{e: e, jar: jar}
	b.tr = testhttp.Transport()
	b.client = &http.Client{Jar: jar, Transport: b.tr, Timeout: 10 * time.Second}
	return b
}

// noRedirect returns a client sharing b's cookies that does not follow
// redirects.
func (b *browser) noRedirect() *http.Client {
	return &http.Client{Jar: b.jar, Transport: b.tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type result struct {
	status int
	header http.Header
	body   string
	url    *url.URL
}

func (r result) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("body is not JSON (%v): %s", err, clip(r.body))
	}
}

func clip(s string) string {
	if len(s) > 1500 {
		return s[:1500] + "..."
	}
	return s
}

func (b *browser) do(c *http.Client, method, rawURL string, body io.Reader, hdr map[string]string) result {
	b.e.t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.e.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: string(data), url: resp.Request.URL}
}

// get fetches a gateway path (following redirects).
func (b *browser) get(path string, hdr map[string]string) result {
	b.e.t.Helper()
	return b.do(b.client, http.MethodGet, b.e.gwURL+path, nil, hdr)
}

// api calls a gateway path as the SPA does (X-CSRF: 1, no redirects).
func (b *browser) api(method, path string) result {
	b.e.t.Helper()
	return b.do(b.noRedirect(), method, b.e.gwURL+path, nil, map[string]string{"X-CSRF": "1"})
}

// login signs in through the gateway and the issuer's login form and
// returns the final page (the returnUrl, served by the test SPA).
func (b *browser) login(user, password, returnURL string) result {
	b.e.t.Helper()
	p := b.get("/bff/login?returnUrl="+url.QueryEscape(returnURL), nil)
	if p.status == http.StatusOK && strings.Contains(p.body, `name="password"`) {
		action, fields := parseForm(b.e.t, p.body)
		au, err := p.url.Parse(action)
		if err != nil {
			b.e.t.Fatal(err)
		}
		fields.Set("username", user)
		fields.Set("password", password)
		p = b.do(b.client, http.MethodPost, au.String(), strings.NewReader(fields.Encode()),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	}
	return p
}

// mustLogin signs in and checks that the browser landed on returnURL.
func (b *browser) mustLogin(user, password string) {
	b.e.t.Helper()
	p := b.login(user, password, "/home")
	if p.status != 200 || p.body != "spa /home" {
		b.e.t.Fatalf("login: status %d at %s: %s", p.status, p.url, clip(p.body))
	}
}

// parseForm returns the first form's action and fields.
func parseForm(t testing.TB, body string) (string, url.Values) {
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
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if !found {
		t.Fatalf("no form in page: %s", clip(body))
	}
	return action, fields
}

// handle is the session handle the browser's cookies carry.
func (b *browser) handle() string {
	u, _ := url.Parse(b.e.gwURL)
	parts := map[string]string{}
	for _, c := range b.jar.Cookies(u) {
		parts[c.Name] = c.Value
	}
	h := parts["__Host-bff"]
	if h == "" {
		return ""
	}
	for i := 1; ; i++ {
		p, ok := parts["__Host-bff."+strconv.Itoa(i)]
		if !ok {
			break
		}
		h += p
	}
	return h
}

// session is the browser's session in the store (nil when none).
func (b *browser) session() *session.Session {
	b.e.t.Helper()
	h := b.handle()
	if h == "" {
		return nil
	}
	s, err := b.e.store.Get(context.Background(), h)
	if errors.Is(err, session.ErrNotFound) {
		return nil
	}
	if err != nil {
		b.e.t.Fatal(err)
	}
	return s
}

// introspect asks the issuer whether tok is active (RFC 7662).
func (e *env) introspect(tok string) bool {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testClientID, testClientSecret)
	resp, err := testhttp.Client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatalf("introspect: %v", err)
	}
	return out.Active
}

// extraGateway starts a second gateway on the same issuer with store, and
// returns its URL. Browsers send it the same cookies (cookies ignore ports).
func (e *env) extraGateway(store session.Store) string {
	e.t.Helper()
	ln := listen(e.t)
	cfg := e.gatewayConfig()
	cfg.PublicURL = "http://" + ln.Addr().String()
	cfg.Store = store
	cfg.Registerer, cfg.Gatherer = nil, nil
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	gw, err := New(ctx, cfg)
	if err != nil {
		e.t.Fatalf("bff.New: %v", err)
	}
	serve(e.t, gw.App().Listener, ln, gw.App().ShutdownWithTimeout)
	return cfg.PublicURL
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// issuerCount sums the issuer's counter name over the series whose labels
// include labels.
func (e *env) issuerCount(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.issuerReg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// cookieHeader is the Cookie header b sends to the gateway.
func (b *browser) cookieHeader() string {
	var parts []string
	for _, c := range b.jar.Cookies(mustURL(b.e.gwURL)) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// hostRequest is httptest.NewRequest for a fiber App.Test of an absolute
// URL: the request line carries the path and the Host field the URL's
// host, as a browser sends them. (App.Test writes the request with
// httputil.DumpRequest, which leaves Host out of an absolute-form
// request, and fasthttp answers an HTTP/1.1 request without Host with
// 400, as RFC 9112 §3.2 asks.)
func hostRequest(method, target string, body io.Reader) *http.Request {
	req := httptest.NewRequest(method, target, body)
	req.RequestURI = req.URL.RequestURI()
	return req
}
