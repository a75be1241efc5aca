package issuer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/token"
)

func jtiOf(t testing.TB, e *env, access string) string {
	t.Helper()
	jti, _ := verifyAccess(t, e, access)["jti"].(string)
	if jti == "" {
		t.Fatal("access token has no jti")
	}
	return jti
}

// TestRevocation: RFC 7009 at /revoke.
func TestRevocation(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})

	t.Run("access token", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		wantActive(t, e.introspect(tk.access))
		if r := e.revoke(webBasic, tk.access, "access_token"); r.status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.status, r.raw)
		}
		// At once, on this instance (issue 3 §3).
		wantInactive(t, e.introspect(tk.access))
		wantError(t, e.userinfo(tk.access), http.StatusUnauthorized, "invalid_token")
		// Denylisting an access token takes its grant's refresh tokens
		// off the allowlist (issue 3 §5).
		wantGrantError(t, e.refresh(webBasic, tk.refresh), "revoked")
		wantInactive(t, e.introspect(tk.refresh))
		if r := e.revoke(webBasic, tk.access, "access_token"); r.status != http.StatusOK {
			t.Errorf("second revocation: %d %s", r.status, r.raw)
		}
	})
	t.Run("refresh token with a wrong hint", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		if r := e.revoke(webBasic, tk.refresh, "access_token"); r.status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.status, r.raw)
		}
		wantGrantError(t, e.refresh(webBasic, tk.refresh), "revoked")
		// Revoking a refresh token denylists its grant's access tokens.
		wantInactive(t, e.introspect(tk.access))
		wantError(t, e.userinfo(tk.access), http.StatusUnauthorized, "invalid_token")
	})
	t.Run("access token without hint", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		if r := e.revoke(webPost, tk.access, ""); r.status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.status, r.raw)
		}
		wantInactive(t, e.introspect(tk.access))
	})
	t.Run("foreign tokens untouched", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		for _, tok := range []string{tk.access, tk.refresh} {
			if r := e.revoke(otherBasic, tok, ""); r.status != http.StatusOK {
				t.Fatalf("foreign revocation: %d %s, want 200 (RFC 7009 §2.2)", r.status, r.raw)
			}
		}
		wantActive(t, e.introspect(tk.access))
		wantActive(t, e.introspect(tk.refresh))
		if r := e.refresh(webBasic, tk.refresh); r.status != http.StatusOK {
			t.Fatalf("refresh after a foreign revocation attempt: %d %s", r.status, r.raw)
		}
	})
	t.Run("public client", func(t *testing.T) {
		_, _, tk := e.loginTokens(spaID)
		if r := e.revoke(spaNone, tk.refresh, "refresh_token"); r.status != http.StatusOK {
			t.Fatalf("public revoke: %d %s", r.status, r.raw)
		}
		wantError(t, e.refresh(spaNone, tk.refresh), 400, "invalid_grant")
	})
	t.Run("unknown and malformed tokens answer 200", func(t *testing.T) {
		for _, tok := range []string{"garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", strings.Repeat("x", 3000)} {
			if r := e.revoke(webBasic, tok, ""); r.status != http.StatusOK {
				t.Errorf("revoke %q: %d %s, want 200 (RFC 7009 §2.2)", clipText(tok, 20), r.status, r.raw)
			}
		}
	})
	t.Run("expired token answers 200", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		e.clock.Advance(issuer.DefaultAccessTokenTTL + time.Minute)
		if r := e.revoke(webBasic, tk.access, "access_token"); r.status != http.StatusOK {
			t.Fatalf("revoke expired: %d %s", r.status, r.raw)
		}
	})
	t.Run("errors", func(t *testing.T) {
		wantError(t, e.revoke(noAuth, "garbage", ""), http.StatusUnauthorized, "invalid_client")
		wantError(t, e.revoke(auth{id: webID, secret: "wrong-secret-0123456789", basic: true}, "garbage", ""), http.StatusUnauthorized, "invalid_client")
		wantError(t, e.post("/revoke", webBasic, url.Values{}), http.StatusBadRequest, "invalid_request")
	})
}

