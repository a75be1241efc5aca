package scaleout

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

// testClient is the confidential client the tests register at the issuer
// (they sign in as the zero-config demo user).
var testClient = issuerclient.Config{
	ClientID:     "e2e-scaleout",
	ClientSecret: "e2e-scaleout-secret-0123456789abcdef",
	RedirectURI:  "https://client.e2e.test/callback",
}

// sharedRedis returns the URL of the machine's Redis (BFFGATE_TEST_REDIS_URL)
// and a key prefix of this test's own; it skips the test when the variable
// is unset and fails it when Redis does not answer. The prefix's keys are
// deleted at the end (never FLUSHDB: other tests share this Redis).
func sharedRedis(t *testing.T) (redisURL, prefix string) {
	t.Helper()
	redisURL = os.Getenv("BFFGATE_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("BFFGATE_TEST_REDIS_URL is not set: set it to a Redis URL such as redis://127.0.0.1:6379/0 to run the scale-out tests")
	}
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("BFFGATE_TEST_REDIS_URL: %v", err)
	}
	rdb := goredis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("BFFGATE_TEST_REDIS_URL is set but Redis does not answer: %v", err)
	}
	prefix = "e2e-scaleout:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			rdb.Del(ctx, keys[:n]...)
			keys = keys[n:]
		}
	})
	return redisURL, prefix
}

// redisEnv puts the issuer state and the gateway sessions of a process in
// Redis under prefix, with the test client registered.
func redisEnv(redisURL, prefix string, extra ...string) []string {
	return append([]string{
		"BFFGATE_REDIS_URL=" + redisURL,
		"BFFGATE_REDIS_PREFIX=" + prefix,
		"BFFGATE_ISSUER_STORE=redis",
		"BFFGATE_GATEWAY_SESSION_STORE=redis",
		"BFFGATE_LOG_ACCESS=false",
		testClient.Env(),
	}, extra...)
}

// pair starts process A (issuer A at its own URL, the identifier; gateway
// A; demo API A) and process B (issuer B presenting A's identifier from
// its own port; gateway B; demo API B), both on one Redis prefix.
func pair(t *testing.T) (a, b *stack.Stack) {
	redisURL, prefix := sharedRedis(t)
	a = stack.Start(t, stack.Options{Env: redisEnv(redisURL, prefix)})
	b = stack.Start(t, stack.Options{Env: redisEnv(redisURL, prefix, "BFFGATE_ISSUER_URL="+a.IssuerURL)})
	return a, b
}

// TestSessionAcrossGateways logs in through gateway A, calls the API
// through gateway B with the same cookie, logs out through B, and checks
// that A no longer has the session.
func TestSessionAcrossGateways(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	u := newUser(t)
	cookie := u.mustLogin(a.GatewayURL)

	for _, gw := range []struct{ name, url string }{{"A", a.GatewayURL}, {"B", b.GatewayURL}} {
		r, err := u.whoami(ctx, gw.url, cookie)
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("GET /api/whoami through gateway %s with the session of gateway A: %v %s, want 200", gw.name, err, r)
		}
		var who struct {
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal([]byte(r.Body), &who); err != nil || who.Subject == "" {
			t.Fatalf("GET /api/whoami through gateway %s: %s: no subject", gw.name, r)
		}
		r, err = u.Call(ctx, http.MethodGet, gw.url+"/bff/user", cookie)
		if err != nil || r.Status != http.StatusOK || !strings.Contains(r.Body, who.Subject) {
			t.Fatalf("GET /bff/user through gateway %s: %v %s, want 200 with sub %q", gw.name, err, r, who.Subject)
		}
	}

	r, err := u.Call(ctx, http.MethodPost, b.GatewayURL+"/bff/logout", cookie)
	if err != nil || r.Status/100 != 3 {
		t.Fatalf("POST /bff/logout through gateway B: %v %s, want a redirect", err, r)
	}
	for _, gw := range []struct{ name, url string }{{"A", a.GatewayURL}, {"B", b.GatewayURL}} {
		r, err := u.Call(ctx, http.MethodGet, gw.url+"/bff/user", cookie)
		if err != nil || r.Status != http.StatusUnauthorized || r.JSONError() == "" {
			t.Errorf("GET /bff/user through gateway %s with the cookie logged out through B: %v %s, want 401 JSON", gw.name, err, r)
		}
		r, err = u.whoami(ctx, gw.url, cookie)
		if err != nil || r.Status != http.StatusUnauthorized {
			t.Errorf("GET /api/whoami through gateway %s with the cookie logged out through B: %v %s, want 401", gw.name, err, r)
		}
	}
}

