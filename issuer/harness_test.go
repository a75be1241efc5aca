package issuer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	bbolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"
	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
	"github.com/bffgate/bffgate/issuer/token"
)

// The fixture: one confidential client (web), one public client (spa), a
// second confidential client (other) for foreign-token cases, a
// client_credentials client (svc), and one user (alice).
const (
	webID       = "web"
	webSecret   = "web-secret-0123456789abcdef"
	webRedirect = "https://app.example.test/callback"
	webLogout   = "https://app.example.test/logged-out"

	spaID       = "spa"
	spaRedirect = "https://spa.example.test/cb"

	otherID       = "other"
	otherSecret   = "other-secret-0123456789abcdef"
	otherRedirect = "https://other.example.test/callback"

	svcID     = "svc"
	svcSecret = "svc-secret-0123456789abcdef"

	aliceUser     = "alice"
	alicePassword = "correct horse battery staple"
	aliceEmail    = "alice@example.test"

	ssoCookie = "__Host-bffgate-idp"
)

// aliceHash is a bcrypt hash at the minimum cost: argon2id at RFC 9106
// parameters costs 64 MiB per login, too much for hundreds of logins under
// -race; TestArgon2idLogin covers HashPassword.
var aliceHash = sync.OnceValue(func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(alicePassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
})

// clock is the issuer's injected clock; tests move it instead of sleeping.
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

// env is one running issuer on a loopback listener.
type env struct {
	t      testing.TB
	srv    *issuer.Server
	cfg    issuer.Config
	url    string // the issuer identifier (also the base of every endpoint)
	addr   string // where the listener is; requests to url are dialled here
	clock  *clock
	db     *bbolt.DB
	store  *bolt.Store
	path   string
	reg    *prometheus.Registry
	client *http.Client // no cookies, follows no redirect

	stopOnce sync.Once
	stop     func()
}

// envOptions tune start.
type envOptions struct {
	// cfg edits the configuration before New.
	cfg func(*issuer.Config)
	// issuerURL reuses an issuer identifier (a restart, a second instance).
	issuerURL string
	// clock shares a clock between instances.
	clock *clock
	// db and path share an open bbolt file (a second instance); path alone
	// reopens a file (a restart).
	db   *bbolt.DB
	path string
	// store replaces the bbolt store (a Redis store shared by instances).
	store storage.Store
}

func baseConfig() issuer.Config {
	return issuer.Config{
		Clients: []issuer.Client{
			{
				ID: webID, Secret: webSecret,
				RedirectURIs:           []string{webRedirect},
				PostLogoutRedirectURIs: []string{webLogout},
			},
			{ID: spaID, RedirectURIs: []string{spaRedirect}},
			{ID: otherID, Secret: otherSecret, RedirectURIs: []string{otherRedirect}},
			{ID: svcID, Secret: svcSecret, GrantTypes: []string{issuer.GrantClientCredentials}},
		},
		Users: []issuer.User{{
			Username:     aliceUser,
			PasswordHash: aliceHash(),
			Subject:      "user-alice",
			Claims: map[string]any{
				"name":           "Alice Example",
				"email":          aliceEmail,
				"email_verified": true,
			},
		}},
	}
}