// TestIntrospection: RFC 7662 at /introspect, both formats.
func TestIntrospection(t *testing.T) {
	for _, f := range []format{
		{name: "signed", alg: "ES256", idAlg: "RS256", signed: true},
		{name: "encrypted", enc: "A128CBC-HS256", idAlg: "RS256"},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, envOptions{cfg: f.apply})
			_, _, tk := e.loginTokens(webID)

			r := e.introspect(tk.access)
			wantActive(t, r)
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
			}
			for k, want := range map[string]any{"client_id": webID, "sub": "user-alice", "iss": e.url} {
				if r.body[k] != want {
					t.Errorf("%s = %v, want %v", k, r.body[k], want)
				}
			}
			for _, k := range []string{"scope", "jti", "token_type", "sid"} {
				if r.str(k) == "" {
					t.Errorf("introspection lacks %s: %s", k, r.raw)
				}
			}
			for _, k := range []string{"exp", "iat"} {
				if _, ok := r.body[k].(float64); !ok {
					t.Errorf("introspection lacks numeric %s: %s", k, r.raw)
				}
			}
			if r.body["aud"] == nil {
				t.Errorf("introspection lacks aud: %s", r.raw)
			}
			rr := e.introspect(tk.refresh)
			wantActive(t, rr)
			if rr.str("token_type") == r.str("token_type") {
				t.Errorf("access and refresh token introspect with the same token_type %q", rr.str("token_type"))
			}
			hinted := e.post("/introspect", webBasic, url.Values{"token": {tk.refresh}, "token_type_hint": {"access_token"}})
			wantActive(t, hinted)

			// A token of another client is inactive to it.
			wantInactive(t, e.post("/introspect", otherBasic, url.Values{"token": {tk.access}}))
			// A public client may not introspect.
			wantError(t, e.post("/introspect", spaNone, url.Values{"token": {tk.access}}), http.StatusUnauthorized, "invalid_client")
			wantError(t, e.post("/introspect", noAuth, url.Values{"token": {tk.access}}), http.StatusUnauthorized, "invalid_client")
			wantError(t, e.post("/introspect", webBasic, url.Values{}), http.StatusBadRequest, "invalid_request")

			// Not allowlisted: rotated away.
			nr := e.refresh(webBasic, tk.refresh)
			if nr.status != http.StatusOK {
				t.Fatalf("refresh: %d %s", nr.status, nr.raw)
			}
			wantInactive(t, e.introspect(tk.refresh))
			wantActive(t, e.introspect(nr.str("refresh_token")))

			// Expired.
			e.clock.Advance(issuer.DefaultAccessTokenTTL + 10*time.Second)
			wantInactive(t, e.introspect(tk.access))
			wantError(t, e.userinfo(tk.access), http.StatusUnauthorized, "invalid_token")
		})
	}
}

// TestDenylistPoll: two instances in one process share one store; a
// revocation at A reaches B's in-memory cache by B's poll (issue 3 §3).
func TestDenylistPoll(t *testing.T) {
	t.Parallel()
	clk := newClock()
	poll := func(c *issuer.Config) { c.DenylistPollInterval = 50 * time.Millisecond }
	a := start(t, envOptions{clock: clk, cfg: poll})
	b := start(t, envOptions{clock: clk, db: a.db, path: a.path, issuerURL: a.url, cfg: poll})

	browserA, _, tk := a.loginTokens(webID)
	// B verifies A's tokens: the keys are in the shared store.
	wantActive(t, b.introspect(tk.access))
	checkAccessClaims(t, b, verifyAccess(t, b, tk.access), webID)
	// And B honours A's SSO session.
	fl := newFlow(b.oauth2Config(b.provider(), webID))
	if q := browserA.forEnv(b).get(fl.authURL()); q.location == nil || q.location.Query().Get("code") == "" {
		t.Errorf("instance B did not honour A's SSO session: status %d", q.status)
	}

	if _, ok := b.metric("bffgate_issuer_denylist_cache_entries"); !ok {
		t.Fatal("the denylist cache metrics are not registered on Config.Registerer")
	}
	if r := a.revoke(webBasic, tk.access, "access_token"); r.status != http.StatusOK {
		t.Fatalf("revoke at A: %d %s", r.status, r.raw)
	}
	wantInactive(t, a.introspect(tk.access))
	eventually(t, "B's poll to cache A's revocation", func() bool {
		n, _ := b.metric("bffgate_issuer_denylist_cache_entries")
		return n >= 1
	})
	hits, _ := b.metric("bffgate_issuer_denylist_cache_hits_total")
	wantInactive(t, b.introspect(tk.access))
	wantError(t, b.userinfo(tk.access), http.StatusUnauthorized, "invalid_token")
	if h, _ := b.metric("bffgate_issuer_denylist_cache_hits_total"); h <= hits {
		t.Errorf("B answered the revoked token without a cache hit (hits %v -> %v): the poll did not fill its cache", hits, h)
	}
	wantError(t, b.refresh(webBasic, tk.refresh), http.StatusBadRequest, "invalid_grant")
}

