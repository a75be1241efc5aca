package bff

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
)

// seen decodes what the upstream answered about the request it saw.
func seen(t *testing.T, r result) seenRequest {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("API call: %d %s", r.status, clip(r.body))
	}
	var s seenRequest
	r.json(t, &s)
	return s
}

func TestPolicies(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		anon := e.browser()

		// user: 401 JSON, never a redirect, whatever the Accept header.
		for _, accept := range []string{"", "text/html", "application/json"} {
			r := anon.do(anon.noRedirect(), http.MethodGet, e.gwURL+"/api/orders", nil, map[string]string{"X-CSRF": "1", "Accept": accept})
			if r.status != 401 || !strings.Contains(r.body, `"error":"login_required"`) || !strings.Contains(r.body, `"login_url":"/bff/login"`) {
				t.Fatalf("anonymous user route (Accept %q): %d %s", accept, r.status, r.body)
			}
		}
		if s := seen(t, anon.api(http.MethodGet, "/opt/x")); s.Bearer || s.Auth != "" {
			t.Fatalf("user-optional without session sent a token: %+v", s)
		}
		if s := seen(t, anon.api(http.MethodGet, "/pub/x")); s.Auth != "" {
			t.Fatalf("none policy sent %q", s.Auth)
		}
		if s := seen(t, anon.api(http.MethodGet, "/svc/x")); !s.Bearer || s.ClientID != testClientID {
			t.Fatalf("client policy: %+v", s)
		}

		b := e.browser()
		b.mustLogin("alice", alicePassword)
		s := seen(t, b.do(b.noRedirect(), http.MethodGet, e.gwURL+"/api/orders", nil, map[string]string{"X-CSRF": "1", "Authorization": "Bearer forged"}))
		if !s.Bearer || s.Sub != "user-alice" || s.Path != "/api/orders" {
			t.Fatalf("user route: %+v", s)
		}
		if strings.Contains(s.Cookie, "__Host-bff") {
			t.Fatalf("the gateway's cookies reached the upstream: %q", s.Cookie)
		}
		if s := seen(t, b.api(http.MethodPost, "/opt/x")); s.Sub != "user-alice" {
			t.Fatalf("user-optional with session: %+v", s)
		}
		if s := seen(t, b.api(http.MethodGet, "/pub/x")); s.Auth != "" {
			t.Fatalf("none policy with session sent %q", s.Auth)
		}
		if s := seen(t, b.api(http.MethodGet, "/svc/x")); s.ClientID != testClientID || s.Sub == "user-alice" {
			t.Fatalf("client policy with session: %+v", s)
		}
		// Nothing else is proxied.
		if r := b.api(http.MethodGet, "/elsewhere"); r.status != 200 || r.body != "spa /elsewhere" {
			t.Fatalf("SPA fallback: %d %s", r.status, r.body)
		}
	})
}

func TestAPICSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	c := b.noRedirect()
	cases := []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"no header", nil, 403},
		{"wrong value", map[string]string{"X-CSRF": "yes"}, 403},
		{"cross-site", map[string]string{"X-CSRF": "1", "Sec-Fetch-Site": "cross-site"}, 403},
		{"foreign origin", map[string]string{"X-CSRF": "1", "Origin": "https://evil.example"}, 403},
		{"same origin", map[string]string{"X-CSRF": "1", "Origin": e.gwURL, "Sec-Fetch-Site": "same-origin"}, 200},
	}
	for _, tc := range cases {
		for _, path := range []string{"/api/x", "/pub/x", "/svc/x", "/opt/x"} {
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				r := b.do(c, method, e.gwURL+path, nil, tc.hdr)
				if r.status != tc.status {
					t.Errorf("%s %s %s: %d %s", tc.name, method, path, r.status, r.body)
				}
				if tc.status == 403 && !strings.Contains(r.header.Get("Content-Type"), "json") {
					t.Errorf("%s: 403 is not JSON", tc.name)
				}
			}
		}
	}
	if r := b.do(c, http.MethodPost, e.gwURL+"/bff/logout", nil, map[string]string{"Origin": e.gwURL}); r.status != 403 {
		t.Fatalf("POST logout without X-CSRF: %d", r.status)
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		b := e.browser()
		b.mustLogin("alice", alicePassword)
		before := b.session()
		e.clock.Advance(6 * time.Minute) // the 5-minute access token expired
		if s := seen(t, b.api(http.MethodGet, "/api/x")); s.Sub != "user-alice" {
			t.Fatalf("after expiry: %+v", s)
		}
		after := b.session()
		if after.AccessToken == before.AccessToken || after.RefreshToken == before.RefreshToken {
			t.Fatal("the tokens were not refreshed (with rotation) and saved")
		}
		if !e.introspect(after.AccessToken) {
			t.Fatal("the saved access token is not active at the issuer")
		}
	})
}