// start runs an issuer on 127.0.0.1:0 and stops it at the end of the test.
func start(t testing.TB, o envOptions) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, addr: ln.Addr().String(), clock: o.clock, reg: prometheus.NewRegistry()}
	if e.clock == nil {
		e.clock = newClock()
	}
	e.url = o.issuerURL
	if e.url == "" {
		e.url = "http://" + e.addr
	}
	ownDB := false
	switch {
	case o.store != nil:
	case o.db != nil:
		e.db, e.path = o.db, o.path
	default:
		e.path = o.path
		if e.path == "" {
			e.path = filepath.Join(t.TempDir(), "bffgate.db")
		}
		if e.db, err = datafile.Open(e.path, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		ownDB = true
	}
	cfg := baseConfig()
	cfg.Issuer = e.url
	if o.store != nil {
		cfg.Store = o.store
	} else {
		if e.store, err = bolt.New(e.db, bolt.Config{}); err != nil {
			t.Fatal(err)
		}
		cfg.Store = e.store
	}
	cfg.Now = e.clock.Now
	cfg.Registerer = e.reg
	cfg.Gatherer = e.reg
	cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	tlog := &testLog{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(tlog, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	// e.cfg holds the effective values of what tests read back.
	e.cfg = cfg
	if e.cfg.TokenFormat == "" {
		e.cfg.TokenFormat = token.FormatSigned
	}
	if e.cfg.TokenFormat == token.FormatSigned && e.cfg.TokenAlg == "" {
		e.cfg.TokenAlg = issuer.DefaultAlg
	}
	if e.cfg.TokenFormat == token.FormatEncrypted && e.cfg.Encryption == "" {
		e.cfg.Encryption = issuer.DefaultEncryption
	}

	ctx, cancel := context.WithCancel(context.Background())
	e.srv, err = issuer.New(ctx, cfg)
	if err != nil {
		cancel()
		if ownDB {
			e.db.Close()
		}
		t.Fatalf("issuer.New: %v", err)
	}
	app := e.srv.App()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := app.Listener(ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := e.srv.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	e.stop = func() {
		cancel()
		if err := app.ShutdownWithTimeout(5 * time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		wg.Wait()
		tlog.stop()
		if ownDB {
			if err := e.db.Close(); err != nil {
				t.Errorf("close db: %v", err)
			}
		}
	}
	t.Cleanup(e.Stop)
	e.client = e.httpClient(nil)
	return e
}

// Stop stops the issuer (and closes its bbolt file when it opened it).
func (e *env) Stop() { e.stopOnce.Do(e.stop) }

// httpClient returns a client whose connections to the issuer's host go to
// this instance's listener (so that instances sharing one issuer
// identifier are told apart), following redirects only within the issuer.
func (e *env) httpClient(jar http.CookieJar) *http.Client {
	u, _ := url.Parse(e.url)
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == u.Host {
				addr = e.addr
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 16,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != u.Host || len(via) > 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
		Transport: tr,
	}
}

// ctx carries the instance's HTTP client for go-oidc and x/oauth2.
func (e *env) ctx() context.Context {
	return oidc.ClientContext(context.Background(), e.client)
}

// provider runs OIDC discovery against the instance.
func (e *env) provider() *oidc.Provider {
	e.t.Helper()
	p, err := oidc.NewProvider(e.ctx(), e.url)
	if err != nil {
		e.t.Fatalf("discovery: %v", err)
	}
	return p
}

// oauth2Config is the x/oauth2 configuration of a fixture client.
func (e *env) oauth2Config(p *oidc.Provider, clientID string, scopes ...string) *oauth2.Config {
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "profile", "email", oidc.ScopeOfflineAccess}
	}
	c := &oauth2.Config{ClientID: clientID, Endpoint: p.Endpoint(), Scopes: scopes}
	switch clientID {
	case webID:
		c.ClientSecret, c.RedirectURL = webSecret, webRedirect
		c.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	case otherID:
		c.ClientSecret, c.RedirectURL = otherSecret, otherRedirect
		c.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	case spaID:
		c.RedirectURL = spaRedirect
		c.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	default:
		e.t.Fatalf("no fixture client %q", clientID)
	}
	return c
}

// browser is a user agent with a cookie jar.
type browser struct {
	e      *env
	client *http.Client
	jar    *cookiejar.Jar
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browser{e: e, client: e.httpClient(jar), jar: jar}
}

// forEnv returns a browser with the same cookies talking to another
// instance of the same issuer identifier.
func (b *browser) forEnv(e *env) *browser {
	return &browser{e: e, client: e.httpClient(b.jar), jar: b.jar}
}

// page is a response read in full.
type page struct {
	status   int
	header   http.Header
	body     string
	url      *url.URL // the URL answered (after redirects within the issuer)
	location *url.URL // the redirect out of the issuer, if any
}

func (b *browser) do(req *http.Request) page {
	b.e.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		b.e.t.Fatal(err)
	}
	p := page{status: resp.StatusCode, header: resp.Header, body: string(body), url: resp.Request.URL}
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
		if p.location, err = resp.Request.URL.Parse(loc); err != nil {
			b.e.t.Fatalf("bad Location %q: %v", loc, err)
		}
	}
	return p
}

