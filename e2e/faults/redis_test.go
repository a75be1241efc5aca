//go:build unix

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/redisserver"
	"github.com/bffgate/bffgate/e2e/stack"
)

// redisEnv puts a process's issuer state and gateway sessions in Redis,
// with the test client registered and keys reloaded every second.
func redisEnv(redisURL string, extra ...string) []string {
	return append([]string{
		"BFFGATE_REDIS_URL=" + redisURL,
		"BFFGATE_REDIS_PREFIX=e2e-faults:",
		"BFFGATE_ISSUER_STORE=redis",
		"BFFGATE_GATEWAY_SESSION_STORE=redis",
		"BFFGATE_ISSUER_DENYLIST_POLL_INTERVAL=1s",
		"BFFGATE_LOG_ACCESS=false",
		testClient.Env(),
	}, extra...)
}

// TestRedisRestartedEmpty runs two instances on one Redis (process B's
// issuer presents A's identifier, as behind one load balancer), empties
// Redis under them and restarts B at once. The instances put back the keys
// and generated secrets they hold, so that afterwards B verifies and
// refreshes what A signed since the loss, gateway B (whose client secret
// and cookie keys were generated, and lost) still logs users in at issuer
// A, and a session made through gateway A works through gateway B. Before
// the fix B wrote a new key set and new secrets, A dropped its key for
// B's at its next reload, and refreshes failed with "the refresh token
// names a key this issuer does not have".
func TestRedisRestartedEmpty(t *testing.T) {
	rs := redisserver.Start(t)
	refreshing := []string{"BFFGATE_ISSUER_TOKENS_ACCESS_TTL=30s", "BFFGATE_GATEWAY_REFRESH_SKEW=1m"}
	a := stack.Start(t, stack.Options{Env: redisEnv(rs.URL(), refreshing...)})
	b := stack.Start(t, stack.Options{Env: redisEnv(rs.URL(), append(refreshing, "BFFGATE_ISSUER_URL="+a.IssuerURL)...)})
	ctx := context.Background()
	ca, cb := issuerclient.New(t, a.IssuerURL, testClient), issuerclient.New(t, b.IssuerURL, testClient)
	kidsBefore := jwksKIDs(t, a.IssuerURL)

	rs.Flush()
	b.Restart()
	// Both reload their keys every second: two rounds let A put its keys
	// back and B read them.
	time.Sleep(2500 * time.Millisecond)

	for _, kid := range kidsBefore {
		for name, base := range map[string]string{"A": a.IssuerURL, "B": b.IssuerURL} {
			if !contains(jwksKIDs(t, base), kid) {
				t.Errorf("issuer %s's JWK set lacks key %s, which signed before Redis lost its data", name, kid)
			}
		}
	}
	// A grant made at A since the loss refreshes at B, then at A again.
	tk := ca.MustGrant()
	next, r, err := cb.Refresh(ctx, tk.RefreshToken)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("refresh at B of a grant made at A: %v %s, want 200", err, r)
	}
	if _, r, err := ca.Refresh(ctx, next.RefreshToken); err != nil || r.Status != http.StatusOK {
		t.Fatalf("refresh at A of the token B rotated: %v %s, want 200", err, r)
	}
	if !cb.Introspect(ctx, tk.AccessToken, "access_token") {
		t.Error("issuer B reports an access token of issuer A inactive")
	}

	// Every API call refreshes (refresh.skew above the access tokens'
	// lifetime): gateway B refreshes at issuer A, the identifier, with the
	// client secret it read when it restarted, and both gateways open the
	// cookie gateway A sealed.
	u := issuerclient.NewBrowser(t)
	cookie, err := u.GatewayLogin(ctx, a.GatewayURL, issuerclient.DemoUser, issuerclient.DemoPassword)
	if err != nil {
		t.Fatalf("login through gateway A after the loss: %v", err)
	}
	for _, gw := range []struct{ name, url string }{{"A", a.GatewayURL}, {"B", b.GatewayURL}, {"A", a.GatewayURL}, {"B", b.GatewayURL}} {
		if r, err := u.Call(ctx, http.MethodGet, gw.url+"/api/whoami", cookie); err != nil || r.Status != http.StatusOK {
			t.Errorf("API (a refresh) through gateway %s with gateway A's session: %v %s, want 200", gw.name, err, r)
		}
	}
	for name, s := range map[string]*stack.Stack{"A": a, "B": b} {
		if lines := s.LogLines("another value of a generated secret"); len(lines) > 0 {
			t.Errorf("instance %s disagrees with the store about a secret: %v", name, lines)
		}
	}
	t.Logf("put back by A: %d keys, %d secrets", len(a.LogLines("issuer key put back")), len(a.LogLines("secret put back")))
}