// TestPurge: denylist entries are deleted once their token expired more
// than the purge delay ago (issue 3 §3).
func TestPurge(t *testing.T) {
	t.Parallel()
	clk := newClock()
	e := start(t, envOptions{clock: clk})
	_, _, tk := e.loginTokens(webID)
	jti := jtiOf(t, e, tk.access)
	if r := e.revoke(webBasic, tk.access, "access_token"); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	ctx := context.Background()
	if ok, err := e.store.Denied(ctx, storage.DenyJTI, jti); err != nil || !ok {
		t.Fatalf("store.Denied after revoke = %v, %v; want true", ok, err)
	}
	// Still within exp + purge delay: kept.
	clk.Advance(issuer.DefaultAccessTokenTTL + issuer.DefaultPurgeDelay/2)
	n, err := e.store.Purge(ctx, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.store.Denied(ctx, storage.DenyJTI, jti); !ok {
		t.Fatalf("entry purged (%d records) before exp + purge delay", n)
	}
	clk.Advance(issuer.DefaultPurgeDelay)
	// The purge job runs when Run starts and every minute after: a second
	// instance on the same store runs it now.
	e2 := start(t, envOptions{clock: clk, db: e.db, path: e.path, issuerURL: e.url})
	eventually(t, "the purge job to delete the expired denylist entry", func() bool {
		ok, err := e.store.Denied(ctx, storage.DenyJTI, jti)
		return err == nil && !ok
	})
	eventually(t, "the purge job to count what it removed", func() bool {
		v, ok := e2.metric("bffgate_issuer_store_purged_total")
		return ok && v >= 1
	})
	wantInactive(t, e.introspect(tk.access))
}

// TestAllowlistRotation: each refresh token has an allowlist record; with
// rotation, refreshing replaces it; without, the token stays valid.
func TestAllowlistRotation(t *testing.T) {
	t.Parallel()
	t.Run("rotation", func(t *testing.T) {
		t.Parallel()
		e := start(t, envOptions{})
		_, _, tk := e.loginTokens(webID)
		rt := tk.refresh
		var seen []string
		for i := range 3 {
			r := e.refresh(webBasic, rt)
			if r.status != http.StatusOK || r.str("refresh_token") == "" || r.str("refresh_token") == rt {
				t.Fatalf("refresh %d: %d %s, want a new refresh token", i, r.status, r.raw)
			}
			wantInactive(t, e.introspect(rt))
			seen = append(seen, rt)
			rt = r.str("refresh_token")
			wantActive(t, e.introspect(rt))
			wantActive(t, e.introspect(r.str("access_token")))
		}
		// Every rotated-away token stays off the allowlist.
		for _, old := range seen {
			wantInactive(t, e.introspect(old))
		}
	})
	t.Run("no rotation", func(t *testing.T) {
		t.Parallel()
		e := start(t, envOptions{cfg: func(c *issuer.Config) { c.DisableRefreshRotation = true }})
		_, _, tk := e.loginTokens(webID)
		for i := range 3 {
			r := e.refresh(webBasic, tk.refresh)
			if r.status != http.StatusOK {
				t.Fatalf("refresh %d without rotation: %d %s", i, r.status, r.raw)
			}
			if got := r.str("refresh_token"); got != "" && got != tk.refresh {
				t.Errorf("refresh %d without rotation returned a new refresh token", i)
			}
			if r.str("access_token") == tk.access {
				t.Errorf("refresh %d returned the old access token", i)
			}
		}
		wantActive(t, e.introspect(tk.refresh))
	})
}

// TestNarrowedRefresh: a scope parameter on a refresh narrows that one
// access token; the grant keeps its scope, so the next refresh without a
// scope parameter gets all of it again (RFC 6749 §6), with rotation on
// and off.
func TestNarrowedRefresh(t *testing.T) {
	t.Parallel()
	for _, rotate := range []bool{true, false} {
		t.Run(fmt.Sprintf("rotation %v", rotate), func(t *testing.T) {
			t.Parallel()
			e := start(t, envOptions{cfg: func(c *issuer.Config) { c.DisableRefreshRotation = !rotate }})
			_, _, tk := e.loginTokens(webID, "openid", "profile", "email", "offline_access")
			full := "openid profile email offline_access"
			narrow := e.post("/token", webBasic, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.refresh}, "scope": {"email"}})
			if narrow.status != http.StatusOK || narrow.str("scope") != "email" {
				t.Fatalf("narrowed refresh: %d %s, want scope email", narrow.status, narrow.raw)
			}
			if narrow.str("id_token") != "" {
				t.Errorf("a refresh narrowed to email (no openid) returned an ID token")
			}
			if got := e.introspect(narrow.str("access_token")).str("scope"); got != "email" {
				t.Errorf("narrowed access token has scope %q, want email", got)
			}
			rt := tk.refresh
			if rotate {
				rt = narrow.str("refresh_token")
				if got := e.introspect(rt).str("scope"); got != full {
					t.Errorf("the refresh token of a narrowed refresh has scope %q, want the grant's %q", got, full)
				}
			}
			again := e.refresh(webBasic, rt)
			if again.status != http.StatusOK || again.str("scope") != full {
				t.Fatalf("refresh after a narrowed one: %d %s, want the grant's scope %q", again.status, again.raw, full)
			}
			if got := e.introspect(again.str("access_token")).str("scope"); got != full {
				t.Errorf("access token after a narrowed refresh has scope %q, want %q", got, full)
			}
			if again.str("id_token") == "" {
				t.Errorf("the full-scope refresh returned no ID token")
			}
			// Widening beyond the grant stays refused.
			if rotate {
				rt = again.str("refresh_token")
			}
			wantError(t, e.post("/token", webBasic, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {"openid phone"}}), http.StatusBadRequest, "invalid_scope")
		})
	}
}

