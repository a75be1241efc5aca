package forwardauth

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/nginx"
	"github.com/bffgate/bffgate/e2e/stack"
)

// sharedRedis returns the machine's Redis (BFFGATE_TEST_REDIS_URL) and a
// key prefix of this test's own, deleted at the end; it skips the test
// when the variable is unset.
func sharedRedis(t *testing.T) (redisURL, prefix string) {
	t.Helper()
	redisURL = os.Getenv("BFFGATE_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("BFFGATE_TEST_REDIS_URL is not set: set it to a Redis URL such as redis://127.0.0.1:6379/0 to run bffgate on Redis behind nginx")
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
	prefix = "e2e-forwardauth:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
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

// TestNginxTwoInstancesOnRedis: the nginx recipe with two bffgate
// processes behind its upstream (round robin), sharing sessions and the
// issuer's state on Redis: a login through either, then decisions by both
// for the same session, identity headers and assertions from both
// verified against the JWKS, and a denied user refused by both.
func TestNginxTwoInstancesOnRedis(t *testing.T) {
	t.Parallel()
	nginx.Need(t)
	redisURL, prefix := sharedRedis(t)
	port := stack.FreePort(t)
	pub := fmt.Sprintf("http://127.0.0.1:%d", port)
	a := newApp(t)
	env := []string{"BFFGATE_REDIS_URL=" + redisURL, "BFFGATE_REDIS_PREFIX=" + prefix,
		"BFFGATE_ISSUER_STORE=redis", "BFFGATE_GATEWAY_SESSION_STORE=redis"}
	one := startBffgate(t, pub, env...)
	two := startBffgate(t, pub, append(env, "BFFGATE_ISSUER_URL="+one.IssuerURL)...)
	site := nginxSite(t, port, strings.TrimPrefix(one.GatewayURL, "http://"), a.addr())
	// Both instances in the recipe's upstream.
	site = strings.Replace(site, "server "+strings.TrimPrefix(one.GatewayURL, "http://")+";",
		"server "+strings.TrimPrefix(one.GatewayURL, "http://")+";\n    server "+strings.TrimPrefix(two.GatewayURL, "http://")+";", 1)
	startNginx(t, port, site)

	c := newClient(t)
	p := c.open(pub+"/reports", alice, alicePassword)
	if p.status != http.StatusOK || seenBy(t, p).User != "user-alice" {
		t.Fatalf("login through two instances: %d at %s: %.300s", p.status, p.url, p.body)
	}
	for i := range 20 {
		got := seenBy(t, c.get(fmt.Sprintf("%s/reports/%d", pub, i), nil))
		if got.User != "user-alice" || got.Groups != "staff,admins" {
			t.Fatalf("request %d: the app saw %+v", i, got)
		}
		verifyAssertion(t, got.Assertion, pub, pub+"/")
	}
	for _, st := range []*stack.Stack{one, two} {
		if !waitLog(st, "forward auth decision", `"sub":"user-alice"`, `"result":"allowed"`) {
			t.Errorf("instance %s decided none of alice's requests: nginx did not spread them, or it failed", st.GatewayURL)
		}
	}
	b := newClient(t)
	if p := b.open(pub+"/reports", bob, bobPassword); p.status != http.StatusForbidden {
		t.Errorf("bob: %d", p.status)
	}
	for range 4 {
		if p := b.getOnce(pub+"/reports", nil); p.status != http.StatusForbidden {
			t.Errorf("bob again: %d", p.status)
		}
	}
}

// TestNginxCookieSessions: the nginx recipe with the cookie session store
// (the whole session in the cookie, two chunks with the embedded issuer's
// RS256 tokens): login, allowed and denied users work, and bffgate warns
// at start that a renewed cookie would not reach the browser through a
// proxy.
func TestNginxCookieSessions(t *testing.T) {
	t.Parallel()
	nginx.Need(t)
	port := stack.FreePort(t)
	pub := fmt.Sprintf("http://127.0.0.1:%d", port)
	a := newApp(t)
	st := startBffgate(t, pub, "BFFGATE_GATEWAY_SESSION_STORE=cookie")
	startNginx(t, port, nginxSite(t, port, strings.TrimPrefix(st.GatewayURL, "http://"), a.addr()))
	if !waitLog(st, "gateway.session.store: cookie") {
		t.Error("no start-up warning about cookie sessions behind forward auth")
	}
	c := newClient(t)
	p := c.open(pub+"/reports?x=1", alice, alicePassword)
	if got := seenBy(t, p); p.url.String() != pub+"/reports?x=1" || got.User != "user-alice" {
		t.Fatalf("alice: %d at %s: %+v", p.status, p.url, got)
	}
	verifyAssertion(t, seenBy(t, c.get(pub+"/x", nil)).Assertion, pub, pub+"/")
	if p := newClient(t).open(pub+"/reports", bob, bobPassword); p.status != http.StatusForbidden {
		t.Errorf("bob: %d", p.status)
	}
}