// TestRedisFrozen freezes Redis (SIGSTOP: connections are accepted, nothing
// is answered) under a running instance. Every request that needs Redis is
// answered with 503 JSON, each within a few seconds (redis.read_timeout is
// 1 s; before the fix go-redis's 3 s reads, retried, held each call 5 to
// 10 s), /readyz fails, and when Redis resumes the same process serves
// again, the session intact.
func TestRedisFrozen(t *testing.T) {
	rs := redisserver.Start(t)
	s := stack.Start(t, stack.Options{Env: redisEnv(rs.URL())})
	ctx := context.Background()
	u := issuerclient.NewBrowser(t)
	cookie, err := u.GatewayLogin(ctx, s.GatewayURL, issuerclient.DemoUser, issuerclient.DemoPassword)
	if err != nil {
		t.Fatal(err)
	}
	c := issuerclient.New(t, s.IssuerURL, testClient)
	tk := c.MustGrant()

	rs.Freeze()
	frozen := true
	defer func() {
		if frozen {
			rs.Thaw()
		}
	}()
	// A client that gives up after 4 s: four times the configured bound,
	// and less than the old cost of a single Redis call.
	hc := &http.Client{Timeout: 4 * time.Second}
	for _, rq := range []struct {
		name, method, url, cookie string
		form                      url.Values
	}{
		{"gateway /bff/user", http.MethodGet, s.GatewayURL + "/bff/user", cookie, nil},
		{"gateway /api/whoami", http.MethodGet, s.GatewayURL + "/api/whoami", cookie, nil},
		{"issuer /introspect", http.MethodPost, s.IssuerURL + "/introspect", "", url.Values{"token": {tk.AccessToken}}},
		{"issuer /token refresh", http.MethodPost, s.IssuerURL + "/token", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}}},
		{"gateway /readyz", http.MethodGet, s.GatewayURL + "/readyz", "", nil},
		{"issuer /readyz", http.MethodGet, s.IssuerURL + "/readyz", "", nil},
	} {
		var body *strings.Reader
		if rq.form != nil {
			body = strings.NewReader(rq.form.Encode())
		} else {
			body = strings.NewReader("")
		}
		req, _ := http.NewRequestWithContext(ctx, rq.method, rq.url, body)
		if rq.form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(testClient.ClientID, testClient.ClientSecret)
		}
		if rq.cookie != "" {
			req.Header.Set("Cookie", rq.cookie)
			req.Header.Set("X-CSRF", "1")
		}
		began := time.Now()
		resp, err := hc.Do(req)
		took := time.Since(began)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s with Redis frozen: no answer within %s (each Redis call must be bounded by redis.read_timeout)", rq.name, hc.Timeout)
			continue
		}
		if err != nil {
			t.Errorf("%s with Redis frozen: %v", rq.name, err)
			continue
		}
		var e struct {
			Error string `json:"error"`
		}
		decErr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		t.Logf("%s with Redis frozen: HTTP %d %q after %s", rq.name, resp.StatusCode, e.Error, took.Round(time.Millisecond))
		if resp.StatusCode != http.StatusServiceUnavailable || (decErr != nil || e.Error == "") && !strings.HasSuffix(rq.name, "/readyz") {
			t.Errorf("%s with Redis frozen: HTTP %d (error %q), want 503 with a JSON error", rq.name, resp.StatusCode, e.Error)
		}
	}

	rs.Thaw()
	frozen = false
	waitFor(t, "/readyz after Redis resumed", func() bool {
		for _, base := range []string{s.GatewayURL, s.IssuerURL} {
			if a, err := get(ctx, base+"/readyz"); err != nil || a.Status != http.StatusOK {
				return false
			}
		}
		return true
	})
	if r, err := u.Call(ctx, http.MethodGet, s.GatewayURL+"/api/whoami", cookie); err != nil || r.Status != http.StatusOK {
		t.Errorf("API after Redis resumed: %v %s, want 200 with the session from before", err, r)
	}
	if !c.Introspect(ctx, tk.AccessToken, "access_token") {
		t.Error("an access token minted before the freeze is inactive after it")
	}
}

// jwksKIDs returns the key ids an issuer publishes.
func jwksKIDs(t *testing.T, issuerURL string) []string {
	t.Helper()
	a, err := get(context.Background(), issuerURL+"/jwks")
	if err != nil || a.Status != http.StatusOK {
		t.Fatalf("GET %s/jwks: %v %s", issuerURL, err, a)
	}
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(a.Body), &set); err != nil {
		t.Fatalf("JWK set: %v", err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KID)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
