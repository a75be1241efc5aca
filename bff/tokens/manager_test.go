package tokens

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/session"
)

// provider is a token endpoint that behaves like a rotating provider
// (RFC 9700 §4.14.2): each refresh token works once; using one again
// revokes the whole grant.
type provider struct {
	srv *httptest.Server

	mu       sync.Mutex
	n        int
	live     map[string]string // refresh token -> grant
	used     map[string]string // rotated-away refresh token -> grant
	revoked  map[string]bool   // grant -> revoked
	revokedT []string          // tokens received at the revocation endpoint

	refreshes atomic.Int64
	clientCC  atomic.Int64
	down      atomic.Bool
	delay     chan struct{} // when set, refreshes wait for it to close
	arrived   chan struct{} // receives once when a refresh arrives

	// jwtNow, when set, makes access tokens unsigned JWTs whose exp is
	// jwtNow()+expires_in, stamped when the request arrives.
	jwtNow func() time.Time
	// noRotate makes refreshes answer without a refresh_token, the old
	// one staying valid (RFC 6749 §6 allows both).
	noRotate bool
}

// testJWT is an unsigned JWT (alg none, RFC 7519 §6.1) with claims.
func testJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "."
}

const (
	testClientID     = "gateway"
	testClientSecret = "s3cret/+"
)

func newProvider(t *testing.T) *provider {
	p := &provider{live: map[string]string{}, used: map[string]string{}, revoked: map[string]bool{}, arrived: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("POST /revoke", p.revoke)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// grant starts a grant and returns its first refresh token.
func (p *provider) grant() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	rt := fmt.Sprintf("rt-%d", p.n)
	p.live[rt] = fmt.Sprintf("grant-%d", p.n)
	return rt
}

func (p *provider) isLive(rt string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.live[rt]
	return ok
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q}`, code)
}

func (p *provider) authenticated(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
	} else {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	}
	return id == testClientID && secret == testClientSecret
}

func (p *provider) token(w http.ResponseWriter, r *http.Request) {
	if p.down.Load() {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	if err := r.ParseForm(); err != nil || !p.authenticated(r) {
		oauthError(w, 401, "invalid_client")
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		n := p.clientCC.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"cc-%d","token_type":"Bearer","expires_in":3600}`, n)
	case "refresh_token":
		p.refreshes.Add(1)
		var exp int64
		if p.jwtNow != nil {
			exp = p.jwtNow().Add(300 * time.Second).Unix()
		}
		select {
		case p.arrived <- struct{}{}:
		default:
		}
		if p.delay != nil {
			<-p.delay
		}
		rt := r.PostForm.Get("refresh_token")
		p.mu.Lock()
		defer p.mu.Unlock()
		g, ok := p.live[rt]
		if !ok || p.revoked[g] {
			if g, reused := p.used[rt]; reused {
				// Reuse: revoke the grant, every refresh token of it.
				p.revoked[g] = true
				for k, v := range p.live {
					if v == g {
						delete(p.live, k)
					}
				}
			}
			oauthError(w, 400, "invalid_grant")
			return
		}
		p.n++
		at := fmt.Sprintf("at-%d", p.n)
		if p.jwtNow != nil {
			at = testJWT(fmt.Sprintf(`{"sub":"alice","jti":%q,"exp":%d}`, at, exp))
		}
		w.Header().Set("Content-Type", "application/json")
		if p.noRotate {
			fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":300,"id_token":"id-%d"}`, at, p.n)
			return
		}
		delete(p.live, rt)
		p.used[rt] = g
		next := fmt.Sprintf("rt-%d", p.n)
		p.live[next] = g
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":300,"refresh_token":%q,"id_token":"id-%d"}`, at, next, p.n)
	default:
		oauthError(w, 400, "unsupported_grant_type")
	}
}

func (p *provider) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || !p.authenticated(r) {
		oauthError(w, 401, "invalid_client")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revokedT = append(p.revokedT, r.PostForm.Get("token"))
	if g, ok := p.live[r.PostForm.Get("token")]; ok {
		p.revoked[g] = true
	}
}