// TestRefreshReuse: a rotated-away refresh token presented again revokes
// the whole grant (RFC 9700 §4.14.2; issue 3 §6).
func TestRefreshReuse(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	_, _, tk := e.loginTokens(webID)
	r := e.refresh(webBasic, tk.refresh)
	if r.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.status, r.raw)
	}
	rt2, at2 := r.str("refresh_token"), r.str("access_token")
	wantGrantError(t, e.refresh(webBasic, tk.refresh), "rotated")
	wantError(t, e.refresh(webBasic, rt2), http.StatusBadRequest, "invalid_grant")
	wantInactive(t, e.introspect(rt2))
	wantInactive(t, e.introspect(at2))
	wantInactive(t, e.introspect(tk.access))
	wantError(t, e.userinfo(at2), http.StatusUnauthorized, "invalid_token")
	if v, ok := e.metric("bffgate_issuer_refresh_reuse_total"); !ok || v != 1 {
		t.Errorf("bffgate_issuer_refresh_reuse_total = %v (registered %v), want 1", v, ok)
	}
}

// TestCodeReplay: the second use of a code fails and revokes what the
// first use minted (RFC 6749 §4.1.2; issue 3 §7).
func TestCodeReplay(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	code := e.browser().code(fl.authURL())
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {webRedirect}, "code_verifier": {fl.verifier}}
	first := e.post("/token", webBasic, form)
	if first.status != http.StatusOK {
		t.Fatalf("first use: %d %s", first.status, first.raw)
	}
	wantActive(t, e.introspect(first.str("access_token")))
	wantGrantError(t, e.post("/token", webBasic, form), "already")
	wantInactive(t, e.introspect(first.str("access_token")))
	wantInactive(t, e.introspect(first.str("refresh_token")))
	wantError(t, e.refresh(webBasic, first.str("refresh_token")), http.StatusBadRequest, "invalid_grant")
	wantError(t, e.userinfo(first.str("access_token")), http.StatusUnauthorized, "invalid_token")
}

