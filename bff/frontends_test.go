package bff

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/session"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
	"github.com/bffgate/bffgate/session/cookie"
	sessionredis "github.com/bffgate/bffgate/session/redis"
)

// kindRedis runs a frontends test on Redis (BFFGATE_TEST_REDIS_URL).
const kindRedis storeKind = "redis"

// feSpec is one frontend of a test Host.
type feSpec struct {
	name   string
	hosts  []string
	prefix string
	// client is the issuer client it signs in with (default fe-<name>);
	// frontends sharing one share its redirect URIs.
	client string
	// sinkBackchannel sends the client's back-channel logouts to a
	// recorder that does not forward them.
	sinkBackchannel bool
}

func (s feSpec) clientID() string {
	if s.client != "" {
		return s.client
	}
	return "fe-" + s.name
}

// feEnv is an issuer (env) and a Host with several frontends on one
// listener; host names under .localhost reach that listener.
type feEnv struct {
	*env
	t      *testing.T
	kind   storeKind
	addr   string // 127.0.0.1:port of the Host
	port   string
	host   *Host
	specs  map[string]feSpec
	gws    map[string]*Gateway
	stores map[string]session.Store
	keys   [][]byte
	sink   *bclRecorder
	redis  string // the Redis prefix of the test
}

// pub is the public URL of a frontend (no path).
func (f *feEnv) pub(s feSpec) string {
	if len(s.hosts) > 0 {
		return "http://" + s.hosts[0] + ":" + f.port
	}
	return "http://127.0.0.1:" + f.port
}

// url is a frontend's URL for path (under its prefix).
func (f *feEnv) url(name, path string) string {
	s := f.specs[name]
	return f.pub(s) + s.prefix + path
}

// dialer sends every .localhost host to the Host's listener.
func (f *feEnv) transport() *http.Transport {
	tr := testhttp.Transport()
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h, _, err := net.SplitHostPort(addr); err == nil && (h == "localhost" || strings.HasSuffix(h, ".localhost")) {
			addr = f.addr
		}
		return d.DialContext(ctx, network, addr)
	}
	return tr
}