// get fetches rawURL, following redirects within the issuer.
func (b *browser) get(rawURL string) page {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) postForm(rawURL string, form url.Values) page {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	if err != nil {
		b.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// htmlForm is the first form of a page.
type htmlForm struct {
	action string
	method string
	fields url.Values
}

// parseForm finds the first <form> of body and its input fields (with
// their values, buttons with a name included).
func parseForm(t testing.TB, body string) htmlForm {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse page: %v", err)
	}
	var f *htmlForm
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			attr := func(k string) (string, bool) {
				for _, a := range n.Attr {
					if a.Key == k {
						return a.Val, true
					}
				}
				return "", false
			}
			switch n.Data {
			case "form":
				if f != nil {
					return
				}
				action, _ := attr("action")
				method, _ := attr("method")
				f = &htmlForm{action: action, method: strings.ToUpper(method), fields: url.Values{}}
			case "input", "button":
				if f != nil {
					if name, ok := attr("name"); ok && name != "" {
						v, _ := attr("value")
						f.fields.Add(name, v)
					}
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if f == nil {
		t.Fatalf("no form in page:\n%s", clipText(body, 2000))
	}
	return *f
}

// submit posts a parsed form of p with fields overridden by set.
func (b *browser) submit(p page, set url.Values) page {
	b.e.t.Helper()
	f := parseForm(b.e.t, p.body)
	if f.method != "" && f.method != http.MethodPost {
		b.e.t.Fatalf("form method %q, want POST", f.method)
	}
	action, err := p.url.Parse(f.action)
	if err != nil {
		b.e.t.Fatalf("form action %q: %v", f.action, err)
	}
	for k, v := range set {
		f.fields[k] = v
	}
	return b.postForm(action.String(), f.fields)
}

// authorize sends the browser to authURL and signs in as user with
// password when the issuer shows its login form. It returns the final page:
// normally the redirect to the client's redirect_uri (page.location).
func (b *browser) authorize(authURL, user, password string) page {
	b.e.t.Helper()
	p := b.get(authURL)
	if p.status == http.StatusOK && strings.Contains(p.body, `name="password"`) {
		p = b.submit(p, url.Values{"username": {user}, "password": {password}})
	}
	return p
}

// login performs the authorization request and returns the query of the
// redirect to the client (code, state, iss or error, ...). It fails the
// test when the issuer does not redirect.
func (b *browser) login(authURL string) url.Values {
	b.e.t.Helper()
	p := b.authorize(authURL, aliceUser, alicePassword)
	if p.location == nil {
		b.e.t.Fatalf("authorization did not redirect to the client: status %d\n%s", p.status, clipText(p.body, 2000))
	}
	return p.location.Query()
}

// code logs in (if needed) and returns the authorization code.
func (b *browser) code(authURL string) string {
	b.e.t.Helper()
	q := b.login(authURL)
	code := q.Get("code")
	if code == "" {
		b.e.t.Fatalf("no code in redirect: %v", q)
	}
	return code
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.e.url)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// flow is one client's view of a code flow: its configuration, PKCE
// verifier, state and nonce.
type flow struct {
	conf     *oauth2.Config
	verifier string
	state    string
	nonce    string
}

func newFlow(conf *oauth2.Config) *flow {
	return &flow{conf: conf, verifier: oauth2.GenerateVerifier(), state: oauth2.GenerateVerifier()[:20], nonce: oauth2.GenerateVerifier()[:24]}
}

// authURL is the authorization request URL with PKCE S256 and a nonce.
func (f *flow) authURL(extra ...oauth2.AuthCodeOption) string {
	opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(f.verifier), oidc.Nonce(f.nonce)}, extra...)
	return f.conf.AuthCodeURL(f.state, opts...)
}

// tokens are the result of a code exchange.
type tokens struct {
	access, refresh, id string
	tok                 *oauth2.Token
}

func tokensOf(t testing.TB, tok *oauth2.Token) tokens {
	t.Helper()
	id, _ := tok.Extra("id_token").(string)
	return tokens{access: tok.AccessToken, refresh: tok.RefreshToken, id: id, tok: tok}
}

// exchange redeems code through x/oauth2.
func (e *env) exchange(f *flow, code string) tokens {
	e.t.Helper()
	tok, err := f.conf.Exchange(e.ctx(), code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		e.t.Fatalf("code exchange: %v", err)
	}
	return tokensOf(e.t, tok)
}

// loginTokens runs a whole code flow for clientID with a fresh browser and
// returns the browser (holding the SSO cookie) and the tokens.
func (e *env) loginTokens(clientID string, scopes ...string) (*browser, *flow, tokens) {
	e.t.Helper()
	p := e.provider()
	f := newFlow(e.oauth2Config(p, clientID, scopes...))
	b := e.browser()
	code := b.code(f.authURL())
	return b, f, e.exchange(f, code)
}

// oauthResponse is a JSON response of the token, revocation,
// introspection or userinfo endpoint.
type oauthResponse struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (r oauthResponse) str(k string) string {
	s, _ := r.body[k].(string)
	return s
}

// request sends a raw request to the issuer.
func (e *env) request(method, path string, body io.Reader, header http.Header) oauthResponse {
	e.t.Helper()
	r, err := e.tryRequest(method, path, body, header)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// tryRequest is request returning transport errors.
func (e *env) tryRequest(method, path string, body io.Reader, header http.Header) (oauthResponse, error) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return oauthResponse{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return oauthResponse{}, err
	}
	r := oauthResponse{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: JSON body: %v\n%s", method, path, err, raw)
		}
	}
	return r, nil
}

