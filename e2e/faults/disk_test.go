//go:build linux

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/fulldisk"
)

// sessions is how many sessions TestFullDiskGateway refreshes in turn.
const sessions = 8

// tmpfsSize is the data directory's filesystem: room for a data file and
// its growth, filled by the test when it wants the disk full.
const tmpfsSize = 16 << 20

// TestFullDiskIssuer fills the issuer's data directory while it serves.
// The login (a new authorization code) redirects with
// error=temporarily_unavailable, refresh grants answer 200 (bbolt rewrites
// pages it has freed, so a rotation of the same size may still fit) or 503
// temporarily_unavailable, and /readyz fails; once space is freed the last
// refresh token works (a rotation is one transaction: one that failed
// changed nothing) and logins work again. Before the fix a full disk was a
// 500 server_error and a login redirected with error=server_error.
func TestFullDiskIssuer(t *testing.T) {
	dir := fulldisk.Mount(t, tmpfsSize)
	s := stack.Start(t, stack.Options{NoGateway: true, DataDir: dir, Env: []string{testClient.Env(), "BFFGATE_LOG_ACCESS=false"}})
	ctx := context.Background()
	c := issuerclient.New(t, s.IssuerURL, testClient)
	tk := c.MustGrant()
	rt := tk.RefreshToken

	filler := fulldisk.Fill(t, dir)
	// The login form stores an authorization code: on a full disk that is
	// a temporary refusal, redirected as such to the client.
	if _, err := c.Grant(ctx); err == nil || !strings.Contains(err.Error(), `error "temporarily_unavailable"`) {
		t.Errorf("login on a full disk: %v, want the redirect to carry error=temporarily_unavailable", err)
	}
	refused := 0
	for i := range 50 {
		next, r, err := c.Refresh(ctx, rt)
		switch {
		case err != nil:
			t.Fatalf("refresh %d on a full disk: %v", i, err)
		case r.Status == http.StatusOK:
			rt = next.RefreshToken
		case r.Status == http.StatusServiceUnavailable && r.Code == "temporarily_unavailable":
			refused++
		default:
			t.Fatalf("refresh %d on a full disk: %s, want 200 or 503 temporarily_unavailable", i, r)
		}
	}
	t.Logf("refreshes on the full disk: %d of 50 refused with 503", refused)
	// /readyz reuses a probe of the data file for a second.
	waitFor(t, "issuer /readyz failing on the full disk", func() bool {
		a, err := get(ctx, s.IssuerURL+"/readyz")
		return err == nil && a.Status == http.StatusServiceUnavailable && strings.Contains(a.Body, "store")
	})

	filler.Free(t)
	waitFor(t, "issuer /readyz after space was freed", func() bool {
		a, err := get(ctx, s.IssuerURL+"/readyz")
		return err == nil && a.Status == http.StatusOK
	})
	next, r, err := c.Refresh(ctx, rt)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("refresh with the last live refresh token after space was freed: %v %s, want 200 (a failed rotation changes nothing)", err, r)
	}
	if !c.Introspect(ctx, next.AccessToken, "access_token") {
		t.Error("the access token minted after the outage is inactive")
	}
	if _, err := c.Grant(ctx); err != nil {
		t.Errorf("login after space was freed: %v", err)
	}
	if lines := s.LogLines("server_error"); len(lines) > 0 {
		t.Errorf("server_error in the issuer's log: %v", lines)
	}
}