// TestRefreshRace: two refreshes of one token at once: exactly one wins;
// the other is a reuse, which revokes the grant (issue 3).
func TestRefreshRace(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	b, fl, _ := e.loginTokens(webID)
	for round := range 5 {
		tk := e.exchange(fl, b.code(fl.authURL()))
		var wg sync.WaitGroup
		results := make([]oauthResponse, 2)
		ready := make(chan struct{})
		for i := range results {
			wg.Go(func() {
				<-ready
				results[i] = e.refresh(webBasic, tk.refresh)
			})
		}
		close(ready)
		wg.Wait()
		var wins []oauthResponse
		for _, r := range results {
			switch {
			case r.status == http.StatusOK:
				wins = append(wins, r)
			case r.status == http.StatusBadRequest && r.str("error") == "invalid_grant":
			default:
				t.Fatalf("round %d: racing refresh answered %d %s", round, r.status, r.raw)
			}
		}
		if len(wins) != 1 {
			t.Fatalf("round %d: %d refreshes won, want exactly 1", round, len(wins))
		}
		// The loser was a reuse: the grant, the winner's tokens included,
		// is revoked.
		wantError(t, e.refresh(webBasic, wins[0].str("refresh_token")), http.StatusBadRequest, "invalid_grant")
		wantInactive(t, e.introspect(wins[0].str("access_token")))
	}
}

// TestLogoutRevokesSession: RP-initiated logout revokes the refresh tokens
// (and access tokens) of every grant made in the login session, and sends
// a verifiable back-channel logout token (issue 2, issue 3 §8).
func TestLogoutRevokesSession(t *testing.T) {
	t.Parallel()
	type received struct {
		ctype, token string
	}
	got := make(chan received, 4)
	rp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		v, _ := url.ParseQuery(string(body))
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		got <- received{ctype: r.Header.Get("Content-Type"), token: v.Get("logout_token")}
		w.WriteHeader(http.StatusOK)
	}))
	defer rp.Close()
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Clients[0].BackchannelLogoutURI = rp.URL + "/backchannel"
	}})
	p := e.provider()
	b, _, web := e.loginTokens(webID)
	// The SPA's grant in the same login session (SSO, same sid).
	spaFlow := newFlow(e.oauth2Config(p, spaID))
	spa := e.exchange(spaFlow, b.code(spaFlow.authURL()))
	if a, s := verifyAccess(t, e, web.access)["sid"], verifyAccess(t, e, spa.access)["sid"]; a != s {
		t.Fatalf("SSO grants have sids %v and %v, want one", a, s)
	}
	// Another session of the same user is not touched.
	_, _, otherSession := e.loginTokens(webID)

	idt, err := p.Verifier(&oidc.Config{ClientID: webID, Now: e.clock.Now}).Verify(e.ctx(), web.id)
	if err != nil {
		t.Fatal(err)
	}
	var idc struct {
		SID string `json:"sid"`
	}
	_ = idt.Claims(&idc)

	pg := b.get(e.url + "/logout?" + url.Values{"id_token_hint": {web.id}, "post_logout_redirect_uri": {webLogout}, "state": {"s1"}}.Encode())
	if pg.status == http.StatusOK && strings.Contains(pg.body, "<form") {
		pg = b.submit(pg, nil)
	}
	if pg.location == nil || !strings.HasPrefix(pg.location.String(), webLogout) {
		t.Fatalf("logout: status %d location %v", pg.status, pg.location)
	}

	wantError(t, e.refresh(webBasic, web.refresh), http.StatusBadRequest, "invalid_grant")
	wantError(t, e.refresh(spaNone, spa.refresh), http.StatusBadRequest, "invalid_grant")
	wantInactive(t, e.introspect(web.access))
	wantInactive(t, e.introspect(web.refresh))
	wantActive(t, e.introspect(otherSession.access))
	if r := e.refresh(webBasic, otherSession.refresh); r.status != http.StatusOK {
		t.Errorf("the other login session's refresh: %d %s", r.status, r.raw)
	}

	var rcv received
	select {
	case rcv = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("no back-channel logout request arrived")
	}
	if !strings.HasPrefix(rcv.ctype, "application/x-www-form-urlencoded") {
		t.Errorf("back-channel Content-Type %q", rcv.ctype)
	}
	lt, err := p.Verifier(&oidc.Config{ClientID: webID, Now: e.clock.Now}).VerifyLogout(e.ctx(), rcv.token)
	if err != nil {
		t.Fatalf("logout token does not verify: %v", err)
	}
	if lt.SessionID != idc.SID || lt.Subject != "user-alice" {
		t.Errorf("logout token sid %q sub %q, want %q user-alice", lt.SessionID, lt.Subject, idc.SID)
	}
	jws, err := jose.ParseSignedCompact(rcv.token, allSigAlgs)
	if err != nil {
		t.Fatal(err)
	}
	if typ := jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType]; typ != "logout+jwt" {
		t.Errorf("logout token typ %v, want logout+jwt (Back-Channel Logout §2.4)", typ)
	}
	// The SPA has no back-channel URI: one request only.
	select {
	case extra := <-got:
		t.Errorf("a second back-channel request arrived: %+v", extra)
	default:
	}
}

