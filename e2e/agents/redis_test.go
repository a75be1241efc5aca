package agents

import (
	"context"
	"crypto/rand"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/stack"
)

// sharedRedis returns BFFGATE_TEST_REDIS_URL and a key prefix of the
// test's own (removed at the end), skipping the test without the variable.
func sharedRedis(t *testing.T) (string, string) {
	t.Helper()
	redisURL := os.Getenv("BFFGATE_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("BFFGATE_TEST_REDIS_URL is not set: set it to a Redis URL such as redis://127.0.0.1:6379/0 to run the Redis test")
	}
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("BFFGATE_TEST_REDIS_URL: %v", err)
	}
	rdb := goredis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("BFFGATE_TEST_REDIS_URL is set but Redis does not answer: %v", err)
	}
	prefix := "e2e-agents:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	return redisURL, prefix
}

// TestAgentDisableAcrossInstances: two bffgate processes share the issuer
// state in Redis. An agent's token minted at A is active at B; `bffgate
// agents disable` (run while both serve) makes B refuse it within about a
// second, and refuse the agent's grants; enable lets it get tokens again.
func TestAgentDisableAcrossInstances(t *testing.T) {
	redisURL, prefix := sharedRedis(t)
	w := prepareWorld(t, "BFFGATE_REDIS_URL="+redisURL, "BFFGATE_REDIS_PREFIX="+prefix, "BFFGATE_ISSUER_STORE=redis", "BFFGATE_LOG_ACCESS=false")
	// The sub-commands run as an operator would, from another machine: a
	// data directory of their own (a running instance holds its bbolt
	// file), the issuer's state in Redis.
	w.cliDataDir = t.TempDir()
	if out, err := w.bffgate(t, "agents", "enable", agentID); err != nil {
		t.Fatalf("bffgate agents enable on Redis: %v\n%s", err, out)
	}
	a := stack.Start(t, stack.Options{NoGateway: true, Env: w.env})
	// B presents A's issuer identifier from its own port, and keeps an
	// audit file of its own (one chain per process).
	b := stack.Start(t, stack.Options{NoGateway: true, Env: append(w.env[:len(w.env):len(w.env)],
		"BFFGATE_ISSUER_URL="+a.IssuerURL, "BFFGATE_ISSUER_AUDIT_FILE="+filepath.Join(t.TempDir(), "audit-b.log"))})
	w.st = a
	mintAt := func(base string) reply {
		return postAssertionTo(t, base, "/token", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), ccForm)
	}
	activeAt := func(base, tok string) bool {
		r := postAssertionTo(t, base, "/introspect", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), url.Values{"token": {tok}})
		if r.status != 200 {
			t.Fatalf("introspection at %s: %d %s", base, r.status, r.raw)
		}
		return r.body["active"] == true
	}
	r := mintAt(a.IssuerURL)
	if r.status != 200 {
		t.Fatalf("grant at A: %d %s", r.status, r.raw)
	}
	tok := r.str("access_token")
	if !activeAt(b.IssuerURL, tok) {
		t.Fatal("A's token is not active at B")
	}
	if out, err := w.bffgate(t, "agents", "disable", agentID); err != nil {
		t.Fatalf("bffgate agents disable: %v\n%s", err, out)
	}
	start := time.Now()
	// The promise is about a second; the bound leaves room for a loaded
	// machine and only catches a change that never arrives.
	for activeAt(b.IssuerURL, tok) {
		if time.Since(start) > 5*time.Second {
			t.Fatal("B still answers active for the disabled agent's token 5s after the disable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("B refused the disabled agent's token %s after the disable", time.Since(start).Round(time.Millisecond))
	if r := mintAt(b.IssuerURL); r.status != 400 || r.str("error") != "unauthorized_client" {
		t.Fatalf("grant of the disabled agent at B: %d %s", r.status, r.raw)
	}
	time.Sleep(1100 * time.Millisecond) // the next token must be of a later second than the disable (iat has whole seconds)
	if out, err := w.bffgate(t, "agents", "enable", agentID); err != nil {
		t.Fatalf("bffgate agents enable: %v\n%s", err, out)
	}
	var fresh string
	for deadline := time.Now().Add(5 * time.Second); ; {
		if r := mintAt(a.IssuerURL); r.status == 200 {
			fresh = r.str("access_token")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A refuses the enabled agent 5s after the enable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// B learns the enable on its own schedule (within about a second too).
	for deadline := time.Now().Add(5 * time.Second); !activeAt(b.IssuerURL, fresh); {
		if time.Now().After(deadline) {
			t.Fatal("B refuses the enabled agent's new token 5s after the enable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if activeAt(b.IssuerURL, tok) {
		t.Fatal("after enable, B answers active for the token of before the disable")
	}
}