func newFeEnv(t *testing.T, kind storeKind, specs ...feSpec) *feEnv {
	t.Helper()
	f := &feEnv{t: t, kind: kind, specs: map[string]feSpec{}, gws: map[string]*Gateway{}, stores: map[string]session.Store{}}
	var rc *goredis.Client
	if kind == kindRedis {
		rc = redistest.Client(t)
		f.redis = redistest.Prefix(t, rc, "session:")
	}
	ln := listen(t)
	f.addr = ln.Addr().String()
	_, f.port, _ = net.SplitHostPort(f.addr)
	for _, s := range specs {
		f.specs[s.name] = s
	}
	f.sink = &bclRecorder{}
	f.sink.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		f.sink.mu.Lock()
		f.sink.tokens = append(f.sink.tokens, r.PostForm.Get("logout_token"))
		f.sink.mu.Unlock()
	}))
	t.Cleanup(f.sink.srv.Close)
	envKind := kind
	if kind == kindRedis {
		envKind = kindBolt
	}
	f.env = newEnv(t, envKind, envOptions{issuer: func(ic *issuer.Config) {
		ic.HTTPClient = &http.Client{Transport: f.transport(), Timeout: 5 * time.Second}
		clients := map[string]*issuer.Client{}
		var order []string
		for _, s := range specs {
			c := clients[s.clientID()]
			if c == nil {
				c = &issuer.Client{ID: s.clientID(), Secret: testClientSecret,
					GrantTypes: []string{issuer.GrantAuthorizationCode, issuer.GrantRefreshToken}}
				clients[s.clientID()] = c
				order = append(order, s.clientID())
				c.BackchannelLogoutURI = f.url(s.name, "/bff/backchannel-logout")
				if s.sinkBackchannel {
					c.BackchannelLogoutURI = f.sink.srv.URL
				}
			}
			c.RedirectURIs = append(c.RedirectURIs, f.url(s.name, "/bff/callback"))
			c.PostLogoutRedirectURIs = append(c.PostLogoutRedirectURIs, f.url(s.name, "/"))
		}
		for _, id := range order {
			ic.Clients = append(ic.Clients, *clients[id])
		}
	}})
	f.keys = [][]byte{randomKey(32), randomKey(32)}
	var gws []*Gateway
	for _, s := range specs {
		gws = append(gws, f.gateway(s, rc))
	}
	var err error
	if f.host, err = NewHost(HostConfig{Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
	if err := f.host.Set(gws); err != nil {
		t.Fatal(err)
	}
	serve(t, f.host.App().Listener, ln, f.host.App().ShutdownWithTimeout)
	return f
}

// store opens frontend name's session store: its own namespace of the
// test's kind.
func (f *feEnv) store(name string, rc *goredis.Client) session.Store {
	f.t.Helper()
	switch f.kind {
	case kindBolt:
		s, err := sessionbolt.New(f.db, sessionbolt.Config{Namespace: name, Now: f.clock.Now})
		if err != nil {
			f.t.Fatal(err)
		}
		return s
	case kindRedis:
		s, err := sessionredis.New(rc, sessionredis.Config{Prefix: f.redis + "fe:" + name + ":", Now: f.clock.Now})
		if err != nil {
			f.t.Fatal(err)
		}
		return s
	default:
		s, err := cookie.New(cookie.Config{Keys: []cookie.KeyPair{{Hash: f.keys[0], Block: f.keys[1]}},
			Name: cookie.DefaultName + "-" + name, Ended: sessionbolt.NewEndedIn(f.db, name), Now: f.clock.Now})
		if err != nil {
			f.t.Fatal(err)
		}
		return s
	}
}

// config is frontend s's gateway configuration: an API route /api/
// under its prefix and a SPA that says which frontend answered.
func (f *feEnv) config(s feSpec, store session.Store) Config {
	name := s.name
	return Config{
		Name: name, Hosts: s.hosts, PathPrefix: s.prefix,
		PublicURL: f.pub(s),
		Provider: ProviderConfig{IssuerURL: f.issuer, ClientID: s.clientID(), ClientSecret: testClientSecret,
			HTTPClient: &http.Client{Transport: testhttp.Transport(), Timeout: 5 * time.Second}},
		Store:  store,
		Cookie: CookieConfig{FlowKeys: []KeyPair{{Hash: f.keys[0], Block: f.keys[1]}}},
		Routes: []Route{{Route: proxy.Route{Prefix: s.prefix + "/api/", Upstream: f.upstream.srv.URL}, Policy: PolicyUser}},
		SPA: func(c *fiber.Ctx) error {
			return c.SendString(name + " spa " + c.Path())
		},
		Now:    f.clock.Now,
		Logger: quietLogger(),
	}
}

func (f *feEnv) gateway(s feSpec, rc *goredis.Client) *Gateway {
	f.t.Helper()
	st := f.store(s.name, rc)
	f.stores[s.name] = st
	g, err := NewGateway(context.Background(), f.config(s, st))
	if err != nil {
		f.t.Fatalf("frontend %s: %v", s.name, err)
	}
	f.gws[s.name] = g
	return g
}

// feBrowser is a browser of the feEnv: one cookie jar for every
// frontend, as a real browser has.
type feBrowser struct {
	*browser
	f *feEnv
}

func (f *feEnv) newBrowser() *feBrowser {
	jar, _ := cookiejar.New(nil)
	b := &browser{e: f.env, jar: jar, tr: f.transport()}
	b.client = &http.Client{Jar: jar, Transport: b.tr, Timeout: 10 * time.Second}
	return &feBrowser{browser: b, f: f}
}

// login signs in at frontend name and checks it landed on its SPA.
func (b *feBrowser) login(name, user, password string) {
	b.f.t.Helper()
	p := b.do(b.client, http.MethodGet, b.f.url(name, "/bff/login?returnUrl="+url.QueryEscape(b.f.specs[name].prefix+"/home")), nil, nil)
	if p.status == http.StatusOK && strings.Contains(p.body, `name="password"`) {
		action, fields := parseForm(b.f.t, p.body)
		au, _ := p.url.Parse(action)
		fields.Set("username", user)
		fields.Set("password", password)
		p = b.do(b.client, http.MethodPost, au.String(), strings.NewReader(fields.Encode()),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	}
	if want := name + " spa " + b.f.specs[name].prefix + "/home"; p.status != 200 || p.body != want {
		b.f.t.Fatalf("login at %s: %d at %s: %s (want %q)", name, p.status, p.url, clip(p.body), want)
	}
}

// forgetIssuer drops the browser's cookies at the issuer (its login
// session there), so that the next login asks again: another user in the
// same browser without the issuer ending the first user's session.
func (b *feBrowser) forgetIssuer() {
	u := mustURL(b.f.issuer + "/")
	var gone []*http.Cookie
	for _, c := range b.jar.Cookies(u) {
		// The issuer shares the shop's host (cookies ignore ports).
		if !strings.Contains(c.Name, "-bff-") {
			gone = append(gone, &http.Cookie{Name: c.Name, Path: "/", MaxAge: -1})
		}
	}
	b.jar.SetCookies(u, gone)
}

// call is an SPA call (X-CSRF: 1) at frontend name.
func (b *feBrowser) call(name, path string, hdr map[string]string) result {
	b.f.t.Helper()
	h := map[string]string{"X-CSRF": "1"}
	for k, v := range hdr {
		h[k] = v
	}
	return b.do(b.noRedirect(), http.MethodGet, b.f.url(name, path), nil, h)
}

// sub is the subject /bff/user answers at frontend name ("" when none).
func (b *feBrowser) sub(name string) string {
	b.f.t.Helper()
	r := b.call(name, "/bff/user", nil)
	if r.status == 401 {
		return ""
	}
	if r.status != 200 {
		b.f.t.Fatalf("%s /bff/user: %d %s", name, r.status, clip(r.body))
	}
	var u userBody
	r.json(b.f.t, &u)
	s, _ := u.value("sub").(string)
	return s
}

// cookie returns the value of the browser's cookie called name for
// frontend fe's URL.
func (b *feBrowser) cookie(fe, name string) string {
	for _, c := range b.jar.Cookies(mustURL(b.f.url(fe, "/"))) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// forFeKinds runs fn on every store kind, Redis included (skipped
// without BFFGATE_TEST_REDIS_URL).
func forFeKinds(t *testing.T, fn func(t *testing.T, kind storeKind)) {
	for _, k := range []storeKind{kindCookie, kindBolt, kindRedis} {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			fn(t, k)
		})
	}
}

// threeFrontends: shop is the fallback, admin has the path /admin,
// partner the host localhost.
var threeFrontends = []feSpec{
	{name: "shop"},
	{name: "admin", prefix: "/admin"},
	{name: "partner", hosts: []string{"localhost"}},
}

func TestFrontendsIsolation(t *testing.T) {
	t.Parallel()
	forFeKinds(t, func(t *testing.T, kind storeKind) {
		f := newFeEnv(t, kind, threeFrontends...)
		b := f.newBrowser()
		b.login("shop", "alice", alicePassword)
		b.login("partner", "alice", alicePassword)
		b.forgetIssuer()
		b.login("admin", "bob", bobPassword)
		// A login without returnUrl ends at its own frontend's home.
		if p := b.do(b.client, http.MethodGet, f.url("admin", "/bff/login"), nil, nil); p.status != 200 || p.body != "admin spa /admin/" {
			t.Fatalf("admin login without returnUrl: %d %s at %s", p.status, p.body, p.url)
		}
		for fe, want := range map[string]string{"shop": "user-alice", "admin": "user-bob", "partner": "user-alice"} {
			if got := b.sub(fe); got != want {
				t.Fatalf("%s: sub %q, want %q", fe, got, want)
			}
			// Its API route, with its own client's token.
			r := b.call(fe, "/api/x", nil)
			var seen seenRequest
			r.json(t, &seen)
			if r.status != 200 || seen.Sub != want || seen.ClientID != f.specs[fe].clientID() {
				t.Fatalf("%s API: %d %+v", fe, r.status, seen)
			}
		}
		// Cookie names and paths are per frontend.
		shopCookie := b.cookie("shop", "__Host-bff-shop")
		adminCookie := b.cookie("admin", "__Secure-bff-admin")
		if shopCookie == "" || adminCookie == "" || b.cookie("shop", "__Secure-bff-admin") != "" {
			t.Fatalf("cookies: shop %t admin %t; admin's sent to shop's paths: %t", shopCookie != "", adminCookie != "", b.cookie("shop", "__Secure-bff-admin") != "")
		}

		// A cookie of one frontend replayed to another under its name is
		// no session there.
		other := f.newBrowser()
		for _, tc := range []struct{ to, name, value string }{
			{"admin", "__Secure-bff-admin", shopCookie},
			{"partner", "__Host-bff-partner", shopCookie},
			{"shop", "__Host-bff-shop", adminCookie},
		} {
			r := other.call(tc.to, "/bff/user", map[string]string{"Cookie": tc.name + "=" + tc.value})
			if r.status != 401 || !strings.Contains(r.body, "login_required") {
				t.Fatalf("%s with another frontend's cookie: %d %s", tc.to, r.status, clip(r.body))
			}
			if r := other.call(tc.to, "/api/x", map[string]string{"Cookie": tc.name + "=" + tc.value}); r.status != 401 {
				t.Fatalf("%s API with another frontend's cookie: %d %s", tc.to, r.status, clip(r.body))
			}
		}
		// A frontend's route is not reachable from another: /admin/api/ is
		// admin's, whatever cookies come along; and no frontend's cookie
		// (the shop's, Path=/, comes along) reaches its upstream.
		r := b.call("shop", "/admin/api/x", nil)
		var seen seenRequest
		r.json(t, &seen)
		if r.status != 200 || seen.Sub != "user-bob" || strings.Contains(seen.Cookie, "bff") {
			t.Fatalf("/admin/api/ from the shop's origin: %d %+v", r.status, seen)
		}

		// Logging out of one leaves the others signed in.
		r = b.do(b.noRedirect(), http.MethodPost, f.url("admin", "/bff/logout"), nil, map[string]string{"X-CSRF": "1"})
		if r.status >= 400 {
			t.Fatalf("admin logout: %d %s", r.status, clip(r.body))
		}
		if b.sub("admin") != "" || b.sub("shop") != "user-alice" || b.sub("partner") != "user-alice" {
			t.Fatalf("after admin's logout: admin %q shop %q partner %q", b.sub("admin"), b.sub("shop"), b.sub("partner"))
		}
	})
}

// TestFrontendBinding: a session presented to another frontend whose
// store would open it (a store shared by mistake) is refused by the
// frontend name sealed into it.
func TestFrontendBinding(t *testing.T) {
	t.Parallel()
	f := newFeEnv(t, kindBolt, feSpec{name: "shop"}, feSpec{name: "admin", prefix: "/admin"})
	b := f.newBrowser()
	b.login("shop", "alice", alicePassword)
	h := b.cookie("shop", "__Host-bff-shop")
	s, err := f.stores["shop"].Get(context.Background(), h)
	if err != nil || s.Frontend != "shop" {
		t.Fatalf("stored session: %+v, %v", s, err)
	}
	// A second admin gateway on the shop's store.
	cfg := f.config(f.specs["admin"], f.stores["shop"])
	g, err := NewGateway(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.host.Set([]*Gateway{f.gws["shop"], g}); err != nil {
		t.Fatal(err)
	}
	r := f.newBrowser().call("admin", "/bff/user", map[string]string{"Cookie": "__Secure-bff-admin=" + h})
	if r.status != 401 {
		t.Fatalf("shop's session at admin: %d %s", r.status, clip(r.body))
	}
	if b.sub("shop") != "user-alice" {
		t.Fatal("the refused replay ended the shop's session")
	}
}

// TestSessionOfOtherProvider: a session signed in at another provider
// than the frontend's (its provider changed by a reload or a restart, its
// sessions kept) is no session: the frontend ends it.
func TestSessionOfOtherProvider(t *testing.T) {
	t.Parallel()
	f := newFeEnv(t, kindBolt, feSpec{name: "shop"})
	b := f.newBrowser()
	b.login("shop", "alice", alicePassword)
	h := b.cookie("shop", "__Host-bff-shop")
	ctx := context.Background()
	// As if it had been made by the provider the frontend had before.
	nh, err := f.stores["shop"].Update(ctx, h, func(s *session.Session) error {
		s.Issuer = "https://old-provider.example.com"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if nh != "" {
		h = nh
	}
	r := f.newBrowser().call("shop", "/bff/user", map[string]string{"Cookie": "__Host-bff-shop=" + h})
	if r.status != 401 {
		t.Fatalf("a session of another provider: %d %s", r.status, clip(r.body))
	}
	if _, err := f.stores["shop"].Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("the session of another provider was kept: %v", err)
	}
}

// TestFrontendsBackchannel: a logout token ends the sessions of the
// frontends on its provider and client (shop and partner share one
// client), and not those of admin, whose session carries the same sid.
func TestFrontendsBackchannel(t *testing.T) {
	t.Parallel()
	forFeKinds(t, func(t *testing.T, kind storeKind) {
		f := newFeEnv(t, kind,
			feSpec{name: "shop"},
			feSpec{name: "admin", prefix: "/admin", sinkBackchannel: true},
			feSpec{name: "partner", hosts: []string{"localhost"}, client: "fe-shop"})
		b := f.newBrowser()
		b.login("shop", "alice", alicePassword)
		b.login("admin", "alice", alicePassword)
		b.login("partner", "alice", alicePassword)
		other := f.newBrowser()
		other.login("shop", "bob", bobPassword)

		// Alice ends her session at the issuer: it sends a logout token
		// to each client (fe-admin's goes to the sink).
		p := b.do(b.client, http.MethodGet, f.issuer+"/logout", nil, nil)
		if p.status == 200 && strings.Contains(p.body, "<form") {
			action, fields := parseForm(t, p.body)
			au, _ := p.url.Parse(action)
			b.do(b.client, http.MethodPost, au.String(), strings.NewReader(fields.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		}
		if f.sink.last() == "" {
			t.Fatal("the issuer sent no logout token to fe-admin")
		}
		if got := b.sub("shop"); got != "" {
			t.Fatalf("shop's session survived its back-channel logout: %q", got)
		}
		if got := b.sub("partner"); got != "" {
			t.Fatalf("partner (same client as shop) survived: %q", got)
		}
		if got := b.sub("admin"); got != "user-alice" {
			t.Fatalf("admin's session (another client) ended: %q", got)
		}
		if got := other.sub("shop"); got != "user-bob" {
			t.Fatalf("bob's session ended: %q", got)
		}
		// Admin's own logout token, delivered to admin, ends admin's.
		r := b.do(testhttp.Client, http.MethodPost, "http://"+f.addr+"/admin/bff/backchannel-logout",
			strings.NewReader(url.Values{"logout_token": {f.sink.last()}}.Encode()),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		if r.status != 200 || b.sub("admin") != "" {
			t.Fatalf("admin's logout token at admin: %d %s; admin sub %q", r.status, r.body, b.sub("admin"))
		}
	})
}

// TestFrontendsMixUp: two frontends on two providers; an authorization
// response of one provider delivered to the other frontend's callback
// (RFC 9207's mix-up) is refused, with the other's state or its own.
func TestFrontendsMixUp(t *testing.T) {
	t.Parallel()
	f := newFeEnv(t, kindBolt, feSpec{name: "shop"})
	// A second provider with a client for frontend ext.
	extSpec := feSpec{name: "ext", prefix: "/ext"}
	f.specs["ext"] = extSpec
	e2 := newEnv(t, kindBolt, envOptions{issuer: func(ic *issuer.Config) {
		ic.Clients = append(ic.Clients, issuer.Client{ID: "fe-ext", Secret: testClientSecret,
			RedirectURIs: []string{f.url("ext", "/bff/callback")},
			GrantTypes:   []string{issuer.GrantAuthorizationCode, issuer.GrantRefreshToken}})
	}})
	cfg := f.config(extSpec, f.store("ext", nil))
	cfg.Provider.IssuerURL = e2.issuer
	ext, err := NewGateway(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.host.Set([]*Gateway{f.gws["shop"], ext}); err != nil {
		t.Fatal(err)
	}
	// ext's authorization response: the browser signs in at e2 and stops
	// before the callback.
	authResponse := func(b *feBrowser) *url.URL {
		c := b.noRedirect()
		r := b.do(c, http.MethodGet, f.url("ext", "/bff/login"), nil, nil)
		p := b.do(b.client, http.MethodGet, r.header.Get("Location"), nil, nil)
		action, fields := parseForm(t, p.body)
		au, _ := p.url.Parse(action)
		fields.Set("username", "alice")
		fields.Set("password", alicePassword)
		r = b.do(c, http.MethodPost, au.String(), strings.NewReader(fields.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		for i := 0; i < 5 && (r.status == http.StatusFound || r.status == http.StatusSeeOther); i++ {
			loc, _ := r.url.Parse(r.header.Get("Location"))
			if strings.Contains(loc.Path, "/bff/callback") {
				return loc
			}
			r = b.do(c, http.MethodGet, loc.String(), nil, nil)
		}
		t.Fatalf("no authorization response: %d %s", r.status, clip(r.body))
		return nil
	}
	jsonAccept := map[string]string{"Accept": "application/json"}
	for _, tc := range []struct {
		name      string
		ownState  bool
		wantError string
	}{
		// The other frontend's state: no flow of shop's has it.
		{"other state", false, "state_mismatch"},
		// Shop's own state (an attacker who started a login at shop):
		// the iss of the response names ext's provider.
		{"own state", true, "issuer_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := f.newBrowser()
			resp := authResponse(b)
			if resp.Query().Get("iss") != e2.issuer || resp.Query().Get("code") == "" {
				t.Fatalf("authorization response %s", resp.Redacted())
			}
			r := b.do(b.noRedirect(), http.MethodGet, f.url("shop", "/bff/login"), nil, nil)
			loc, _ := url.Parse(r.header.Get("Location"))
			q := resp.Query()
			if tc.ownState {
				q.Set("state", loc.Query().Get("state"))
			}
			r = b.do(b.noRedirect(), http.MethodGet, f.url("shop", "/bff/callback?"+q.Encode()), nil, jsonAccept)
			if r.status != 400 || !strings.Contains(r.body, tc.wantError) {
				t.Fatalf("ext's response at shop's callback: %d %s", r.status, clip(r.body))
			}
			if b.sub("shop") != "" {
				t.Fatal("a session was created")
			}
		})
	}
}

// TestFrontendsReload: Set swaps the table; kept frontends keep their
// sessions, an added one serves at once, a removed one answers 401.
func TestFrontendsReload(t *testing.T) {
	t.Parallel()
	f := newFeEnv(t, kindBolt, threeFrontends...)
	b := f.newBrowser()
	b.login("shop", "alice", alicePassword)
	b.forgetIssuer()
	b.login("admin", "bob", bobPassword)

	// Add "extra" at /extra (its client is fe-shop's: the issuer has its
	// redirect URI only if registered; use shop's client), drop partner.
	extra := feSpec{name: "extra", prefix: "/extra", client: "fe-shop"}
	f.specs["extra"] = extra
	g := f.gateway(extra, nil)
	if err := f.host.Set([]*Gateway{f.gws["shop"], f.gws["admin"], g}); err != nil {
		t.Fatal(err)
	}
	if b.sub("shop") != "user-alice" || b.sub("admin") != "user-bob" {
		t.Fatal("a kept frontend lost its session on reload")
	}
	if r := b.call("extra", "/home", nil); r.status != 200 || r.body != "extra spa /extra/home" {
		t.Fatalf("added frontend: %d %s", r.status, r.body)
	}
	r := b.call("partner", "/bff/user", nil)
	if r.status != 401 || !strings.Contains(r.body, "frontend_removed") {
		t.Fatalf("removed frontend: %d %s", r.status, r.body)
	}
	if got := f.host.Removed(); len(got) != 1 || got[0] != "partner" {
		t.Fatalf("Removed = %v", got)
	}
	// Added back: served again.
	if err := f.host.Set([]*Gateway{f.gws["shop"], f.gws["admin"], g, f.gws["partner"]}); err != nil {
		t.Fatal(err)
	}
	if r := b.call("partner", "/home", nil); r.status != 200 || len(f.host.Removed()) != 0 {
		t.Fatalf("partner back: %d %s, removed %v", r.status, r.body, f.host.Removed())
	}
	// An invalid table changes nothing.
	if err := f.host.Set([]*Gateway{f.gws["shop"], f.gws["shop"]}); err == nil {
		t.Fatal("a duplicate frontend was accepted")
	}
	if b.sub("admin") != "user-bob" {
		t.Fatal("a refused Set changed the table")
	}
}

func TestNoFrontend(t *testing.T) {
	t.Parallel()
	f := newFeEnv(t, kindCookie, feSpec{name: "admin", prefix: "/admin"}, feSpec{name: "partner", hosts: []string{"localhost"}})
	r := f.newBrowser().do(testhttp.Client, http.MethodGet, "http://"+f.addr+"/shop/x", nil, nil)
	var body struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	_ = json.Unmarshal([]byte(r.body), &body)
	if r.status != 404 || body.Error != "no_frontend" || !strings.Contains(body.ErrorDescription, "admin (any host, path /admin)") ||
		!strings.Contains(body.ErrorDescription, "partner (host localhost, path /)") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// /administrator is not under /admin.
	if r := f.newBrowser().do(testhttp.Client, http.MethodGet, "http://"+f.addr+"/administrator", nil, nil); r.status != 404 {
		t.Fatalf("/administrator: %d %s", r.status, r.body)
	}
	// Readiness covers every frontend.
	if r := f.newBrowser().do(testhttp.Client, http.MethodGet, "http://"+f.addr+"/readyz", nil, nil); r.status != 200 {
		t.Fatalf("/readyz: %d %s", r.status, r.body)
	}
}

// fakeGateway is enough of a Gateway for selection and CheckFrontends.
func fakeGateway(name string, hosts []string, prefix string) *Gateway {
	cfg := Config{Name: name, Hosts: hosts, PathPrefix: prefix, BasePath: "/bff"}
	return &Gateway{cfg: cfg, base: cfg.endpointBase(), jar: cookieJar{name: DefaultCookieName(name, prefix)}}
}

func TestHostSelect(t *testing.T) {
	t.Parallel()
	h, err := NewHost(HostConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Set([]*Gateway{
		fakeGateway("fallback", nil, ""),
		fakeGateway("admin", nil, "/admin"),
		fakeGateway("admin-a", []string{"a.example.com"}, "/admin"),
		fakeGateway("a", []string{"a.example.com", "A2.example.com"}, ""),
		fakeGateway("deep", []string{"b.example.com"}, "/x/y"),
		fakeGateway("fqdn", []string{"c.example.com."}, "/c"),
	}); err != nil {
		t.Fatal(err)
	}
	tab := h.table.Load()
	for _, tc := range []struct{ host, path, want string }{
		{"other.example", "/", "fallback"},
		{"other.example", "/admin", "admin"},
		{"other.example", "/admin/bff/login", "admin"},
		{"other.example", "/ADMIN/x", "admin"},
		{"other.example", "/administrator", "fallback"},
		{"a.example.com", "/", "a"},
		{"A.Example.COM", "/shop", "a"},
		{"a2.example.com", "/", "a"},
		{"a.example.com", "/admin/x", "admin-a"}, // host-specific beats any-host for one prefix
		{"b.example.com", "/admin/x", "admin"},   // longest prefix among those the host may use
		{"b.example.com", "/x/y/z", "deep"},
		{"b.example.com", "/x/yz", "fallback"},
		{"c.example.com", "/x/y", "fallback"},
		// A fully qualified name's trailing dot names the same host.
		{"b.example.com.", "/x/y/z", "deep"},
		{"c.example.com", "/c/x", "fqdn"},
		{"c.example.com.:8080", "/c/x", "fqdn"},
	} {
		g := tab.selectGateway(hostOnly([]byte(tc.host)), tc.path)
		if g == nil || g.cfg.Name != tc.want {
			got := "<none>"
			if g != nil {
				got = g.cfg.Name
			}
			t.Errorf("%s %s: %s, want %s", tc.host, tc.path, got, tc.want)
		}
	}
	for in, want := range map[string]string{"a.example.com:8443": "a.example.com", "[::1]:80": "[::1]", "[::1]": "[::1]", "host": "host", "": "",
		"a.example.com.": "a.example.com", "a.example.com.:8443": "a.example.com", ".": "."} {
		if got := string(hostOnly([]byte(in))); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckFrontends(t *testing.T) {
	t.Parallel()
	spec := func(i int, name string, hosts []string, prefix string, routes ...string) FrontendSpec {
		return FrontendSpec{Name: name, Index: i, Hosts: hosts, PathPrefix: prefix, BasePath: prefix + "/bff",
			CookieName: DefaultCookieName(name, prefix), Routes: routes}
	}
	for _, tc := range []struct {
		name  string
		specs []FrontendSpec
		want  []string // each must appear; nil: valid
	}{
		{"valid", []FrontendSpec{spec(0, "shop", nil, "", "/api/"), spec(1, "admin", nil, "/admin", "/admin/api/"),
			spec(2, "p", []string{"p.example"}, "", "/api/")}, nil},
		{"two fallbacks", []FrontendSpec{spec(0, "a", nil, ""), spec(1, "b", nil, "")},
			[]string{"frontends[1].match", "frontends[1] (b) and frontends[0] (a) both match every host"}},
		{"same host and prefix", []FrontendSpec{spec(0, "a", []string{"x.example", "y.example"}, "/p"), spec(1, "b", []string{"Y.example"}, "/p")},
			[]string{"frontends[1] (b) and frontends[0] (a) both match host Y.example with path prefix \"/p\""}},
		{"same prefix, other hosts", []FrontendSpec{spec(0, "a", []string{"x.example"}, "/p"), spec(1, "b", []string{"y.example"}, "/p")}, nil},
		{"prefix hides endpoints", []FrontendSpec{spec(0, "a", nil, ""), spec(1, "b", nil, "/bff")},
			[]string{"frontends[1].match.path_prefix", "/bff of frontends[1] (b) hides the gateway endpoints /bff of frontends[0] (a)"}},
		{"prefix hides a route", []FrontendSpec{spec(0, "a", nil, "", "/api/"), spec(1, "b", []string{"h.example"}, "/api/v2")},
			[]string{"/api/v2 of frontends[1] (b) hides the route /api/ of frontends[0] (a) on host h.example"}},
		{"route outside its prefix", []FrontendSpec{spec(0, "a", nil, "/a", "/api/")},
			[]string{"frontends[0].routes", "route /api/ of frontends[0] (a) lies outside its path_prefix /a"}},
		{"shared cookie", []FrontendSpec{spec(0, "a", []string{"a.example"}, ""), {Name: "b", Index: 1, Hosts: []string{"b.example"}, BasePath: "/bff", CookieName: "__Host-bff-a"}},
			[]string{"frontends[1].session.cookie_name", "frontends[1] (b) and frontends[0] (a) both use the session cookie __Host-bff-a"}},
		{"callback elsewhere", []FrontendSpec{spec(0, "a", []string{"a.example"}, ""), func() FrontendSpec {
			s := spec(1, "b", []string{"b.example"}, "")
			s.PublicHost = "a.example"
			return s
		}()}, []string{"frontends[1].public_url", "the callback of frontends[1] (b) at host a.example (/bff/callback) would reach frontends[0] (a)"}},
		{"callback nowhere", []FrontendSpec{func() FrontendSpec {
			s := spec(0, "a", []string{"a.example"}, "")
			s.PublicHost = "c.example"
			return s
		}()}, []string{"the callback of frontends[0] (a) at host c.example (/bff/callback) reaches no frontend"}},
		{"IPv6 public host", []FrontendSpec{func() FrontendSpec {
			s := spec(0, "a", []string{"[::1]"}, "")
			s.PublicHost = "[::1]"
			return s
		}()}, nil},
		{"duplicate names", []FrontendSpec{spec(0, "a", []string{"a.example"}, ""), spec(1, "a", []string{"b.example"}, "")},
			[]string{"frontends[1].name", `"a" is also the name of frontends[0] (a)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckFrontends(tc.specs)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			var fe *FrontendError
			if !errors.As(err, &fe) {
				t.Fatalf("%T", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// BenchmarkFrontendSelect is the per-request cost of choosing the
// frontend: 1 frontend (the classic case) and 8 (hosts and prefixes).
func BenchmarkFrontendSelect(b *testing.B) {
	one := []*Gateway{fakeGateway("", nil, "")}
	var eight []*Gateway
	for i, n := range []string{"a", "b", "c", "d"} {
		eight = append(eight, fakeGateway(n, []string{n + ".example.com"}, ""))
		eight = append(eight, fakeGateway(n+"-admin", nil, "/admin"+string(rune('0'+i))))
	}
	for _, bc := range []struct {
		name string
		gws  []*Gateway
		host string
		path string
	}{
		{"1", one, "app.example.com", "/api/items/42"},
		{"8", eight, "d.example.com", "/api/items/42"},
		{"8-prefix", eight, "other.example.com", "/admin3/api/items/42"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, err := NewHost(HostConfig{Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Set(bc.gws); err != nil {
				b.Fatal(err)
			}
			host := []byte(bc.host + ":8443")
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				t := h.table.Load()
				if t.selectGateway(hostOnly(host), bc.path) == nil {
					b.Fatal("no frontend")
				}
			}
		})
	}
}

// TestFrontendsInsecureCookiesStripped: with insecure development cookies
// a frontend on plain http names its cookies without the __Host- or
// __Secure- prefix (bff-admin); no other frontend forwards those to its
// upstreams either, nor lets an upstream set them.
func TestFrontendsInsecureCookiesStripped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	st, err := sessionbolt.New(e.db, sessionbolt.Config{Namespace: "shop", Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(context.Background(), Config{
		Name: "shop", PublicURL: "http://shop.test", InsecureAllowHTTP: true,
		Provider: ProviderConfig{IssuerURL: e.issuer, ClientID: testClientID, ClientSecret: testClientSecret,
			HTTPClient: &http.Client{Transport: testhttp.Transport(), Timeout: 5 * time.Second}},
		Store:  st,
		Cookie: CookieConfig{InsecureDevCookies: true, FlowKeys: []KeyPair{{Hash: randomKey(32), Block: randomKey(32)}}},
		Proxy:  proxy.Config{GatewayCookies: []string{"__Secure-partner-session"}},
		Routes: []Route{{Route: proxy.Route{Prefix: "/pub/", Upstream: e.upstream.srv.URL}, Policy: PolicyNone}},
		Now:    e.clock.Now, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(HostConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Set([]*Gateway{g}); err != nil {
		t.Fatal(err)
	}
	req := hostRequest(http.MethodGet, "http://shop.test/pub/x", nil)
	// Another frontend's development cookies (admin's session and flow,
	// partner's custom name without its prefix), and the app's own.
	req.Header.Set("Cookie", "bff-admin=ticket; bff-admin-flow.1a2b=flow; partner-session=p; app=kept")
	req.Header.Set("X-CSRF", "1")
	resp, err := h.App().Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var seen seenRequest
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	if seen.Cookie != "app=kept" {
		t.Fatalf("the upstream got the cookies %q", seen.Cookie)
	}
}