// TestFullDiskGateway fills the gateway's data directory (its issuer runs
// in another process, on a disk with room) while a session refreshes on
// every request (refresh.skew longer than the access tokens live) and the
// grace window is shorter than the outage. The issuer rotates the refresh
// token, the gateway cannot save the new one: it holds it and serves it,
// past the grace window and through further rotations, so the session
// never presents a rotated-away token (which revokes the grant). Every
// answer is 200 or 503 JSON; /readyz fails while the disk is full; when
// space is freed the held tokens are saved and survive a restart. Before
// the fix: 502 refresh_failed, then, past the grace window, reuse and the
// session gone (401).
func TestFullDiskGateway(t *testing.T) {
	dir := fulldisk.Mount(t, tmpfsSize)
	var calls atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, `{"error":"no token"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	defer api.Close()

	gwPort := stack.FreePort(t)
	gwURL := fmt.Sprintf("http://127.0.0.1:%d", gwPort)
	gwClient := map[string]any{
		"id": "gateway-faults", "secret": "gateway-faults-secret-0123456789abcdef",
		"redirect_uris":             []string{gwURL + "/bff/callback"},
		"post_logout_redirect_uris": []string{gwURL + "/"},
		"grant_types":               []string{"authorization_code", "refresh_token"},
	}
	clients, _ := json.Marshal([]any{gwClient})
	issuer := stack.Start(t, stack.Options{NoGateway: true, Env: []string{
		"BFFGATE_ISSUER_CLIENTS=" + string(clients), "BFFGATE_LOG_ACCESS=false",
		"BFFGATE_ISSUER_TOKENS_ACCESS_TTL=30s",
	}})
	routes, _ := json.Marshal([]map[string]any{{"prefix": "/api/", "upstream": api.URL, "policy": "user"}})
	startGateway := func() *stack.Stack {
		return stack.Start(t, stack.Options{DataDir: dir, GatewayPort: gwPort, Env: []string{
			// The harness waits for an issuer in every process: this one
			// runs unused, with the one client it needs to start.
			"BFFGATE_ISSUER_ENABLED=true",
			`BFFGATE_ISSUER_CLIENTS=[{"id": "unused", "redirect_uris": ["http://127.0.0.1/unused"]}]`,
			"BFFGATE_DEMO_API_ENABLED=false",
			"BFFGATE_GATEWAY_PROVIDER_ISSUER_URL=" + issuer.IssuerURL,
			"BFFGATE_GATEWAY_PROVIDER_CLIENT_ID=gateway-faults",
			"BFFGATE_GATEWAY_PROVIDER_CLIENT_SECRET=gateway-faults-secret-0123456789abcdef",
			"BFFGATE_GATEWAY_ROUTES=" + string(routes),
			"BFFGATE_GATEWAY_SESSION_STORE=bbolt",
			"BFFGATE_GATEWAY_REFRESH_SKEW=1m", // > access_ttl: every request refreshes
			"BFFGATE_GATEWAY_REFRESH_GRACE_WINDOW=1s",
			"BFFGATE_LOG_ACCESS=false",
		}})
	}
	gw := startGateway()
	ctx := context.Background()
	// Several sessions, refreshed in turn: bbolt rewrites the pages a save
	// freed for the next save of the same shape, so one session alone may
	// go on saving on a full disk; saves of different sessions, landing in
	// different leaves, run out of reusable pages within a few rounds.
	type userSession struct {
		b      *issuerclient.Browser
		cookie string
	}
	var users []userSession
	for range sessions {
		b := issuerclient.NewBrowser(t)
		cookie, err := b.GatewayLogin(ctx, gwURL, issuerclient.DemoUser, issuerclient.DemoPassword)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, userSession{b, cookie})
	}
	var turn int
	call := func(when string) issuerclient.Answer {
		t.Helper()
		us := users[turn%len(users)]
		turn++
		a, err := us.b.Call(ctx, http.MethodGet, gwURL+"/api/items", us.cookie)
		switch {
		case err != nil:
			t.Fatalf("%s: %v", when, err)
		case a.Status == http.StatusOK:
		case a.Status == http.StatusServiceUnavailable && a.JSONError() != "":
		default:
			t.Fatalf("%s: %s, want 200 or 503 JSON (the session must survive a full disk)", when, a)
		}
		return a
	}
	for i := range sessions {
		if a := call(fmt.Sprintf("request %d before the disk filled", i)); a.Status != http.StatusOK {
			t.Fatalf("request %d before the disk filled: %s, want 200", i, a)
		}
	}

	filler := fulldisk.Fill(t, dir)
	// bbolt rewrites the pages a transaction freed before it grows the
	// file, so a save of the same shape as the last one fits on a full
	// disk, unless a read transaction still holds those pages: requests of
	// several sessions at once (each reads its session while others save)
	// make a save grow the file within a few rounds.
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		bad     atomic.Value
		answers atomic.Int64
	)
	for _, us := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				a, err := us.b.Call(ctx, http.MethodGet, gwURL+"/api/items", us.cookie)
				answers.Add(1)
				if err != nil || !(a.Status == http.StatusOK || a.Status == http.StatusServiceUnavailable && a.JSONError() != "") {
					bad.CompareAndSwap(nil, fmt.Sprintf("%v %s", err, a))
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(gw.LogLines("refreshed tokens not saved")) == 0 && bad.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Fatalf("a request on the full disk: %s, want 200 or 503 JSON (the session must survive a full disk)", b)
	}
	if len(gw.LogLines("refreshed tokens not saved")) == 0 {
		t.Fatalf("%d requests, every refresh saved on a full disk within 90 s: the disk is not full", answers.Load())
	}
	t.Logf("%d requests on the full disk until a refresh could not be saved", answers.Load())
	// Outlast the grace window: the grace record of the rotation is gone.
	time.Sleep(2 * time.Second)
	ok := 0
	for i := range 2 * sessions {
		if a := call(fmt.Sprintf("request %d on the full disk past the grace window", i)); a.Status == http.StatusOK {
			ok++
		}
	}
	t.Logf("past the grace window on the full disk: %d of %d requests answered 200 (%d saves had failed)", ok, 2*sessions, len(gw.LogLines("refreshed tokens not saved")))
	waitFor(t, "gateway /readyz failing on the full disk", func() bool {
		a, err := get(ctx, gwURL+"/readyz")
		return err == nil && a.Status == http.StatusServiceUnavailable
	})

	filler.Free(t)
	waitFor(t, "gateway /readyz after space was freed", func() bool {
		a, err := get(ctx, gwURL+"/readyz")
		return err == nil && a.Status == http.StatusOK
	})
	for i := range 2 * sessions {
		if a := call(fmt.Sprintf("request %d after space was freed", i)); a.Status != http.StatusOK {
			t.Fatalf("request %d after space was freed: %s, want 200", i, a)
		}
	}
	// The tokens are in the data file now, not only in memory: a restart
	// keeps the session.
	gw.Restart()
	for i := range sessions {
		if a := call(fmt.Sprintf("request %d after the gateway restarted", i)); a.Status != http.StatusOK {
			t.Fatalf("request %d after the gateway restarted: %s, want 200 (the held tokens were saved)", i, a)
		}
	}
	m, err := get(ctx, issuer.IssuerURL+"/metrics")
	if err != nil || m.Status != http.StatusOK {
		t.Fatalf("issuer /metrics: %v %s", err, m)
	}
	for _, line := range strings.Split(m.Body, "\n") {
		if strings.HasPrefix(line, "bffgate_issuer_refresh_reuse_total ") && strings.TrimPrefix(line, "bffgate_issuer_refresh_reuse_total ") != "0" {
			t.Errorf("the issuer saw rotated-away refresh tokens (reuse: the grant is revoked): %s", line)
		}
	}
	if lines := gw.LogLines("session ended"); len(lines) > 0 {
		t.Errorf("the gateway ended a session: %v", lines)
	}
}