func TestRefreshRejected(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		b := e.browser()
		b.mustLogin("alice", alicePassword)
		s := b.session()
		e.revoke(s.RefreshToken)
		e.clock.Advance(6 * time.Minute)
		r := b.api(http.MethodGet, "/api/x")
		if r.status != 401 || !strings.Contains(r.body, `"error":"session_expired"`) {
			t.Fatalf("refused refresh: %d %s", r.status, r.body)
		}
		if b.handle() != "" {
			t.Fatal("cookies not cleared")
		}
		if r := b.api(http.MethodGet, "/bff/user"); r.status != 401 {
			t.Fatalf("session survived a refused refresh: %d", r.status)
		}
	})
}

func TestUpstreamInvalidTokenRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	before := b.session()
	e.upstream.rejectNext(1)
	if s := seen(t, b.api(http.MethodPost, "/api/x")); s.Sub != "user-alice" {
		t.Fatalf("retried call: %+v", s)
	}
	if after := b.session(); after.AccessToken == before.AccessToken {
		t.Fatal("no forced refresh after invalid_token")
	}
	// A second refusal in a row passes through.
	e.upstream.rejectNext(2)
	if r := b.api(http.MethodGet, "/api/x"); r.status != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("double refusal: %d %s", r.status, r.body)
	}
}

// TestUpstreamRefusalThenRefreshRefused: the upstream refuses a token
// that looked fresh (401 invalid_token, with headers of its own), and the
// forced refresh is refused too (the grant was revoked). The gateway's
// 401 session_expired must carry the gateway's own headers only: the
// same header names, and the same cookies, as that answer when the
// refresh is refused before any upstream is called.
func TestUpstreamRefusalThenRefreshRefused(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})

		after := e.browser()
		after.mustLogin("alice", alicePassword)
		e.revoke(after.session().RefreshToken)
		e.upstream.rejectNext(1)
		got := after.api(http.MethodGet, "/api/x")
		if got.status != 401 || !strings.Contains(got.body, `"error":"session_expired"`) {
			t.Fatalf("upstream refusal, then a refused refresh: %d %s, want 401 session_expired", got.status, got.body)
		}

		before := e.browser()
		before.mustLogin("alice", alicePassword)
		e.revoke(before.session().RefreshToken)
		e.clock.Advance(6 * time.Minute) // due: the refresh runs before the upstream is called
		want := before.api(http.MethodGet, "/api/x")
		if want.status != 401 || !strings.Contains(want.body, `"error":"session_expired"`) {
			t.Fatalf("refused refresh of an expired token: %d %s, want 401 session_expired", want.status, want.body)
		}

		if g, w := headerNames(got.header), headerNames(want.header); g != w {
			t.Errorf("header names of session_expired after an upstream 401:\n  %s\nwant those of the gateway's own answer:\n  %s", g, w)
		}
		if g, w := cookieNames(got.header), cookieNames(want.header); g != w {
			t.Errorf("cookies set by session_expired after an upstream 401: %s, want %s", g, w)
		}
		for _, h := range []string{"X-Upstream-Trace", "WWW-Authenticate"} {
			if v := got.header.Get(h); v != "" {
				t.Errorf("the upstream's %s: %q reached the gateway's answer", h, v)
			}
		}
		if g, w := got.header.Get("Cache-Control"), want.header.Get("Cache-Control"); g != w {
			t.Errorf("Cache-Control %q, want the gateway's %q", g, w)
		}
		if g, w := got.header.Values("Vary"), want.header.Values("Vary"); strings.Join(g, ",") != strings.Join(w, ",") {
			t.Errorf("Vary %q, want the gateway's %q", g, w)
		}
	})
}

// headerNames lists h's names, sorted.
func headerNames(h http.Header) string {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

// cookieNames lists the names of the cookies h sets, sorted.
func cookieNames(h http.Header) string {
	var names []string
	for _, c := range (&http.Response{Header: h}).Cookies() {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

func TestProviderDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	e.clock.Advance(6 * time.Minute)
	e.stopIssuer()
	r := b.api(http.MethodGet, "/api/x")
	if r.status != 503 || !strings.Contains(r.body, "provider_unavailable") {
		t.Fatalf("provider down: %d %s", r.status, r.body)
	}
	if b.session() == nil {
		t.Fatal("session lost while the provider was down")
	}
	if err := e.gw.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), e.issuer) {
		t.Fatalf("Ready with the provider down: %v", err)
	}
}