// TestRevocationPropagates revokes an access token at issuer A and polls
// introspection at issuer B, which must report it inactive within one
// second (the published revocation, not the 60 s poll, carries it).
func TestRevocationPropagates(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	ca, cb := issuerclient.New(t, a.IssuerURL, testClient), issuerclient.New(t, b.IssuerURL, testClient)
	for round := range 3 {
		tk := ca.MustGrant()
		// B has seen the token live (and so may have cached that).
		if !cb.Introspect(ctx, tk.AccessToken, "access_token") {
			t.Fatalf("round %d: issuer B reports a fresh access token of issuer A inactive", round)
		}
		cachedAtB := denylistEntries(t, b)
		r, err := ca.Revoke(ctx, tk.AccessToken, "access_token")
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("round %d: revoke at issuer A: %s (%v), want 200", round, r, err)
		}
		// Pushed, not polled (the poll is a minute): B's denylist cache
		// gets the entry without B being asked about the token.
		for deadline := time.Now().Add(3 * time.Second); denylistEntries(t, b) <= cachedAtB; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the revocation at issuer A never reached issuer B's denylist cache by push (entries stay %v)", round, cachedAtB)
			}
			time.Sleep(20 * time.Millisecond)
		}
		deadline := time.Now().Add(time.Second)
		for cb.Introspect(ctx, tk.AccessToken, "access_token") {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: issuer B still reports the access token revoked at issuer A active one second later", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The grant's refresh token left the allowlist with it (lifecycle
		// §5), for both instances.
		if cb.Introspect(ctx, tk.RefreshToken, "refresh_token") {
			t.Errorf("round %d: issuer B reports the refresh token of a revoked access token's grant active", round)
		}
	}
}

// denylistEntries reads bffgate_issuer_denylist_cache_entries from the
// issuer's /metrics.
func denylistEntries(t *testing.T, s *stack.Stack) float64 {
	t.Helper()
	resp, err := testhttp.Client.Get(s.IssuerURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, "bffgate_issuer_denylist_cache_entries") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return v
		}
	}
	t.Fatal("issuer /metrics has no bffgate_issuer_denylist_cache_entries")
	return 0
}

// TestRefreshRaceAcrossIssuers presents one refresh token to issuer A and
// issuer B at once: exactly one wins, the other gets invalid_grant.
func TestRefreshRaceAcrossIssuers(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	clients := [2]*issuerclient.Client{issuerclient.New(t, a.IssuerURL, testClient), issuerclient.New(t, b.IssuerURL, testClient)}
	for round := range 10 {
		tk := clients[0].MustGrant()
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			results [2]struct {
				r   issuerclient.Reply
				err error
			}
		)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, results[i].r, results[i].err = clients[i].Refresh(ctx, tk.RefreshToken)
			}()
		}
		close(start)
		wg.Wait()
		won, lost := 0, 0
		for i, res := range results {
			switch {
			case res.err != nil:
				t.Errorf("round %d: refresh at issuer %c: %v", round, "AB"[i], res.err)
			case res.r.Status == http.StatusOK:
				won++
			case res.r.Status == http.StatusBadRequest && res.r.Code == "invalid_grant":
				lost++
			default:
				t.Errorf("round %d: refresh at issuer %c: %s, want 200 or 400 invalid_grant", round, "AB"[i], res.r)
			}
		}
		if won != 1 || lost != 1 {
			t.Fatalf("round %d: one refresh token at issuers A and B at once: %d won, %d got invalid_grant; want exactly one of each", round, won, lost)
		}
	}
}
