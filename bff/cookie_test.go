package bff

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer"
)

func TestCookieKeyRotation(t *testing.T) {
	t.Parallel()
	k1 := [][]byte{randomKey(32), randomKey(32)}
	k2 := [][]byte{randomKey(32), randomKey(32)}
	e := newEnv(t, kindCookie, envOptions{cookieKeys: k1})
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	old := b.handle()

	rotated := e.extraGateway(newCookieStore(e, append(append([][]byte{}, k2...), k1...)))
	e.clock.Advance(2 * time.Minute) // due for an idle-timeout slide, which rewrites the cookie
	r := b.do(b.noRedirect(), http.MethodGet, rotated+"/bff/user", nil, map[string]string{"X-CSRF": "1"})
	if r.status != 200 || !strings.Contains(r.body, "user-alice") {
		t.Fatalf("old cookie under rotated keys: %d %s", r.status, r.body)
	}
	fresh := b.handle()
	if fresh == old {
		t.Fatal("the cookie was not rewritten")
	}
	ctx := context.Background()
	if _, err := newCookieStore(e, k2).Get(ctx, fresh); err != nil {
		t.Fatalf("new cookie does not open with the new key alone: %v", err)
	}
	if _, err := newCookieStore(e, k1).Get(ctx, fresh); err == nil {
		t.Fatal("new cookie opens with the old key: not re-sealed")
	}
	// Once the old key is retired, the old cookie is no session.
	retired := e.extraGateway(newCookieStore(e, k2))
	b2 := e.browser()
	b2.jar.SetCookies(mustURL(e.gwURL), []*http.Cookie{{Name: "__Host-bff", Value: old, Path: "/", Secure: true}})
	if r := b2.do(b2.noRedirect(), http.MethodGet, retired+"/bff/user", nil, map[string]string{"X-CSRF": "1"}); r.status != 401 {
		t.Fatalf("old cookie after the old key is retired: %d", r.status)
	}
}

func TestSessionTooLargeForCookies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindCookie, envOptions{issuer: func(c *issuer.Config) {
		c.Users[0].Claims["name"] = strings.Repeat("Alice ", 4000) // a 24 KB ID token claim
	}})
	b := e.browser()
	p := b.login("alice", alicePassword, "/home")
	if p.status != 500 || !strings.Contains(p.body, "session_too_large") || !strings.Contains(p.body, "bbolt or redis") {
		t.Fatalf("oversized session: %d %s", p.status, clip(p.body))
	}
	if b.handle() != "" {
		t.Fatal("a partial session cookie was written")
	}
	if got := counterValue(e.gw.met.loginsFailed.WithLabelValues("session_too_large")); got != 1 {
		t.Fatalf("failed logins (session_too_large) = %v", got)
	}

	// The same user fits in several chunked cookies with a larger limit.
	e2 := newEnv(t, kindCookie, envOptions{issuer: func(c *issuer.Config) {
		c.Users[0].Claims["name"] = strings.Repeat("Alice ", 400)
	}})
	b2 := e2.browser()
	b2.mustLogin("alice", alicePassword)
	if h := b2.handle(); len(h) <= chunkSize {
		t.Fatalf("handle of %d bytes: expected chunking", len(h))
	}
	if b2.user(t).value("sub") != "user-alice" {
		t.Fatal("chunked session not read back")
	}
}