// revoke revokes tok at the issuer (RFC 7009).
func (e *env) revoke(tok string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/revoke", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testClientID, testClientSecret)
	resp, err := testhttp.Client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("revoke: %d", resp.StatusCode)
	}
}

// TestRefreshRace sends 200 concurrent API calls of one session whose
// access token has expired: the provider sees exactly one refresh, every
// call succeeds with the session's own token, and the rotated refresh
// token is never presented again (which the issuer would treat as reuse).
func TestRefreshRace(t *testing.T) {
	t.Parallel()
	forKinds(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, envOptions{})
		b := e.browser()
		b.mustLogin("alice", alicePassword)
		cookie := b.cookieHeader()
		e.clock.Advance(6 * time.Minute)
		before := e.issuerCount("bffgate_issuer_tokens_minted_total", map[string]string{"grant_type": "refresh_token", "kind": "access"})
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64}}
		const n = 200
		var wg sync.WaitGroup
		errs := make(chan string, n)
		setCookies := make(chan string, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, e.gwURL+"/api/race", nil)
				req.Header.Set("X-CSRF", "1")
				req.Header.Set("Cookie", cookie)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				defer resp.Body.Close()
				var s seenRequest
				if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&s) != nil || s.Sub != "user-alice" {
					errs <- fmt.Sprintf("status %d, upstream saw %+v", resp.StatusCode, s)
					return
				}
				for _, c := range resp.Cookies() {
					if c.Name == "__Host-bff" {
						setCookies <- c.Value
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		close(setCookies)
		for err := range errs {
			t.Error(err)
		}
		if got := e.issuerCount("bffgate_issuer_tokens_minted_total", map[string]string{"grant_type": "refresh_token", "kind": "access"}) - before; got != 1 {
			t.Errorf("%v refreshes at the provider, want 1", got)
		}
		if got := e.issuerCount("bffgate_issuer_refresh_reuse_total", nil); got != 0 {
			t.Errorf("%v refresh token reuses detected by the issuer", got)
		}
		if kind == kindCookie {
			// Every response carries the session with the new tokens.
			k := 0
			for v := range setCookies {
				k++
				s, err := e.store.Get(context.Background(), v)
				if err == nil && s.AccessToken == "" {
					t.Error("a written cookie lost the tokens")
				}
			}
			if k != n {
				t.Errorf("%d of %d responses carried the updated cookie", k, n)
			}
		}
	})
}

// TestNoTokenCrossesSessions has several users call the API at once
// across two access token expiries; the upstream checks that each
// request's token subject is its own session's.
func TestNoTokenCrossesSessions(t *testing.T) {
	t.Parallel()
	const users, calls = 50, 21
	e := newEnv(t, kindBolt, envOptions{issuer: func(c *issuer.Config) {
		for i := range users {
			c.Users = append(c.Users, issuer.User{Username: fmt.Sprintf("u%d", i), PasswordHash: testHash()[alicePassword], Subject: fmt.Sprintf("sub-u%d", i)})
		}
	}})
	browsers := make([]*browser, users)
	for i := range users {
		browsers[i] = e.browser()
		browsers[i].mustLogin(fmt.Sprintf("u%d", i), alicePassword)
	}
	// Three phases of concurrent calls with every access token expiring
	// between them: each session refreshes at once with the others at the
	// start of the next phase. The clock moves only between phases, with
	// no request in flight: a request the gateway checked before a jump
	// would reach the upstream with a token the jump expired, which no
	// real clock does.
	for phase := range 3 {
		if phase > 0 {
			e.clock.Advance(6 * time.Minute)
		}
		var wg sync.WaitGroup
		for i, b := range browsers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range calls / 3 {
					r := b.do(b.noRedirect(), http.MethodGet, e.gwURL+"/api/who", nil, map[string]string{"X-CSRF": "1"})
					var s seenRequest
					if r.status != 200 || json.Unmarshal([]byte(r.body), &s) != nil || s.Sub != fmt.Sprintf("sub-u%d", i) {
						t.Errorf("phase %d, user u%d call %d: %d, upstream saw sub %q", phase, i, j, r.status, s.Sub)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}

func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	dead := "http://" + ln.Addr().String()
	ln.Close()
	e := newEnv(t, kindBolt, envOptions{gateway: func(c *Config) {
		c.Routes = append(c.Routes, Route{Route: proxy.Route{Prefix: "/down/", Upstream: dead}})
	}})
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	r := b.api(http.MethodGet, "/down/x")
	if r.status != http.StatusBadGateway || !strings.Contains(r.header.Get("Content-Type"), "json") {
		t.Fatalf("upstream down: %d %s", r.status, r.body)
	}
	if b.session() == nil {
		t.Fatal("session lost because an upstream was down")
	}
}