// clock is a movable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// memStore is a session.Store in memory. In server mode a handle is the
// session ID; in cookie mode the handle is the whole session encoded
// (like the cookie store: every Update returns a new handle, and an old
// handle still decodes to the old session).
type memStore struct {
	cookie bool
	mu     sync.Mutex
	m      map[string]session.Session
	n      int
	writes atomic.Int64
	// failWrites makes Update fail as a store that cannot write does (a
	// full disk: session.ErrUnavailable); reads still work.
	failWrites atomic.Bool
}

func newMemStore(cookie bool) *memStore {
	return &memStore{cookie: cookie, m: map[string]session.Session{}}
}

var _ session.Store = (*memStore)(nil)

func (st *memStore) encode(s *session.Session) string {
	b, _ := json.Marshal(s)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (st *memStore) Create(_ context.Context, s *session.Session) (string, error) {
	if st.cookie {
		c := *s
		c.ID = ""
		return st.encode(&c), nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.n++
	c := *s
	c.ID = fmt.Sprintf("sess-%d", st.n)
	st.m[c.ID] = c
	return c.ID, nil
}

func (st *memStore) Get(_ context.Context, handle string) (*session.Session, error) {
	if st.cookie {
		b, err := base64.RawURLEncoding.DecodeString(handle)
		if err != nil {
			return nil, session.ErrNotFound
		}
		var s session.Session
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, session.ErrNotFound
		}
		return &s, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[handle]
	if !ok {
		return nil, session.ErrNotFound
	}
	return &s, nil
}

func (st *memStore) Update(ctx context.Context, handle string, fn func(*session.Session) error) (string, error) {
	st.writes.Add(1)
	if st.failWrites.Load() {
		return "", fmt.Errorf("memStore: update: %w: write: no space left on device", session.ErrUnavailable)
	}
	if st.cookie {
		s, err := st.Get(ctx, handle)
		if err != nil {
			return "", err
		}
		if err := fn(s); err != nil {
			return "", err
		}
		s.Version++
		return st.encode(s), nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[handle]
	if !ok {
		return "", session.ErrNotFound
	}
	if err := fn(&s); err != nil {
		return "", err
	}
	s.Version++
	st.m[handle] = s
	return handle, nil
}

func (st *memStore) Delete(_ context.Context, handle string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, handle)
	return nil
}
func (st *memStore) EndBySID(context.Context, string) (int, error)     { return 0, nil }
func (st *memStore) EndBySubject(context.Context, string) (int, error) { return 0, nil }
func (st *memStore) Ping(context.Context) error                        { return nil }

type fixture struct {
	prov  *provider
	clk   *clock
	reg   *prometheus.Registry
	m     *Manager
	store *memStore
}

func newFixture(t *testing.T, cookie bool, mod func(*Config)) *fixture {
	t.Helper()
	f := &fixture{prov: newProvider(t), clk: &clock{t: time.Now()}, reg: prometheus.NewRegistry(), store: newMemStore(cookie)}
	cfg := Config{
		OAuth2: &oauth2.Config{
			ClientID: testClientID, ClientSecret: testClientSecret,
			Endpoint: oauth2.Endpoint{TokenURL: f.prov.srv.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader},
		},
		RevocationURL: f.prov.srv.URL + "/revoke",
		Now:           f.clk.Now,
		Registerer:    f.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

// login creates a session whose access token expires in d.
func (f *fixture) login(t *testing.T, d time.Duration) (string, *session.Session) {
	t.Helper()
	s := &session.Session{
		Subject: "alice", AccessToken: "at-initial", RefreshToken: f.prov.grant(), TokenType: "Bearer",
		AccessExpiry: f.clk.Now().Add(d), Created: f.clk.Now(), LastSeen: f.clk.Now(),
	}
	h, err := f.store.Create(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.store.Get(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	return h, got
}

func (f *fixture) count(t *testing.T, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := f.m.metrics.refreshes.WithLabelValues(result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestFreshNotDue(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	h, s := f.login(t, time.Hour)
	got, gh, err := f.m.Fresh(context.Background(), f.store, h, s, false)
	if err != nil || got != s || gh != h || f.prov.refreshes.Load() != 0 {
		t.Fatalf("fresh token: %v, same session %v, same handle %v, refreshes %d", err, got == s, gh == h, f.prov.refreshes.Load())
	}
	// Within the skew it is due.
	f.clk.Add(time.Hour - 20*time.Second)
	got, _, err = f.m.Fresh(context.Background(), f.store, h, s, false)
	if err != nil || got.AccessToken == "at-initial" || f.prov.refreshes.Load() != 1 {
		t.Fatalf("token within skew: %v, access %q, refreshes %d", err, got.AccessToken, f.prov.refreshes.Load())
	}
	// force refreshes a fresh token.
	got2, _, err := f.m.Fresh(context.Background(), f.store, h, got, true)
	if err != nil || got2.AccessToken == got.AccessToken || f.prov.refreshes.Load() != 2 {
		t.Fatalf("forced: %v, access %q, refreshes %d", err, got2.AccessToken, f.prov.refreshes.Load())
	}
	if got2.IDToken == "" || got2.IDToken == got.IDToken {
		t.Errorf("ID token not updated from the refresh response: %q", got2.IDToken)
	}
}

func TestRefreshRace(t *testing.T) {
	t.Parallel()
	for _, cookie := range []bool{false, true} {
		t.Run(fmt.Sprintf("cookie=%v", cookie), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, cookie, nil)
			h, s := f.login(t, -time.Minute)
			// Hold the provider until every caller is waiting, so that the
			// 200 calls really overlap.
			f.prov.delay = make(chan struct{})
			const n = 200
			var wg sync.WaitGroup
			type out struct {
				s   *session.Session
				h   string
				err error
			}
			res := make([]out, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					own := *s // each request decoded its own copy
					res[i].s, res[i].h, res[i].err = f.m.Fresh(context.Background(), f.store, h, &own, false)
				}()
			}
			<-f.prov.arrived
			close(f.prov.delay)
			wg.Wait()

			if got := f.prov.refreshes.Load(); got != 1 {
				t.Fatalf("%d refresh requests at the provider, want 1", got)
			}
			for i, r := range res {
				if r.err != nil {
					t.Fatalf("caller %d: %v", i, r.err)
				}
				if r.s.AccessToken != res[0].s.AccessToken || r.s.AccessToken == "at-initial" {
					t.Fatalf("caller %d got access token %q, caller 0 %q", i, r.s.AccessToken, res[0].s.AccessToken)
				}
				stored, err := f.store.Get(context.Background(), r.h)
				if err != nil || stored.RefreshToken != r.s.RefreshToken || !f.prov.isLive(stored.RefreshToken) {
					t.Fatalf("caller %d: handle names %+v (%v); want the rotated, live refresh token", i, stored, err)
				}
			}
			if f.count(t, "refreshed") != 1 {
				t.Errorf("bffgate_token_refresh_total{result=refreshed} = %v", f.count(t, "refreshed"))
			}

			// A request that read the session before the refresh and
			// arrives after it: no second provider call (which the
			// provider would treat as reuse and revoke the grant).
			late, lh, err := f.m.Fresh(context.Background(), f.store, h, s, false)
			if err != nil || late.AccessToken != res[0].s.AccessToken || f.prov.refreshes.Load() != 1 {
				t.Fatalf("late request: %v, access %q, refreshes %d", err, late.AccessToken, f.prov.refreshes.Load())
			}
			if cookie && lh == h {
				t.Errorf("cookie store: the late request's handle was not updated")
			}
		})
	}
}

func TestCookieGraceWindow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true, func(c *Config) { c.GraceWindow = 10 * time.Second })
	h0, s0 := f.login(t, -time.Second)
	ctx := context.Background()

	s1, h1, err := f.m.Fresh(ctx, f.store, h0, s0, false)
	if err != nil {
		t.Fatal(err)
	}
	// The old cookie, within the window: the new tokens, and a cookie
	// that carries them.
	f.clk.Add(5 * time.Second)
	g, gh, err := f.m.Fresh(ctx, f.store, h0, s0, false)
	if err != nil || g.AccessToken != s1.AccessToken || g.RefreshToken != s1.RefreshToken {
		t.Fatalf("grace: %v, %q/%q want %q/%q", err, g.AccessToken, g.RefreshToken, s1.AccessToken, s1.RefreshToken)
	}
	if st, _ := f.store.Get(ctx, gh); st.RefreshToken != s1.RefreshToken {
		t.Errorf("grace response's cookie holds refresh token %q", st.RefreshToken)
	}
	if f.prov.refreshes.Load() != 1 || f.count(t, "grace") != 1 {
		t.Errorf("refreshes at provider %d (want 1), grace %v (want 1)", f.prov.refreshes.Load(), f.count(t, "grace"))
	}

	// The record holds no token in the clear.
	for _, e := range f.m.cfg.Grace.(*MemoryGrace).m {
		for _, tok := range []string{s1.AccessToken, s1.RefreshToken, s0.RefreshToken} {
			if strings.Contains(string(e.val), tok) {
				t.Errorf("grace record contains a token in the clear")
			}
		}
	}
	for k := range f.m.cfg.Grace.(*MemoryGrace).m {
		if strings.Contains(k, s0.RefreshToken) {
			t.Errorf("grace key %q contains the refresh token", k)
		}
	}

	// After the window the old cookie is a reused refresh token: the
	// provider refuses it and revokes the grant.
	f.clk.Add(6 * time.Second)
	if _, _, err := f.m.Fresh(ctx, f.store, h0, s0, false); !errors.Is(err, ErrRefreshRejected) {
		t.Fatalf("old cookie after the window: %v, want ErrRefreshRejected", err)
	}
	if f.prov.isLive(s1.RefreshToken) {
		t.Errorf("the provider did not revoke the grant on reuse (test provider broken)")
	}
	_ = h1
}

func TestRefreshRejected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	h, s := f.login(t, -time.Second)
	s.RefreshToken = "rt-unknown"
	_, _ = f.store.Update(context.Background(), h, func(x *session.Session) error { x.RefreshToken = "rt-unknown"; return nil })
	_, _, err := f.m.Fresh(context.Background(), f.store, h, s, false)
	if !errors.Is(err, ErrRefreshRejected) || errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("err = %v, want ErrRefreshRejected", err)
	}
	if strings.Contains(err.Error(), "rt-unknown") {
		t.Errorf("error text contains the refresh token: %v", err)
	}
	if f.count(t, "rejected") != 1 {
		t.Errorf("rejected = %v", f.count(t, "rejected"))
	}

	// No refresh token at all.
	s.RefreshToken = ""
	if _, _, err := f.m.Fresh(context.Background(), f.store, h, s, false); !errors.Is(err, ErrRefreshRejected) {
		t.Errorf("no refresh token: %v", err)
	}
}

func TestProviderUnavailable(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String() + "/token"
	ln.Close()

	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"5xx", nil},
		{"connection refused", func(c *Config) { c.OAuth2.Endpoint.TokenURL = closed }},
		{"client refused", func(c *Config) { c.OAuth2.ClientSecret = "wrong" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, false, tc.mod)
			f.prov.down.Store(tc.name == "5xx")
			h, s := f.login(t, -time.Second)
			_, _, err := f.m.Fresh(context.Background(), f.store, h, s, false)
			if !errors.Is(err, ErrProviderUnavailable) || errors.Is(err, ErrRefreshRejected) {
				t.Fatalf("err = %v, want ErrProviderUnavailable", err)
			}
			// The session is kept as it was, and works once the provider is
			// back.
			kept, err := f.store.Get(context.Background(), h)
			if err != nil || kept.RefreshToken != s.RefreshToken {
				t.Fatalf("session after failure: %+v, %v", kept, err)
			}
			if tc.name == "5xx" {
				f.prov.down.Store(false)
				if _, _, err := f.m.Fresh(context.Background(), f.store, h, s, false); err != nil {
					t.Fatalf("after recovery: %v", err)
				}
			}
		})
	}
}

func TestClientToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, func(c *Config) { c.ClientScopes = []string{"api"} })
	ctx := context.Background()
	var wg sync.WaitGroup
	toks := make([]string, 50)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := f.m.ClientToken(ctx)
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		}()
	}
	wg.Wait()
	if f.prov.clientCC.Load() != 1 || toks[0] != "cc-1" || toks[49] != "cc-1" {
		t.Fatalf("%d fetches, tokens %q..%q; want one fetch shared", f.prov.clientCC.Load(), toks[0], toks[49])
	}
	// Cached until Skew before its expiry (3600s), then renewed.
	f.clk.Add(3600*time.Second - 31*time.Second)
	if tok, _ := f.m.ClientToken(ctx); tok != "cc-1" {
		t.Errorf("before renewal: %q", tok)
	}
	f.clk.Add(2 * time.Second)
	if tok, _ := f.m.ClientToken(ctx); tok != "cc-2" {
		t.Errorf("after renewal point: %q, want cc-2", tok)
	}
	f.m.ForgetClientToken("cc-2")
	if tok, _ := f.m.ClientToken(ctx); tok != "cc-3" {
		t.Errorf("after ForgetClientToken: %q, want cc-3", tok)
	}
	f.prov.down.Store(true)
	f.m.ForgetClientToken("cc-3")
	if _, err := f.m.ClientToken(ctx); !errors.Is(err, ErrProviderUnavailable) {
		t.Errorf("provider down: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	h, s := f.login(t, time.Hour)
	if err := f.m.Revoke(context.Background(), s.RefreshToken); err != nil {
		t.Fatal(err)
	}
	f.prov.mu.Lock()
	got := append([]string(nil), f.prov.revokedT...)
	f.prov.mu.Unlock()
	if len(got) != 1 || got[0] != s.RefreshToken {
		t.Errorf("revocation endpoint received %q", got)
	}
	if _, _, err := f.m.Fresh(context.Background(), f.store, h, s, true); !errors.Is(err, ErrRefreshRejected) {
		t.Errorf("refresh after revocation: %v", err)
	}
	f.prov.srv.Close()
	if err := f.m.Revoke(context.Background(), "rt-x"); err == nil {
		t.Errorf("Revoke with the endpoint down returned nil")
	}
}

func TestGraceSeal(t *testing.T) {
	t.Parallel()
	rec := &graceRecord{AccessToken: "at", RefreshToken: "rt-new", AccessExpiry: time.Unix(1e9, 0).UTC()}
	sealed, err := sealGrace("rt-old", rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openGrace("rt-old", sealed)
	if err != nil || *got != *rec {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := openGrace("rt-other", sealed); err == nil {
		t.Errorf("a different refresh token opened the record")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := openGrace("rt-old", sealed); err == nil {
		t.Errorf("a tampered record opened")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	good := oauth2.Config{ClientID: "c", Endpoint: oauth2.Endpoint{TokenURL: "https://idp/token"}}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no oauth2", Config{}, "oauth2"},
		{"no client", Config{OAuth2: &oauth2.Config{Endpoint: good.Endpoint}}, "clientID"},
		{"token url", Config{OAuth2: &oauth2.Config{ClientID: "c", Endpoint: oauth2.Endpoint{TokenURL: "/token"}}}, "tokenURL"},
		{"revocation url", Config{OAuth2: &good, RevocationURL: "revoke"}, "revocationURL"},
		{"negative skew", Config{OAuth2: &good, Skew: -1}, "skew"},
	} {
		if _, err := New(tc.cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidConfig naming %q", tc.name, err, tc.want)
		}
	}
}
