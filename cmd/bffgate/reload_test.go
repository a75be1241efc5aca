package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/testhttp"
)

// frontendsStack is the issuer and the gateway of a configuration with
// gateway.frontends, served in process as serve does.
type frontendsStack struct {
	t        *testing.T
	dir      string
	gwAddr   string
	issAddr  string
	rt       *runtime
	gs       *gatewayServer
	template string
}

// configFile writes the configuration (frontends is the YAML list under
// gateway.frontends) and loads it.
func (s *frontendsStack) config(frontends string) *Config {
	s.t.Helper()
	body := strings.Replace(s.template, "FRONTENDS", frontends, 1)
	body = strings.NewReplacer("GW", s.gwAddr, "ISS", s.issAddr, "DATA", s.dir).Replace(body)
	path := filepath.Join(s.dir, "bffgate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		s.t.Fatal(err)
	}
	cfg, err := loadConfig(path, nil)
	if err != nil {
		s.t.Fatalf("config: %v", err)
	}
	return cfg
}

const frontendsTemplate = `
data_dir: DATA
log: {level: warn, access: false}
issuer:
  listen: ISS
  users:
    - username: alice
      password_hash: "` + demoPasswordHash + `"
  clients:
    - id: extra-bff
      secret: extra-secret-0123456789abcdef
      redirect_uris: [http://GW/extra/bff/callback]
      grant_types: [authorization_code, refresh_token]
gateway:
  listen: GW
  frontends:
FRONTENDS`

const shopAndAdmin = `
    - name: shop
      public_url: http://GW
      provider: {issuer_url: http://ISS}
    - name: admin
      match: {path_prefix: /admin}
      public_url: http://GW
      provider: {issuer_url: http://ISS}
`

func startFrontends(t *testing.T, frontends string) *frontendsStack {
	t.Helper()
	gwLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	isLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &frontendsStack{t: t, dir: t.TempDir(), gwAddr: gwLn.Addr().String(), issAddr: isLn.Addr().String(), template: frontendsTemplate}
	cfg := s.config(frontends)
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	rt, err := openState(ctx, cfg, newLogger(cfg.Log, &out))
	if err != nil {
		t.Fatal(err)
	}
	s.rt = rt
	srv, _, err := buildIssuer(ctx, rt)
	if err != nil {
		t.Fatal(err)
	}
	go srv.App().Listener(isLn)
	go srv.Run(ctx)
	if s.gs, err = buildGateway(ctx, rt, ""); err != nil {
		t.Fatal(err)
	}
	go s.gs.host.App().Listener(gwLn)
	t.Cleanup(func() {
		_ = s.gs.host.App().ShutdownWithTimeout(5 * time.Second)
		_ = srv.App().ShutdownWithTimeout(5 * time.Second)
		cancel()
		s.gs.stop()
		srv.Close()
		rt.close()
	})
	return s
}

// feClient is a browser: one cookie jar, redirects followed.
type feClient struct {
	t   *testing.T
	c   *http.Client
	jar *cookiejar.Jar
}