// auth is a client authentication for post.
type auth struct {
	id, secret string
	basic      bool
}

var (
	webBasic   = auth{id: webID, secret: webSecret, basic: true}
	webPost    = auth{id: webID, secret: webSecret}
	otherBasic = auth{id: otherID, secret: otherSecret, basic: true}
	spaNone    = auth{id: spaID}
	svcBasic   = auth{id: svcID, secret: svcSecret, basic: true}
	noAuth     = auth{}
)

// post sends a form to an endpoint path (e.g. "/token") with a client
// authentication.
func (e *env) post(path string, a auth, form url.Values) oauthResponse {
	e.t.Helper()
	form = cloneValues(form)
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	switch {
	case a.basic:
		h.Set("Authorization", basicAuth(a.id, a.secret))
	case a.id != "":
		form.Set("client_id", a.id)
		if a.secret != "" {
			form.Set("client_secret", a.secret)
		}
	}
	return e.request(http.MethodPost, path, strings.NewReader(form.Encode()), h)
}

func basicAuth(id, secret string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return req.Header.Get("Authorization")
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// refresh posts a refresh_token grant.
func (e *env) refresh(a auth, refreshToken string) oauthResponse {
	e.t.Helper()
	return e.post("/token", a, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
}

// introspect asks /introspect as web.
func (e *env) introspect(tok string) oauthResponse {
	e.t.Helper()
	return e.post("/introspect", webBasic, url.Values{"token": {tok}})
}

// revoke asks /revoke.
func (e *env) revoke(a auth, tok, hint string) oauthResponse {
	e.t.Helper()
	form := url.Values{"token": {tok}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	return e.post("/revoke", a, form)
}

// userinfo calls /userinfo with a bearer token.
func (e *env) userinfo(tok string) oauthResponse {
	e.t.Helper()
	return e.request(http.MethodGet, "/userinfo", nil, http.Header{"Authorization": {"Bearer " + tok}})
}

// wantDescriptionCharset checks an error_description is within the
// characters RFC 6749 §5.2 allows: %x20-21 / %x23-5B / %x5D-7E.
func wantDescriptionCharset(t testing.TB, where, d string) {
	t.Helper()
	for i := 0; i < len(d); i++ {
		if c := d[i]; !(c >= 0x20 && c <= 0x21 || c >= 0x23 && c <= 0x5b || c >= 0x5d && c <= 0x7e) {
			t.Errorf("%s error_description %q has byte %#x at %d, outside RFC 6749 §5.2's %%x20-21 / %%x23-5B / %%x5D-7E", where, d, c, i)
			return
		}
	}
}

// bearerDescription returns the error_description of a Bearer challenge
// (RFC 6750 §3), or "" when there is none.
func bearerDescription(h string) string {
	_, rest, ok := strings.Cut(h, `error_description="`)
	if !ok {
		return ""
	}
	d, _, _ := strings.Cut(rest, `"`)
	return d
}

// wantError checks an RFC 6749 §5.2 error response, and that its
// error_description (in the body and in a Bearer challenge) is within the
// characters §5.2 allows.
func wantError(t testing.TB, r oauthResponse, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Fatalf("got status %d error %q (%s), want %d %q", r.status, r.str("error"), r.raw, status, code)
	}
	wantDescriptionCharset(t, code, r.str("error_description"))
	if h := r.header.Get("WWW-Authenticate"); strings.HasPrefix(h, "Bearer") {
		if strings.Count(h, `"`)%2 != 0 {
			t.Errorf("Bearer challenge %q has an odd number of quotes", h)
		}
		wantDescriptionCharset(t, code+" challenge", bearerDescription(h))
	}
	if code == "invalid_client" && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("invalid_client without a Basic WWW-Authenticate challenge (RFC 6749 §5.2): %q", r.header.Get("WWW-Authenticate"))
	}
	if code == "invalid_token" {
		if h := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") || !strings.Contains(h, `error="invalid_token"`) {
			t.Errorf("invalid_token without a Bearer challenge (RFC 6750 §3): %q", h)
		}
	}
}