// TestLoginSessionEnds: the issuer's login session ending (logout without
// a client, via the confirmation form) revokes its grants too.
func TestLoginSessionEnds(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	b, _, tk := e.loginTokens(webID)
	pg := b.get(e.url + "/logout")
	if pg.status == http.StatusOK && strings.Contains(pg.body, "<form") {
		pg = b.submit(pg, nil)
	}
	if pg.status >= 400 {
		t.Fatalf("logout without parameters: %d", pg.status)
	}
	wantError(t, e.refresh(webBasic, tk.refresh), http.StatusBadRequest, "invalid_grant")
	wantInactive(t, e.introspect(tk.access))
}

// mintWith signs claims as an access token with the instance's real active
// key of the configured alg (for tokens the issuer itself would never mint).
func mintWith(t testing.TB, e *env, header map[jose.HeaderKey]any, claims map[string]any) string {
	t.Helper()
	sk, kid, err := e.srv.Keys().Signing(e.cfg.TokenAlg)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType(token.TypAccess).WithHeader("kid", kid)
	for k, v := range header {
		opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(sk, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(mustJSON(claims))
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lockedBuffer collects log output from concurrent handlers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoSecretsInLogs drives every endpoint, errors included, at Debug
// level with the access log on, and checks that no token, code, password,
// client secret or cookie value reaches a log line.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.AccessLog = true
	}})
	p := e.provider()
	fl := newFlow(e.oauth2Config(p, webID))
	b := e.browser()
	secrets := map[string]string{"password": alicePassword, "client secret": webSecret, "PKCE verifier": fl.verifier}

	// A failed login, then a good one.
	if pg := b.authorize(fl.authURL(), aliceUser, "wrong password 123"); pg.location != nil {
		t.Fatal("wrong password accepted")
	}
	secrets["wrong password"] = "wrong password 123"
	code := b.code(fl.authURL())
	secrets["code"] = code
	for _, name := range []string{ssoCookie, "__Host-bffgate-csrf"} {
		if c := b.cookie(name); c != nil && c.Value != "" {
			secrets[name] = c.Value
		}
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {webRedirect}, "code_verifier": {fl.verifier}}
	r := e.post("/token", webBasic, form)
	if r.status != http.StatusOK {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	tk := tokens{access: r.str("access_token"), refresh: r.str("refresh_token"), id: r.str("id_token")}
	secrets["access token"], secrets["refresh token"], secrets["ID token"] = tk.access, tk.refresh, tk.id
	e.userinfo(tk.access)
	e.introspect(tk.access)
	nr := e.refresh(webBasic, tk.refresh)
	secrets["rotated refresh token"] = nr.str("refresh_token")
	e.refresh(webBasic, tk.refresh)                                                         // reuse
	e.post("/token", webBasic, form)                                                        // code replay
	e.post("/token", auth{id: webID, secret: "wrong-secret-0123456789", basic: true}, form) // bad client
	e.refresh(otherBasic, nr.str("refresh_token"))                                          // foreign
	e.revoke(webBasic, nr.str("access_token"), "refresh_token")
	e.userinfo(tk.access + "x")
	e.introspect("garbage-" + tk.refresh)
	b.get(e.url + "/logout?" + url.Values{"id_token_hint": {tk.id}, "post_logout_redirect_uri": {webLogout}}.Encode())

	out := logs.String()
	if !strings.Contains(out, "invalid_grant") {
		t.Fatalf("the log has no invalid_grant line; is the logger wired?\n%s", clipText(out, 2000))
	}
	for what, s := range secrets {
		if s == "" {
			continue
		}
		// Any 16-character piece of a secret is enough to leak it.
		piece := s
		if len(piece) > 16 {
			piece = s[len(s)/2-8 : len(s)/2+8]
		}
		if strings.Contains(out, piece) {
			t.Errorf("the %s appears in the log", what)
		}
	}
}