func newFeClient(t *testing.T) *feClient {
	jar, _ := cookiejar.New(nil)
	return &feClient{t: t, jar: jar, c: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

func (b *feClient) do(method, u string, body url.Values, hdr map[string]string) (int, string, *url.URL) {
	b.t.Helper()
	var r io.Reader
	if body != nil {
		r = strings.NewReader(body.Encode())
	}
	req, _ := http.NewRequest(method, u, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Request.URL
}

// login signs in at base (a frontend's URL with its prefix) through the
// embedded issuer's form.
func (b *feClient) login(base string) {
	b.t.Helper()
	status, body, at := b.do(http.MethodGet, base+"/bff/login", nil, nil)
	if m := regexp.MustCompile(`<form method="post" action="([^"]*)"`).FindStringSubmatch(body); m != nil {
		form := url.Values{"username": {"alice"}, "password": {demoPassword}}
		for _, f := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(body, -1) {
			form.Set(html.UnescapeString(f[1]), html.UnescapeString(f[2]))
		}
		target, _ := at.Parse(html.UnescapeString(m[1]))
		status, body, at = b.do(http.MethodPost, target.String(), form, nil)
	}
	if status >= 400 && status != 404 {
		b.t.Fatalf("login at %s: %d at %s: %s", base, status, at, body)
	}
}

// user is the status and error or sub of base's /bff/user.
func (b *feClient) user(base string) (int, string) {
	b.t.Helper()
	status, body, _ := b.do(http.MethodGet, base+"/bff/user", nil, map[string]string{"X-CSRF": "1"})
	if status != 200 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal([]byte(body), &e)
		return status, e.Error
	}
	var claims []struct {
		Type  string `json:"type"`
		Value any    `json:"value"`
	}
	_ = json.Unmarshal([]byte(body), &claims)
	for _, c := range claims {
		if c.Type == "sub" {
			return status, fmt.Sprint(c.Value)
		}
	}
	return status, ""
}

// TestFrontendsServeAndReload: two frontends on the embedded issuer, each
// with its own client registered by bffgate; a reload that adds one and
// removes another keeps the kept one's session, serves the added one,
// answers 401 for the removed one and deletes its stored sessions; a
// reload registers a new frontend's client at the running issuer, and
// refuses whole one the issuer cannot take.
func TestFrontendsServeAndReload(t *testing.T) {
	t.Parallel()
	s := startFrontends(t, shopAndAdmin)
	shop, admin := "http://"+s.gwAddr, "http://"+s.gwAddr+"/admin"
	b := newFeClient(t)
	b.login(shop)
	b.login(admin)
	for _, base := range []string{shop, admin} {
		if st, sub := b.user(base); st != 200 || sub != "alice" {
			t.Fatalf("%s: %d %s", base, st, sub)
		}
	}
	if n := bucketKeys(t, s.rt.db, "sessions@admin/records"); n != 1 {
		t.Fatalf("admin's namespace holds %d sessions", n)
	}

	// A frontend whose client bffgate registers at the running issuer
	// comes live: its client is registered by the reload.
	newFe := shopAndAdmin + `
    - name: new
      match: {path_prefix: /new}
      public_url: http://` + s.gwAddr + `
      provider: {issuer_url: http://` + s.issAddr + `}
`
	if _, err := s.gs.Reload(s.config(newFe)); err != nil {
		t.Fatalf("reload with a new embedded client: %v", err)
	}
	b.login(shop + "/new")
	if st, sub := b.user(shop + "/new"); st != 200 || sub != "alice" {
		t.Fatalf("the frontend added with its client: %d %s", st, sub)
	}
	// One whose client the issuer cannot take (a bearer route's resource
	// not known at start): refused whole, naming the frontend.
	_, err := s.gs.Reload(s.config(newFe + `
    - name: tools
      match: {path_prefix: /tools}
      public_url: http://` + s.gwAddr + `
      provider: {issuer_url: http://` + s.issAddr + `}
      routes: [{prefix: /tools/mcp, upstream: "http://127.0.0.1:9", auth: [bearer], policy: none}]
`))
	if err == nil || !strings.Contains(err.Error(), "gateway.frontends[3]") || !strings.Contains(err.Error(), "fixed at start") {
		t.Fatalf("reload with a client the issuer refuses: %v", err)
	}
	if st, _ := b.user(admin); st != 200 {
		t.Fatal("a refused reload changed the frontends")
	}
	if st, _ := b.user(shop + "/new"); st != 200 {
		t.Fatal("a refused reload dropped a frontend's client")
	}

	shopStore := s.gs.stores["shop"].store
	// Change shop (a route: a new gateway on the same store namespace),
	// drop admin, add extra (a configured issuer client).
	warnings, err := s.gs.Reload(s.config(`
    - name: shop
      public_url: http://` + s.gwAddr + `
      provider: {issuer_url: http://` + s.issAddr + `}
      routes: [{prefix: /api/, upstream: "http://127.0.0.1:9"}]
    - name: extra
      match: {path_prefix: /extra}
      public_url: http://` + s.gwAddr + `
      provider: {issuer_url: http://` + s.issAddr + `, client_id: extra-bff, client_secret: extra-secret-0123456789abcdef}
`))
	if err != nil || len(warnings) != 0 {
		t.Fatalf("reload: %v, warnings %v", err, warnings)
	}
	if st, sub := b.user(shop); st != 200 || sub != "alice" {
		t.Fatalf("shop after reload: %d %s", st, sub)
	}
	// One store per namespace: the rebuilt shop runs on the store it had.
	if s.gs.stores["shop"].store != shopStore || s.gs.stores["admin"] != nil {
		t.Fatal("shop's store was replaced, or admin's kept")
	}
	if st, body, _ := b.do(http.MethodGet, shop+"/api/x", nil, map[string]string{"X-CSRF": "1"}); st != http.StatusBadGateway {
		t.Fatalf("shop's new route: %d %s", st, body)
	}
	// Its metrics were registered again, for the new gateway.
	if st, body, _ := b.do(http.MethodGet, shop+"/metrics", nil, nil); st != 200 || !strings.Contains(body, `bffgate_session_bolt_operations_total{frontend="shop"`) {
		t.Fatalf("metrics after reload: %d", st)
	}
	if st, e := b.user(admin); st != 401 || e != "frontend_removed" {
		t.Fatalf("removed admin: %d %s", st, e)
	}
	// The removed frontend's series are gone from /metrics.
	if st, body, _ := b.do(http.MethodGet, shop+"/metrics", nil, nil); st != 200 || strings.Contains(body, `frontend="admin"`) || !strings.Contains(body, `frontend="shop"`) {
		t.Fatalf("metrics after admin's removal: %d, admin's series there: %t", st, strings.Contains(body, `frontend="admin"`))
	}
	b.login("http://" + s.gwAddr + "/extra")
	if st, sub := b.user("http://" + s.gwAddr + "/extra"); st != 200 || sub != "alice" {
		t.Fatalf("added extra: %d %s", st, sub)
	}
	// The removed frontend's sessions go, in the background.
	deadline := time.Now().Add(10 * time.Second)
	for bucketKeys(t, s.rt.db, "sessions@admin/records") >= 0 {
		if time.Now().After(deadline) {
			t.Fatal("admin's sessions were not deleted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := bucketKeys(t, s.rt.db, "sessions@shop/records"); n != 1 {
		t.Fatalf("shop's namespace holds %d sessions", n)
	}

	// Another key changed: applied frontends, a warning for the rest.
	s.template = strings.Replace(s.template, "access: false", "access: true", 1)
	s.template = strings.Replace(s.template, "  listen: GW\n", "  listen: GW\n  csrf: {header: X-Other}\n", 1)
	warnings, err = s.gs.Reload(s.config(`
    - name: shop
      public_url: http://` + s.gwAddr + `
      provider: {issuer_url: http://` + s.issAddr + `}
`))
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "need a restart") ||
		!strings.HasPrefix(warnings[0], "log.access, gateway.csrf.header changed") {
		t.Fatalf("reload with log.access changed: %v, %v", err, warnings)
	}
	if st, _ := b.user("http://" + s.gwAddr + "/extra"); st != 401 {
		t.Fatalf("extra after its removal: %d", st)
	}
	// Rebuilt (its route went), shop still has the running csrf header:
	// the changed gateway.csrf is not applied.
	if st, sub := b.user(shop); st != 200 || sub != "alice" {
		t.Fatalf("shop after a reload changing gateway.csrf: %d %s", st, sub)
	}
}

// bucketKeys counts the keys of a bucket of the data file; -1 when it
// does not exist.
func bucketKeys(t *testing.T, db *bbolt.DB, name string) int {
	t.Helper()
	n := -1
	if err := db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket([]byte(name)); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFrontendsCookieLogoutOutlivesRemoval: a cookie session logged out
// of stays refused when its frontend is removed and later added again
// under the same name (same cookie keys): the purge of the removed
// frontend keeps its ended records.
func TestFrontendsCookieLogoutOutlivesRemoval(t *testing.T) {
	t.Parallel()
	shopOnly := `
    - name: shop
      public_url: http://GW
      provider: {issuer_url: http://ISS}
`
	withExtra := shopOnly + `
    - name: extra
      match: {path_prefix: /extra}
      public_url: http://GW
      provider: {issuer_url: http://ISS, client_id: extra-bff, client_secret: extra-secret-0123456789abcdef}
      session: {store: cookie}
`
	s := startFrontends(t, withExtra)
	extra := "http://" + s.gwAddr + "/extra"
	b := newFeClient(t)
	b.login(extra)
	if st, sub := b.user(extra); st != 200 || sub != "alice" {
		t.Fatalf("extra: %d %s", st, sub)
	}
	// A copy of the session cookie, as a thief would keep it.
	u, _ := url.Parse(extra + "/bff/user")
	var stolen string
	for _, c := range b.jar.Cookies(u) {
		if strings.HasPrefix(c.Name, "__Secure-bff-extra") {
			stolen += c.Name + "=" + c.Value + "; "
		}
	}
	if stolen == "" {
		t.Fatalf("no session cookie for %s", u)
	}
	thief := func() int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
		req.Header.Set("Cookie", stolen)
		req.Header.Set("X-CSRF", "1")
		resp, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := thief(); st != 200 {
		t.Fatalf("the copied cookie before the logout: %d", st)
	}
	// The gateway ends the session, then sends the browser to the
	// issuer's end_session (which refuses this test client's unregistered
	// post-logout URI: not what is tested here).
	b.do(http.MethodPost, extra+"/bff/logout", nil, map[string]string{"X-CSRF": "1"})
	if st := thief(); st != 401 {
		t.Fatalf("the copied cookie after the logout: %d", st)
	}
	for i, frontends := range []string{shopOnly, withExtra} {
		if _, err := s.gs.Reload(s.config(frontends)); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	if st := thief(); st != 401 {
		t.Fatalf("the logged-out cookie after extra was removed and added again: %d", st)
	}
}

// TestFrontendsReloadKeepsUnchanged: a reload that adds a frontend, then
// one that removes it, keeps the gateways of the frontends it does not
// change (their caches, single-flight refreshes and held tokens
// included): default cookie names, which every frontend strips anyway, do
// not make the others' cookie lists change.
func TestFrontendsReloadKeepsUnchanged(t *testing.T) {
	t.Parallel()
	s := startFrontends(t, shopAndAdmin)
	before := map[string]any{"shop": s.gs.frontends["shop"].gw, "admin": s.gs.frontends["admin"].gw}
	withExtra := shopAndAdmin + `
    - name: extra
      match: {path_prefix: /extra}
      public_url: http://GW
      provider: {issuer_url: http://ISS, client_id: extra-bff, client_secret: extra-secret-0123456789abcdef}
`
	for i, frontends := range []string{withExtra, shopAndAdmin} {
		if _, err := s.gs.Reload(s.config(frontends)); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		for name, gw := range before {
			if any(s.gs.frontends[name].gw) != gw {
				t.Fatalf("reload %d rebuilt the unchanged frontend %s", i, name)
			}
		}
	}
	// A custom cookie name is another frontend's news: every gateway is
	// rebuilt to strip it.
	if _, err := s.gs.Reload(s.config(shopAndAdmin + `
    - name: extra
      match: {path_prefix: /extra}
      public_url: http://GW
      provider: {issuer_url: http://ISS, client_id: extra-bff, client_secret: extra-secret-0123456789abcdef}
      session: {cookie_name: __Secure-extra-session}
`)); err != nil {
		t.Fatal(err)
	}
	if any(s.gs.frontends["shop"].gw) == before["shop"] {
		t.Fatal("a new custom cookie name left shop's gateway unaware of it")
	}
}

// TestFrontendsRefusedReloadKeepsMetrics: a reload refused after it built
// a changed frontend's new gateway (another frontend's provider does not
// answer) leaves the running gateway's metrics registered: its series
// keep their counts and keep counting.
func TestFrontendsRefusedReloadKeepsMetrics(t *testing.T) {
	t.Parallel()
	s := startFrontends(t, shopAndAdmin)
	shop := "http://" + s.gwAddr
	b := newFeClient(t)
	b.login(shop)
	logins := func() uint64 {
		t.Helper()
		mfs, err := s.rt.registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "bffgate_gateway_logins_completed_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "frontend" && l.GetValue() == "shop" {
						return uint64(m.GetCounter().GetValue())
					}
				}
			}
		}
		return 0
	}
	if n := logins(); n != 1 {
		t.Fatalf("shop's completed logins before the reload: %d", n)
	}
	_, err := s.gs.Reload(s.config(`
    - name: shop
      public_url: http://GW
      provider: {issuer_url: http://ISS}
      routes: [{prefix: /api/, upstream: "http://127.0.0.1:9"}]
    - name: admin
      match: {path_prefix: /admin}
      public_url: http://GW
      provider: {issuer_url: "http://127.0.0.1:9", client_id: gone, client_secret: gone-secret-0123456789abcdef}
`))
	if err == nil {
		t.Fatal("a reload with an unreachable provider was applied")
	}
	if n := logins(); n != 1 {
		t.Fatalf("shop's completed logins after a refused reload: %d", n)
	}
	b.login(shop)
	if n := logins(); n != 2 {
		t.Fatalf("shop's completed logins counted after a refused reload: %d", n)
	}
}

// TestChangedKeys: a reload's warning names the keys it does not apply by
// their YAML paths, a list as a whole.
func TestChangedKeys(t *testing.T) {
	t.Parallel()
	a, b := defaultConfig(), defaultConfig()
	b.Log.Level = "debug"
	b.Gateway.Session.IdleTimeout = 5 * time.Minute
	b.Gateway.AllowedOrigins = []string{"https://other.example.com"}
	got := changedKeys(reflect.ValueOf(a), reflect.ValueOf(b), "")
	want := []string{"log.level", "gateway.session.idle_timeout", "gateway.allowed_origins"}
	if !slices.Equal(got, want) {
		t.Fatalf("changedKeys: %q, want %q", got, want)
	}
	if got := changedKeys(reflect.ValueOf(a), reflect.ValueOf(a), ""); len(got) != 0 {
		t.Fatalf("no change: %q", got)
	}
}