// wantGrantError checks an invalid_grant whose description names the
// cause (every phrase must appear, case-insensitively).
func wantGrantError(t testing.TB, r oauthResponse, phrases ...string) {
	t.Helper()
	wantError(t, r, http.StatusBadRequest, "invalid_grant")
	d := strings.ToLower(r.str("error_description"))
	for _, p := range phrases {
		if !strings.Contains(d, strings.ToLower(p)) {
			t.Errorf("invalid_grant description %q does not name the cause (want %q in it)", r.str("error_description"), p)
		}
	}
}

// wantActive checks an introspection response says active.
func wantActive(t testing.TB, r oauthResponse) {
	t.Helper()
	if r.status != http.StatusOK || r.body["active"] != true {
		t.Fatalf("introspection: got %d %s, want active true", r.status, r.raw)
	}
}

// wantInactive checks an introspection response is exactly {"active":false}
// (RFC 7662 §2.2: nothing else for an inactive token).
func wantInactive(t testing.TB, r oauthResponse) {
	t.Helper()
	if r.status != http.StatusOK || r.body["active"] != false || len(r.body) != 1 {
		t.Fatalf("introspection: got %d %s, want 200 {\"active\":false}", r.status, r.raw)
	}
}

// jwks fetches the published JWK set.
func (e *env) jwks() jose.JSONWebKeySet {
	e.t.Helper()
	var d struct {
		JWKSURI string `json:"jwks_uri"`
	}
	r := e.request(http.MethodGet, "/.well-known/openid-configuration", nil, nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("discovery: %d %s", r.status, r.raw)
	}
	if err := json.Unmarshal([]byte(r.raw), &d); err != nil {
		e.t.Fatal(err)
	}
	if !strings.HasPrefix(d.JWKSURI, e.url+"/") {
		e.t.Fatalf("jwks_uri %q is not under the issuer %q", d.JWKSURI, e.url)
	}
	r = e.request(http.MethodGet, strings.TrimPrefix(d.JWKSURI, e.url), nil, nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("jwks: %d %s", r.status, r.raw)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(r.raw), &set); err != nil {
		e.t.Fatalf("jwks: %v", err)
	}
	return set
}

// metric returns the value of a counter or gauge family summed over its
// series matching labels (name=value pairs), and whether the family exists.
func (e *env) metric(name string, labels ...string) (float64, bool) {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
		return sum, true
	}
	return 0, false
}

// eventually polls cond until it holds or the deadline passes: for the
// background jobs (denylist poll, purge, back-channel delivery) that run
// on real tickers. It is a bounded wait for a state, not a timed assertion.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLog sends the issuer's log lines to t.Log (shown for failing tests
// and with -v); lines after the test ended are dropped.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// payload decodes the claims of a compact JWS without verifying it (for
// building forged tokens from real ones).
func payload(t testing.TB, jws string) map[string]any {
	t.Helper()
	tok, err := jose.ParseSignedCompact(jws, allSigAlgs)
	if err != nil {
		t.Fatalf("parse JWS: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(tok.UnsafePayloadWithoutVerification(), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

var allSigAlgs = []jose.SignatureAlgorithm{
	jose.HS256, jose.HS384, jose.HS512, jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512,
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return b
}
